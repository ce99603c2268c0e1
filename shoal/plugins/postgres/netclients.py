"""Small PostgreSQL clients that run inside a container on a database's network, where the
members' names resolve: what a client saw, for the tests, the benchmarks and the chaos
suite. The operator image has them (and psycopg):

    docker run -i --network shoal-DB --entrypoint /opt/shoal/venv/bin/python IMAGE \
        -m shoal.plugins.postgres.netclients KIND < cfg.json

`launch` starts one from the host; its configuration is one JSON line on stdin, so the
password never appears on a command line (clients.py starts them and reads what they print,
for the tests and the benchmarks). Kinds and what they print on stdout:

  ids          {uri, table, seconds, start?}   one acknowledged id per line
  transitions  {uri, seconds}                  ok/last/err/beat lines (bench.failover)
  identity     {uri, table, seconds}           one JSON object per acknowledged write with
                                               the address of the server that acknowledged it
  sampler      {hosts, password, seconds}      one JSON object per sample of each member's
                                               pg_is_in_recovery() and synchronous list

Every kind also takes `ca`, the database's CA certificate (`shoal credentials --json`):
the URIs shoal prints ask for `sslmode=verify-full`, and the client verifies the members'
certificates against it.

Errors go to stderr as `# Type: message`, one line each.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

PYTHON = "/opt/shoal/venv/bin/python"
MODULE = "shoal.plugins.postgres.netclients"


def launch(
    network: str,
    image: str,
    kind: str,
    cfg: dict[str, Any],
    name: str,
    label: str,
    stderr: int = subprocess.PIPE,
) -> subprocess.Popen[str]:
    """Start a client container (removed when it exits) and hand it its configuration.
    With `stderr=PIPE` the caller must read it (a full pipe stalls the client)."""
    proc = subprocess.Popen(
        ["docker", "run", "--rm", "-i", "--name", name, "--label", f"shoal.role={label}",
         "--network", network, "--entrypoint", PYTHON, image,
         "-u", "-m", MODULE, kind],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True,
    )  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(cfg) + "\n")
    proc.stdin.close()
    return proc


# ------------------------------------------------------------ inside the container
def _error(e: BaseException) -> None:
    print(f"# {type(e).__name__}: {e}".replace("\n", " ")[:300], file=sys.stderr, flush=True)


def _cancel(conn: Any) -> None:
    try:
        conn.cancel()
    except Exception as e:  # a cancel to a server that is gone may fail: that is fine
        _error(e)


def _close(conn: Any) -> None:
    try:
        if conn is not None:
            conn.close()
    except Exception:  # closing a broken connection may fail too
        pass


def reconnecting(
    connect: Callable[[], Any],
    step: Callable[[Any], None],
    seconds: float,
    backoff: float,
    on_error: Callable[[BaseException], None] = _error,
) -> None:
    """Call `step(conn)` until `seconds` have passed, connecting (again) whenever there is
    no usable connection; an error closes the connection and waits `backoff`."""
    conn = None
    end = time.time() + seconds
    while time.time() < end:
        try:
            if conn is None or conn.closed:
                conn = connect()
            step(conn)
        except Exception as e:
            on_error(e)
            _close(conn)
            conn = None
            time.sleep(backoff)
    _close(conn)


# A server cut off mid-statement never answers: without these a client would wait on its
# socket forever (a partition drops packets, nothing resets the connection).
DEAD_SERVER: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 2, "keepalives_interval": 1,
               "keepalives_count": 2, "tcp_user_timeout": 4000}  # fmt: skip


CA_FILE = "/tmp/shoal-ca.crt"


def tls_options(cfg: dict[str, Any]) -> dict[str, Any]:
    """libpq options that verify the server against `cfg["ca"]` (written to a file once)."""
    ca = cfg.get("ca")
    if not ca:
        return {}
    with open(CA_FILE, "w") as f:
        f.write(str(ca))
    return {"sslrootcert": CA_FILE}


def _connector(cfg: dict[str, Any], table: str | None, **kw: Any) -> Callable[[], Any]:
    import psycopg

    tls = tls_options(cfg)

    def connect() -> Any:
        conn = psycopg.connect(cfg["uri"], autocommit=True, **DEAD_SERVER, **tls, **kw)
        conn.execute("SET statement_timeout = 5000")
        if table is not None:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (id bigint primary key)")
        return conn

    return connect


def run_ids(cfg: dict[str, Any]) -> None:
    """Insert 1, 2, 3, ... printing each id whose INSERT returned. With `cancel_after` the
    client cancels a statement that has not returned by then, as drivers' query timeouts do
    (a cancel request, not statement_timeout): a commit whose wait for the synchronous
    standbys is cancelled returns *success* with only a WARNING."""
    table = cfg["table"]
    state = {"i": int(cfg.get("start", 0))}
    cancel_after = cfg.get("cancel_after")

    def step(conn: Any) -> None:
        state["i"] += 1
        timer = None
        if cancel_after is not None:
            timer = threading.Timer(float(cancel_after), _cancel, args=(conn,))
            timer.start()
        try:
            conn.execute(f"INSERT INTO {table} VALUES (%s)", (state["i"],))
        finally:
            if timer is not None:
                timer.cancel()
        print(state["i"], flush=True)

    reconnecting(_connector(cfg, table, connect_timeout=2), step, cfg["seconds"], 0.2)


def run_identity(cfg: dict[str, Any]) -> None:
    table = cfg["table"]
    state = {"i": 0}

    def step(conn: Any) -> None:
        state["i"] += 1
        started = time.time()
        row = conn.execute(
            f"INSERT INTO {table} VALUES (%s) RETURNING host(inet_server_addr())", (state["i"],)
        ).fetchone()
        out = {"id": state["i"], "addr": row[0], "started": started, "acked": time.time()}
        print(json.dumps(out), flush=True)

    reconnecting(_connector(cfg, table, connect_timeout=2), step, cfg["seconds"], 0.1)


def run_transitions(cfg: dict[str, Any]) -> None:
    """Prints only transitions, so that thousands of inserts a second stay cheap to follow:
    `ok <t_sent> <t_acked> <host> <n>` (first ok after an error or on another host),
    `last <t_sent> <t_acked> <host> <n>` (the last ok before an error), `err <t> <message>`
    (first error after an ok), `beat <t> <n>` (once a second: acknowledged so far)."""
    import psycopg

    st: dict[str, Any] = {"n": 0, "prev_ok": None, "prev_err": True, "beat": time.time() + 1}
    tls = tls_options(cfg)

    def connect() -> Any:
        # DEAD_SERVER: after a partition the old primary never answers (bench.node_loss hung
        # on its socket for minutes without it).
        conn = psycopg.connect(cfg["uri"], autocommit=True, connect_timeout=2, **DEAD_SERVER, **tls)
        conn.execute("SET statement_timeout = 5000")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_failover "
            "(id bigserial primary key, t double precision)"
        )
        return conn

    def beat(t: float) -> None:
        if t >= st["beat"]:
            print(f"beat {t:.6f} {st['n']}", flush=True)
            st["beat"] = t + 1

    def step(conn: Any) -> None:
        t0 = time.time()
        host = conn.info.host
        conn.execute("INSERT INTO bench_failover (t) VALUES (%s)", (t0,))
        t1 = time.time()
        st["n"] += 1
        prev = st["prev_ok"]
        if st["prev_err"] or prev is None or prev[2] != host:
            print(f"ok {t0:.6f} {t1:.6f} {host} {st['n']}", flush=True)
        st["prev_ok"], st["prev_err"] = (t0, t1, host), False
        beat(t1)

    def on_error(e: BaseException) -> None:
        t1 = time.time()
        if not st["prev_err"]:
            prev = st["prev_ok"]
            if prev is not None:
                print(f"last {prev[0]:.6f} {prev[1]:.6f} {prev[2]} {st['n']}", flush=True)
            msg = f"{type(e).__name__}: {e}".replace("\n", " ")[:200]
            print(f"err {t1:.6f} {msg}", flush=True)
        st["prev_err"] = True
        beat(t1)

    reconnecting(connect, step, cfg["seconds"], 0.05, on_error)


def run_sampler(cfg: dict[str, Any]) -> None:
    """Every ~20 ms, each host's (in recovery, synchronous_standby_names), one thread each."""
    import psycopg

    lock = threading.Lock()
    tls = tls_options(cfg)
    if tls:
        tls["sslmode"] = "verify-full"

    def sample(host: str) -> None:
        def connect() -> Any:
            conn = psycopg.connect(
                host=host, port=5432, user="app", dbname="app", password=cfg["password"],
                autocommit=True, connect_timeout=1, **tls,
            )  # fmt: skip
            conn.execute("SET statement_timeout = 500")
            return conn

        def step(conn: Any) -> None:
            t0 = time.time()
            row = conn.execute(
                "SELECT pg_is_in_recovery(), current_setting('synchronous_standby_names')"
            ).fetchone()
            line = json.dumps({"t": time.time(), "m": host, "recovery": row[0], "ssn": row[1]})
            with lock:
                print(line, flush=True)
            time.sleep(max(0.0, 0.02 - (time.time() - t0)))

        reconnecting(connect, step, cfg["seconds"], 0.02, lambda e: None)

    threads = [threading.Thread(target=sample, args=(h,)) for h in cfg["hosts"]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


KINDS: dict[str, Callable[[dict[str, Any]], None]] = {
    "ids": run_ids,
    "identity": run_identity,
    "transitions": run_transitions,
    "sampler": run_sampler,
}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in KINDS:
        print(f"usage: python -m {MODULE} {{{','.join(KINDS)}}}", file=sys.stderr)
        return 2
    KINDS[argv[0]](json.loads(sys.stdin.readline()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
