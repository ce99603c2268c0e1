"""`spec.expose.port`: the read-write endpoint published on the host, through HAProxy kept
on the current primary by its health checks. A client on the HOST connects to
127.0.0.1:<port>; after the primary is killed a new connection to the same port reaches the
new primary, with the data. Removing `expose` removes the proxy; `shoal delete` leaves no
proxy service or config."""

from __future__ import annotations

import json
import random
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from shoal import names
from shoal.platform.images import BuiltImages
from tests.integration.support import (
    apply,
    container_of,
    credentials,
    declaration,
    docker,
    shoal,
    status,
    wait_for,
    wait_state,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def free_port() -> int:
    """A port in 15432-15999 that nothing on this host listens on now."""
    ports = list(range(15432, 16000))
    random.shuffle(ports)
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port in 15432-15999")


def connect(port: int, password: str) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host="127.0.0.1",
        port=port,
        user=names.APP_USER,
        password=password,
        dbname=names.APP_DATABASE,
        connect_timeout=3,
        autocommit=True,
    )


def on_primary(port: int, password: str, check: str, write: int | None) -> bool:
    """A new connection through the proxy lands on a writable primary that holds the
    `check` row (and takes the `write` row); False on any error, for polling."""
    try:
        with connect(port, password) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            if row is None or row[0]:
                return False
            if check:
                found = conn.execute("SELECT count(*) FROM expose_t WHERE note = %s", (check,))
                one = found.fetchone()
                if one is None or one[0] != 1:
                    return False
            if write is not None:
                conn.execute("INSERT INTO expose_t VALUES (%s, %s)", (write, f"row-{write}"))
            return True
    except psycopg.Error:
        return False


def proxy_configs(db: str) -> list[str]:
    out = docker("config", "ls", "-q", "--filter", f"label={names.LABEL_DATABASE}={db}")
    return out.split()


def proxy_service(db: str) -> dict[str, Any] | None:
    proc = subprocess.run(
        ["docker", "service", "inspect", names.proxy_service(db)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        return None
    doc: list[dict[str, Any]] = json.loads(proc.stdout)
    return doc[0]


@pytest.fixture
def db(operator: BuiltImages, unique_name: str) -> Iterator[str]:
    try:
        yield unique_name
    finally:
        proc = shoal("delete", unique_name, "--wait", timeout=300)
        print(proc.stdout, proc.stderr)


def test_expose_port_follows_the_primary(db: str, tmp_path: Path) -> None:
    port = free_port()
    apply(declaration(db, expose={"port": port}), tmp_path)
    wait_state(db, "Healthy", timeout=400)
    password = str(credentials(db)["password"])

    # The proxy service: labelled, on the database network only, host-mode, no mounts.
    svc = wait_for(lambda: proxy_service(db), 60, "the proxy service")
    spec = svc["Spec"]
    assert spec["Labels"][names.LABEL_ROLE] == "proxy"
    assert spec["Labels"][names.LABEL_DATABASE] == db
    assert spec["EndpointSpec"]["Ports"][0]["PublishMode"] == "host"
    assert spec["EndpointSpec"]["Ports"][0]["PublishedPort"] == port
    assert not spec["TaskTemplate"]["ContainerSpec"].get("Mounts")
    assert len(spec["TaskTemplate"]["Networks"]) == 1
    assert len(proxy_configs(db)) == 1

    # Through the proxy from the host: a writable primary.
    wait_for(lambda: on_primary(port, password, "", None), 120, f"the proxy on :{port}")
    with connect(port, password) as conn:
        conn.execute("CREATE TABLE expose_t (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO expose_t VALUES (1, 'before')")

    old = status(db)["primary"]
    assert old
    cid = container_of(old)
    assert cid
    docker("kill", cid)

    # A new connection to the same port reaches the NEW primary, with the row, writable.
    wait_for(
        lambda: on_primary(port, password, "before", 2), 240, "the proxy to reach a new primary"
    )
    new = wait_for(lambda: status(db).get("primary") not in (None, old) and status(db), 60, "new")
    assert new["primary"] != old
    with connect(port, password) as conn:
        rows = conn.execute("SELECT id FROM expose_t ORDER BY id").fetchall()
        assert [r[0] for r in rows] == [1, 2]

    # Without expose: the proxy service and its configs go.
    apply(declaration(db), tmp_path)
    wait_for(
        lambda: proxy_service(db) is None and not proxy_configs(db),
        120,
        "the proxy and its configs removed",
    )

    # Exposed again, then deleted: nothing of the proxy is left.
    apply(declaration(db, expose={"port": port}), tmp_path)
    wait_for(lambda: proxy_service(db) is not None, 120, "the proxy again")
    proc = shoal("delete", db, "--wait", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proxy_service(db) is None
    assert not proxy_configs(db)


def test_scaling_swaps_the_proxy_config(db: str, tmp_path: Path) -> None:
    """Configs are immutable: a new member list is a new config, the old one is removed."""
    port = free_port()
    apply(declaration(db, members=2, expose={"port": port}), tmp_path)
    wait_state(db, "Healthy", timeout=400)
    first = wait_for(lambda: proxy_configs(db), 60, "the proxy config")
    assert len(first) == 1
    apply(declaration(db, members=3, expose={"port": port}), tmp_path)
    wait_state(db, "Healthy", timeout=400)
    second = wait_for(
        lambda: (c := proxy_configs(db)) and len(c) == 1 and c != first and c,
        120,
        "one new proxy config, the old one removed",
    )
    svc = proxy_service(db)
    assert svc is not None
    used = svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Configs"]
    assert [u["ConfigID"] for u in used] == second
    password = str(credentials(db)["password"])
    wait_for(lambda: on_primary(port, password, "", None), 120, f"the proxy on :{port}")
