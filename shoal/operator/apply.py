"""Apply: carry out one planned action. The generic ones (members' services, networks and
secrets, the proxy, requests) are the operator's; the engine's own go to its plugin."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from shoal import names
from shoal.credentials import DatabaseCredentials
from shoal.operator.context import OperatorContext
from shoal.operator.members import (
    ensure_infrastructure,
    member_service_spec,
    pin_member,
    replace_member,
)
from shoal.operator.placement import PlacementPlan
from shoal.operator.proxy import ensure_proxy, prune_configs, remove_proxy
from shoal.plugins.base import (
    Action,
    ActionFailed,
    ApplyContext,
    ClearRequest,
    CreateMember,
    EnginePlugin,
    EnsureInfrastructure,
    EnsureProxy,
    PinMember,
    PruneProxyConfigs,
    RemoveMember,
    RemoveProxy,
    ReplaceMember,
)
from shoal.swarm.cleanup import purge_database
from shoal.swarm.client import SwarmError
from shoal.swarm.store import StoredDatabase

log = logging.getLogger("shoal.operator")
# Actions that change Swarm objects: the lease is re-read right before each (fencing
# tokens guard the agents' actions; Swarm itself has no notion of them).
SWARM_CHANGES = (
    CreateMember,
    RemoveMember,
    ReplaceMember,
    PinMember,
    ClearRequest,
    EnsureInfrastructure,
    EnsureProxy,
    RemoveProxy,
    PruneProxyConfigs,
)


class DatabaseGone(RuntimeError):
    """The database was deleted (or deleted and declared again) while a cycle was in flight:
    nothing may be created for it any more."""


class Applier:
    """Applies actions for one database."""

    def __init__(self, ctx: OperatorContext, name: str) -> None:
        self.ctx = ctx
        self.name = name

    async def apply(
        self,
        action: Action,
        stored: StoredDatabase,
        plugin: EnginePlugin[Any],
        credentials: DatabaseCredentials,
        placement: PlacementPlan | None = None,
    ) -> None:
        log.info("%s", action.describe(), extra={"event": "action", "database": self.name})
        try:
            await self._apply(action, stored, plugin, credentials, placement)
        finally:
            # What the workers share of Swarm (operator/shared.py) is read again: the next
            # pass must see Swarm as this action left it, even one that failed halfway.
            self.ctx.shared.changed(self.name)

    async def _apply(
        self,
        action: Action,
        stored: StoredDatabase,
        plugin: EnginePlugin[Any],
        credentials: DatabaseCredentials,
        placement: PlacementPlan | None,
    ) -> None:
        ctx = self.ctx
        db = stored.declaration
        match action:
            case EnsureInfrastructure():
                async with self._creating(stored):
                    await ensure_infrastructure(ctx.swarm, db, stored.uid, credentials)
            case CreateMember(index=i):
                async with self._creating(stored):
                    infra = await ensure_infrastructure(ctx.swarm, db, stored.uid, credentials)
                    pin = placement.pin_for(i) if placement is not None else None
                    spec = member_service_spec(
                        db, i, plugin.member_image(), infra, pin=pin,
                        extra_env=plugin.member_env(db),
                    )  # fmt: skip
                    try:
                        await ctx.swarm.create_service(spec)
                    except SwarmError:
                        if await ctx.swarm.service(spec["Name"]) is None:
                            raise
            case RemoveMember(index=i):
                await ctx.swarm.remove_service(names.member_service(self.name, i))
            case ReplaceMember(member=m, reason=why):
                log.warning(
                    "replacing %s: %s",
                    m,
                    why,
                    extra={"event": "fence", "database": self.name, "member": m},
                )
                await replace_member(ctx.swarm, m)
            case PinMember(member=m, value=value, reason=why):
                log.warning(
                    "moving %s to %s=%s: %s",
                    m,
                    db.spec.placement.spread,
                    value,
                    why,
                    extra={"event": "move", "database": self.name, "member": m},
                )
                await pin_member(ctx.swarm, db, m, value)
            case ClearRequest(request_id=rid):
                await ctx.store.clear_request(self.name, rid)
            case EnsureProxy(port=port, members=members):
                backend = plugin.proxy_backend
                if backend is None:  # plan_proxy plans none for such an engine
                    raise ActionFailed(f"engine {plugin.engine.value} has no read-write proxy")
                async with self._creating(stored):
                    await ensure_proxy(ctx.swarm, db, backend, plugin.member_image(), port, members)
            case RemoveProxy():
                await remove_proxy(ctx.swarm, self.name)
            case PruneProxyConfigs(configs=configs):
                await prune_configs(ctx.swarm, configs)
            case _:
                await plugin.apply(
                    action,
                    ApplyContext(ctx.swarm, ctx.http, credentials, ctx.lease.token, db),
                )

    @contextlib.asynccontextmanager
    async def _creating(self, stored: StoredDatabase) -> AsyncIterator[None]:
        """Around anything that creates objects of the database: the anchor is read before
        (`_still_declared`) and again after. A `shoal delete` that purged everything and
        removed the anchor in between (`delete --wait` may already have seen the database
        gone) would leave what was just created behind, owned by nothing (the window between
        the check and the creations; tests/unit/test_worker_cycle.py stages it). Then it is
        purged again at once (also while the anchor is still marked Deleting: the purge may
        have passed already). A database declared again meanwhile (another uid) is left
        alone: only its name is shared, and its own objects are its own."""
        await self._still_declared(stored)
        yield
        current = await self.ctx.store.get(self.name)
        if current is None or (current.deleting and current.uid == stored.uid):
            log.warning(
                "%s was deleted while this cycle created objects of it: removing them",
                self.name,
                extra={"event": "gone", "database": self.name},
            )
            await purge_database(self.ctx.swarm, self.name)
            raise DatabaseGone(f"{self.name} was deleted during the cycle; removed what it made")

    async def _still_declared(self, stored: StoredDatabase) -> None:
        """Re-read the anchor right before creating anything: `shoal delete` may have purged
        the database since this cycle read it, and re-creating its secrets, network or members
        then would leave objects behind that nothing owns."""
        current = await self.ctx.store.get(self.name)
        if current is None or current.deleting or current.uid != stored.uid:
            raise DatabaseGone(f"{self.name} was deleted during the cycle; creating nothing")
