"""The base image (`names.IMAGE_BASE`): Debian bookworm with what members and the operator need
(`BASE_PACKAGES`, and the packages the engines' image recipes ask for).

From `debian:bookworm-slim` when that image is present or can be pulled (fast failure: there
may be no registry), else `debootstrap --variant=minbase` from the host's apt mirror and
`tar | docker import`.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from shoal import names
from shoal.platform.docker_cli import (
    Context,
    ImageBuildError,
    docker_build,
    image_exists,
    run_streamed,
)
from shoal.platform.engine import apt_install
from shoal.platform.mirror import host_debian_mirror

Progress = Callable[[str], None]

# What every image needs, whatever the engine: python3 (the operator's venv, member agents),
# tini, the read-write proxy (HAProxy, run from the member image) and the network and process
# tools that agents, the chaos suite and the tests use.
BASE_PACKAGES = (
    "python3",
    "python3-venv",
    "haproxy",
    "iproute2",
    "iptables",
    "procps",
    "ca-certificates",
    "tini",
    "iputils-ping",
)
BASE_SUITE = "bookworm"
SLIM_IMAGE = "debian:bookworm-slim"
PULL_TIMEOUT = 15.0


def _try_slim(timeout: float) -> bool:
    if image_exists(SLIM_IMAGE):
        return True
    try:
        result = subprocess.run(
            ["docker", "pull", SLIM_IMAGE],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def _unmount_under(directory: Path) -> None:
    """debootstrap mounts /proc and /sys in its target; never delete through a mount."""
    prefix = str(directory.resolve())
    mounts = [
        line.split()[1]
        for line in Path("/proc/mounts").read_text().splitlines()
        if len(line.split()) > 1
    ]
    for mount in sorted((m for m in mounts if m.startswith(prefix + "/")), reverse=True):
        subprocess.run(["umount", "-l", mount], check=False, capture_output=True)


def _build_base_from_slim(tag: str, packages: Sequence[str], output: Progress | None) -> None:
    dockerfile = (
        f"FROM {SLIM_IMAGE}\n"
        "RUN apt-get update \\\n"
        " && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
        f"{' '.join(packages)} \\\n"
        " && apt-get clean && rm -rf /var/lib/apt/lists/*\n"
    )
    context = Context({}, {"Dockerfile": dockerfile.encode()}, {})
    docker_build(context, [tag], no_cache=False, output=output)


def _build_base_debootstrap(
    tag: str, packages: Sequence[str], progress: Progress | None, output: Progress | None
) -> None:
    if shutil.which("debootstrap") is None:
        apt_install(["debootstrap"], progress)
    mirror = host_debian_mirror()
    if progress:
        progress(f"debootstrap {BASE_SUITE} from {mirror} (about a minute)")
    work = Path(tempfile.mkdtemp(prefix="shoal-base-", dir="/var/tmp"))
    rootfs = work / "rootfs"
    try:
        run_streamed(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(packages)}",
                BASE_SUITE,
                str(rootfs),
                mirror,
            ],
            "debootstrap",
            output=output,
        )
        _unmount_under(rootfs)
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / leftover).glob("*"):
                if entry.is_file():
                    entry.unlink()
        (rootfs / "etc/apt/sources.list").write_text(f"deb {mirror} {BASE_SUITE} main\n")
        if progress:
            progress(f"importing the root file system as {tag}")
        with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
            run_streamed(["docker", "import", "-", tag], "docker import", stdin=tar.stdout)
            if tar.stdout is not None:
                tar.stdout.close()
            if tar.wait() != 0:
                raise ImageBuildError(f"tar of {rootfs} failed")
    finally:
        _unmount_under(rootfs)
        shutil.rmtree(work, ignore_errors=True)


def build_base(
    tag: str = names.IMAGE_BASE,
    *,
    packages: Sequence[str] = (),
    progress: Progress | None = None,
    output: Progress | None = None,
    use_slim: bool = True,
) -> str:
    """Build the base image under `tag` (replacing any image of that tag) with
    `BASE_PACKAGES` and `packages` (what the engines' member images need)."""
    wanted = [*BASE_PACKAGES, *(p for p in packages if p not in BASE_PACKAGES)]
    if use_slim and _try_slim(PULL_TIMEOUT):
        if progress:
            progress(f"building {tag} from {SLIM_IMAGE}")
        _build_base_from_slim(tag, wanted, output)
    else:
        _build_base_debootstrap(tag, wanted, progress, output)
    return tag
