"""What the modules of a package that runs inside a member image import: the member image
holds only the agent package and `shoal.agentkit`, run by Debian's python3 with the Debian
packages its Dockerfile installs."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

AGENTKIT = "shoal.agentkit"


def outside_imports(package: Path, allowed: frozenset[str] = frozenset()) -> list[str]:
    """`<module> imports <name>` for each absolute import in `package`'s modules of neither
    the standard library, `shoal.agentkit` nor a top-level name in `allowed`."""
    found = []
    for module in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "__future__" or top in allowed:
                    continue
                if name == AGENTKIT or name.startswith(AGENTKIT + "."):
                    continue
                found.append(f"{module.name} imports {name}")
    return found
