"""The operator's record of the leases it granted members (plugins/base.py `LeaseGrant`).

A lease is held by a *container*, not by a member's name: once Swarm has replaced a member
lost with its node, probes of that name reach the replacement, and renewing "the member"
would seem to renew the stranded old container too. So each renewal is booked against the
Swarm task of the container that answered it (the engine reports its task), or, when no
answer says who received it, against every task of the member that may be running.

A probe carries a renewal only when the member answered the one before, so a container that
stopped answering is not kept alive by probes that reach it one way. A task never renewed by
this operator counts as renewed when this book was opened: a previous operator may have
renewed it just before it died. Times are this process's monotonic clock, taken when the
renewal was *sent* (the member counts from when it arrived, which is later).
"""

from __future__ import annotations

from collections.abc import Iterable

from shoal.plugins.base import LeaseGrant


class LeaseBook:
    def __init__(self, opened: float) -> None:
        self.opened = opened
        self._renewed: dict[str, float] = {}  # task id -> when a renewal was last sent to it
        self._answered: dict[str, bool] = {}  # member -> its last probe answered

    def grant(
        self, member: str, ttl: float | None, members: list[str], token: int
    ) -> LeaseGrant | None:
        """The renewal to send with this member's probe (None: none)."""
        if ttl is None or not self._answered.get(member, True):
            return None
        return LeaseGrant(ttl=ttl, token=token, peers=tuple(m for m in members if m != member))

    def book(
        self,
        member: str,
        sent_at: float,
        renewed: bool,
        answered_by: str | None,
        may_run: Iterable[str],
        answered: bool,
    ) -> None:
        """One probe of `member`, sent at `sent_at`: a renewal if `renewed`, answered by the
        container of task `answered_by` (None: unknown or no answer)."""
        if renewed:
            self._renewed_at(answered_by, may_run, sent_at)
        self._answered[member] = answered

    def book_renewal(
        self,
        member: str,
        sent_at: float,
        answered_by: str | None,
        may_run: Iterable[str],
        answered: bool,
    ) -> None:
        """A renewal alone (no probe), sent at `sent_at`. It never marks the member as
        answering: whether its engine answers is for the next probe to say, so a member
        whose agent answers but whose engine does not loses its renewals all the same."""
        self._renewed_at(answered_by, may_run, sent_at)
        if not answered:
            self._answered[member] = False

    def _renewed_at(self, answered_by: str | None, may_run: Iterable[str], sent_at: float) -> None:
        # The latest renewal sent counts: a renewal answered after a later probe's (the two
        # run concurrently) must not move the lease's end back.
        for task in [answered_by] if answered_by else may_run:
            self._renewed[task] = max(self._renewed.get(task, sent_at), sent_at)

    def left(self, tasks: Iterable[str], ttl: float | None, margin: float, now: float) -> float:
        """Seconds until the lease of every one of `tasks` is surely over (<= 0: it is)."""
        if ttl is None:
            return 0.0
        ends = [self._renewed.get(t, self.opened) + ttl + margin for t in tasks]
        return max(ends, default=now) - now

    def prune(self, tasks: set[str]) -> None:
        """Forget tasks Swarm no longer lists."""
        self._renewed = {t: v for t, v in self._renewed.items() if t in tasks}
