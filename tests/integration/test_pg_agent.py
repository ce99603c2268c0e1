"""The PostgreSQL member agent, driven over HTTP against real member containers.

Plain `docker run` on a user-defined bridge network (no Swarm needed): secrets are
bind-mounted files here only (production uses Docker secrets). The tests in this module run
in order on one set of containers: bootstrap, clone, sync commit, switchover, fencing.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shoal import names
from shoal.platform import images
from shoal.plugins.postgres.plugin import PROBE_TIMEOUT, PostgresPlugin

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SECRET_FILES = ("superuser-password", "replication-password", "app-password", "agent-token")


def docker(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and r.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {r.stderr.strip()}")
    return r


def member_image() -> str:
    """The member image for this tree, built from the very context `shoal images build` uses
    (shoal/platform/images.py) but alone (no operator image), tagged by that context's hash
    so that a changed agent is rebuilt."""
    context = images.member_context(REPO, PostgresPlugin.image_recipe, names.IMAGE_BASE)
    tag = f"agtest/postgres:{context.digest()}"
    if docker("image", "inspect", tag, check=False).returncode == 0:
        return tag
    with tempfile.TemporaryDirectory(prefix="agtest-ctx-") as tmp:
        context.materialise(Path(tmp))
        build_args = [f"--build-arg={k}={v}" for k, v in sorted(context.build_args.items())]
        docker("build", "-q", "--label", "agtest=1", *build_args, "-t", tag, tmp, timeout=900)
    return tag


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 60, every: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except (AssertionError, OSError) as e:
            last = e
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


@dataclass
class Member:
    name: str  # container name == host name on the network
    url: str
    agent_token: str

    @property
    def slot(self) -> str:
        return self.name.replace("-", "_")

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        auth: str | None = "ok",
        raw: bytes | None = None,
    ) -> tuple[int, dict[str, Any]]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if auth == "ok":
            req.add_header("Authorization", f"Bearer {self.agent_token}")
        elif auth is not None:
            req.add_header("Authorization", auth)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=90) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def post(self, path: str, body: dict[str, Any], expect: int = 200) -> dict[str, Any]:
        status, out = self.call("POST", path, body)
        assert status == expect, f"POST {path} on {self.name}: {status} {out}"
        return out

    def state(self) -> dict[str, Any]:
        status, out = self.call("GET", "/state")
        assert status == 200, out
        return out

    def psql(self, sql: str, db: str = "app", timeout: int = 30) -> str:
        r = docker(
            "exec",
            "-u",
            "postgres",
            self.name,
            "psql",
            "-X",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            db,
            "-c",
            sql,
            timeout=timeout,
        )
        return r.stdout.strip()


@dataclass
class Cluster:
    prefix: str
    network: str
    members: list[Member]
    image: str
    secrets_dir: Path
    token: int = 10

    def next_token(self) -> int:
        self.token += 1
        return self.token


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if shutil.which("docker") is None or docker("info", check=False).returncode != 0:
        pytest.fail("integration tests need a Docker engine: run `make test` (it starts one)")
    image = member_image()
    prefix = "agtest-" + secrets.token_hex(3)
    network = f"{prefix}-net"
    secrets_dir = Path(tempfile.mkdtemp(prefix=f"{prefix}-secrets-"))
    secrets_dir.chmod(0o755)
    for f in SECRET_FILES:
        (secrets_dir / f).write_text(secrets.token_urlsafe(24) + "\n")
        (secrets_dir / f).chmod(0o644)
    token = (secrets_dir / "agent-token").read_text().strip()
    names = [f"{prefix}-{i}" for i in (1, 2, 3, 4)]
    try:
        docker("network", "create", "--label", "agtest=1", network)
        members = []
        for n in names:
            docker(
                "run",
                "-d",
                "--name",
                n,
                "--hostname",
                n,
                "--network",
                network,
                "--label",
                "agtest=1",
                "-e",
                "SHOAL_DATABASE=agtest",
                "-e",
                f"SHOAL_MEMBER={n}",
                "-v",
                f"{secrets_dir}:/run/secrets:ro",
                "-p",
                "127.0.0.1::8008",
                image,
            )
            port = docker("port", n, "8008/tcp").stdout.splitlines()[0].rsplit(":", 1)[1]
            members.append(Member(n, f"http://127.0.0.1:{port}", token))
        for m in members:
            wait_for(f"{m.name} agent", lambda: m.call("GET", "/health", auth=None)[0] == 200)  # noqa: B023
        yield Cluster(prefix, network, members, image, secrets_dir)
    finally:
        for n in names:
            r = docker("logs", "--tail", "40", n, check=False)
            if r.returncode == 0:
                print(f"---- {n}\n{r.stdout}{r.stderr}")
            docker("rm", "-f", n, check=False)
        docker("network", "rm", network, check=False)
        shutil.rmtree(secrets_dir, ignore_errors=True)


def test_health_auth_and_validation(cluster: Cluster) -> None:
    m = cluster.members[0]
    assert m.call("GET", "/health", auth=None) == (200, {"ok": True})
    assert m.call("GET", "/state", auth=None)[0] == 401
    assert m.call("GET", "/state", auth="Bearer nope")[0] == 401
    status, out = m.call("POST", "/bootstrap", {"token": 1}, auth="Bearer wrong")
    assert status == 401 and "error" in out
    status, out = m.call("POST", "/bootstrap", raw=b"{not json")
    assert status == 400 and "JSON" in out["error"]
    status, out = m.call("POST", "/bootstrap", {"parameters": {}})
    assert status == 400 and "'token'" in out["error"]
    status, out = m.call("POST", "/clone", {"token": 1, "source": "x", "slot": "s"})
    assert status == 400 and "system_identifier" in out["error"]
    assert "Traceback" not in json.dumps(out)
    st = m.state()
    assert st["state"] == "empty" and st["role"] is None and st["member"] == m.name


def test_bootstrap(cluster: Cluster) -> None:
    m1 = cluster.members[0]
    st = m1.post("/bootstrap", {"token": cluster.next_token(), "parameters": {"work_mem": "8MB"}})
    assert st["state"] == "running" and st["role"] == "primary"
    assert st["system_identifier"] and st["system_identifier"].isdigit()
    assert st["timeline"] == 1 and isinstance(st["wal_lsn"], int)
    assert st["parameters"] == {"work_mem": "8MB"}
    assert m1.psql("SHOW work_mem") == "8MB"
    assert m1.psql("SELECT rolreplication FROM pg_roles WHERE rolname='replicator'") == "t"
    # the app role does not own its database (it could set durability for every session),
    # it owns the schema it works in
    assert m1.psql("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname='app'") == (
        "postgres"
    )
    assert m1.psql("SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname='public'") == (
        "app"
    )
    hba = m1.psql(
        "SELECT string_agg(coalesce(address,'') || '/' || coalesce(netmask,''), ' ') "
        "FROM pg_hba_file_rules WHERE type='host'"
    )
    assert "0.0.0.0" not in hba and "127.0.0.1" not in hba
    # no password in the environment or on a command line
    ps = docker("exec", m1.name, "ps", "-eo", "args").stdout
    env = docker("exec", m1.name, "env").stdout
    for f in SECRET_FILES:
        pw = (cluster.secrets_dir / f).read_text().strip()
        assert pw not in ps and pw not in env
        assert pw not in docker("logs", m1.name).stderr
    # a second bootstrap is refused
    status, out = m1.call("POST", "/bootstrap", {"token": cluster.next_token()})
    assert status == 409, out
    m1.psql("CREATE TABLE t (id int PRIMARY KEY, note text); INSERT INTO t VALUES (1, 'one')")


def test_slots(cluster: Cluster) -> None:
    m1, m2, m3, _ = cluster.members
    want = [m2.slot, m3.slot, "junk_slot"]
    out = m1.post("/slots", {"token": cluster.next_token(), "slots": want})
    assert sorted(out["slots"]) == sorted(want) and out["kept_active"] == []
    out = m1.post("/slots", {"token": cluster.next_token(), "slots": [m2.slot, m3.slot]})
    assert sorted(out["slots"]) == sorted([m2.slot, m3.slot])
    names = {s["name"] for s in m1.state()["slots"]}
    assert names == {m2.slot, m3.slot}
    status, out = m1.call("POST", "/slots", {"token": cluster.next_token(), "slots": ["Bad-Name"]})
    assert status == 400


def test_clone_standbys(cluster: Cluster) -> None:
    m1, m2, m3, _ = cluster.members
    sysid = m1.state()["system_identifier"]
    for m in (m2, m3):
        st = m.post(
            "/clone",
            {
                "token": cluster.next_token(),
                "source": m1.name,
                "system_identifier": sysid,
                "slot": m.slot,
                "parameters": {"work_mem": "8MB"},
            },
            expect=202,
        )
        assert st["state"] in ("cloning", "running")
    for m in (m2, m3):
        st = wait_for(
            f"{m.name} running",
            lambda: m.state()["state"] == "running" and m.state(),  # noqa: B023  # noqa: B023
            timeout=120,
        )
        assert st["role"] == "standby" and st["system_identifier"] == sysid
        assert st["upstream"] == m1.name
        wait_for(f"{m.name} streaming", lambda: m.state()["receiving"])  # noqa: B023
    m1.psql("INSERT INTO t SELECT g, 'row' FROM generate_series(2, 100) g")
    for m in (m2, m3):
        wait_for(f"rows on {m.name}", lambda: m.psql("SELECT count(*) FROM t") == "100")  # noqa: B023
    for m in (m1, m2):
        # within the operator's probe timeout, or the operator would count it unreachable
        t0 = time.monotonic()
        st = m.state()
        assert time.monotonic() - t0 < (PROBE_TIMEOUT.total or 0), "the probe must answer"
    st = m1.state()
    assert {r["application_name"] for r in st["replication"]} == {m2.slot, m3.slot}
    assert all(s["active"] for s in st["slots"])
    st2 = m2.state()
    assert st2["wal_lsn"] <= st["wal_lsn"] and st2["lag_seconds"] is not None
    # a clone can be refused only when empty/failed
    status, _ = m2.call(
        "POST",
        "/clone",
        {
            "token": cluster.next_token(),
            "source": m1.name,
            "system_identifier": sysid,
            "slot": m2.slot,
        },
    )
    assert status == 409


def test_role_checks_for_the_proxy(cluster: Cluster) -> None:
    """GET /primary and /replica: unauthenticated, 200 only for the role asked, else 503."""
    m1, m2, _, m4 = cluster.members
    assert m1.call("GET", "/primary", auth=None) == (200, {"role": "primary"})
    assert m1.call("GET", "/replica", auth=None) == (503, {"role": "primary"})
    assert m2.call("GET", "/replica", auth=None) == (200, {"role": "replica"})
    assert m2.call("GET", "/primary", auth=None) == (503, {"role": "replica"})
    assert m4.call("GET", "/primary", auth=None) == (503, {"role": None})  # empty member
    assert m4.call("GET", "/replica", auth="Bearer wrong") == (503, {"role": None})


def test_clone_wrong_system_identifier(cluster: Cluster) -> None:
    m1, m4 = cluster.members[0], cluster.members[3]
    m4.post(
        "/clone",
        {
            "token": cluster.next_token(),
            "source": m1.name,
            "system_identifier": "1234567890",
            "slot": m4.slot,
        },
        expect=202,
    )
    st = wait_for("clone failure", lambda: m4.state()["state"] == "failed" and m4.state(), 120)
    assert "identifier" in st["error"]
    assert st["system_identifier"] is None and st["role"] is None
    ls = docker("exec", m4.name, "ls", "-A", "/var/lib/shoal/pgdata").stdout.strip()
    assert ls == ""
    # a failed member may clone again (here from an unreachable source: fails again, cleanly)
    m4.post(
        "/clone",
        {
            "token": cluster.next_token(),
            "source": f"{cluster.prefix}-nowhere",
            "system_identifier": "1234567890",
            "slot": m4.slot,
        },
        expect=202,
    )
    st = wait_for("clone failure", lambda: m4.state()["state"] == "failed" and m4.state(), 60)
    assert "pg_basebackup" in st["error"]


def test_stop_aborts_a_clone(cluster: Cluster) -> None:
    m4 = cluster.members[3]
    # a black-holed source: pg_basebackup hangs in connect until /stop kills it
    m4.post(
        "/clone",
        {"token": cluster.next_token(), "source": "10.255.255.1",
         "system_identifier": "1234567890", "slot": m4.slot},
        expect=202,
    )  # fmt: skip
    assert m4.state()["state"] == "cloning"
    st = m4.post("/stop", {"token": cluster.next_token()})
    # "aborted", not pg_basebackup's own connection timeout: /stop ended the clone (no
    # bound on how fast: a loaded machine answers late, and that is not what is tested)
    assert st["state"] == "failed" and "aborted" in st["error"], st
    ls = docker("exec", m4.name, "ls", "-A", "/var/lib/shoal/pgdata").stdout.strip()
    assert ls == ""


def test_stale_fencing_token(cluster: Cluster) -> None:
    m1 = cluster.members[0]
    current = m1.state()["fence_token"]
    status, out = m1.call("POST", "/configure", {"token": current - 1, "parameters": {}})
    assert status == 409 and "stale fencing token" in out["error"]
    assert m1.state()["fence_token"] == current


def test_sync_commit_waits_without_standby(cluster: Cluster) -> None:
    m1, m2, m3, _ = cluster.members
    st = m1.post(
        "/configure",
        {
            "token": cluster.next_token(),
            "parameters": {"work_mem": "8MB"},
            "synchronous_standby_names": "ANY 1 (nobody_a, nobody_b)",
        },
    )
    assert st["synchronous_standby_names"] == "ANY 1 (nobody_a, nobody_b)"
    r = docker(
        "exec",
        "-u",
        "postgres",
        m1.name,
        "timeout",
        "20",
        "psql",
        "-X",
        "-d",
        "app",
        "-c",
        "INSERT INTO t VALUES (1000, 'waits')",
        check=False,
    )
    # Never acknowledged: the commit waits for a standby, and once it has waited
    # SYNC_WAIT_LIMIT the agent terminates its backend (agent/syncguard.py), which sends the
    # client no success; a cancelled wait would have reported the INSERT done.
    assert r.returncode not in (0, 124), f"acknowledged, or not ended: {r.stdout} {r.stderr}"
    assert "INSERT" not in r.stdout, r.stdout
    assert "terminating connection due to administrator command" in r.stderr, r.stderr
    # naming the real standbys releases the waiting commit
    st = m1.post(
        "/configure",
        {
            "token": cluster.next_token(),
            "synchronous_standby_names": f"ANY 1 ({m2.slot}, {m3.slot})",
        },
    )
    wait_for(
        "released commit on m2", lambda: m2.psql("SELECT count(*) FROM t WHERE id=1000") == "1"
    )
    wait_for(
        "quorum standbys",
        lambda: {r["sync_state"] for r in m1.state()["replication"]} == {"quorum"},
    )
    m1.psql("INSERT INTO t VALUES (1001, 'sync')", timeout=10)
    # user parameters: removed ones are reset, restart-only ones are reported
    st = m1.post(
        "/configure", {"token": cluster.next_token(), "parameters": {"max_connections": 150}}
    )
    assert st["parameters"] == {"max_connections": "150"}
    assert "max_connections" in st["pending_restart"]
    assert m1.psql("SHOW work_mem") == "4MB"
    status, out = m1.call(
        "POST",
        "/configure",
        {"token": cluster.next_token(), "parameters": {"wal_level": "minimal"}},
    )
    assert status == 400 and "wal_level" in out["error"]
    st = m1.post("/configure", {"token": cluster.next_token(), "parameters": {}})
    assert st["parameters"] == {} and st["pending_restart"] == []


def test_switchover_demote_promote_follow(cluster: Cluster) -> None:
    m1, m2, m3, _ = cluster.members
    m1.psql("INSERT INTO t VALUES (2000, 'before switchover')")
    # standbys cannot be demoted, primaries cannot be promoted or told to follow
    assert m2.call("POST", "/demote", {"token": cluster.next_token()})[0] == 409
    assert m1.call("POST", "/promote", {"token": cluster.next_token()})[0] == 409
    assert m1.call("POST", "/follow", {"token": cluster.next_token(), "upstream": None})[0] == 409
    assert m2.call("POST", "/slots", {"token": cluster.next_token(), "slots": []})[0] == 409

    st = m1.post("/demote", {"token": cluster.next_token()})
    assert st["role"] == "standby" and st["upstream"] is None and st["receiving"] is False
    final = st["final_lsn"]
    assert isinstance(final, int) and final > 0
    for m in (m2, m3):
        wait_for(f"{m.name} has the final lsn", lambda: m.state()["replay_lsn"] >= final)  # noqa: B023
        st = m.post("/follow", {"token": cluster.next_token(), "upstream": None})
        assert st["receiving"] is False and st["upstream"] is None
    old_tli = m2.state()["timeline"]
    st = m2.post("/promote", {"token": cluster.next_token()})
    assert st["role"] == "primary" and st["timeline"] == old_tli + 1 and st["upstream"] is None
    m2.psql("INSERT INTO t VALUES (3000, 'on new primary')")
    out = m2.post("/slots", {"token": cluster.next_token(), "slots": [m1.slot, m3.slot]})
    assert sorted(out["slots"]) == sorted([m1.slot, m3.slot])
    for m in (m3, m1):
        st = m.post("/follow", {"token": cluster.next_token(), "upstream": m2.name, "slot": m.slot})
        assert st["upstream"] == m2.name
    for m in (m1, m3):
        wait_for(f"{m.name} follows", lambda: m.state()["receiving"])  # noqa: B023
        wait_for(
            f"rows on {m.name}",
            lambda: m.psql("SELECT count(*) FROM t WHERE id IN (2000, 3000)") == "2",  # noqa: B023
        )
        assert m.state()["timeline"] == old_tli + 1
    m2.post(
        "/configure",
        {
            "token": cluster.next_token(),
            "synchronous_standby_names": f"ANY 1 ({m1.slot}, {m3.slot})",
        },
    )
    m2.psql("INSERT INTO t VALUES (3001, 'sync on new primary')", timeout=10)
    wait_for("row on m1", lambda: m1.psql("SELECT count(*) FROM t WHERE id = 3001") == "1")


def test_stop_fences_member(cluster: Cluster) -> None:
    m3 = cluster.members[2]
    st = m3.post("/stop", {"token": cluster.next_token()})
    assert st["state"] == "stopped" and st["role"] is None
    r = docker("exec", "-u", "postgres", m3.name, "psql", "-X", "-c", "SELECT 1", check=False)
    assert r.returncode != 0
    st = m3.state()
    assert st["state"] == "stopped" and st["system_identifier"]
    assert m3.call("POST", "/promote", {"token": cluster.next_token()})[0] == 409


def test_restart_in_place_comes_back_as_standby_following_nothing(cluster: Cluster) -> None:
    """A container restarted with its data (not a Swarm replacement) never comes back as a
    writable primary on its own: it is a standby that follows nothing until told."""
    m2, m3 = cluster.members[1], cluster.members[2]
    docker("restart", "-t", "10", m3.name)
    port = docker("port", m3.name, "8008/tcp").stdout.splitlines()[0].rsplit(":", 1)[1]
    m3.url = f"http://127.0.0.1:{port}"
    st = wait_for("m3 back", lambda: m3.state()["state"] == "running" and m3.state(), 60)
    assert st["role"] == "standby" and st["upstream"] is None and st["receiving"] is False
    assert st["fence_token"] == cluster.token  # the fencing token survives the restart
    m2.psql("INSERT INTO t VALUES (4000, 'after restart')")
    m3.post("/follow", {"token": cluster.next_token(), "upstream": m2.name, "slot": m3.slot})
    wait_for("row on m3", lambda: m3.psql("SELECT count(*) FROM t WHERE id = 4000") == "1")


def test_sigterm_stops_postgres_and_exits(cluster: Cluster) -> None:
    m1 = cluster.members[0]
    docker("stop", "-t", "20", m1.name)
    # exit code 0: the agent stopped PostgreSQL and exited on SIGTERM by itself (a container
    # Docker had to SIGKILL after the 20 s would exit 137)
    code = docker("inspect", "-f", "{{.State.ExitCode}}", m1.name).stdout.strip()
    assert code == "0"
    assert "database system is shut down" in docker("logs", m1.name).stderr


def test_postgres_killed_under_its_agent_comes_back_as_a_standby_with_its_data(
    cluster: Cluster,
) -> None:
    """PostgreSQL dying under a running agent (OOM kill, a PANIC in an auxiliary process)
    leaves the data in place: the agent runs it again as a standby that follows nothing,
    never as a primary on its own, so the operator can still promote it when it holds the
    only copy (just after bootstrap, or with both standbys gone)."""
    m2 = cluster.members[1]
    assert m2.state()["role"] == "primary"
    m2.psql("INSERT INTO t VALUES (5000, 'before the crash')", timeout=20)
    docker(
        "exec", m2.name, "sh", "-c", "kill -KILL $(head -1 /var/lib/shoal/pgdata/postmaster.pid)"
    )

    def back() -> dict[str, Any] | None:
        st = m2.state()
        return st if st["state"] == "running" and st["role"] is not None else None

    st = wait_for("m2 running again", back, timeout=90)
    assert st["role"] == "standby" and st["upstream"] is None and st["receiving"] is False
    assert m2.psql("SELECT count(*) FROM t WHERE id = 5000") == "1"
    st = m2.post("/promote", {"token": cluster.next_token()})
    assert st["role"] == "primary"
    m2.psql("INSERT INTO t VALUES (5001, 'after the crash')", timeout=20)


def test_a_second_postmaster_on_running_data_is_not_taken_for_started(cluster: Cluster) -> None:
    """Seen under load: PostgreSQL started again on the data of one still running (a
    bootstrap served before the agent's start-up recovery) exits at once on its lock file,
    while the running one answers the readiness query; the agent took that for its own
    start and lost track of the primary. The start must fail instead, and the running
    PostgreSQL keep serving."""
    m2 = cluster.members[1]
    r = docker(
        "exec", "-u", "postgres", m2.name, "python3", "-P", "-c",
        "import agent.member as m\n"
        "a = m.Agent('second')\n"
        "try:\n"
        "    a.start_pg(timeout=5)\n"
        "except m.pg.PgError as e:\n"
        "    print('refused:', e)\n"
        "else:\n"
        "    print('started')\n",
        timeout=30,
    )  # fmt: skip
    assert r.stdout.strip().startswith("refused:"), r.stdout + r.stderr
    assert m2.state()["role"] == "primary"
    m2.psql("INSERT INTO t VALUES (5002, 'the first postmaster still serves')", timeout=20)


def test_a_standby_that_cannot_stream_reports_how_long(cluster: Cluster) -> None:
    """What the operator re-seeds on (planner.STALLED_RESEED_SECONDS): told to follow an
    upstream it cannot stream from, the standby's stall grows; streaming again resets it."""
    m2, m3 = cluster.members[1], cluster.members[2]
    assert m2.state()["role"] == "primary" and m3.state()["role"] == "standby"
    nowhere = f"{cluster.prefix}-nowhere"
    m3.post("/follow", {"token": cluster.next_token(), "upstream": nowhere, "slot": m3.slot})
    m3.state()  # the first probe that sees it not streaming starts the count
    st = wait_for("a stall of 2 s", lambda: (s := m3.state())["stalled_seconds"] >= 2 and s, 30)
    assert st["upstream"] == nowhere and st["receiving"] is False
    m3.post("/follow", {"token": cluster.next_token(), "upstream": m2.name, "slot": m3.slot})
    wait_for("streaming again", lambda: m3.state()["receiving"], 60)
    assert m3.state()["stalled_seconds"] == 0.0
