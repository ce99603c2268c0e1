"""A thin, typed layer over the Docker Engine API for what shoal needs from Swarm.

aiodocker's `services.update` only changes an image, so service specs are written with the
raw `POST /services/{id}/update?version=N` call: that version is Swarm's compare-and-swap,
which the declaration store and the operator lease both stand on.

Waiting on Swarm is written once, here, on tenacity: `retrying_for` (retry what fails with a
given error), `while_raft_busy` (the same, while the managers elect a leader) and `poll`
(until a check answers yes).
"""

from __future__ import annotations

import abc
import contextlib
import io
import json
import tarfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiodocker
import aiohttp
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
    """The Docker API refused or failed a call; the message is Docker's own. `status` is the
    HTTP status Docker answered (None when the error is shoal's own), `message` Docker's
    text without the "Docker API error N:" prefix."""

    def __init__(self, message: str, status: int | None = None, *, docker: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = docker if docker is not None else message


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

    async def ask() -> bool:
        # Awaited here: tenacity awaits only what it recognises as a coroutine function, and
        # a lambda returning a coroutine is not one (its coroutine counted as a true answer:
        # `shoal delete --wait` returned at once).
        return await check()

    answer: bool = await until_true(ask)
    return answer


def _wrap(e: DockerError) -> SwarmError:
    msg = str(e.message) if hasattr(e, "message") else str(e)
    if e.status == 404:
        return NotFound(msg, 404)
    if "out of sequence" in msg or ("version" in msg.lower() and e.status in (409, 500)):
        return VersionConflict(msg, e.status)
    return SwarmError(f"Docker API error {e.status}: {msg}", e.status, docker=msg)


@contextlib.contextmanager
def _docker_errors() -> Iterator[None]:
    """Docker's errors as `SwarmError`s (`NotFound`, `VersionConflict`), as `call` raises
    them, for the calls made through aiodocker's own objects (containers, exec)."""
    try:
        yield
    except DockerError as e:
        raise _wrap(e) from None


@dataclass(frozen=True)
class Kind:
    """A kind of Swarm object that is found by name or label, created once and removed the
    same way whatever it is: networks, secrets and configs (services too, by label and for
    removal). The kinds differ only in their path, the key of their id, and where their
    name is."""

    path: str
    id_key: str = "ID"
    name_at_top: bool = False  # a network's Name is at the top, the others' in Spec

    def name_of(self, obj: JSON) -> str:
        return str(obj.get("Name") if self.name_at_top else obj["Spec"]["Name"])

    def id_of(self, obj: JSON) -> str:
        return str(obj[self.id_key])

    @property
    def noun(self) -> str:
        return self.path.removesuffix("s")


NETWORKS = Kind("networks", id_key="Id", name_at_top=True)
SECRETS = Kind("secrets")
CONFIGS = Kind("configs")
SERVICES = Kind("services")


def _filters(**kv: str | list[str]) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    for k, v in kv.items():
        out[k] = v if isinstance(v, list) else [v]
    return {"filters": json.dumps(out)}


class ByKind(abc.ABC):
    """Every named call on networks, secrets, configs and services (ensure, find, find by
    label, remove), written once over four primitives parameterised by the `Kind`: `find`,
    `with_label`, `create`, `remove`. `SwarmClient` implements them with Docker's API, the
    unit tests' fake (tests/conftest.py) with dictionaries, so both build the same specs."""

    @abc.abstractmethod
    async def find(self, kind: Kind, name: str) -> JSON | None:
        """The object of `kind` named exactly `name`."""

    @abc.abstractmethod
    async def with_label(self, kind: Kind, key: str, value: str | None = None) -> list[JSON]:
        """The objects of `kind` that carry label `key` (with `value`, unless None)."""

    @abc.abstractmethod
    async def create(self, kind: Kind, spec: JSON) -> str:
        """Create an object of `kind`; a SwarmError when Swarm refuses (one of that name
        exists)."""

    @abc.abstractmethod
    async def remove(self, kind: Kind, name_or_id: str) -> bool:
        """Remove one object; False when there was none."""

    async def ensure(self, kind: Kind, spec: JSON) -> str:
        """The id of the object of `kind` named `spec["Name"]`, created from `spec` when
        there is none (an existing one is kept as it is, even if its spec differs)."""
        name = str(spec["Name"])
        existing = await self.find(kind, name)
        if existing is not None:
            return kind.id_of(existing)
        try:
            return await self.create(kind, spec)
        except SwarmError:
            again = await self.find(kind, name)  # created concurrently
            if again is None:
                raise
            return kind.id_of(again)

    async def services_of(self, db: str) -> list[JSON]:
        return await self.services_with_label(names.LABEL_DATABASE, db)

    async def services_with_label(self, key: str, value: str | None = None) -> list[JSON]:
        return await self.with_label(SERVICES, key, value)

    async def create_service(self, spec: JSON) -> str:
        return await self.create(SERVICES, spec)

    async def remove_service(self, name_or_id: str) -> bool:
        return await self.remove(SERVICES, name_or_id)

    async def network(self, name: str) -> JSON | None:
        return await self.find(NETWORKS, name)

    async def ensure_overlay(
        self, name: str, labels: Mapping[str, str], subnet: str | None = None
    ) -> str:
        spec: JSON = {
            "Name": name,
            "Driver": "overlay",
            "Attachable": True,
            "CheckDuplicate": True,
            "Labels": dict(labels),
        }
        if subnet is not None:
            spec["IPAM"] = {"Driver": "default", "Config": [{"Subnet": subnet}]}
        return await self.ensure(NETWORKS, spec)

    async def remove_network(self, name_or_id: str) -> bool:
        return await self.remove(NETWORKS, name_or_id)

    async def networks_with_label(self, key: str, value: str | None = None) -> list[JSON]:
        return await self.with_label(NETWORKS, key, value)

    async def secret(self, name: str) -> JSON | None:
        return await self.find(SECRETS, name)

    async def create_secret(self, name: str, data_b64: str, labels: Mapping[str, str]) -> str:
        """Create a secret; a SwarmError when Swarm refuses (one of that name exists)."""
        return await self.create(SECRETS, _payload(name, data_b64, labels))

    async def ensure_secret(self, name: str, data_b64: str, labels: Mapping[str, str]) -> str:
        return await self.ensure(SECRETS, _payload(name, data_b64, labels))

    async def secrets_with_label(self, key: str, value: str | None = None) -> list[JSON]:
        return await self.with_label(SECRETS, key, value)

    async def remove_secret(self, name_or_id: str) -> bool:
        return await self.remove(SECRETS, name_or_id)

    async def config(self, name: str) -> JSON | None:
        return await self.find(CONFIGS, name)

    async def ensure_config(self, name: str, data_b64: str, labels: Mapping[str, str]) -> str:
        return await self.ensure(CONFIGS, _payload(name, data_b64, labels))

    async def configs_with_label(self, key: str, value: str | None = None) -> list[JSON]:
        return await self.with_label(CONFIGS, key, value)

    async def remove_config(self, name_or_id: str) -> bool:
        return await self.remove(CONFIGS, name_or_id)


# How many different list reads `SwarmClient` keeps the last decoded answer of: the
# operator's polls (every task of shoal's, the nodes) and a few reads of single services'
# tasks.
DECODED_READS_KEPT = 16


def _client_timeout(seconds: float | None) -> aiohttp.ClientTimeout:
    """aiodocker's timeout for a call of at most `seconds` (None: no limit). A bare float
    still works there but costs a DeprecationWarning check on every call."""
    return aiohttp.ClientTimeout(total=seconds, sock_read=seconds)


class SwarmApi(Protocol):
    """What the operator's reconcile cycle asks of Swarm (`operator/observe.py`, `apply.py`,
    `members.py`, `proxy.py`, `worker.py` through them, `swarm/store.py`, `cleanup.py`).
    `SwarmClient` is the one implementation; tests/conftest.py's `FakeSwarm` the one fake.
    (The operator runtime also follows `events`.)"""

    async def info(self) -> JSON: ...
    def events(self, **filters: list[str]) -> AsyncIterator[JSON]: ...

    async def find(self, kind: Kind, name: str) -> JSON | None: ...
    async def with_label(self, kind: Kind, key: str, value: str | None = None) -> list[JSON]: ...
    async def create(self, kind: Kind, spec: JSON) -> str: ...
    async def ensure(self, kind: Kind, spec: JSON) -> str: ...
    async def remove(self, kind: Kind, name_or_id: str) -> bool: ...

    async def services_of(self, db: str) -> list[JSON]: ...
    async def services_with_label(self, key: str, value: str | None = None) -> list[JSON]: ...
    async def service(self, name_or_id: str) -> JSON | None: ...
    async def create_service(self, spec: JSON) -> str: ...
    async def update_service(self, service_id: str, version: int, spec: JSON) -> None: ...
    async def remove_service(self, name_or_id: str) -> bool: ...

    async def tasks(self, **filters: str | list[str]) -> list[JSON]: ...
    async def nodes(self) -> list[JSON]: ...

    async def network(self, name: str) -> JSON | None: ...
    async def ensure_overlay(
        self, name: str, labels: Mapping[str, str], subnet: str | None = None
    ) -> str: ...
    async def subnets_in_use(self) -> list[str]: ...
    async def networks_with_label(self, key: str, value: str | None = None) -> list[JSON]: ...
    async def remove_network(self, name_or_id: str) -> bool: ...

    async def secret(self, name: str) -> JSON | None: ...
    async def create_secret(self, name: str, data_b64: str, labels: Mapping[str, str]) -> str: ...
    async def ensure_secret(self, name: str, data_b64: str, labels: Mapping[str, str]) -> str: ...
    async def secrets_with_label(self, key: str, value: str | None = None) -> list[JSON]: ...
    async def remove_secret(self, name_or_id: str) -> bool: ...

    async def config(self, name: str) -> JSON | None: ...
    async def ensure_config(self, name: str, data_b64: str, labels: Mapping[str, str]) -> str: ...
    async def configs_with_label(self, key: str, value: str | None = None) -> list[JSON]: ...
    async def remove_config(self, name_or_id: str) -> bool: ...

    async def containers(self, **filters: str | list[str]) -> list[JSON]: ...
    async def kill_container(
        self, container_id: str, signal: str = "SIGKILL", *, timeout: float | None = 30.0
    ) -> None: ...


class SwarmClient(ByKind):
    """One connection to a Docker engine that is a Swarm manager. Honours DOCKER_HOST, or
    talks to `url` (another node's engine, `unix://...` or `tcp://...`)."""

    def __init__(self, docker: aiodocker.Docker | None = None, *, url: str | None = None) -> None:
        self._docker = docker
        self._owned = docker is None
        self._url = url
        # The last answer to each of a few list reads, as Docker sent it and decoded (see
        # `_list_read`), oldest first.
        self._decoded: dict[tuple[str, str], tuple[bytes, list[JSON]]] = {}

    @property
    def docker(self) -> aiodocker.Docker:
        if self._docker is None:
            self._docker = aiodocker.Docker(url=self._url)
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
                timeout=_client_timeout(timeout),
            )
        except DockerError as e:
            raise _wrap(e) from None

    async def _list_read(self, path: str, params: Mapping[str, str] | None = None) -> list[JSON]:
        """`GET path` of a list, decoded only when Docker's answer differs byte for byte from
        its answer to the same request last time (else that decoding is returned again; the
        list is new, its objects shared: callers only read them). The operator polls the
        task list four times a second and it seldom changes; decoding it was the largest
        part of the operator's steady CPU (docs/benchmarks.md, "Operator load")."""
        key = (path, json.dumps(params, sort_keys=True))
        try:
            async with self.docker._query(
                path, params=dict(params) if params else None, timeout=_client_timeout(30.0)
            ) as response:
                body = await response.read()
        except DockerError as e:
            raise _wrap(e) from None
        last = self._decoded.pop(key, None)
        if last is None or last[0] != body:
            value = json.loads(body)
            if not isinstance(value, list):
                raise SwarmError(f"GET {path}: expected a list, got {type(value).__name__}")
            last = (body, value)
        self._decoded[key] = last  # now the newest
        while len(self._decoded) > DECODED_READS_KEPT:
            del self._decoded[next(iter(self._decoded))]
        return list(last[1])

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

    # --- any kind of object: find by name or label, create once, remove ---------------
    async def find(self, kind: Kind, name: str) -> JSON | None:
        """The object of `kind` named exactly `name` (Docker's name filter also matches
        prefixes)."""
        for obj in await self.call(kind.path, params=_filters(name=name)):
            if kind.name_of(obj) == name:
                return dict(obj)
        return None

    async def with_label(self, kind: Kind, key: str, value: str | None = None) -> list[JSON]:
        label = f"{key}={value}" if value is not None else key
        result: list[JSON] = await self.call(kind.path, params=_filters(label=label))
        return result

    async def create(self, kind: Kind, spec: JSON) -> str:
        """Create an object of `kind`; a SwarmError when Swarm refuses (one of that name
        exists)."""
        result: JSON = await self.call(f"{kind.path}/create", "POST", data=spec)
        return kind.id_of(result)

    async def remove(self, kind: Kind, name_or_id: str) -> bool:
        """Remove one object; False when there was none."""
        try:
            await self.call(f"{kind.path}/{name_or_id}", "DELETE")
        except NotFound:
            return False
        return True

    # --- services -------------------------------------------------------------------------
    async def services(self, **labels: str) -> list[JSON]:
        label_filters = [f"{k}={v}" if v else k for k, v in labels.items()]
        params = _filters(label=label_filters) if label_filters else None
        result: list[JSON] = await self.call("services", params=params)
        return result

    async def service(self, name_or_id: str) -> JSON | None:
        try:
            result: JSON = await self.call(f"services/{name_or_id}")
        except NotFound:
            return None
        return result

    async def update_service(self, service_id: str, version: int, spec: JSON) -> None:
        """Compare-and-swap: fails with `VersionConflict` if the service changed since read."""
        await self.call(
            f"services/{service_id}/update", "POST", params={"version": str(version)}, data=spec
        )

    # --- tasks and nodes -----------------------------------------------------------------
    async def tasks(self, **filters: str | list[str]) -> list[JSON]:
        return await self._list_read("tasks", _filters(**filters))

    async def nodes(self) -> list[JSON]:
        return await self._list_read("nodes")

    # --- networks ------------------------------------------------------------------------
    async def subnets_in_use(self) -> list[str]:
        nets: list[JSON] = await self.call("networks")
        return [
            str(c["Subnet"])
            for n in nets
            for c in ((n.get("IPAM") or {}).get("Config") or [])
            if c.get("Subnet")
        ]

    async def connect_network(self, network: str, container: str) -> None:
        """Attach a container (of this node) to a network."""
        await self.call(
            f"networks/{network}/connect", "POST", data={"Container": container}, timeout=None
        )

    async def disconnect_network(self, network: str, container: str, *, force: bool) -> None:
        await self.call(
            f"networks/{network}/disconnect",
            "POST",
            data={"Container": container, "Force": force},
            timeout=None,
        )

    # --- images (of this engine) ------------------------------------------------------------
    async def tag_image(self, image: str, repository: str, tag: str) -> None:
        with _docker_errors():
            await self.docker.images.tag(image, repository, tag=tag)

    async def push_image(
        self, repository: str, tag: str, auth: dict[str, str] | None
    ) -> list[JSON]:
        """Push `repository:tag`; the progress records the engine streamed (no timeout)."""
        with _docker_errors():
            return [
                record
                async for record in self.docker.images.push(
                    repository,
                    tag=tag,
                    auth=auth,
                    stream=True,
                    timeout=None,
                )
            ]

    # --- containers (the local node only) -------------------------------------------------
    # Swarm starts its tasks' containers itself; these are for the containers shoal's tools
    # run on the engine they talk to (the chaos suite's client and fault helpers), and for
    # the operator's container (`docker exec`). They go through aiodocker's own objects,
    # with its timeouts (none for waiting, killing and stopping).
    async def containers(self, **filters: str | list[str]) -> list[JSON]:
        result: list[JSON] = await self.call(
            "containers/json", params={"all": "1", **_filters(**filters)}
        )
        return result

    async def container(self, container_id: str) -> JSON | None:
        """`docker inspect` of a container; None when there is none."""
        try:
            with _docker_errors():
                found: JSON = await self.docker.containers.container(container_id).show()
        except NotFound:
            return None
        return found

    async def create_container(
        self,
        name: str,
        config: JSON,
        files: Mapping[str, bytes] | None = None,
        files_dir: str = "/tmp",
    ) -> str:
        """Create (not start) a container; `files` are copied into `files_dir` first."""
        with _docker_errors():
            container = await self.docker.containers.create(config=config, name=name)
            for fname, data in (files or {}).items():
                await container.put_archive(files_dir, tar_file(fname, data))  # type: ignore[no-untyped-call]
        return str(container.id)

    async def start_container(self, container_id: str) -> None:
        with _docker_errors():
            await self.docker.containers.container(container_id).start()

    async def wait_container(self, container_id: str) -> int:
        """Wait for the container to exit; its exit code (-1 when Docker says none)."""
        with _docker_errors():
            result = await self.docker.containers.container(container_id).wait()
        return int(result.get("StatusCode", -1))

    async def container_logs(
        self, container_id: str, *, stdout: bool = True, stderr: bool = True
    ) -> str:
        with _docker_errors():
            lines = await self.docker.containers.container(container_id).log(
                stdout=stdout, stderr=stderr
            )
        return "".join(lines)

    async def kill_container(
        self, container_id: str, signal: str = "SIGKILL", *, timeout: float | None = 30.0
    ) -> None:
        """Send a container a signal (`timeout` None: aiodocker's default, 5 min)."""
        await self.call(
            f"containers/{container_id}/kill", "POST", params={"signal": signal}, timeout=timeout
        )

    async def stop_container(self, container_id: str, grace: int) -> None:
        with _docker_errors():
            await self.docker.containers.container(container_id).stop(t=grace)

    async def pause_container(self, container_id: str) -> None:
        with _docker_errors():
            await self.docker.containers.container(container_id).pause()

    async def unpause_container(self, container_id: str) -> None:
        with _docker_errors():
            await self.docker.containers.container(container_id).unpause()

    async def remove_container(self, container_id: str) -> bool:
        """Remove a container, running or not; False when it is gone already or being
        removed (Docker's 404 and 409)."""
        try:
            with _docker_errors():
                await self.docker.containers.container(container_id).delete(force=True)
        except SwarmError as e:
            if e.status in (404, 409):
                return False
            raise
        return True

    async def exec(self, container_id: str, argv: list[str]) -> tuple[int | None, bytes, bytes]:
        """Run `argv` in a running container of this node: (exit code, stdout, stderr)."""
        out: list[bytes] = []
        err: list[bytes] = []
        with _docker_errors():
            container = await self.docker.containers.get(container_id)
            exe = await container.exec(argv, stdout=True, stderr=True)
            async with exe.start(detach=False) as stream:
                while (msg := await stream.read_out()) is not None:
                    (out if msg.stream == 1 else err).append(msg.data)
            info = await exe.inspect()
        code = info.get("ExitCode")
        return (int(code) if code is not None else None), b"".join(out), b"".join(err)


def _payload(name: str, data_b64: str, labels: Mapping[str, str]) -> JSON:
    """The spec of a secret or a config."""
    return {"Name": name, "Data": data_b64, "Labels": dict(labels)}


def tar_file(name: str, data: bytes, mode: int = 0o600) -> bytes:
    """A tar archive of one file, as `PUT /containers/{id}/archive` takes it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = mode
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
