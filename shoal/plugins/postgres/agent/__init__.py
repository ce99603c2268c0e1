"""The PostgreSQL member agent: the main process of every member container (under tini).

Standard library only (plus the `openssl`, `psql`, `pg_*` and `ip` commands): it runs with
Debian's python3 inside the member image, where this package is copied whole to
/opt/shoal/agent and started as `python3 -m agent` (image/Dockerfile). Its modules import
one another relatively, and of shoal only `shoal.agentkit` (what every member agent shares,
copied into the image at /opt/shoal/shoal/agentkit), so the same files are imported by the
operator and the tests as `shoal.plugins.postgres.agent.*`.

  api.py         the HTTP API on port 8008 and the role checks on 8009; `main`
  member.py      the member's state machine: one data directory and its postgres process
  pg.py          PostgreSQL's files and commands (postgresql.auto.conf, pg_hba.conf, psql)
  lease.py       the primary's lease: it stops taking writes once nobody renews it
  syncguard.py   ends commits that wait on synchronous standbys for too long
  parameters.py  which parameters a declaration may set (also read by the declaration)
  tls.py         the member's key, certificate and CA, and their renewal

shoal.agentkit gives the bounded HTTP(S) server and its handler base, the bundle's parsing
and the API's TLS context, the control network address and atomic file writes.

Nothing is imported here, so `shoal.plugins.postgres.agent.parameters` (the declaration's
allowlist) loads without the rest of the agent.
"""
