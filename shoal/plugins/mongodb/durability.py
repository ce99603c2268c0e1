"""The write concern shoal asks for (docs: "Write Concern", "Read Concern").

`durability: sync` is `w: "majority"` (with journaling): a write is acknowledged once a
majority of the voting data-bearing members hold it, so it survives any failover (an
elected member needs a majority of votes, and so overlaps every majority that
acknowledged a write). With at least two members voting (membership.voters_wanted), that
is at least two copies. Reads shoal calls acknowledged use `readConcern: majority`.

`durability: async` is `w: 1`: acknowledged by the primary alone; a failover may lose the
writes the new primary never received (MongoDB rolls them back on the old primary).
"""

from __future__ import annotations

from dataclasses import dataclass

from shoal.declaration import Database, Durability


@dataclass(frozen=True)
class WriteConcern:
    w: int | str
    j: bool

    def to_document(self) -> dict[str, int | str | bool]:
        return {"w": self.w, "j": self.j}


MAJORITY = WriteConcern(w="majority", j=True)
PRIMARY_ONLY = WriteConcern(w=1, j=True)
READ_CONCERN = "majority"


def write_concern(database: Database) -> WriteConcern:
    return MAJORITY if database.spec.durability is Durability.SYNC else PRIMARY_ONLY
