"""Print pip constraints that pin every direct dependency to the floor pyproject.toml declares.

`make test-lowest` installs with these, so each `>=` in pyproject.toml is a version the tests
have run on, not a guess. Only the forms pyproject.toml uses are understood (`name[extras]>=X`,
optionally `,<Y`); anything else stops the script, so a new form cannot slip through unpinned.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

REQUIREMENT = re.compile(
    r"^(?P<name>[A-Za-z0-9._-]+)(\[[^\]]*\])?\s*>=\s*(?P<floor>[0-9][0-9A-Za-z.]*)(\s*,\s*<\s*[0-9.]+)?$"
)


def floors(pyproject: Path, extras: list[str]) -> dict[str, str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    declared = list(project["dependencies"])
    for extra in extras:
        declared += project["optional-dependencies"][extra]
    pinned: dict[str, str] = {}
    for requirement in declared:
        match = REQUIREMENT.match(requirement.strip())
        if match is None:
            sys.exit(f"{pyproject}: cannot read a floor from {requirement!r}")
        name = match["name"].lower().replace("_", "-")
        if pinned.setdefault(name, match["floor"]) != match["floor"]:
            sys.exit(f"{pyproject}: {name} has two floors ({pinned[name]}, {match['floor']})")
    return pinned


def main() -> None:
    pyproject = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("pyproject.toml")
    extras = sys.argv[2].split(",") if len(sys.argv) > 2 else []
    for name, floor in sorted(floors(pyproject, extras).items()):
        print(f"{name}=={floor}")


if __name__ == "__main__":
    main()
