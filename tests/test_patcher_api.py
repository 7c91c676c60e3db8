"""The patching API as gevent and eventlet users know it.

``original``/``is_patched``/``green_module_names`` as public names, the
keyword switches of ``monkey_patch``/``patch_blocking``, and the
``PatchWarning`` about modules imported before ``monkey_patch()``.  Whatever
patches for good runs in a fresh interpreter (``run``), so that this test
process keeps the stdlib modules.
"""

from __future__ import annotations

import select
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import greenbridge
from greenbridge import _patcher

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from greenbridge._patcher import Switches


def run(code: str, *options: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *options, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


# ---------------------------------------------------------------- public names


def test_the_names_are_public() -> None:
    assert greenbridge.original is _patcher.original
    assert greenbridge.is_patched is _patcher.is_patched
    assert greenbridge.green_module_names is _patcher.green_module_names
    assert issubclass(greenbridge.PatchWarning, Warning)
    assert greenbridge.original("socket") is socket
    assert greenbridge.original("threading") is threading
    names = greenbridge.green_module_names()
    assert names == tuple(sorted(names))
    assert {"socket", "ssl", "select", "selectors", "threading", "_thread", "queue"} <= set(names)
    assert {"time", "os", "subprocess", "signal"} <= set(names)


@pytest.mark.parametrize("call", [greenbridge.original, greenbridge.is_patched])
def test_unknown_names_are_a_clear_error(call: object) -> None:
    assert callable(call)
    with pytest.raises(ValueError, match=r"no green replacement for 'json'; .*socket"):
        call("json")
    with pytest.raises(ValueError, match="no green replacement for None"):
        call(None)


def test_is_patched_follows_sys_modules() -> None:
    assert not greenbridge.is_patched("socket")
    with greenbridge.patch_blocking(["socket"]):
        assert greenbridge.is_patched("socket")
        assert not greenbridge.is_patched("time")
    assert not greenbridge.is_patched("socket")


# ---------------------------------------------------------------- switches


def patched_inside(**switches: Unpack[Switches]) -> set[str]:
    with greenbridge.patch_blocking(**switches):
        return {name for name in greenbridge.green_module_names() if greenbridge.is_patched(name)}


def test_switches_set_to_false_leave_their_modules_out() -> None:
    everything = set(greenbridge.green_module_names())
    assert patched_inside() == everything
    assert patched_inside(thread=False) == everything - {"threading", "_thread", "queue"}
    assert patched_inside(thread=False, subprocess=False) == everything - {
        "threading",
        "_thread",
        "queue",
        "subprocess",
    }
    assert patched_inside(select=False) == everything - {"select", "selectors"}
    assert patched_inside(ssl=False) == everything - {"ssl"}


def test_switches_set_to_true_name_the_only_modules() -> None:
    assert patched_inside(socket=True) == {"socket", "ssl"}
    assert patched_inside(time=True, select=True) == {"time", "select", "selectors"}
    assert patched_inside(queue=True) == {"queue"}
    assert patched_inside(os=True, signal=True) == {"os", "signal"}


def test_every_green_module_has_a_switch() -> None:
    covered = {module for modules in _patcher.SWITCHES.values() for module in modules}
    assert set(greenbridge.green_module_names()) <= covered
    assert covered <= set(greenbridge.green_module_names())
    assert set(_patcher.SWITCHES) == set(_patcher.Switches.__annotations__)


@pytest.mark.parametrize("call", [greenbridge.monkey_patch, greenbridge.patch_blocking])
def test_bad_switches_are_type_errors_naming_the_valid_ones(call: Any) -> None:
    # Each raises before anything is patched (so monkey_patch is safe to call here).
    name = call.__name__
    valid = "os, queue, select, signal, socket, ssl, subprocess, thread, time"
    with pytest.raises(TypeError, match=rf"{name}\(\) got unknown switch\(es\) nope; .*{valid}"):
        call(nope=True).__enter__()
    with pytest.raises(TypeError, match="dns: name resolution is part of socket="):
        call(dns=False).__enter__()
    with pytest.raises(TypeError, match="psycopg: use greenbridge.patch_psycopg"):
        call(psycopg=True).__enter__()
    with pytest.raises(TypeError, match="not both"):
        call(["socket"], thread=False).__enter__()
    with pytest.raises(TypeError, match=r"\(socket=True\) or which to leave alone \(thread=False"):
        call(socket=True, thread=False).__enter__()
    with pytest.raises(TypeError, match="takes True or False, not 1"):
        call(thread=1).__enter__()
    assert not greenbridge.is_patched("socket")
    assert sys.modules["socket"] is socket and sys.modules["select"] is select


def test_bad_early_imports_value_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"early_imports='loud'.*'warn', 'error', 'ignore'"):
        greenbridge.monkey_patch(early_imports="loud")  # type: ignore[arg-type]
    assert sys.modules["time"] is time


def test_monkey_patch_switches_in_a_fresh_process() -> None:
    done = run(
        """
        import greenbridge
        greenbridge.monkey_patch(thread=False, subprocess=False)
        import socket, ssl, threading, queue, subprocess, time
        print(socket.__name__, ssl.__name__, time.__name__)
        print(threading.__name__, queue.__name__, subprocess.__name__)
        # Later calls add modules (this one sees that threading and queue were
        # imported above: a PatchWarning, which -W error makes an exception).
        try:
            greenbridge.monkey_patch(thread=True)
        except greenbridge.PatchWarning as exc:
            print("__main__ (queue, threading)" in str(exc))
        greenbridge.monkey_patch(thread=True, early_imports="ignore")
        print(greenbridge.is_patched("threading"), greenbridge.is_patched("subprocess"))
        """,
        "-W",
        "error",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "greenbridge.green.socket greenbridge.green.ssl greenbridge.green.time",
        "threading queue subprocess",
        "True",
        "True False",
    ]


# ---------------------------------------------------------------- PatchWarning

EARLY = """
import warnings
import requests  # binds the original socket, ssl, time... through urllib3 and http.client
import greenbridge
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    greenbridge.monkey_patch()
for w in caught:
    print(w.category.__name__, w.filename == __file__ or w.filename)
    print(w.message)
"""


def test_modules_imported_too_early_are_named_with_the_fix(tmp_path: Path) -> None:
    script = tmp_path / "early.py"
    script.write_text(EARLY)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    header, message = done.stdout.splitlines()
    assert header == "PatchWarning True"  # it points at the monkey_patch() call
    for culprit in ("requests (", "urllib3 (", "http.client (socket, ssl)"):
        assert culprit in message
    assert "Call greenbridge.monkey_patch() before importing them" in message
    assert "python -m greenbridge" in message
    assert 'early_imports="ignore"' in message
    # Neither asyncio, greenbridge nor the originals themselves are named.
    listed = message.split("event loop: ", 1)[1].split(". Call")[0]
    named = {item.split(" (")[0] for item in listed.split("), ")}
    assert {"requests", "urllib3", "http.client"} <= named
    assert not {name for name in named if name.startswith(("asyncio", "greenbridge", "_"))}
    assert not named & set(greenbridge.green_module_names())


def test_early_imports_error_raises_and_patches_nothing() -> None:
    done = run(
        """
        import http.client, sys
        import greenbridge
        try:
            greenbridge.monkey_patch(early_imports="error")
        except greenbridge.PatchWarning as exc:
            print("raised:", "http.client (socket, ssl)" in str(exc))
        print(sys.modules["socket"].__name__, greenbridge.is_patched("time"))
        greenbridge.monkey_patch(early_imports="ignore")
        print(sys.modules["socket"].__name__)
        """,
        "-W",
        "error",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["raised: True", "socket False", "greenbridge.green.socket"]


def test_a_warning_filter_can_make_it_an_error() -> None:
    # The usual warnings machinery applies, and nothing is patched either.
    done = run(
        """
        import socketserver, sys, warnings, greenbridge
        warnings.simplefilter("error", greenbridge.PatchWarning)
        try:
            greenbridge.monkey_patch()
        finally:
            print(sys.modules["socket"].__name__)
        """
    )
    assert done.returncode == 1
    assert done.stdout == "socket\n"
    assert "greenbridge._patcher.PatchWarning: monkey_patch(): " in done.stderr
    assert "socketserver (selectors, socket)" in done.stderr


def test_patching_first_warns_about_nothing(tmp_path: Path) -> None:
    (tmp_path / "lib_early.py").write_text("import os, json\nfrom time import monotonic\n")
    done = run(
        """
        import os, sys, json, asyncio, logging
        import lib_early  # os and time.monotonic are no green module's business
        for loop_library in ("trio", "anyio", "uvloop"):  # and what they load along
            try:
                __import__(loop_library)
            except ImportError:
                pass
        import greenbridge
        greenbridge.monkey_patch()
        import requests, socketserver
        greenbridge.monkey_patch()  # nothing new: nothing to look at
        print("ok")
        """,
        "-W",
        "error",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n"


def test_a_function_taken_from_an_original_counts(tmp_path: Path) -> None:
    (tmp_path / "lib_sleepy.py").write_text("from time import sleep\n")
    (tmp_path / "lib_waits.py").write_text("from os import waitpid\n")
    done = run(
        """
        import lib_sleepy, lib_waits, greenbridge
        try:
            greenbridge.monkey_patch(early_imports="error")
        except greenbridge.PatchWarning as exc:
            print(str(exc).split("event loop: ")[1].split(". ")[0])
        """,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "lib_sleepy (time), lib_waits (os)\n"


def test_only_the_modules_being_patched_are_looked_at(tmp_path: Path) -> None:
    (tmp_path / "lib_net.py").write_text("import socket\n")
    done = run(
        """
        import lib_net, greenbridge
        greenbridge.monkey_patch(["time"], early_imports="error")
        greenbridge.monkey_patch(thread=True, early_imports="error")
        try:
            greenbridge.monkey_patch(socket=True, early_imports="error")
        except greenbridge.PatchWarning as exc:
            print("lib_net (socket)" in str(exc))
        """,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "True\n"


def test_a_scan_is_cheap() -> None:
    # One pass over sys.modules by identity: this process has hundreds of modules.
    names = greenbridge.green_module_names()
    _patcher.find_early_imports(names)  # the green modules are imported on the first one
    start = time.perf_counter()
    found = _patcher.find_early_imports(names)
    elapsed = time.perf_counter() - start
    assert len(sys.modules) > 300
    assert elapsed < 0.25, elapsed
    assert "tests" in found  # this very module holds the original time, socket, select...
