"""Files a member agent writes (configuration, passwords, keys): written whole or not at
all. Standard library only: this runs inside the member container."""

from __future__ import annotations

import os
from pathlib import Path


def write_file(path: Path, content: str, mode: int = 0o600) -> None:
    """Replace `path` with `content` atomically (a crash leaves the old file or the new one,
    never half of either) and durably, with exactly `mode` whatever the umask."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)
