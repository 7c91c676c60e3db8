"""``import greenbridge`` defines names and does nothing else.

It loads the bridge (and what the bridge itself needs); everything else loads
on first use of one of its names.  Each check runs in a fresh interpreter, so
that what this test process imported before does not hide an import.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from typing import Any

import pytest

import greenbridge

# Runs in a fresh interpreter.  asyncio and greenlet are imported first: the
# bridge needs them anyway (and asyncio brings ssl, subprocess and signal
# along), so what counts is what greenbridge's own modules import, which a
# spy on __import__ records whether or not the module was loaded already.
PROBE = r"""
import builtins, importlib.util, json, sys, threading
import asyncio, greenlet

imports = {}
real_import = builtins.__import__

def spy(name, globals=None, locals=None, fromlist=(), level=0):
    importer = (globals or {}).get("__name__") or ""
    if importer.partition(".")[0] == "greenbridge":
        package = importer if (globals or {}).get("__path__") else importer.rpartition(".")[0]
        base = importlib.util.resolve_name("." * level + name, package) if level else name
        names = imports.setdefault(importer, [])
        names.append(base)
        names.extend(base + "." + item for item in fromlist or () if item != "*")
    return real_import(name, globals, locals, fromlist, level)

meta_path = list(sys.meta_path)
run_forever = asyncio.BaseEventLoop.run_forever
threads = threading.active_count()
builtins.__import__ = spy
import greenbridge
builtins.__import__ = real_import
print(json.dumps({
    "modules": sorted(m for m in sys.modules if m.partition(".")[0] == "greenbridge"),
    "imports": imports,
    "meta_path_changed": sys.meta_path != meta_path,
    "run_forever_wrapped": asyncio.BaseEventLoop.run_forever is not run_forever,
    "new_threads": threading.active_count() - threads,
}))
"""

# The bridge: what `async_`, `await_`, `spawn`, portals and the private loop
# are made of (the names after the split of issue 11 included).
BRIDGE_MODULES = {
    "greenbridge",
    "greenbridge._errors",
    "greenbridge._where",
    "greenbridge._trampoline",
    "greenbridge._park",
    "greenbridge._bridge",
    "greenbridge._portal",
    "greenbridge._private_loop",
    "greenbridge._callables",
}

# Stdlib and optional modules that only the optional parts need (green I/O,
# the patcher, the detector, offloading, the drivers).
NOT_FOR_THE_BRIDGE = {
    "ssl",
    "subprocess",
    "socket",
    "select",
    "selectors",
    "queue",
    "pkgutil",
    "logging",
    "dataclasses",
    "traceback",
    "concurrent.futures",
    "trio",
    "uvloop",
}
# ``signal``: only the private loop, which turns Ctrl-C into a cancellation.
SIGNAL_USERS = {"greenbridge._bridge", "greenbridge._private_loop"}


def probe(**env: str | None) -> dict[str, Any]:
    environ = {k: v for k, v in os.environ.items() if k != "GREENBRIDGE_DETECT_BLOCKING"}
    environ.update({k: v for k, v in env.items() if v is not None})
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    data["stderr"] = result.stderr
    return data


@pytest.mark.parametrize("env_value", [None, ""], ids=["unset", "empty"])
def test_import_loads_only_the_bridge_and_changes_nothing(env_value: str | None) -> None:
    data = probe(GREENBRIDGE_DETECT_BLOCKING=env_value)
    assert set(data["modules"]) <= BRIDGE_MODULES, data["modules"]
    optional = ("greenbridge._detector", "greenbridge.drivers", "greenbridge.green")
    assert not [m for m in data["modules"] if m.startswith(optional)]
    for importer, names in data["imports"].items():
        heavy = {n for n in names for bad in NOT_FOR_THE_BRIDGE if (n + ".").startswith(bad + ".")}
        assert not heavy, f"{importer} imports {sorted(heavy)}"
        if importer not in SIGNAL_USERS:
            assert "signal" not in names, f"{importer} imports signal"
    assert not data["run_forever_wrapped"]
    assert not data["meta_path_changed"]
    assert data["new_threads"] == 0
    assert data["stderr"] == ""


def test_a_bad_environment_variable_is_a_warning() -> None:
    data = probe(GREENBRIDGE_DETECT_BLOCKING="fast")
    assert "RuntimeWarning: GREENBRIDGE_DETECT_BLOCKING='fast' ignored" in data["stderr"]
    assert "expected a number of seconds > 0 such as 0.1 (empty or 0: off)" in data["stderr"]
    assert not data["run_forever_wrapped"]


def test_the_environment_variable_is_honoured_at_import() -> None:
    data = probe(GREENBRIDGE_DETECT_BLOCKING="0.1")
    assert data["run_forever_wrapped"]
    assert "greenbridge._detector" in data["modules"]
    assert data["stderr"] == ""
    off = probe(GREENBRIDGE_DETECT_BLOCKING="0")
    assert not off["run_forever_wrapped"]
    assert not off["meta_path_changed"]
    assert off["new_threads"] == 0
    assert off["stderr"] == ""


def test_every_public_name_resolves() -> None:
    # Lazily loaded names resolve on first access; the static table and __all__ agree.
    lazy = set(greenbridge._LAZY)
    eager = {name for name in greenbridge.__all__ if name not in lazy}
    assert lazy <= set(greenbridge.__all__)
    assert eager <= set(vars(greenbridge))
    for name in greenbridge.__all__:
        value = getattr(greenbridge, name)
        if name in lazy:
            module = greenbridge._LAZY[name].lstrip(".")
            assert getattr(value, "__module__", "").startswith(f"greenbridge.{module}")
    assert set(greenbridge.__all__) <= set(dir(greenbridge))
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        greenbridge.no_such_name  # type: ignore[attr-defined]  # noqa: B018


def test_the_lazy_table_matches_what_type_checkers_see() -> None:
    # The TYPE_CHECKING imports of __init__ are what mypy and IDEs see; _LAZY
    # is what runs.  They must name the same modules for the same names.
    with open(greenbridge.__file__, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    seen: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom)
                for alias in imp.names:
                    seen[alias.asname or alias.name] = "." * imp.level + (imp.module or "")
    assert seen == greenbridge._LAZY
