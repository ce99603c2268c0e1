"""A thin, typed layer over the Docker Engine API for what shoal needs from Swarm.

aiodocker's `services.update` only changes an image, so service specs are written with the
raw `POST /services/{id}/update?version=N` call: that version is Swarm's compare-and-swap,
which the declaration store and the operator lease both stand on.

Waiting on Swarm is written once, here, on tenacity: `retrying_for` (retry what fails with a
given error), `while_raft_busy` (the same, while the managers elect a leader) and `poll`
(until a check answers yes).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import aiodocker
from aiodocker.exceptions import DockerError
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    retry_if_exception_type,
    retry_if_result,
    stop_after_delay,
    wait_fixed,
)

from shoal import names

JSON = dict[str, Any]


class SwarmError(RuntimeError):
    """The Docker API refused or failed a call; the message is Docker's own."""


class VersionConflict(SwarmError):
    """A compare-and-swap lost: the object changed since it was read."""


class NotFound(SwarmError):
    pass


# What a manager answers while the managers elect a Raft leader (a manager was lost, cut
# off or healed): a few seconds to a minute during which every swarm read fails.
RAFT_BUSY_MARKS = (
    "does not have a leader",
    "lost leader status",
    "DeadlineExceeded",
    "context deadline exceeded",
)


def raft_busy(exc: BaseException) -> bool:
    """Whether `exc` is the swarm waiting for a Raft leader: worth retrying, not a fault."""
    if isinstance(exc, DockerError):
        text = str(exc.message) if hasattr(exc, "message") else str(exc)
    elif isinstance(exc, SwarmError):
        text = str(exc)
    else:
        return False
    return any(mark in text for mark in RAFT_BUSY_MARKS)


def retrying_for(
    seconds: float,
    *,
    every: float,
    on: type[BaseException] | Callable[[BaseException], bool],
) -> AsyncRetrying:
    """Retry the attempts of `async for attempt in retrying_for(...): with attempt: ...`
    every `every` seconds, for up to `seconds`, while they fail with `on` (an exception
    type, or a test of the exception); any other error, or the last one once `seconds` have
    passed, is raised as it is."""
    return AsyncRetrying(
        stop=stop_after_delay(seconds),
        wait=wait_fixed(every),
        retry=retry_if_exception_type(on) if isinstance(on, type) else retry_if_exception(on),
        reraise=True,
    )


def while_raft_busy(seconds: float) -> AsyncRetrying:
    """`retrying_for` every 2 s while the swarm elects a leader, for up to `seconds`."""
    return retrying_for(seconds, every=2, on=raft_busy)


async def poll(check: Callable[[], Awaitable[bool]], timeout: float, every: float = 0.5) -> bool:
    """Ask `check` every `every` seconds until it answers True (then True) or `timeout`
    seconds have passed (then False); an error it raises is raised as it is."""
    until_true = AsyncRetrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(every),
        retry=retry_if_result(lambda ok: not ok),
        retry_error_callback=lambda _state: False,
    )
    answer: bool = await until_true(check)
    return answer


def _wrap(e: DockerError) -> SwarmError:
    msg = str(e.message) if hasattr(e, "message") else str(e)
    if e.status == 404:
        return NotFound(msg)
    if "out of sequence" in msg or ("version" in msg.lower() and e.status in (409, 500)):
        return VersionConflict(msg)
    return SwarmError(f"Docker API error {e.status}: {msg}")


def _filters(**kv: str | list[str]) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    for k, v in kv.items():
        out[k] = v if isinstance(v, list) else [v]
    return {"filters": json.dumps(out)}


class SwarmClient:
    """One connection to a Docker engine that is a Swarm manager. Honours DOCKER_HOST."""

    def __init__(self, docker: aiodocker.Docker | None = None) -> None:
        self._docker = docker
        self._owned = docker is None

    @property
    def docker(self) -> aiodocker.Docker:
        if self._docker is None:
            self._docker = aiodocker.Docker()
        return self._docker

    async def close(self) -> None:
        if self._docker is not None and self._owned:
            await self._docker.close()
            self._docker = None

    async def __aenter__(self) -> SwarmClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def call(
        self,
        path: str,
        method: str = "GET",
        *,
        params: Mapping[str, Any] | None = None,
        data: Any = None,
        timeout: float | None = 30.0,
    ) -> Any:
        try:
            return await self.docker._query_json(
                path,
                method,
                params=dict(params) if params else None,
                data=json.dumps(data) if data is not None else None,
                headers={"Content-Type": "application/json"} if data is not None else None,
                timeout=timeout,
            )
        except DockerError as e:
            raise _wrap(e) from None

    async def events(self, **filters: list[str]) -> AsyncIterator[JSON]:
        """Docker's event stream (`GET /events` with `filters`), one decoded event at a time,
        for as long as the engine keeps the stream open (it ends when dockerd restarts)."""
        async with self.docker._query(
            "events", params={"filters": json.dumps(filters)}, timeout=0
        ) as resp:
            async for line in resp.content:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    yield event

    # --- engine ---------------------------------------------------------------------------
    async def info(self) -> JSON:
        result: JSON = await self.call("info")
        return result

    # --- services -------------------------------------------------------------------------
    async def services(self, **labels: str) -> list[JSON]:
        label_filters = [f"{k}={v}" if v else k for k, v in labels.items()]
        params = _filters(label=label_filters) if label_filters else None
        result: list[JSON] = await self.call("services", params=params)
        return result

    async def services_of(self, db: str) -> list[JSON]:
        return await self.services_with_label(names.LABEL_DATABASE, db)

    async def services_with_label(self, key: str, value: str | None = None) -> list[JSON]:
        label = f"{key}={value}" if value is not None else key
        result: list[JSON] = await self.call("services", params=_filters(label=label))
        return result

    async def service(self, name_or_id: str) -> JSON | None:
        try:
            result: JSON = await self.call(f"services/{name_or_id}")
        except NotFound:
            return None
        return result

    async def create_service(self, spec: JSON) -> str:
        result: JSON = await self.call("services/create", "POST", data=spec)
        return str(result["ID"])

    async def update_service(self, service_id: str, version: int, spec: JSON) -> None:
        """Compare-and-swap: fails with `VersionConflict` if the service changed since read."""
        await self.call(
            f"services/{service_id}/update", "POST", params={"version": str(version)}, data=spec
        )

    async def remove_service(self, name_or_id: str) -> bool:
        try:
            await self.call(f"services/{name_or_id}", "DELETE")
        except NotFound:
            return False
        return True

    # --- tasks and nodes -----------------------------------------------------------------
    async def tasks(self, **filters: str | list[str]) -> list[JSON]:
        result: list[JSON] = await self.call("tasks", params=_filters(**filters))
        return result

    async def nodes(self) -> list[JSON]:
        result: list[JSON] = await self.call("nodes")
        return result

    # --- networks ------------------------------------------------------------------------
    async def network(self, name: str) -> JSON | None:
        for net in await self.call("networks", params=_filters(name=name)):
            if net.get("Name") == name:
                return dict(net)
        return None

    async def ensure_overlay(
        self, name: str, labels: Mapping[str, str], subnet: str | None = None
    ) -> str:
        existing = await self.network(name)
        if existing is not None:
            return str(existing["Id"])
        spec: JSON = {
            "Name": name,
            "Driver": "overlay",
            "Attachable": True,
            "CheckDuplicate": True,
            "Labels": dict(labels),
        }
        if subnet is not None:
            spec["IPAM"] = {"Driver": "default", "Config": [{"Subnet": subnet}]}
        try:
            result: JSON = await self.call("networks/create", "POST", data=spec)
        except SwarmError:
            again = await self.network(name)  # created concurrently
            if again is None:
                raise
            return str(again["Id"])
        return str(result["Id"])

    async def subnets_in_use(self) -> list[str]:
        nets: list[JSON] = await self.call("networks")
        return [
            str(c["Subnet"])
            for n in nets
            for c in ((n.get("IPAM") or {}).get("Config") or [])
            if c.get("Subnet")
        ]

    async def remove_network(self, name_or_id: str) -> bool:
        try:
            await self.call(f"networks/{name_or_id}", "DELETE")
        except NotFound:
            return False
        return True

    async def networks_with_label(self, key: str, value: str | None = None) -> list[JSON]:
        label = f"{key}={value}" if value is not None else key
        result: list[JSON] = await self.call("networks", params=_filters(label=label))
        return result

    # --- secrets -------------------------------------------------------------------------
    async def secret(self, name: str) -> JSON | None:
        for s in await self.call("secrets", params=_filters(name=name)):
            if s["Spec"]["Name"] == name:
                return dict(s)
        return None

    async def create_secret(self, name: str, data_b64: str, labels: Mapping[str, str]) -> str:
        """Create a secret; a SwarmError when Swarm refuses (one of that name exists)."""
        result: JSON = await self.call(
            "secrets/create",
            "POST",
            data={"Name": name, "Data": data_b64, "Labels": dict(labels)},
        )
        return str(result["ID"])

    async def ensure_secret(self, name: str, data_b64: str, labels: Mapping[str, str]) -> str:
        existing = await self.secret(name)
        if existing is not None:
            return str(existing["ID"])
        try:
            return await self.create_secret(name, data_b64, labels)
        except SwarmError:
            again = await self.secret(name)
            if again is None:
                raise
            return str(again["ID"])

    async def secrets_with_label(self, key: str, value: str | None = None) -> list[JSON]:
        label = f"{key}={value}" if value is not None else key
        result: list[JSON] = await self.call("secrets", params=_filters(label=label))
        return result

    async def remove_secret(self, name_or_id: str) -> bool:
        try:
            await self.call(f"secrets/{name_or_id}", "DELETE")
        except NotFound:
            return False
        return True

    # --- configs (immutable, like secrets; their data is readable) ------------------------
    async def config(self, name: str) -> JSON | None:
        for c in await self.call("configs", params=_filters(name=name)):
            if c["Spec"]["Name"] == name:
                return dict(c)
        return None

    async def ensure_config(self, name: str, data_b64: str, labels: Mapping[str, str]) -> str:
        existing = await self.config(name)
        if existing is not None:
            return str(existing["ID"])
        try:
            result: JSON = await self.call(
                "configs/create",
                "POST",
                data={"Name": name, "Data": data_b64, "Labels": dict(labels)},
            )
        except SwarmError:
            again = await self.config(name)
            if again is None:
                raise
            return str(again["ID"])
        return str(result["ID"])

    async def configs_with_label(self, key: str, value: str | None = None) -> list[JSON]:
        label = f"{key}={value}" if value is not None else key
        result: list[JSON] = await self.call("configs", params=_filters(label=label))
        return result

    async def remove_config(self, name_or_id: str) -> bool:
        try:
            await self.call(f"configs/{name_or_id}", "DELETE")
        except NotFound:
            return False
        return True

    # --- containers (the local node only) -------------------------------------------------
    async def containers(self, **filters: str | list[str]) -> list[JSON]:
        result: list[JSON] = await self.call(
            "containers/json", params={"all": "1", **_filters(**filters)}
        )
        return result
