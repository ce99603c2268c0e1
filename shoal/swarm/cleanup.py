"""Removing what shoal created: one database, or everything (`shoal down`)."""

from __future__ import annotations

import asyncio

from shoal import names
from shoal.swarm.client import SwarmClient, SwarmError

DEPENDENT_REMOVAL_TIMEOUT = 90.0


async def _retry_remove(remove: object, ident: str, timeout: float) -> None:
    """Networks and secrets stay in use until the tasks using them have stopped."""
    assert callable(remove)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            await remove(ident)
            return
        except SwarmError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.5)


async def purge_database(
    swarm: SwarmClient, db: str, timeout: float = DEPENDENT_REMOVAL_TIMEOUT
) -> None:
    """Remove every service, secret, config and network of `db`, the anchor last.

    Secrets, configs and networks can only go once no task uses them, and an operator cycle
    that began before the delete may still create a service (the anchor is marked Deleting
    first, so that stops within a cycle): each round removes the services again before
    retrying what is left."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        for s in await swarm.services_of(db):
            if s["Spec"]["Labels"].get(names.LABEL_ROLE) != "anchor":
                await swarm.remove_service(s["ID"])
        failures: list[str] = []
        removals = [
            *(
                (swarm.remove_secret, x["ID"])
                for x in await swarm.secrets_with_label(names.LABEL_DATABASE, db)
            ),
            *(
                (swarm.remove_config, x["ID"])
                for x in await swarm.configs_with_label(names.LABEL_DATABASE, db)
            ),
            *(
                (swarm.remove_network, x["Id"])
                for x in await swarm.networks_with_label(names.LABEL_DATABASE, db)
            ),
        ]
        for remove, ident in removals:
            try:
                await remove(ident)
            except SwarmError as e:
                failures.append(str(e))
        if not failures:
            break
        if loop.time() > deadline:
            raise SwarmError(f"could not remove everything of {db}: {failures[0]}")
        await asyncio.sleep(0.5)
    await swarm.remove_service(names.anchor_service(db))


async def leftovers(swarm: SwarmClient, db: str | None = None) -> list[str]:
    """Names of objects shoal created (for `db`, or any) that still exist."""
    key, value = (names.LABEL_DATABASE, db) if db else (names.LABEL_MANAGED, "true")
    found = [f"service {s['Spec']['Name']}" for s in await swarm.services_with_label(key, value)]
    found += [f"secret {s['Spec']['Name']}" for s in await swarm.secrets_with_label(key, value)]
    found += [f"config {c['Spec']['Name']}" for c in await swarm.configs_with_label(key, value)]
    found += [f"network {n['Name']}" for n in await swarm.networks_with_label(key, value)]
    return found


async def purge_everything(swarm: SwarmClient, timeout: float = DEPENDENT_REMOVAL_TIMEOUT) -> None:
    """`shoal down`: every object labelled shoal.managed; the swarm itself is left alone.

    The operators go first, and their containers must be gone before anything else is
    removed: a live operator would re-create what is being removed (secrets, the lease)."""
    loop = asyncio.get_running_loop()
    for s in await swarm.services_with_label(names.LABEL_ROLE, "operator"):
        await swarm.remove_service(s["ID"])
        deadline = loop.time() + timeout
        while await swarm.containers(label=f"com.docker.swarm.service.id={s['ID']}"):
            if loop.time() > deadline:
                break
            await asyncio.sleep(0.5)
    anchors = await swarm.services_with_label(names.LABEL_ROLE, "anchor")
    for a in anchors:
        db = a["Spec"]["Labels"].get(names.LABEL_DATABASE)
        if db:
            await purge_database(swarm, db, timeout)
    for s in await swarm.services_with_label(names.LABEL_MANAGED, "true"):
        await swarm.remove_service(s["ID"])
    for sec in await swarm.secrets_with_label(names.LABEL_MANAGED, "true"):
        await _retry_remove(swarm.remove_secret, sec["ID"], timeout)
    for cfg in await swarm.configs_with_label(names.LABEL_MANAGED, "true"):
        await _retry_remove(swarm.remove_config, cfg["ID"], timeout)
    for net in await swarm.networks_with_label(names.LABEL_MANAGED, "true"):
        await _retry_remove(swarm.remove_network, net["Id"], timeout)
