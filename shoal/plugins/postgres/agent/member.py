"""The member's state machine: one PostgreSQL data directory, its postgres child process and
the operations the operator asks for (see api.py for the HTTP side). Stdlib only."""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from datetime import datetime
from typing import Any

from shoal.agentkit.server import HttpError as HttpError

from . import backup, lease, pg, tls
from .parameters import ROLE_LEVEL_GUARDED

_GUARDED = "ARRAY[" + ", ".join(pg.quote_literal(n) for n in ROLE_LEVEL_GUARDED) + "]"
# Role- and database-level settings (`ALTER ROLE app SET synchronous_commit = off`, which
# PostgreSQL allows any role for itself) that would weaken durability: reset by the operator.
OVERRIDES_SQL = f"""SELECT coalesce(json_agg(DISTINCT coalesce(r.rolname, 'ALL') || ' in '
 || coalesce(d.datname, 'every database') || ': ' || split_part(c, '=', 1)), '[]')
 FROM pg_db_role_setting s CROSS JOIN unnest(s.setconfig) AS c
 LEFT JOIN pg_roles r ON r.oid = s.setrole LEFT JOIN pg_database d ON d.oid = s.setdatabase
 WHERE split_part(c, '=', 1) = ANY({_GUARDED})"""
RESET_OVERRIDES_SQL = f"""DO $$
DECLARE o record;
BEGIN
  FOR o IN SELECT r.rolname AS role, d.datname AS db, split_part(c, '=', 1) AS name
           FROM pg_db_role_setting s CROSS JOIN unnest(s.setconfig) AS c
           LEFT JOIN pg_roles r ON r.oid = s.setrole
           LEFT JOIN pg_database d ON d.oid = s.setdatabase
           WHERE split_part(c, '=', 1) = ANY({_GUARDED}) LOOP
    IF o.role IS NOT NULL AND o.db IS NOT NULL THEN
      EXECUTE format('ALTER ROLE %I IN DATABASE %I RESET %I', o.role, o.db, o.name);
    ELSIF o.role IS NOT NULL THEN
      EXECUTE format('ALTER ROLE %I RESET %I', o.role, o.name);
    ELSIF o.db IS NOT NULL THEN
      EXECUTE format('ALTER DATABASE %I RESET %I', o.db, o.name);
    ELSE
      EXECUTE format('ALTER ROLE ALL RESET %I', o.name);
    END IF;
  END LOOP;
END $$;
"""

FENCE_FILE = pg.STATE_DIR / "fence.json"
CLONE_MARKER = pg.STATE_DIR / "clone-in-progress"
BOOTSTRAP_MARKER = pg.STATE_DIR / "bootstrap-in-progress"
STATES = ("empty", "bootstrapping", "cloning", "running", "stopped", "failed")
# The format of the `GET /state` answer (its "format" field). Raise it with any change an
# operator reading the previous format would misread: such an operator then counts this
# member as unreachable instead of guessing (the operator's parser: model.py PROBE_FORMAT).
STATE_FORMAT = 1
CRASH_RESTARTS = 3  # restarts after PostgreSQL died on its own, at most, within CRASH_WINDOW
CRASH_WINDOW = 300.0
CRASH_START_ATTEMPTS = 5


def log(msg: str) -> None:
    sys.stderr.write(f"shoal-agent: {msg}\n")
    sys.stderr.flush()


def _postmaster_pid() -> int | None:
    """The PID in the data directory's postmaster.pid (its first line), if any."""
    try:
        return int((pg.DATA_DIR / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


class Agent:
    def __init__(self, member: str) -> None:
        self.member = member
        self._lock = threading.Lock()  # guards the fields below (held briefly)
        self._op = threading.Lock()  # one mutating operation at a time
        self.state = "stopped" if pg.has_data() else "empty"
        self.error: str | None = None
        # What PostgreSQL runs as, as this agent made it (bootstrap/promote: primary; clone,
        # demote, restart: standby). Nothing else can change it (no promote_trigger_file;
        # pg_promote needs the local superuser), so the proxy's role check reads it with no
        # query; every /state probe re-checks it against pg_is_in_recovery().
        self.pg_role: str | None = None
        self.fence = self._load_fence()
        self.proc: subprocess.Popen[bytes] | None = None
        self._expect_exit = False
        self._crashes: list[float] = []  # monotonic times PostgreSQL died on its own
        self._shutting_down = False
        self._stalled: tuple[str, float] | None = None  # (upstream, since) while not streaming
        self._clone_proc: subprocess.Popen[str] | None = None
        self._clone_thread: threading.Thread | None = None
        self._abort = False
        self.lease = lease.Lease()
        self.certificate_serial: int | None = None  # the certificate PostgreSQL serves
        self.api_tls: ssl.SSLContext | None = None  # the API's server side on the control net
        # spec.backup as the operator gave it (agent/backup.py); None: no archiving.
        self.backup: backup.Config | None = backup.load()
        self.base_backup: dict[str, Any] = {"state": "idle"}  # the last base backup job here
        self._backup_proc: subprocess.Popen[str] | None = None

    # ------------------------------------------------------------ bookkeeping

    def _load_fence(self) -> int:
        try:
            return int(json.loads(FENCE_FILE.read_text())["token"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    def check_fence(self, token: int) -> None:
        with self._lock:
            if token < self.fence:
                raise HttpError(409, f"stale fencing token {token}: {self.fence} was already seen")
            if token > self.fence:
                self.fence = token
                try:
                    pg.write_file(FENCE_FILE, json.dumps({"token": token}), 0o600)
                except OSError as e:
                    log(f"cannot persist fencing token: {e}")

    def set_state(self, state: str, error: str | None = None, role: str | None = None) -> None:
        assert state in STATES
        with self._lock:
            self.state, self.error = state, error
            if role is not None or state != "running":
                self.pg_role = role
        log(f"state {state}" + (f": {error}" if error else ""))

    def get_state(self) -> str:
        with self._lock:
            return self.state

    def serving_role(self) -> str | None:
        """`primary` or `standby` while PostgreSQL runs here, else None. No I/O."""
        with self._lock:
            state, role = self.state, self.pg_role
        return role if state == "running" and self.pg_running() else None

    def _note_role(self, role: str) -> None:
        with self._lock:
            if self.state == "running":
                self.pg_role = role

    def wipe(self) -> None:
        if pg.DATA_DIR.exists():
            shutil.rmtree(pg.DATA_DIR, ignore_errors=True)
        pg.DATA_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(pg.DATA_DIR, 0o700)

    # ------------------------------------------------------------ PostgreSQL process

    def pg_running(self) -> bool:
        p = self.proc
        return p is not None and p.poll() is None

    def start_pg(self, timeout: float = 120.0) -> None:
        pg.write_static_config(backup.archive_settings(self.backup))
        self._expect_exit = False
        proc = subprocess.Popen(
            [str(pg.BIN / "postgres"), "-D", str(pg.DATA_DIR)],
            stdin=subprocess.DEVNULL, stdout=sys.stderr, stderr=sys.stderr,
            env=pg._env(), start_new_session=True,
        )  # fmt: skip
        self.proc = proc
        threading.Thread(target=self._watch, args=(proc,), daemon=True).start()
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise pg.PgError(f"postgres exited with code {proc.returncode} during start")
            try:
                pg.psql("SELECT 1", timeout=3, statement_timeout_ms=2000)
            except pg.PgError as e:
                last = str(e)
            else:
                # The answer must come from the postmaster started here: another one still
                # running on this data directory answers too, while ours exits at once
                # ("lock file postmaster.pid already exists").
                owner = _postmaster_pid()
                if owner == proc.pid and proc.poll() is None:
                    return
                last = f"another postmaster (pid {owner}) runs on the data directory"
            time.sleep(0.2)
        raise pg.PgError(f"postgres did not accept connections within {timeout:g}s: {last}")

    def _watch(self, proc: subprocess.Popen[bytes]) -> None:
        code = proc.wait()
        if self.proc is not proc or self._expect_exit:
            return
        error = f"postgres exited unexpectedly with code {code}"
        with self._lock:
            crashed = self.state == "running"
            if crashed:
                self.state, self.error = "stopped", error
        log(error)
        if crashed:
            self._restart_after_crash(proc, error)

    def _restart_after_crash(self, proc: subprocess.Popen[bytes], crash: str) -> None:
        """PostgreSQL died under a running member (OOM kill, PANIC in an auxiliary process,
        its lock file gone): run it again as a standby that follows nothing, as after a
        restart in place. Its data is then visible to the operator again, which decides
        whether it is promoted (it may be the only copy, e.g. just after bootstrap), follows,
        or is re-seeded; it never serves writes on its own. A member that keeps crashing
        stays stopped, and the operator replaces it."""
        now = time.monotonic()
        self._crashes = [t for t in self._crashes if now - t < CRASH_WINDOW] + [now]
        if len(self._crashes) > CRASH_RESTARTS:
            log(f"postgres crashed {len(self._crashes)} times in {CRASH_WINDOW:g}s: left stopped")
            return
        note = f"{crash}; restarted as a standby"
        error = ""
        with self._op:
            for attempt in range(1, CRASH_START_ATTEMPTS + 1):
                # The dead postmaster's children exit once they notice; until they have, a
                # new postmaster refuses the shared memory they still hold.
                time.sleep(1.0)
                with self._lock:
                    still = self.state == "stopped" and self.error == crash
                if self._shutting_down or self.proc is not proc or not still or not pg.has_data():
                    return  # decided otherwise meanwhile: stopped, re-seeded, shutting down
                try:
                    self._start_as_standby()
                except (pg.PgError, OSError) as e:
                    error = str(e)
                    log(f"restart attempt {attempt} after the crash failed: {e}")
                    self.stop_pg(immediate=True)  # one that started but never answered
                    proc = self.proc or proc
                    continue
                self.set_state("running", note, role="standby")
                return
            self.set_state("failed", f"{note} failed {CRASH_START_ATTEMPTS} times: {error}")

    def stop_pg(self, immediate: bool) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        self._expect_exit = True
        proc.send_signal(signal.SIGQUIT if immediate else signal.SIGINT)
        try:
            proc.wait(timeout=10 if immediate else 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    # ------------------------------------------------------------ startup

    def install_tls(self) -> None:
        """At start, before PostgreSQL: the key and certificates from the mounted secret."""
        try:
            if tls.install_from_secret():
                self.certificate_serial = tls.current_serial()
            else:
                log("no tls.pem mounted: PostgreSQL runs without TLS")
        except (tls.TlsError, OSError) as e:
            # A member without its key could serve nothing safely: fail loudly, the
            # operator replaces a member that stays failed.
            self.set_state("failed", f"TLS files: {e}")
            raise

    def renew_certificate(self, cert_pem: str) -> dict[str, Any]:
        """A new certificate for this member's key: written, then loaded by a reload
        (PostgreSQL keeps its connections; a reload that cannot load the files keeps the
        old ones and logs why)."""
        try:
            serial = tls.install_certificate(cert_pem)
        except tls.TlsError as e:
            raise HttpError(400, f"field 'certificate': {e}") from None
        self.certificate_serial = serial
        if self.api_tls is not None:
            tls.reload_api_context(self.api_tls)
        if self.pg_running():
            pg.psql("SELECT pg_reload_conf()", timeout=10)
        return {"certificate_serial": format(serial, "x")}

    def recover_on_start(self) -> None:
        if CLONE_MARKER.exists() or BOOTSTRAP_MARKER.exists():
            log("an interrupted bootstrap/clone left a partial data directory: wiping it")
            self.wipe()
            CLONE_MARKER.unlink(missing_ok=True)
            BOOTSTRAP_MARKER.unlink(missing_ok=True)
        if not pg.has_data():
            self.wipe()
            self.set_state("empty")
            return
        # Existing data (container restarted in place): come back as a standby that follows
        # nothing, so it can never accept a write the operator did not decide on.
        self._restart_as_standby("restart with existing data failed")

    def _start_as_standby(self) -> None:
        """Start PostgreSQL on the data here as a standby that follows nothing."""
        (pg.DATA_DIR / "standby.signal").touch(mode=0o600)
        conf = pg.read_auto_conf()
        conf["primary_conninfo"] = ""
        pg.write_auto_conf(conf)
        pg.write_pgpass()
        self.start_pg()

    def _restart_as_standby(self, failure: str, note: str | None = None) -> None:
        try:
            self._start_as_standby()
            self.set_state("running", note, role="standby")
        except (pg.PgError, OSError) as e:
            self.set_state("failed", f"{failure}: {e}")

    def fence_self(self) -> None:
        """The lease ran out on a primary (lease.py): stop PostgreSQL at once, so no
        backend acknowledges anything more, then run it as a standby that follows nothing.
        The stop comes first and takes no lock: an operation in flight cannot delay it."""
        if self.serving_role() != "primary":
            return
        self.stop_pg(immediate=True)
        self.set_state("stopped", "fenced itself: the lease ran out")
        with self._op:
            if self.get_state() == "stopped" and pg.has_data():
                self._restart_as_standby(
                    "restart as a standby after the lease ran out failed",
                    "fenced itself when the lease ran out; now a standby following nothing",
                )

    # ------------------------------------------------------------ probe

    STATE_SQL = (
        """
SELECT json_build_object(
 'in_recovery', pg_is_in_recovery(),
 'sysid', (SELECT system_identifier::text FROM pg_control_system()),
 'ckpt_tli', (SELECT timeline_id FROM pg_control_checkpoint()),
 'ssn', current_setting('synchronous_standby_names'),
 'conninfo', current_setting('primary_conninfo'),
 'pending', (SELECT coalesce(json_agg(name ORDER BY name), '[]') FROM pg_settings
             WHERE pending_restart),
 'slots', (SELECT coalesce(json_agg(json_build_object('name', slot_name, 'active', active,
             'restart_lsn', pg_wal_lsn_diff(restart_lsn, '0/0')::bigint) ORDER BY slot_name),
             '[]') FROM pg_replication_slots WHERE slot_type = 'physical'),
 'replication', (SELECT coalesce(json_agg(json_build_object(
             'application_name', application_name, 'state', state, 'sync_state', sync_state,
             'flush_lsn', pg_wal_lsn_diff(flush_lsn, '0/0')::bigint,
             'replay_lag_seconds', extract(epoch FROM replay_lag)::float8)
             ORDER BY application_name), '[]') FROM pg_stat_replication),
 'wr', (SELECT json_build_object('status', status, 'tli', received_tli)
        FROM pg_stat_wal_receiver LIMIT 1),
 'receive_lsn', pg_wal_lsn_diff(pg_last_wal_receive_lsn(), '0/0')::bigint,
 'replay_lsn', pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint,
 'replay_age', extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8,
 'flush_lsn', CASE WHEN pg_is_in_recovery() THEN NULL
              ELSE pg_wal_lsn_diff(pg_current_wal_flush_lsn(), '0/0')::bigint END,
 'walfile', CASE WHEN pg_is_in_recovery() THEN NULL
            ELSE pg_walfile_name(pg_current_wal_flush_lsn()) END,
 'archiver', (SELECT json_build_object('failed_count', failed_count,
             'last_archived_wal', last_archived_wal,
             'last_archived_at', extract(epoch FROM last_archived_time)::float8,
             'last_failed_wal', last_failed_wal,
             'last_failed_at', extract(epoch FROM last_failed_time)::float8)
             FROM pg_stat_archiver),
 'backup_waits_for_wal', EXISTS (SELECT 1 FROM pg_stat_activity
             WHERE wait_event = 'BackupWaitWalArchive'),
 'overrides', ("""
        + OVERRIDES_SQL
        + """)
)"""
    )

    def state_body(self) -> dict[str, Any]:
        with self._lock:
            state, error, fence = self.state, self.error, self.fence
        body: dict[str, Any] = {
            "format": STATE_FORMAT, "member": self.member, "state": state, "error": error,
            "role": None,
            "system_identifier": None, "timeline": None, "wal_lsn": None,
            "replay_lsn": None, "receiving": False, "upstream": None, "replication": [],
            "slots": [], "synchronous_standby_names": "", "lag_seconds": None,
            "fence_token": fence, "pending_restart": [], "parameters": {},
            "task_id": os.environ.get("SHOAL_TASK_ID") or None, "history": [],
            "durability_overrides": [], "lease": self.lease.describe(time.monotonic()),
            "stalled_seconds": 0.0,
            "certificate_serial": (
                None if self.certificate_serial is None else format(self.certificate_serial, "x")
            ),
            "archive": None,
            "base_backup": dict(self.base_backup) if self.backup is not None else None,
        }  # fmt: skip
        if state in ("empty", "bootstrapping", "cloning"):
            return body
        try:
            conf = pg.read_auto_conf()
            body["parameters"] = {k: v for k, v in conf.items() if k not in pg.MANAGED_AUTO_KEYS}
        except OSError:
            pass
        if state != "running" or not self.pg_running():
            if pg.has_data():
                try:
                    cd = pg.controldata()
                    body["system_identifier"] = cd.get("Database system identifier")
                    tli = cd.get("Latest checkpoint's TimeLineID")
                    body["timeline"] = int(tli) if tli else None
                    loc = cd.get("Latest checkpoint location")
                    body["wal_lsn"] = pg.lsn_to_int(loc) if loc else None
                except (pg.PgError, ValueError, OSError, subprocess.SubprocessError):
                    pass
            return body
        try:
            s = pg.psql_json(self.STATE_SQL, timeout=2.5, statement_timeout_ms=1500)
        except (pg.PgError, ValueError) as e:
            body["error"] = f"probe query failed: {e}"
            return body
        if self.backup is not None:
            body["archive"] = {
                **(s.get("archiver") or {}),
                **backup.pending(),
                "backup_waits_for_wal": bool(s.get("backup_waits_for_wal")),
            }
        body["system_identifier"] = s["sysid"]
        body["synchronous_standby_names"] = s["ssn"]
        body["pending_restart"] = s["pending"]
        body["slots"] = s["slots"]
        self._note_role("standby" if s["in_recovery"] else "primary")
        if not s["in_recovery"]:
            body["role"] = "primary"
            body["wal_lsn"] = s["flush_lsn"]
            body["timeline"] = int(s["walfile"][:8], 16) if s["walfile"] else s["ckpt_tli"]
            if body["timeline"]:
                body["history"] = pg.timeline_history(int(body["timeline"]))
            body["replication"] = s["replication"]
            body["lag_seconds"] = 0.0
            body["durability_overrides"] = s["overrides"]
            return body
        body["role"] = "standby"
        recv, replay = s["receive_lsn"], s["replay_lsn"]
        lsns = [x for x in (recv, replay) if x is not None]
        body["wal_lsn"] = max(lsns) if lsns else None
        body["replay_lsn"] = replay
        wr = s["wr"] or {}
        body["receiving"] = wr.get("status") == "streaming"
        body["timeline"] = (
            max(s["ckpt_tli"] or 0, wr.get("tli") or 0, pg.wal_timeline() or 0) or None
        )
        body["upstream"] = pg.conninfo_get(s["conninfo"], "host") if s["conninfo"] else None
        body["stalled_seconds"] = self._stall(body["upstream"], body["receiving"])
        if recv is None or (replay is not None and replay >= recv):
            body["lag_seconds"] = 0.0
        else:
            body["lag_seconds"] = s["replay_age"]
        return body

    def _stall(self, upstream: str | None, receiving: bool) -> float:
        """Seconds this standby has been told to follow `upstream` without streaming from
        it, counted from the first probe that saw it so. A walreceiver that keeps failing
        ("requested WAL segment ... has already been removed") is only in the log; this is
        what the operator can see of it."""
        now = time.monotonic()
        if upstream is None or receiving:
            self._stalled = None
            return 0.0
        if self._stalled is None or self._stalled[0] != upstream:
            self._stalled = (upstream, now)
        return round(now - self._stalled[1], 1)

    def role(self) -> str:
        out = pg.psql("SELECT pg_is_in_recovery()", timeout=5, statement_timeout_ms=3000)
        return "standby" if out == "t" else "primary"

    def require_running(self, role: str | None = None) -> None:
        st = self.get_state()
        if st != "running" or not self.pg_running():
            raise HttpError(409, f"member is {st}, not running")
        if role is not None:
            actual = self.role()
            if actual != role:
                raise HttpError(409, f"member is a {actual}, this needs a {role}")

    # ------------------------------------------------------------ operations

    def bootstrap(self, params: dict[str, str]) -> dict[str, Any]:
        st = self.get_state()
        if st not in ("empty", "failed") or pg.has_data():
            raise HttpError(409, f"bootstrap needs an empty member, this one is {st}")
        self.set_state("bootstrapping")
        if self.backup is not None and self.backup.restore_from is not None:
            # From another database's archive: minutes, not seconds; the operator watches
            # the state as for a clone.
            threading.Thread(target=self._restore, args=(params,), daemon=True).start()
            return self.state_body()
        try:
            self.wipe()
            BOOTSTRAP_MARKER.touch()
            self._check_archive_unused()
            r = subprocess.run(
                [str(pg.BIN / "initdb"), "-D", str(pg.DATA_DIR), "-U", "postgres",
                 f"--pwfile={pg.SECRETS_DIR / 'superuser-password'}", "--auth-local=peer",
                 "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
                 "--data-checksums"],
                capture_output=True, text=True, timeout=300, env=pg._env(),
            )  # fmt: skip
            if r.returncode != 0:
                raise pg.PgError(f"initdb failed: {r.stderr.strip()[-500:]}")
            pg.write_pgpass()
            pg.write_auto_conf(dict(params))
            self.start_pg()
            repl = pg.scram_verifier(pg.read_secret("replication-password"))
            app = pg.scram_verifier(pg.read_secret("app-password"))
            pg.psql(
                "SET log_statement = 'none';\n"
                "CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD "
                f"{pg.quote_literal(repl)};\n"
                f"CREATE ROLE app WITH LOGIN PASSWORD {pg.quote_literal(app)};\n"
                # Not its owner: only an owner (or superuser) may `ALTER DATABASE app SET
                # synchronous_commit = off` for every session. It owns the schema it uses.
                "CREATE DATABASE app;\n"
                "GRANT CONNECT, TEMPORARY, CREATE ON DATABASE app TO app;\n",
                timeout=60,
            )
            pg.psql("ALTER SCHEMA public OWNER TO app;\n", timeout=30, db="app")
            BOOTSTRAP_MARKER.unlink(missing_ok=True)
            self.set_state("running", role="primary")
        except (pg.PgError, OSError, subprocess.SubprocessError) as e:
            self.stop_pg(immediate=True)
            self.wipe()
            BOOTSTRAP_MARKER.unlink(missing_ok=True)
            self.set_state("failed", f"bootstrap failed: {e}")
            raise HttpError(500, f"bootstrap failed: {e}") from e
        return self.state_body()

    def _check_archive_unused(self) -> None:
        """Before a new cluster archives its first segment: its place in the bucket holds no
        WAL (barman-cloud-check-wal-archive), so a database declared again under an old name
        never mixes its WAL with an earlier cluster's (whose timelines and segment names
        would collide). The bootstrap fails with the reason; nothing is overwritten."""
        cfg = self.backup
        if cfg is None:
            return
        try:
            backup.run_tool(
                cfg,
                ["barman-cloud-check-wal-archive", *backup.cloud_args(cfg), cfg.destination,
                 cfg.server],
                timeout=backup.LIST_TIMEOUT,
            )  # fmt: skip
        except backup.BackupError as e:
            raise pg.PgError(
                f"the archive {cfg.destination}/{cfg.server} is not empty or not usable ({e}): "
                "it may hold an earlier cluster's WAL; choose another spec.backup.s3.path, "
                "or remove that archive"
            ) from None

    def _restore(self, params: dict[str, str]) -> None:
        """Bootstrap from the archive of `restore_from`: its newest base backup that ended
        before the target, then its WAL replayed to the target (PostgreSQL's archive
        recovery with `recovery_target_time`, or to the end of the archive), then promoted
        onto a new timeline. The roles get this database's passwords."""
        cfg = self.backup
        assert cfg is not None and cfg.restore_from is not None
        try:
            self.wipe()
            BOOTSTRAP_MARKER.touch()
            self._check_archive_unused()
            target = None
            if cfg.restore_to is not None:
                target = datetime.fromisoformat(cfg.restore_to).timestamp()
            chosen = backup.choose(backup.list_backups(cfg, cfg.restore_from), target)
            log(f"restoring base backup {chosen['id']} of {cfg.restore_from}")
            backup.run_tool(
                cfg,
                ["barman-cloud-restore", *backup.cloud_args(cfg), cfg.destination,
                 cfg.restore_from, str(chosen["id"]), str(pg.DATA_DIR)],
            )  # fmt: skip
            os.chmod(pg.DATA_DIR, 0o700)
            for sig in ("standby.signal", "recovery.signal"):
                (pg.DATA_DIR / sig).unlink(missing_ok=True)
            for leftover in ("postmaster.pid", "postmaster.opts"):
                (pg.DATA_DIR / leftover).unlink(missing_ok=True)
            (pg.DATA_DIR / "recovery.signal").touch(mode=0o600)
            conf = {k: v for k, v in pg.read_auto_conf().items() if k not in pg.MANAGED_AUTO_KEYS}
            conf.update(params)
            conf["restore_command"] = backup.RESTORE_COMMAND
            conf["recovery_target_action"] = "promote"
            if cfg.restore_to is not None:
                conf["recovery_target_time"] = cfg.restore_to
            pg.write_auto_conf(conf)
            pg.write_pgpass()
            self.start_pg(timeout=backup.TOOL_TIMEOUT)
            deadline = time.monotonic() + backup.TOOL_TIMEOUT
            while pg.psql("SELECT pg_is_in_recovery()", timeout=5) == "t":
                if time.monotonic() > deadline or not self.pg_running():
                    raise pg.PgError("archive recovery did not end with a promotion")
                time.sleep(0.5)
            repl = pg.scram_verifier(pg.read_secret("replication-password"))
            app = pg.scram_verifier(pg.read_secret("app-password"))
            su = pg.scram_verifier(pg.read_secret("superuser-password"))
            pg.psql(
                "SET log_statement = 'none';\n"
                "ALTER SYSTEM RESET restore_command;\n"
                "ALTER SYSTEM RESET recovery_target_action;\n"
                "ALTER SYSTEM RESET recovery_target_time;\n"
                f"ALTER ROLE postgres PASSWORD {pg.quote_literal(su)};\n"
                f"ALTER ROLE replicator PASSWORD {pg.quote_literal(repl)};\n"
                f"ALTER ROLE app PASSWORD {pg.quote_literal(app)};\n"
                "SELECT pg_reload_conf();\n",
                timeout=60,
            )
            BOOTSTRAP_MARKER.unlink(missing_ok=True)
            self.set_state("running", role="primary")
            log(f"restored from {cfg.restore_from} to {cfg.restore_to or 'the end of its archive'}")
        except (pg.PgError, backup.BackupError, OSError, ValueError,
                subprocess.SubprocessError) as e:  # fmt: skip
            self.stop_pg(immediate=True)
            self.wipe()
            BOOTSTRAP_MARKER.unlink(missing_ok=True)
            self.set_state("failed", f"restore from {cfg.restore_from} failed: {e}")

    # ------------------------------------------------------------ base backups

    def switch_wal(self) -> dict[str, Any]:
        """Close the primary's current WAL segment so that it is archived now: a base
        backup taken on a standby ends only once the segment holding its end is archived
        (`pg_backup_stop` waits for it with archive_mode = always), and that segment is
        complete only when the primary switches."""
        self.require_running("primary")
        # A switch with nothing written since the last one is a no-op, and a standby's
        # backup ending at a segment's very start waits for that (empty) segment: write a
        # record first (a restore point: no transaction, no table), then switch.
        pg.psql("SELECT pg_create_restore_point('shoal-switch')", timeout=10)
        lsn = pg.psql("SELECT pg_switch_wal()", timeout=10)
        return {"switched_at": lsn}

    def start_base_backup(self) -> dict[str, Any]:
        """A base backup of this member (primary or standby) to the archive, in the
        background; its progress is in the state body's `base_backup`."""
        if self.backup is None:
            raise HttpError(409, "this database declares no spec.backup")
        self.require_running()
        with self._lock:
            if self.base_backup.get("state") == "running":
                raise HttpError(409, "a base backup is already running on this member")
            self.base_backup = {"state": "running", "started_at": time.time()}
        threading.Thread(target=self._base_backup, args=(self.backup,), daemon=True).start()
        return self.state_body()

    def _base_backup(self, cfg: backup.Config) -> None:
        job: dict[str, Any] = {"state": "failed"}
        try:
            env = backup.tool_env(cfg)
            proc = subprocess.Popen(
                ["barman-cloud-backup", *backup.cloud_args(cfg), "-h", pg.SOCK_DIR,
                 "-p", str(pg.PORT), "-U", "postgres", "-d", "postgres",
                 "--immediate-checkpoint", cfg.destination, cfg.server],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, env=env,
            )  # fmt: skip
            self._backup_proc = proc
            _, err = proc.communicate()
            self._backup_proc = None
            if proc.returncode != 0:
                tail = " | ".join(ln for ln in err.strip().splitlines()[-3:])[-600:]
                raise backup.BackupError(f"barman-cloud-backup exited {proc.returncode}: {tail}")
            done = [b for b in backup.list_backups(cfg) if b["status"] == "DONE"]
            newest = max(done, key=lambda b: b["end_at"] or 0.0) if done else None
            job = {"state": "succeeded", "backup_id": newest["id"] if newest else None}
            try:
                backup.run_tool(
                    cfg,
                    ["barman-cloud-backup-delete", *backup.cloud_args(cfg),
                     "--retention-policy", cfg.retention, cfg.destination, cfg.server],
                )  # fmt: skip
            except backup.BackupError as e:
                job["retention_error"] = str(e)
        except (backup.BackupError, OSError, subprocess.SubprocessError) as e:
            job = {"state": "failed", "error": str(e)}
        with self._lock:
            started = self.base_backup.get("started_at")
            self.base_backup = {**job, "started_at": started, "finished_at": time.time()}
        log(f"base backup {job['state']}: {job.get('backup_id') or job.get('error')}")

    def clone(self, source: str, sysid: str, slot: str, params: dict[str, str]) -> dict[str, Any]:
        st = self.get_state()
        if st not in ("empty", "failed"):
            raise HttpError(409, f"clone needs an empty or failed member, this one is {st}")
        self._abort = False
        self.set_state("cloning")
        t = threading.Thread(target=self._clone, args=(source, sysid, slot, params), daemon=True)
        self._clone_thread = t
        t.start()
        return self.state_body()

    def _clone(self, source: str, sysid: str, slot: str, params: dict[str, str]) -> None:
        try:
            self.wipe()
            CLONE_MARKER.touch()
            pg.write_pgpass()
            env = pg._env()
            env["PGAPPNAME"] = f"shoal_clone_{slot}"
            env["PGCONNECT_TIMEOUT"] = "10"
            env.update(tls.client_env())  # the source's name and certificate, verified
            proc = subprocess.Popen(
                [str(pg.BIN / "pg_basebackup"), "-h", source, "-p", str(pg.PORT),
                 "-U", "replicator", "-D", str(pg.DATA_DIR), "-X", "stream",
                 "--checkpoint=fast", "-w"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, env=env,
            )  # fmt: skip
            self._clone_proc = proc
            _, err = proc.communicate()
            self._clone_proc = None
            if self._abort:
                raise pg.PgError("clone aborted by /stop")
            if proc.returncode != 0:
                raise pg.PgError(f"pg_basebackup from {source} failed: {err.strip()[-500:]}")
            got = pg.controldata().get("Database system identifier")
            if got != sysid:
                raise pg.PgError(
                    f"system identifier mismatch: {source} has {got}, expected {sysid}; "
                    "refusing a member with a foreign identity"
                )
            for sig in ("standby.signal", "recovery.signal"):
                (pg.DATA_DIR / sig).unlink(missing_ok=True)
            (pg.DATA_DIR / "standby.signal").touch(mode=0o600)
            if self.backup is not None:
                backup.mark_copied_wal_archived(pg.DATA_DIR / "pg_wal")
            conf = dict(params)
            conf["primary_conninfo"] = pg.primary_conninfo(source, slot)
            conf["primary_slot_name"] = slot
            pg.write_auto_conf(conf)
            if self._abort:
                raise pg.PgError("clone aborted by /stop")
            self.start_pg()
            if self._abort:
                raise pg.PgError("clone aborted by /stop")
            CLONE_MARKER.unlink(missing_ok=True)
            self.set_state("running", role="standby")
        except (pg.PgError, OSError, subprocess.SubprocessError, ValueError) as e:
            self.stop_pg(immediate=True)
            self.wipe()
            CLONE_MARKER.unlink(missing_ok=True)
            self.set_state("failed", f"clone failed: {e}")

    def follow(self, upstream: str | None, slot: str | None) -> dict[str, Any]:
        self.require_running("standby")
        if upstream is None:
            sql = "ALTER SYSTEM SET primary_conninfo = '';\n"
        else:
            if slot is None:
                raise HttpError(400, "missing field 'slot'")
            ci = pg.primary_conninfo(upstream, slot)
            sql = f"ALTER SYSTEM SET primary_conninfo = {pg.quote_literal(ci)};\n"
        if slot is not None:
            sql += f"ALTER SYSTEM SET primary_slot_name = {pg.quote_literal(slot)};\n"
        pg.psql(sql + "SELECT pg_reload_conf();", timeout=10)
        if upstream is None:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                n = pg.psql("SELECT count(*) FROM pg_stat_wal_receiver", timeout=3,
                            statement_timeout_ms=2000)  # fmt: skip
                if n == "0":
                    break
                time.sleep(0.1)
        else:
            time.sleep(0.2)
        return self.state_body()

    def promote(self, ssn: str | None = None) -> dict[str, Any]:
        """Promote this standby. With `ssn`, the synchronous standby list is put in force
        first: on a standby `synchronous_standby_names` is reloaded like on a primary (the
        checkpointer, which runs during recovery, publishes it to shared memory), so the
        first commit after `pg_promote` already waits for a standby. A list that does not
        take effect refuses the promotion rather than promoting asynchronous."""
        self.require_running("standby")
        if ssn is not None:
            self._set_sync_list(ssn)
        out = pg.psql("SELECT pg_promote(true, 60)", timeout=75)
        if out != "t":
            raise HttpError(500, "promotion did not complete within 60 s")
        self._note_role("primary")
        pg.psql(
            "ALTER SYSTEM RESET primary_conninfo;\nALTER SYSTEM RESET primary_slot_name;\n"
            "SELECT pg_reload_conf();",
            timeout=10,
        )
        return self.state_body()

    def _set_sync_list(self, ssn: str, timeout: float = 5.0) -> None:
        """ALTER SYSTEM + reload, then wait until a new session sees the value (the
        postmaster has re-read the file, and so have the other children it signalled)."""
        current = "SELECT current_setting('synchronous_standby_names')"
        if pg.psql(current, timeout=3, statement_timeout_ms=2000) == ssn:
            return
        pg.psql(
            f"ALTER SYSTEM SET synchronous_standby_names = {pg.quote_literal(ssn)};\n"
            "SELECT pg_reload_conf();",
            timeout=10,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pg.psql(current, timeout=3, statement_timeout_ms=2000) == ssn:
                # Reload signals reach the checkpointer with the other children; give it
                # the moment it needs to process its latch.
                time.sleep(0.1)
                return
            time.sleep(0.05)
        raise HttpError(500, f"synchronous_standby_names did not become {ssn!r}")

    def demote(self) -> dict[str, Any]:
        self.require_running("primary")
        self._note_role("standby")  # from now on the proxy must not send clients here
        try:
            self.stop_pg(immediate=False)
            loc = pg.controldata().get("Latest checkpoint location", "")
            final = pg.lsn_to_int(loc)
            (pg.DATA_DIR / "standby.signal").touch(mode=0o600)
            conf = pg.read_auto_conf()
            conf["primary_conninfo"] = ""
            conf.pop("primary_slot_name", None)
            pg.write_auto_conf(conf)
            self.start_pg()
            self._note_role("standby")
        except (pg.PgError, OSError, ValueError, subprocess.SubprocessError) as e:
            self.set_state("failed", f"demote failed: {e}")
            raise HttpError(500, f"demote failed: {e}") from e
        body = self.state_body()
        body["final_lsn"] = final
        return body

    def configure(self, params: dict[str, str] | None, ssn: str | None) -> dict[str, Any]:
        self.require_running()
        sql = ""
        if params is not None:
            current = {k for k in pg.read_auto_conf() if k not in pg.MANAGED_AUTO_KEYS}
            for k in sorted(current - set(params)):
                sql += f"ALTER SYSTEM RESET {k};\n"
            for k, v in params.items():
                sql += f"ALTER SYSTEM SET {k} = {pg.quote_literal(v)};\n"
        if ssn is not None:
            sql += f"ALTER SYSTEM SET synchronous_standby_names = {pg.quote_literal(ssn)};\n"
        if self.role() == "primary":
            pg.psql(RESET_OVERRIDES_SQL, timeout=15)
        if sql:
            try:
                pg.psql(sql + "SELECT pg_reload_conf();", timeout=15)
            except pg.PgError as e:
                raise HttpError(400, f"configure refused: {e}") from e
            deadline = time.monotonic() + 3
            while ssn is not None and time.monotonic() < deadline:
                cur = pg.psql("SELECT current_setting('synchronous_standby_names')", timeout=3)
                if cur == ssn:
                    break
                time.sleep(0.1)
            time.sleep(0.2)
        return self.state_body()

    def slots(self, wanted: list[str]) -> dict[str, Any]:
        self.require_running("primary")
        rows = pg.psql(
            "SELECT slot_name || ' ' || active FROM pg_replication_slots "
            "WHERE slot_type = 'physical'",
            timeout=10,
        )
        have = {ln.split()[0]: ln.split()[1] == "true" for ln in rows.splitlines() if ln}
        sql, kept = "", []
        for name in wanted:
            if name not in have:
                sql += (
                    f"SELECT pg_create_physical_replication_slot({pg.quote_literal(name)}, true);\n"
                )
        for name, active in sorted(have.items()):
            if name in wanted:
                continue
            if active:
                kept.append(name)
            else:
                sql += f"SELECT pg_drop_replication_slot({pg.quote_literal(name)});\n"
        if sql:
            pg.psql(sql, timeout=15)
        after = pg.psql(
            "SELECT slot_name FROM pg_replication_slots WHERE slot_type = 'physical' "
            "ORDER BY slot_name",
            timeout=10,
        )
        return {"slots": [s for s in after.splitlines() if s], "kept_active": kept}

    def stop(self) -> dict[str, Any]:
        if self.get_state() == "cloning":
            self._abort = True
            cp = self._clone_proc
            if cp is not None and cp.poll() is None:
                cp.kill()
            self.stop_pg(immediate=True)
            t = self._clone_thread
            if t is not None:
                t.join(timeout=30)
            return self.state_body()
        self.stop_pg(immediate=True)
        self.set_state("stopped", None)
        return self.state_body()

    def shutdown(self) -> None:
        self._shutting_down = True
        self._abort = True
        bp = self._backup_proc
        if bp is not None and bp.poll() is None:
            bp.kill()
        cp = self._clone_proc
        if cp is not None and cp.poll() is None:
            cp.kill()
        self.stop_pg(immediate=False)
