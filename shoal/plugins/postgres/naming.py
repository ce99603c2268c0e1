"""PostgreSQL's names for shoal's objects: the port members serve clients on, and the
replication slot (and `application_name`) of each member."""

from __future__ import annotations

PORT = 5432


def slot_name(member: str) -> str:
    """A member's replication slot and application_name (slot names allow no '-')."""
    return member.replace("-", "_")
