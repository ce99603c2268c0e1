"""The operator's optional HTTP bearer token (`shoal operator deploy --http-token-file`).

The token travels as a Docker secret, mounted only into the operator (and into Prometheus,
which must present it to scrape `/metrics`) as the file `/run/secrets/shoal-operator-http-token`.
Swarm secrets cannot change, so each token gets a secret of its own, named after a hash of
it (`shoal-operator-http-token-<8 hex>`), mounted under the one fixed file name.
"""

from __future__ import annotations

import hashlib
import os
import string
from pathlib import Path

from shoal import names

FILE_NAME = names.OPERATOR_HTTP_TOKEN_SECRET
TOKEN_PATH = Path("/run/secrets") / FILE_NAME
MIN_LENGTH, MAX_LENGTH = 16, 512
_ALLOWED = frozenset(string.ascii_letters + string.digits + "-._~+/=")  # RFC 6750 b64token


def token_problems(text: str) -> list[str]:
    """Why `text` (the token file's content, stripped) is not a usable bearer token."""
    if not MIN_LENGTH <= len(text) <= MAX_LENGTH:
        return [f"the token must be {MIN_LENGTH} to {MAX_LENGTH} characters, not {len(text)}"]
    bad = sorted({c for c in text if c not in _ALLOWED})
    if bad:
        shown = ", ".join(repr(c) for c in bad[:5])
        return [f"the token may hold letters, digits and -._~+/= only (RFC 6750), not {shown}"]
    return []


def secret_name(token: str) -> str:
    return f"{FILE_NAME}-{hashlib.sha256(token.encode()).hexdigest()[:8]}"


def load_http_token(path: Path | None = None) -> str:
    """The token the operator's HTTP server wants; "" when none is mounted."""
    explicit = os.environ.get("SHOAL_OPERATOR_HTTP_TOKEN_FILE")
    target = path or (Path(explicit) if explicit else TOKEN_PATH)
    try:
        text = target.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""
    if token_problems(text):
        raise ValueError(f"{target}: not a usable HTTP token: {token_problems(text)[0]}")
    return text
