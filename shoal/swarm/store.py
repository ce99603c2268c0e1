"""Desired state and status live in Swarm's Raft store, as labels of a zero-replica "anchor"
service per database (docs/architecture.md, "Desired state and status live in Swarm"). Every
write is a compare-and-swap on the service version, so the CLI (declaration, requests) and the
operator (status) never overwrite each other, and the operator itself stays stateless."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from pydantic import ValidationError
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)
from typing_extensions import TypeVar as TypeVarWithDefault

from shoal import names
from shoal.declaration import Database, DeclarationError, validate_document
from shoal.request import Request, UnreadableRequest, dump_request, parse_request
from shoal.status import STATUS_FORMAT, DatabaseState, DatabaseStatus
from shoal.swarm.client import JSON, SwarmApi, SwarmClient, SwarmError, VersionConflict

LABEL_UID = "shoal.uid"
LABEL_DELETING = "shoal.deleting"
CAS_ATTEMPTS = 20
T = TypeVar("T")


async def compare_and_swap(what: str, step: Callable[[], Awaitable[T]]) -> T:
    """Run `step` (read the anchor, write it back at the version read) until it does not
    meet a concurrent writer (`VersionConflict`), with a short random back-off, at most
    `CAS_ATTEMPTS` times."""
    try:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(VersionConflict),
            stop=stop_after_attempt(CAS_ATTEMPTS),
            wait=wait_random_exponential(multiplier=0.005, max=0.2),
            reraise=True,
        ):
            with attempt:
                return await step()
    except VersionConflict:
        raise RuntimeError(f"could not {what}: the anchor kept changing underneath") from None
    raise AssertionError("unreachable: AsyncRetrying either returns or raises")


class StaleFencingToken(RuntimeError):
    """A status write from an operator whose lease token is older than one already written."""


class UnreadableStatus(RuntimeError):
    """The stored status cannot be trusted; it is never overwritten by the operator."""


class ApplyOutcome(StrEnum):
    CREATED = "created"
    CONFIGURED = "configured"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class StoredDatabase:
    name: str
    uid: str
    declaration: Database
    generation: int
    status: DatabaseStatus
    request: Request | None
    deleting: bool
    service_id: str
    version: int
    labels: dict[str, str]
    # Set when the stored status cannot be trusted: the operator then leaves the database
    # alone (no action, no status write) until a person repairs or removes the label.
    status_error: str | None = None


def anchor_spec(name: str, labels: dict[str, str]) -> JSON:
    return {
        "Name": names.anchor_service(name),
        "Labels": labels,
        "TaskTemplate": {
            "ContainerSpec": {"Image": names.IMAGE_BASE, "Command": ["true"]},
            "RestartPolicy": {"Condition": "none"},
        },
        "Mode": {"Replicated": {"Replicas": 0}},
    }


def parse_anchor(service: JSON) -> StoredDatabase:
    spec = service["Spec"]
    labels: dict[str, str] = dict(spec.get("Labels") or {})
    name = labels[names.LABEL_DATABASE]
    try:
        declaration = validate_document(json.loads(labels[names.LABEL_SPEC]))
    except (DeclarationError, KeyError, json.JSONDecodeError) as e:
        raise RuntimeError(f"anchor of {name!r} holds an unreadable declaration: {e}") from e
    status, status_error = _parse_status(labels.get(names.LABEL_STATUS), name, declaration)
    raw_request = labels.get(names.LABEL_REQUEST)
    request: Request | None = None
    try:
        request = parse_request(raw_request) if raw_request else None
    except UnreadableRequest as e:
        status_error = status_error or f"the request label is unreadable: {e}"
    return StoredDatabase(
        name=name,
        uid=labels.get(LABEL_UID, ""),
        declaration=declaration,
        generation=int(labels.get(names.LABEL_GENERATION, "1")),
        status=status,
        request=request,
        deleting=labels.get(LABEL_DELETING) == "true",
        service_id=str(service["ID"]),
        version=int(service["Version"]["Index"]),
        labels=labels,
        status_error=status_error,
    )


def _parse_status(
    raw: str | None, name: str, declaration: Database
) -> tuple[DatabaseStatus, str | None]:
    """The status label, and why it cannot be trusted (None when it can). Fail closed: a
    label that exists but cannot be read (a hand edit, a newer operator's format) must never
    look like a fresh database, which would be bootstrapped over the real one."""
    fresh = DatabaseStatus(name=name, engine=declaration.spec.engine.value)
    if raw is None:
        return fresh, None
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        fmt = doc.get("format", STATUS_FORMAT)
        if not isinstance(fmt, int) or fmt > STATUS_FORMAT:
            return fresh, (
                f"the status label has format {fmt!r}, newer than this operator's "
                f"({STATUS_FORMAT}): upgrade the operator"
            )
        return DatabaseStatus.model_validate(doc), None
    except (ValueError, ValidationError) as e:
        first = str(e).splitlines()[0][:200]
        return fresh, f"the status label is unreadable ({first})"


# The client a store talks through: any `SwarmApi` (the unit tests' fake); a bare
# `DatabaseStore` is one over the real `SwarmClient`, whose other calls (exec, images)
# the command line reaches through `store.client`.
Client = TypeVarWithDefault("Client", bound=SwarmApi, default=SwarmClient, covariant=True)


class DatabaseStore(Generic[Client]):
    def __init__(self, client: Client) -> None:
        self._client = client

    @property
    def client(self) -> Client:
        return self._client

    async def get(self, name: str) -> StoredDatabase | None:
        service = await self.client.service(names.anchor_service(name))
        if service is None:
            return None
        return parse_anchor(service)

    async def declared(self) -> dict[str, bool]:
        """Every declared database's name and whether it is being deleted, from the anchors'
        labels alone (no declaration or status is parsed: the operator asks this every
        couple of seconds only to start and stop its workers)."""
        services = await self.client.services_with_label(names.LABEL_ROLE, "anchor")
        out: dict[str, bool] = {}
        for s in services:
            labels = s.get("Spec", {}).get("Labels") or {}
            name = labels.get(names.LABEL_DATABASE)
            if name:
                out[name] = labels.get(LABEL_DELETING) == "true"
        return out

    async def list(self) -> list[StoredDatabase]:
        services = await self.client.services_with_label(names.LABEL_ROLE, "anchor")
        out = []
        for s in services:
            try:
                out.append(parse_anchor(s))
            except (RuntimeError, KeyError):
                continue
        return sorted(out, key=lambda d: d.name)

    async def apply(self, db: Database) -> tuple[ApplyOutcome, int]:
        """Create or change the declaration; returns the outcome and the generation."""
        document = json.dumps(db.to_document(), sort_keys=True)

        async def step() -> tuple[ApplyOutcome, int]:
            current = await self.get(db.name)
            if current is None:
                status = DatabaseStatus(
                    name=db.name,
                    engine=db.spec.engine.value,
                    network=names.database_network(db.name),
                    members_desired=db.spec.members,
                    generation=1,
                )
                labels = {
                    names.LABEL_MANAGED: "true",
                    names.LABEL_ROLE: "anchor",
                    names.LABEL_DATABASE: db.name,
                    LABEL_UID: uuid.uuid4().hex[:16],
                    names.LABEL_SPEC: document,
                    names.LABEL_GENERATION: "1",
                    names.LABEL_STATUS: status.model_dump_json(),
                }
                try:
                    await self.client.create_service(anchor_spec(db.name, labels))
                except SwarmError:  # lost a race with a concurrent create
                    if await self.get(db.name) is None:
                        raise
                    raise VersionConflict(db.name) from None
                return ApplyOutcome.CREATED, 1
            if current.deleting:
                raise DeclarationError(
                    [f"metadata.name: {db.name!r} is being deleted; retry later"]
                )
            if current.declaration.spec.engine != db.spec.engine:
                raise DeclarationError(
                    [
                        f"spec.engine: cannot change from {current.declaration.spec.engine.value} "
                        f"to {db.spec.engine.value}; delete the database first"
                    ]
                )
            fixed = [
                f"spec.{field}: cannot change once the database exists (its members archive "
                "and were made by it); restore into a new database to change it"
                for field in ("backup", "restore")
                if getattr(current.declaration.spec, field) != getattr(db.spec, field)
            ]
            if fixed:
                raise DeclarationError(fixed)
            if current.labels.get(names.LABEL_SPEC) == document:
                return ApplyOutcome.UNCHANGED, current.generation
            generation = current.generation + 1
            await self._write_labels(
                current, {names.LABEL_SPEC: document, names.LABEL_GENERATION: str(generation)}
            )
            return ApplyOutcome.CONFIGURED, generation

        return await compare_and_swap(f"store {db.name!r}", step)

    async def write_status(self, name: str, status: DatabaseStatus) -> bool:
        """Write the operator's status; False if the database is gone. Refuses (raises
        `StaleFencingToken`) when a newer lease holder has already written."""
        payload = status.model_dump_json()

        async def step() -> bool:
            current = await self.get(name)
            if current is None:
                return False
            if current.status_error is not None:
                raise UnreadableStatus(f"{name}: {current.status_error}")
            if current.status.fence_token > status.fence_token:
                raise StaleFencingToken(
                    f"status of {name!r} was written with token {current.status.fence_token}, "
                    f"ours is {status.fence_token}"
                )
            if current.labels.get(names.LABEL_STATUS) != payload:
                await self._write_labels(current, {names.LABEL_STATUS: payload})
            return True

        return await compare_and_swap(f"write the status of {name!r}", step)

    async def set_request(self, name: str, request: Request | None) -> bool:
        value = dump_request(request) if request is not None else None

        async def step() -> bool:
            current = await self.get(name)
            if current is None:
                return False
            await self._write_labels(current, {names.LABEL_REQUEST: value})
            return True

        return await compare_and_swap(f"store the request for {name!r}", step)

    async def clear_request(self, name: str, request_id: str) -> None:
        current = await self.get(name)
        if current and current.request and current.request.id == request_id:
            await self.set_request(name, None)

    async def mark_deleting(self, name: str) -> bool:
        async def step() -> bool:
            current = await self.get(name)
            if current is None:
                return False
            status = current.status.model_copy(update={"state": DatabaseState.DELETING})
            await self._write_labels(
                current, {LABEL_DELETING: "true", names.LABEL_STATUS: status.model_dump_json()}
            )
            return True

        return await compare_and_swap(f"mark {name!r} for deletion", step)

    async def _write_labels(self, current: StoredDatabase, changes: dict[str, str | None]) -> None:
        labels = dict(current.labels)
        for k, v in changes.items():
            if v is None:
                labels.pop(k, None)
            else:
                labels[k] = v
        await self.client.update_service(
            current.service_id, current.version, anchor_spec(current.name, labels)
        )
