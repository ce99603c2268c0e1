"""`spec.backup` and `spec.restore` (docs/backup.md): where a database archives its WAL and
keeps its base backups (an S3-compatible bucket), how often a base backup is taken, how many
are kept, and, for a database made from another one's archive, what to restore.

Engine-neutral: each engine says whether it can back up (`EngineSection.backups`); the
PostgreSQL member does it with barman-cloud (plugins/postgres/agent/backup.py).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from shoal.fields import StrictModel, show

# S3's bucket naming rules (3 to 63 characters, lowercase letters, digits, '.' and '-',
# starting and ending with a letter or digit).
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
PATH_RE = re.compile(r"^[A-Za-z0-9._\-]+(/[A-Za-z0-9._\-]+)*$")
ENDPOINT_RE = re.compile(r"^(https?)://([A-Za-z0-9][A-Za-z0-9.\-]{0,252})(:[0-9]{1,5})?/?$")
REGION_RE = re.compile(r"^[a-z0-9][a-z0-9\-]{0,31}$")
# Docker's rule for secret names: letters, digits, '_', '.', '-', at most 64 characters.
SECRET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
DURATION_RE = re.compile(r"^([1-9][0-9]{0,5})([mhd])$")
UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400}
MIN_INTERVAL_SECONDS = 5 * 60
MAX_INTERVAL_SECONDS = 90 * 86400
MAX_KEPT = 100


def duration_seconds(v: str) -> int:
    m = DURATION_RE.match(v)
    assert m is not None
    return int(m.group(1)) * UNIT_SECONDS[m.group(2)]


def _duration(v: str) -> str:
    if not DURATION_RE.match(v):
        raise ValueError(f"must be a duration like 30m, 6h or 7d, got {show(v)}")
    seconds = duration_seconds(v)
    if not MIN_INTERVAL_SECONDS <= seconds <= MAX_INTERVAL_SECONDS:
        raise ValueError(f"must be between 5m and 90d, got {show(v)}")
    return v


def _days(v: str) -> str:
    if not re.fullmatch(r"[1-9][0-9]{0,3}d", v):
        raise ValueError(f"must be a number of days like 7d, got {show(v)}")
    return v


def _bucket(v: str) -> str:
    if not BUCKET_RE.match(v) or ".." in v:
        raise ValueError(
            "must be an S3 bucket name (3 to 63 lowercase letters, digits, '.' or '-'), "
            f"got {show(v)}"
        )
    return v


def _path(v: str) -> str:
    if not PATH_RE.match(v) or len(v) > 200 or any(p in (".", "..") for p in v.split("/")):
        raise ValueError(
            "must be a key prefix like 'prod/databases' (letters, digits, '.', '_', '-', "
            f"parts separated by '/', no leading or trailing '/'), got {show(v)}"
        )
    return v


def _endpoint(v: str) -> str:
    m = ENDPOINT_RE.match(v)
    if not m:
        raise ValueError(
            "must be an http:// or https:// URL with a host and an optional port and no "
            f"path, like https://s3.example.com:9000, got {show(v)}"
        )
    if m.group(3) and not 1 <= int(m.group(3)[1:]) <= 65535:
        raise ValueError(f"has a port out of range, got {show(v)}")
    return v.rstrip("/")


def _region(v: str) -> str:
    if not REGION_RE.match(v):
        raise ValueError(f"must be a region name like eu-west-1, got {show(v)}")
    return v


def _secret(v: str) -> str:
    if not SECRET_RE.match(v):
        raise ValueError(
            "must be a Docker secret name (letters, digits, '_', '.', '-', at most 64), "
            f"got {show(v)}"
        )
    return v


def _timestamp(v: object) -> object:
    """`to:` is `latest` or an RFC 3339 time with its zone: a time without a zone would
    mean a different instant on each machine that reads it."""
    if isinstance(v, datetime):  # YAML parses an unquoted timestamp itself
        if v.tzinfo is None:
            raise ValueError("must name its time zone, like 2026-12-06T07:30:00Z")
        return v.astimezone(UTC).isoformat()
    if not isinstance(v, str):
        raise ValueError(f"must be 'latest' or a time like 2026-12-06T07:30:00Z, got {show(v)}")
    if v == "latest":
        return v
    try:
        parsed = datetime.fromisoformat(v)
    except ValueError:
        raise ValueError(
            f"must be 'latest' or a time like 2026-12-06T07:30:00Z, got {show(v)}"
        ) from None
    if parsed.tzinfo is None:
        raise ValueError(f"must name its time zone, like 2026-12-06T07:30:00Z, got {show(v)}")
    return parsed.astimezone(UTC).isoformat()


Duration = Annotated[str, AfterValidator(_duration)]
SecretName = Annotated[str, AfterValidator(_secret)]


class S3Target(StrictModel):
    """An S3-compatible bucket. Credentials are a Docker secret the user made, in the AWS
    credentials file format (`[default]` with `aws_access_key_id` and
    `aws_secret_access_key`); an https endpoint's certificate is always verified, against
    the system's CAs or the PEM bundle in `caSecret`."""

    bucket: Annotated[str, AfterValidator(_bucket)]
    path: Annotated[str, AfterValidator(_path)] = "shoal"
    endpoint: Annotated[str, AfterValidator(_endpoint)] | None = None
    region: Annotated[str, AfterValidator(_region)] | None = None
    credentials_secret: SecretName = Field(alias="credentialsSecret")
    ca_secret: SecretName | None = Field(default=None, alias="caSecret")

    def destination(self) -> str:
        return f"s3://{self.bucket}/{self.path}"


class BaseBackupSchedule(StrictModel):
    every: Duration = "24h"

    @property
    def seconds(self) -> int:
        return duration_seconds(self.every)


class Retention(StrictModel):
    base_backups: Annotated[int, Field(strict=True, ge=1, le=MAX_KEPT)] | None = Field(
        default=None, alias="baseBackups"
    )
    recovery_window: Annotated[str, AfterValidator(_days)] | None = Field(
        default=None, alias="recoveryWindow"
    )

    @model_validator(mode="after")
    def _one(self) -> Retention:
        if self.base_backups is not None and self.recovery_window is not None:
            raise ValueError("name either baseBackups or recoveryWindow, not both")
        return self

    def policy(self) -> str:
        """barman's retention policy syntax."""
        if self.recovery_window is not None:
            return f"RECOVERY WINDOW OF {int(self.recovery_window[:-1])} DAYS"
        return f"REDUNDANCY {self.base_backups or 7}"


class BackupSpec(StrictModel):
    s3: S3Target
    base_backups: BaseBackupSchedule = Field(
        default_factory=BaseBackupSchedule, alias="baseBackups"
    )
    retention: Retention = Field(default_factory=Retention)


def _source_name(v: str) -> str:
    from shoal.declaration.model import _name  # the same rule as metadata.name

    return _name(v)


class RestoreSpec(StrictModel):
    """Make this database from the archive of database `from` (in the same `spec.backup`
    bucket and path), replayed to `to`: `latest` (every archived WAL) or a time."""

    source: Annotated[str, AfterValidator(_source_name)] = Field(alias="from")
    to: Annotated[str, BeforeValidator(_timestamp)] = "latest"

    def target_time(self) -> str | None:
        return None if self.to == "latest" else self.to
