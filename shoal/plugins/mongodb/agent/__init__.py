"""The MongoDB member agent: the main process of every MongoDB member container (under tini).

Standard library plus Debian's `python3-pymongo` (3.11, which speaks OP_MSG to MongoDB
3.6 to 7.0): it runs with Debian's python3 inside the member image, where this package is
copied whole to /opt/shoal/agent and started as `python3 -m agent` (image/Dockerfile). Its
modules import one another relatively, and of shoal only `shoal.agentkit` (what every member
agent shares, copied into the image at /opt/shoal/shoal/agentkit), so the operator and the
unit tests import the same files as `shoal.plugins.mongodb.agent.*`.

  api.py        the HTTPS API on port 8008 (bearer token): GET /state, POST /initiate; `main`
  mongod.py     mongod's command line, its cache size, the child process
  local.py      what the agent asks its own mongod (pymongo, over loopback TLS)
  initiate.py   the checks of a `POST /initiate` body: the replica set config it may apply
  keyfile.py    the replica set's keyFile, derived from a secret every member has
  tls.py        the member's TLS bundle split into mongod's key+certificate and CA files
  users.py      the SCRAM users: the operator's administrator and the application's user

shoal.agentkit gives the bounded HTTPS server and its handler base, the bundle's parsing and
the API's TLS context, the control network address and atomic file writes.

Nothing is imported here, so importing one module (e.g. `users`) loads nothing else.
"""
