"""An S3-compatible server on the swarm for the backup tests and `bench.backup`: moto's server
mode as a Swarm service on the control network (where members and one-off jobs run), a
bucket in it, and the credentials as the Docker secret a user would make (docs/backup.md,
"Tested", says what moto does not stand in for)."""

from __future__ import annotations

import contextlib
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from shoal import names
from shoal.platform.docker_cli import Context, docker_build, image_exists
from shoal.platform.images import HOST_CA_DIR, iter_tree

DIR = Path(__file__).resolve().parent
BUCKET = "shoal-test-backups"
PORT = 5000


@dataclass(frozen=True)
class Bucket:
    service: str
    endpoint: str
    secret: str
    bucket: str = BUCKET

    def container(self) -> str:
        out = subprocess.run(
            ["docker", "ps", "-q", "-f", f"label=com.docker.swarm.service.name={self.service}"],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        if not out:
            raise RuntimeError(f"no running container for {self.service}")
        return out[0]

    def backup_spec(self, path: str, every: str = "1h", keep: int = 2) -> dict[str, object]:
        """A declaration's `spec.backup` archiving into this bucket under `path`."""
        return {
            "s3": {
                "bucket": self.bucket,
                "path": path,
                "endpoint": self.endpoint,
                "credentialsSecret": self.secret,
            },
            "baseBackups": {"every": every},
            "retention": {"baseBackups": keep},
        }


def s3_image(base: str) -> str:
    """The moto server image (Dockerfile here), built once per content."""
    files = {"Dockerfile": DIR / "Dockerfile"}
    generated = {"certs/README": b"extra CA certificates of the build host\n"}
    if HOST_CA_DIR.is_dir():
        for relative in iter_tree(HOST_CA_DIR):
            if relative.suffix == ".crt":
                files[f"certs/{relative.as_posix()}"] = HOST_CA_DIR / relative
    context = Context(files, generated, {"BASE": base})
    tag = f"shoal-test/s3:{context.digest()[:12]}"
    if not image_exists(tag):
        docker_build(context, [tag], no_cache=False, output=None)
    return tag


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), capture_output=True, text=True, input=stdin, check=False, timeout=120
    )


def start_bucket(prefix: str, base: str, timeout: float = 120.0) -> Bucket:
    image = s3_image(base)
    b = Bucket(f"{prefix}-s3", f"http://{prefix}-s3:{PORT}", f"{prefix}-s3-credentials")
    made = _run(
        "docker", "secret", "create", b.secret, "-",
        stdin="[default]\naws_access_key_id = shoaltest\naws_secret_access_key = shoaltest\n",
    )  # fmt: skip
    if made.returncode != 0:
        raise RuntimeError(f"docker secret create {b.secret}: {made.stderr.strip()}")
    created = _run(
        "docker", "service", "create", "--detach", "--name", b.service,
        "--network", names.CONTROL_NETWORK, "--label", f"{names.LABEL_MANAGED}=true",
        "--restart-condition", "none",
        # Its name resolves to its task, as members' names do: this engine has no IPVS, so a
        # service's virtual IP does not route here (../shared/DESIGN.md, facts).
        "--endpoint-mode", "dnsrr", image,
    )  # fmt: skip
    if created.returncode != 0:
        stop_bucket(b)
        raise RuntimeError(f"docker service create {b.service}: {created.stderr.strip()}")
    make = (
        "import boto3; boto3.client('s3', endpoint_url='http://127.0.0.1:5000', "
        "region_name='us-east-1', aws_access_key_id='x', aws_secret_access_key='x')"
        f".create_bucket(Bucket='{b.bucket}')"
    )
    deadline = time.monotonic() + timeout
    error = ""
    while time.monotonic() < deadline:
        try:
            r = _run("docker", "exec", b.container(), "/opt/moto/bin/python", "-c", make)
            if r.returncode == 0:
                return b
            error = r.stderr.strip()[-300:]
        except RuntimeError as e:
            error = str(e)
        time.sleep(1.0)
    stop_bucket(b)
    raise RuntimeError(f"the S3 server did not make its bucket within {timeout:g}s: {error}")


def stop_bucket(b: Bucket) -> None:
    with contextlib.suppress(RuntimeError):
        _run("docker", "unpause", b.container())
    _run("docker", "service", "rm", b.service)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # a secret is removable once no task mounts it
        if _run("docker", "secret", "rm", b.secret).returncode == 0:
            return
        if b.secret not in _run("docker", "secret", "ls", "--format", "{{.Name}}").stdout.split():
            return
        time.sleep(1.0)
