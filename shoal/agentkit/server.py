"""The agent API's server: a bounded threading HTTP server that speaks TLS when given a
context, and the request handler base of each agent's API (standard library only: this
runs inside the member container).

What the agents' APIs have in common, on the wire: JSON bodies with their Content-Length,
HTTP/1.1 keep-alive, a bearer token compared in constant time, POST bodies of at most
`max_body` bytes (413 past that, the connection closed), a GET body never read (the
connection closed after the answer), and at most `max_concurrent` connections at once
(past that a connection is closed at once).
"""

from __future__ import annotations

import hmac
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class HttpError(Exception):
    """An answer with an error status: `{"error": message}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bearer_matches(header: str, token: str) -> bool:
    """An `Authorization` header that bears exactly `token`, compared in constant time; no
    header matches an empty token."""
    return bool(token) and hmac.compare_digest(header.encode(), f"Bearer {token}".encode())


class BoundedServer(ThreadingHTTPServer):
    """A thread per connection, but at most `max_concurrent` at once: past that a connection
    is closed at once, so a flood of requests cannot exhaust threads or memory. With `tls`
    the TLS handshake runs in the connection's own thread, within `request_timeout`."""

    daemon_threads = True
    request_queue_size = 128  # the listen backlog: a burst is queued, not dropped
    max_concurrent = 64
    request_timeout = 10.0

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(self.max_concurrent)
        self.tls = tls

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            if self.tls is not None:
                # The handshake runs here, in the connection's own thread and within the
                # request timeout: a client that never finishes it holds only its slot.
                request.settimeout(self.request_timeout)
                try:
                    request = self.tls.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError):
                    self.shutdown_request(request)
                    return
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class AgentHandler(BaseHTTPRequestHandler):
    """The base of an agent API's handler. A subclass sets `timeout` (a slow client cannot
    hold a thread for long) and `server_version`, gives `bearer_token`, and may render its
    bodies otherwise (`reply`)."""

    sys_version = ""
    protocol_version = "HTTP/1.1"
    max_body = 1 << 20

    def bearer_token(self) -> str:
        """The token a request must bear; OSError when it cannot be read (none matches)."""
        raise NotImplementedError

    def send_json(self, status: int, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def reply(self, status: int, body: dict[str, Any]) -> None:
        self.send_json(status, json.dumps(body))

    def authorized(self) -> bool:
        try:
            token = self.bearer_token()
        except OSError:
            return False
        return bearer_matches(self.headers.get("Authorization", ""), token)

    def skip_get_body(self) -> None:
        """A GET carries no body here; one that does is not read, so the connection cannot
        be reused (its bytes would be parsed as the next request)."""
        if self.headers.get("Content-Length", "0") not in ("", "0"):
            self.close_connection = True

    def authorized_body(self) -> bytes | None:
        """A POST's body, read whole, when it is at most `max_body` bytes and the request
        bears the token; else None, the answer (413, 401) sent."""
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.max_body or length < 0:
            self.close_connection = True
            self.reply(413, {"error": "body too large"})
            return None
        raw = self.rfile.read(length) if length > 0 else b""
        if not self.authorized():
            self.reply(401, {"error": "missing or wrong bearer token"})
            return None
        return raw
