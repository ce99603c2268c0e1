"""Files the agent writes (keyFile, TLS key): written whole or not at all, with exactly the
mode asked for. Standard library only: this runs inside the member container."""

from __future__ import annotations

import os
from pathlib import Path


def write_file(path: Path, content: str, mode: int = 0o600) -> None:
    """Replace `path` with `content` atomically and durably, with `mode` whatever the umask.
    An existing file of mode 0400 (a keyFile) is replaced, not opened for writing."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)
