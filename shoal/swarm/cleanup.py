"""Removing what shoal created: one database, or everything (`shoal down`)."""

from __future__ import annotations

from functools import partial

from shoal import names
from shoal.swarm.client import (
    CONFIGS,
    NETWORKS,
    SECRETS,
    SERVICES,
    Kind,
    SwarmApi,
    SwarmError,
    poll,
    retrying_for,
)

DEPENDENT_REMOVAL_TIMEOUT = 90.0
# What a database or shoal leaves besides services: removed after them, once no task uses
# them any more.
DEPENDENTS = (SECRETS, CONFIGS, NETWORKS)


class _StillInUse(SwarmError):
    """Some of a database's secrets, configs or networks could not be removed yet."""


async def _retry_remove(swarm: SwarmApi, kind: Kind, ident: str, timeout: float) -> None:
    """Networks and secrets stay in use until the tasks using them have stopped."""
    async for attempt in retrying_for(timeout, every=0.5, on=SwarmError):
        with attempt:
            await swarm.remove(kind, ident)


async def _remove_round(swarm: SwarmApi, db: str) -> None:
    """Remove the services of `db` but its anchor, then every secret, config and network of
    it that no task uses any more; `_StillInUse` when some could not go yet."""
    for s in await swarm.services_of(db):
        if s["Spec"]["Labels"].get(names.LABEL_ROLE) != "anchor":
            await swarm.remove_service(s["ID"])
    failures: list[str] = []
    removals = [
        (kind, kind.id_of(x))
        for kind in DEPENDENTS
        for x in await swarm.with_label(kind, names.LABEL_DATABASE, db)
    ]
    for kind, ident in removals:
        try:
            await swarm.remove(kind, ident)
        except SwarmError as e:
            failures.append(str(e))
    if failures:
        raise _StillInUse(f"could not remove everything of {db}: {failures[0]}")


async def purge_database(
    swarm: SwarmApi, db: str, timeout: float = DEPENDENT_REMOVAL_TIMEOUT
) -> None:
    """Remove every service, secret, config and network of `db`, the anchor last.

    Secrets, configs and networks can only go once no task uses them, and an operator cycle
    that began before the delete may still create a service (the anchor is marked Deleting
    first, so that stops within a cycle): each round removes the services again before
    retrying what is left."""
    async for attempt in retrying_for(timeout, every=0.5, on=_StillInUse):
        with attempt:
            await _remove_round(swarm, db)
    await swarm.remove_service(names.anchor_service(db))


async def _service_stopped(swarm: SwarmApi, service_id: str) -> bool:
    return not await swarm.containers(label=f"com.docker.swarm.service.id={service_id}")


async def leftovers(swarm: SwarmApi, db: str | None = None) -> list[str]:
    """Names of objects shoal created (for `db`, or any) that still exist."""
    key, value = (names.LABEL_DATABASE, db) if db else (names.LABEL_MANAGED, "true")
    return [
        f"{kind.noun} {kind.name_of(x)}"
        for kind in (SERVICES, *DEPENDENTS)
        for x in await swarm.with_label(kind, key, value)
    ]


async def purge_everything(swarm: SwarmApi, timeout: float = DEPENDENT_REMOVAL_TIMEOUT) -> None:
    """`shoal down`: every object labelled shoal.managed; the swarm itself is left alone.

    The operators go first, and their containers must be gone before anything else is
    removed: a live operator would re-create what is being removed (secrets, the lease)."""
    for s in await swarm.services_with_label(names.LABEL_ROLE, "operator"):
        await swarm.remove_service(s["ID"])
        await poll(partial(_service_stopped, swarm, s["ID"]), timeout)
    anchors = await swarm.services_with_label(names.LABEL_ROLE, "anchor")
    for a in anchors:
        db = a["Spec"]["Labels"].get(names.LABEL_DATABASE)
        if db:
            await purge_database(swarm, db, timeout)
    for s in await swarm.services_with_label(names.LABEL_MANAGED, "true"):
        await swarm.remove_service(s["ID"])
    for kind in DEPENDENTS:
        for x in await swarm.with_label(kind, names.LABEL_MANAGED, "true"):
            await _retry_remove(swarm, kind, kind.id_of(x), timeout)
