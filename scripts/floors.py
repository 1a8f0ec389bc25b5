"""Print a constraints file that pins every runtime dependency to the floor pyproject.toml admits.

`make test-lowest` installs with these constraints, so the suite runs on exactly the lowest
version each range claims: uv's `--resolution lowest-direct` alone does not, because the
extras reach the dev environment through `stratacache[all]`, which uv treats as transitive.
Development tools (the `dev` extra) are left to the resolver.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

FLOOR = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(?:\[[^\]]*\])?\s*[^;]*?>=\s*([^,;\s]+)")


def floors(pyproject: Path) -> dict[str, str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = list(project.get("dependencies", []))
    for extra, items in project.get("optional-dependencies", {}).items():
        if extra not in ("dev", "all"):
            requirements += items
    pins: dict[str, str] = {}
    for requirement in requirements:
        match = FLOOR.match(requirement)
        if match and not match.group(1).startswith("stratacache"):
            pins[match.group(1).lower()] = match.group(2)
    return pins


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml")
    for name, version in sorted(floors(path).items()):
        print(f"{name}=={version}")
