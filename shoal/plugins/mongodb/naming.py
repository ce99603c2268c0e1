"""MongoDB's names for shoal's objects: the port members serve on, each member's host as the
replica set configuration names it, and the replica set's name.

A member's host is its Swarm service name (`orders-1`): the name stays when Swarm replaces
the member's container, so a replaced member comes back at the host the configuration
already lists (planner.py relies on it: such a member needs no reconfig)."""

from __future__ import annotations

PORT = 27017


def host(member: str) -> str:
    """`<member service name>:27017`, the `members[n].host` of replSetInitiate/replSetReconfig."""
    return f"{member}:{PORT}"


def member_of(host_name: str) -> str:
    """The member (service name) of a configuration's host; the inverse of `host`."""
    name, sep, port = host_name.rpartition(":")
    if sep and port == str(PORT):
        return name
    return host_name


def replica_set_name(database: str) -> str:
    """The replica set's `_id` (`mongod --replSet`): the database's own name."""
    return database
