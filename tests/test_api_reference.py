"""docs/: the API reference renders every public module of the package.

A module is public when no part of its name after ``greenbridge`` starts with
an underscore, or when it is a green module named after a stdlib module
(``greenbridge.green._thread`` mirrors ``_thread``).  Each must have a
``::: module`` directive (mkdocstrings) in a page under docs/, so a new public
module cannot be left out of the reference.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import greenbridge

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _public_modules() -> set[str]:
    root = Path(greenbridge.__file__).resolve().parent
    found = set()
    for path in root.rglob("*.py"):
        parts = ["greenbridge", *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        if parts[-1] == "__main__":  # the CLI, documented with the usage
            continue
        private = [p for p in parts[1:] if p.startswith("_")]
        stdlib_twin = (
            parts[1:2] == ["green"]
            and len(parts) == 3
            and importlib.util.find_spec(parts[2]) is not None
        )
        if not private or (private == [parts[-1]] and stdlib_twin):
            found.add(".".join(parts))
    return found


def _rendered() -> set[str]:
    names: set[str] = set()
    for page in DOCS.rglob("*.md"):
        names.update(re.findall(r"^::: ([\w.]+)\s*$", page.read_text(), re.MULTILINE))
    return names


def test_the_reference_renders_every_public_module() -> None:
    public = _public_modules()
    assert {"greenbridge", "greenbridge.green.socket", "greenbridge.green._thread"} <= public
    assert "greenbridge.green._util" not in public
    missing = sorted(public - _rendered())
    assert not missing, f"public modules missing from the API reference (docs/api/): {missing}"
