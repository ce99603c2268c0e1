"""The `Database` declaration (README.md, "Declaring a database"): a pydantic model and a
loader that reports every problem at once, one line per problem, and never raises anything but
`DeclarationError`.

Every problem line starts with the dotted path of the field it is about
(`spec.members: must be between 1 and 7, got 0`), or with `declaration:` when it is about the
document as a whole (not YAML, not a mapping, two documents, too large).
"""

from shoal.declaration.loader import load_declaration
from shoal.declaration.model import (
    MAX_MEMBERS,
    Database,
    DeclarationError,
    Durability,
    Engine,
    Expose,
    Failover,
    Metadata,
    Placement,
    Resources,
    Spec,
    memory_bytes,
)
from shoal.declaration.problems import validate_document

__all__ = [
    "MAX_MEMBERS",
    "Database",
    "DeclarationError",
    "Durability",
    "Engine",
    "Expose",
    "Failover",
    "Metadata",
    "Placement",
    "Resources",
    "Spec",
    "load_declaration",
    "memory_bytes",
    "validate_document",
]
