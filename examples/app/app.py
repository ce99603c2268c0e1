"""A tiny application for examples/app-stack.yml: it reads the connection URI that
`shoal credentials NAME --secret SECRET` stored as a Docker secret, connects with verified
TLS (the URI names the CA's secret file) and records a visit every few seconds, reconnecting
after a failover. It logs `app: connected ...` and `app: wrote visit N (M in the table)`.

Runs with any Python that has psycopg 3 (the shoal operator image's /opt/shoal/venv)."""

from __future__ import annotations

import os
import socket
import sys
import time

import psycopg

URI_FILE = os.environ.get("DATABASE_URI_FILE", "/run/secrets/app-db")
EVERY = float(os.environ.get("APP_INTERVAL_SECONDS", "5"))


def say(message: str) -> None:
    print(f"app: {message}", flush=True)


def main() -> None:
    try:
        with open(URI_FILE, encoding="utf-8") as f:
            uri = f.read().strip()
    except OSError as e:
        sys.exit(f"app: cannot read the connection URI from {URI_FILE}: {e}")
    visit = 0
    while True:
        try:
            with psycopg.connect(uri, autocommit=True, connect_timeout=10) as conn:
                ssl = conn.execute(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                ).fetchone()
                say(f"connected to {conn.info.host} (ssl={ssl[0] if ssl else None})")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS app_visits ("
                    " id bigserial PRIMARY KEY, host text NOT NULL,"
                    " at timestamptz NOT NULL DEFAULT now())"
                )
                while True:
                    visit += 1
                    host = socket.gethostname()
                    conn.execute("INSERT INTO app_visits (host) VALUES (%s)", (host,))
                    row = conn.execute("SELECT count(*) FROM app_visits").fetchone()
                    say(f"wrote visit {visit} ({row[0] if row else '?'} in the table)")
                    time.sleep(EVERY)
        except psycopg.Error as e:
            # A failover or a member restart: connect again (the URI lists every member and
            # asks for the primary).
            say(f"database error, reconnecting: {str(e).strip()}")
            time.sleep(2)


if __name__ == "__main__":
    main()
