"""Every name a green module exposes is green: nothing re-exported from the stdlib
still reaches the blocking originals.

A green module re-exports the stdlib module's other names unchanged.  A
function or class defined in the stdlib module runs with the stdlib module's
globals, so if its code uses a name the green module replaces (``waitpid``,
``threading.Semaphore``, ...), it calls the blocking original: e.g. the stdlib's
``queue._PySimpleQueue`` waits on a real semaphore and blocks the event loop.
"""

from __future__ import annotations

import dis
import importlib
import types
from collections.abc import Iterator
from typing import Any

import pytest

from greenbridge._patcher import green_module_names, original
from greenbridge.green import queue as gq
from greenbridge.green import threading as gt

from .helpers import Backend, run_green

_MISSING: Any = object()

#: Stdlib code a green module exposes that names a replaced original on purpose.
ALLOWED = {
    # super(SSLContext, ...) / super(SSLSocket, ...) name the stdlib class on purpose:
    # the green classes subclass it.  (See _self_reference below for the generic rule.)
    # The stdlib's own fork hook: it resets the stdlib threading module's state
    # (it is registered by the stdlib with os.register_at_fork and only re-exported).
    ("threading", "threading._after_fork"): "resets the stdlib module's own state at fork",
    ("threading", "threading._DeleteDummyThreadOnDel.__del__"): "stdlib dummy threads only",
    ("ssl", "ssl.cert_time_to_seconds"): "imports time.strptime, the same in the green time",
}


def _functions(obj: Any) -> Iterator[types.FunctionType]:
    """The Python functions ``obj`` runs: itself, or what its class attributes resolve to."""
    if isinstance(obj, types.FunctionType):
        yield obj
        return
    if not isinstance(obj, type):
        return
    for attr in dir(obj):
        value = _MISSING
        for klass in obj.__mro__:
            if attr in vars(klass):
                value = vars(klass)[attr]
                break
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, property):
            yield from (
                f for f in (value.fget, value.fset, value.fdel) if isinstance(f, types.FunctionType)
            )
        elif isinstance(value, types.FunctionType):
            yield value


def _global_uses(code: types.CodeType) -> Iterator[tuple[str, str | None]]:
    """(global name, attribute read from it right away or None) for ``code`` and nested code."""
    instructions = list(dis.get_instructions(code))
    for i, ins in enumerate(instructions):
        if ins.opname == "IMPORT_NAME":  # ``import subprocess`` inside the function
            yield f"import {ins.argval}", None
        if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
            after = instructions[i + 1] if i + 1 < len(instructions) else None
            attr = (
                after.argval
                if after is not None and after.opname in ("LOAD_ATTR", "LOAD_METHOD")
                else None
            )
            yield ins.argval, attr
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _global_uses(const)


def _self_reference(fn: types.FunctionType, value: Any) -> bool:
    """``value`` is the stdlib class that defines ``fn`` (``super(Cls, self)``, ``Cls._x``)."""
    return isinstance(value, type) and fn.__qualname__.startswith(value.__qualname__ + ".")


def _blocking_uses(module: str) -> list[str]:
    """Stdlib code exposed by green ``module`` that uses an original the green modules replace."""
    names = green_module_names()
    greens = {name: importlib.import_module(f"greenbridge.green.{name}") for name in names}
    green = vars(greens[module])
    found = []
    for attr, obj in sorted(green.items()):
        if attr.startswith("__"):
            continue
        if isinstance(obj, types.ModuleType):
            if not attr.startswith("_") and obj.__name__ in names and obj is original(obj.__name__):
                found.append(f"{module}.{attr} is the stdlib module {obj.__name__}")
            continue
        for fn in _functions(obj):
            namespace = fn.__globals__
            origin = namespace.get("__name__")
            if origin not in names or namespace is not vars(original(origin)):
                continue  # greenbridge's own code, or a module greenbridge does not replace
            where = f"{origin}.{fn.__qualname__}"
            if (module, where) in ALLOWED:
                continue
            twin = vars(greens[origin])
            for name, sub in _global_uses(fn.__code__):
                if name.startswith("import "):
                    if name[7:].split(".")[0] in names:  # the original, unless patched
                        found.append(f"{module}.{attr}: {where} does `{name}`")
                    continue
                value = namespace.get(name, _MISSING)
                if value is _MISSING or name.startswith("__") or _self_reference(fn, value):
                    continue
                if isinstance(value, types.ModuleType) and value.__name__ in names:
                    green_value = getattr(greens[value.__name__], sub or "", _MISSING)
                    if sub is not None and green_value is getattr(value, sub, _MISSING):
                        continue  # e.g. os.fstat: the green module has the same function
                    found.append(f"{module}.{attr}: {where} uses {name}.{sub}")
                elif name in twin and twin[name] is not value:
                    found.append(f"{module}.{attr}: {where} uses the original {name}")
    return sorted(set(found))


@pytest.mark.parametrize("module", green_module_names())
def test_no_green_module_exposes_code_bound_to_a_blocking_original(module: str) -> None:
    assert _blocking_uses(module) == []


def test_the_pure_python_simple_queue_is_green(aio: Backend) -> None:
    """``queue._PySimpleQueue`` (what CPython's tests use) waits as a green thread."""

    def main() -> tuple[Any, ...]:
        q = gq._PySimpleQueue()
        threads = [gt.Thread(target=q.put, args=(i,)) for i in range(3)]
        got = []
        for t in threads:
            t.start()
            got.append(q.get(timeout=5))  # the loop runs the putter meanwhile
        for t in threads:
            t.join()
        return tuple(got), gq.threading is gt

    assert run_green(aio, main) == ((0, 1, 2), True)


def test_os_spawnv_p_wait_waits_as_a_green_thread(aio: Backend) -> None:
    """``os.spawnv(P_WAIT, ...)`` (the stdlib's code) waits with the green waitpid."""
    import os as real_os

    from greenbridge.green import os as green_os

    args = ["sh", "-c", "sleep 0.3; exit 3"]
    native = real_os.spawnv(real_os.P_WAIT, "/bin/sh", args)

    def main() -> int:
        gt.Event().wait(0.02)  # the heartbeat is running
        return int(green_os.spawnv(green_os.P_WAIT, "/bin/sh", args))

    status, max_gap = run_green(aio, main, heartbeat=True)
    assert status == native == 3
    assert max_gap < 0.25  # the loop kept running while the child slept 0.3 s


def test_os_popen_runs_the_command_as_a_green_thread(aio: Backend) -> None:
    """``os.popen``: the read and the ``close()`` (which waits) let the loop run."""
    import os as real_os

    from greenbridge.green import os as green_os

    def run(os: Any) -> tuple[Any, ...]:
        with os.popen("sleep 0.3; echo done") as pipe:
            out = pipe.read()  # waits 0.3 s
        pipe = os.popen("cat > /dev/null", "w")
        pipe.write("ignored")
        closed = (os.popen("sleep 0.3; exit 2").close(), pipe.close())  # the first waits
        errors = []
        for args in ((5,), ("true", "rw"), ("true", "r", 0), ("true", "r", None)):
            try:
                os.popen(*args)
            except (TypeError, ValueError) as exc:
                errors.append(repr(exc))
        return out, closed, errors

    native = run(real_os)

    def main() -> tuple[Any, ...]:
        gt.Event().wait(0.02)  # the heartbeat is running
        return run(green_os)

    green, max_gap = run_green(aio, main, heartbeat=True)
    assert green == native
    assert native[:2] == ("done\n", (512, None)) and len(native[2]) == 4
    assert max_gap < 0.25  # the loop kept running while the commands slept 0.3 s
