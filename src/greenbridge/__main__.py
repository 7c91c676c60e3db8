"""Run a whole sync program as one green thread: ``python -m greenbridge``.

Usage::

    python -m greenbridge [--loop LOOP] script.py [args...]
    python -m greenbridge [--loop LOOP] -m module [args...]

``--loop`` takes uvicorn's values: ``asyncio`` (the default), ``uvloop``,
``auto`` (uvloop when it is installed, else asyncio) or ``module:function``,
a callable that returns a new event loop (``asyncio:SelectorEventLoop``,
``rloop:new_event_loop``), or that returns such a factory.  ``--uvloop`` is
``--loop uvloop``.

The program runs as the main green thread (an asyncio task) of a fresh event
loop, with the green modules in place (:func:`greenbridge.monkey_patch` is
called before the program is imported), so its threads are tasks and its
sockets, sleeps, locks, queues and subprocesses suspend only the green thread
that waits.  As with ``python script.py``: ``sys.argv`` holds the script path
(or the module's file) and the arguments, ``sys.path[0]`` is the script's
directory (the current directory for ``-m``), the code runs as ``__main__``,
an uncaught exception prints its traceback and exits with status 1,
``sys.exit(n)`` exits with ``n``, and the program ends only when every
non-daemon thread it started has ended.  Daemon threads still running then are
cancelled.
"""

from __future__ import annotations

import asyncio
import builtins
import importlib
import importlib.machinery
import os
import runpy
import signal
import sys
import types
import zipfile
from typing import Any

from ._bridge import async_
from ._detector import watch_all_loops
from ._patcher import monkey_patch
from ._stacks import dump_stacks
from .green import threading as green_threading

USAGE = """\
usage: python -m greenbridge [--loop LOOP] script.py [args...]
       python -m greenbridge [--loop LOOP] -m module [args...]

Run a sync program as one green thread on a fresh event loop, with the green
stdlib modules in place (threads are tasks; sockets, sleeps, locks, queues and
subprocesses suspend only the waiting green thread).

options:
  --loop LOOP the event loop: asyncio (the default), uvloop, auto (uvloop if
              installed, else asyncio), or module:function, a callable that
              returns a new event loop (e.g. asyncio:SelectorEventLoop)
  --uvloop    the same as --loop uvloop
  --detect-blocking[=SECONDS]
              log code that blocks the loop longer than SECONDS (default 0.1)
  --dump-on-signal=SIGNAL
              on SIGNAL (e.g. SIGUSR1), print every suspended green thread's
              stack and what it waits on to stderr (greenbridge.dump_stacks)
  -m module   run a library module as a script (like python -m)
  -h, --help  show this help and exit
"""


class _Usage(Exception):
    pass


def _parse(argv: list[str]) -> tuple[str, str | None, str | None, list[str]]:
    """Return (loop, script, module, program_args)."""
    loop = "asyncio"
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            sys.stdout.write(USAGE)
            raise SystemExit(0)
        if arg == "--uvloop":
            loop = "uvloop"
        elif arg == "--loop":
            if i + 1 >= len(argv):
                raise _Usage(f"argument --loop: expected {LOOP_VALUES}")
            i += 1
            loop = argv[i]
        elif arg.startswith("--loop="):
            loop = arg.partition("=")[2]
        elif arg == "-m":
            if i + 1 >= len(argv):
                raise _Usage("argument -m: expected a module name")
            return loop, None, argv[i + 1], argv[i + 2 :]
        elif arg.startswith("-m") and len(arg) > 2:
            return loop, None, arg[2:], argv[i + 1 :]
        elif arg == "--":
            i += 1
            break
        elif arg.startswith("-"):
            raise _Usage(f"unknown option {arg!r}")
        else:
            break
        i += 1
    if i >= len(argv):
        raise _Usage("a script or -m module is required")
    return loop, argv[i], None, argv[i + 1 :]


def _fresh_main_module() -> types.ModuleType:
    module = types.ModuleType("__main__")
    module.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = module
    return module


def _run_script(path: str, args: list[str]) -> None:
    sys.argv = [path, *args]
    sys.path[0] = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) or not path.endswith((".py", ".pyw")) and zipfile.is_zipfile(path):
        runpy.run_path(path, run_name="__main__")
        return
    with open(path, "rb") as f:
        source = f.read()
    code = compile(source, path, "exec", dont_inherit=True)
    module = _fresh_main_module()
    module.__file__ = path
    module.__cached__ = None  # type: ignore[attr-defined]
    module.__spec__ = None
    module.__loader__ = importlib.machinery.SourceFileLoader("__main__", path)
    exec(code, module.__dict__)


def _run_module(name: str, args: list[str]) -> None:
    sys.argv = [name, *args]  # runpy puts the module's file name in argv[0]
    sys.path[0] = os.getcwd()
    _fresh_main_module()
    runpy._run_module_as_main(name, alter_argv=True)  # type: ignore[attr-defined]


def _program(script: str | None, module: str | None, args: list[str]) -> Any:
    """The main green thread: run the program, then wait for its non-daemon threads."""
    green_threading.adopt_main_thread()
    status: Any = 0
    try:
        if module is not None:
            _run_module(module, args)
        else:
            assert script is not None
            _run_script(script, args)
    except SystemExit as exc:
        status = exc.code
    except BaseException:
        sys.excepthook(*sys.exc_info())
        status = 1
    # As Python does at exit: wait until every non-daemon thread has ended.
    while True:
        threads = green_threading.non_daemon_threads()
        if not threads:
            break
        for thread in threads:
            thread.join()
    return status


LOOP_VALUES = "auto, asyncio, uvloop or module:function"


def _new_loop(loop: str) -> Any:
    """A new event loop as ``--loop`` names it (uvicorn's values)."""
    if loop == "asyncio":
        return asyncio.new_event_loop()
    if loop in ("uvloop", "auto"):
        try:
            import uvloop
        except ImportError:
            if loop == "auto":
                return asyncio.new_event_loop()
            raise _Usage("--loop uvloop needs uvloop: pip install 'greenbridge[uvloop]'") from None
        return uvloop.new_event_loop()
    module_name, colon, attribute = loop.partition(":")
    if not (colon and module_name and attribute):
        raise _Usage(f"--loop {loop}: expected {LOOP_VALUES}")
    try:
        factory: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise _Usage(f"--loop {loop}: cannot import {module_name!r}: {exc}") from None
    for part in attribute.split("."):
        try:
            factory = getattr(factory, part)
        except AttributeError:
            raise _Usage(f"--loop {loop}: {module_name!r} has no attribute {attribute!r}") from None
    # uvicorn documents both: a callable that makes a loop, or one that
    # returns such a callable.
    if not callable(factory):
        raise _Usage(
            f"--loop {loop}: expected a callable that returns a new event loop, got {factory!r}"
        )
    made = factory()
    if callable(made) and not isinstance(made, asyncio.AbstractEventLoop):
        made = made()
    if not isinstance(made, asyncio.AbstractEventLoop):
        raise _Usage(
            f"--loop {loop}: expected a callable that returns a new event loop; "
            f"it returned {made!r}"
        )
    return made


def _cancel_leftovers(loop: Any) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


# -- blocking-call detector flag (issue 6): --detect-blocking[=SECONDS] ------


def _take_detect_blocking(argv: list[str]) -> tuple[list[str], float | None]:
    """Remove ``--detect-blocking[=SECONDS]`` from the options before the program."""
    rest: list[str] = []
    threshold: float | None = None
    for i, arg in enumerate(argv):
        if arg == "--" or arg.startswith("-m") or not arg.startswith("-"):
            return rest + argv[i:], threshold  # the program and its own arguments
        if arg == "--detect-blocking" or arg.startswith("--detect-blocking="):
            value = arg.partition("=")[2] or "0.1"
            try:
                threshold = float(value)
            except ValueError:
                raise _Usage(f"--detect-blocking={value}: expected a number of seconds") from None
            if not threshold > 0:
                raise _Usage(f"--detect-blocking={value}: expected a number of seconds > 0")
        else:
            rest.append(arg)
    return rest, threshold


# -- --dump-on-signal=SIGNAL (issue 14) --------------------------------------


def _take_dump_on_signal(argv: list[str]) -> tuple[list[str], signal.Signals | None]:
    """Remove ``--dump-on-signal=SIGNAL`` from the options before the program."""
    rest: list[str] = []
    found: signal.Signals | None = None
    for i, arg in enumerate(argv):
        if arg == "--" or arg.startswith("-m") or not arg.startswith("-"):
            return rest + argv[i:], found  # the program and its own arguments
        if arg.startswith("--dump-on-signal"):
            value = arg.partition("=")[2]
            name = value.upper() if value.upper().startswith("SIG") else "SIG" + value.upper()
            try:
                found = signal.Signals[name] if not value.isdigit() else signal.Signals(int(value))
            except (KeyError, ValueError):
                raise _Usage(
                    f"--dump-on-signal={value}: expected a signal name such as SIGUSR1"
                ) from None
        else:
            rest.append(arg)
    return rest, found


def _dump_on(signum: signal.Signals) -> None:
    """Dump the stacks on ``signum``, even while the loop is blocked.

    A plain signal handler, not the loop's ``add_signal_handler``: that runs
    the callback at the loop's next turn, never while a stuck loop is what
    you want to see.  (The real ``signal`` module: this one was imported
    before the program was patched.)
    """
    signal.signal(signum, lambda *_: dump_stacks(sys.stderr))


def main(argv: list[str] | None = None) -> Any:
    """Run the command line ``python -m greenbridge ...``; return the exit status."""
    try:
        argv, detect_threshold = _take_detect_blocking(sys.argv[1:] if argv is None else argv)
        argv, dump_signal = _take_dump_on_signal(argv)
        if detect_threshold is not None:
            watch_all_loops(detect_threshold)
        loop_name, script, module, args = _parse(argv)
        if script is not None and not os.path.exists(script):
            sys.stderr.write(
                f"{sys.executable}: can't open file {os.path.abspath(script)!r}: "
                "[Errno 2] No such file or directory\n"
            )
            return 2
        loop = _new_loop(loop_name)
    except _Usage as exc:
        sys.stderr.write(f"{USAGE}\npython -m greenbridge: error: {exc}\n")
        return 2

    if dump_signal is not None:
        _dump_on(dump_signal)
    # Whatever is loaded already was imported by the interpreter, site or
    # greenbridge itself, before the program could do anything: not the
    # program's early imports that PatchWarning is about.
    monkey_patch(early_imports="ignore")
    asyncio.set_event_loop(loop)
    try:
        status = loop.run_until_complete(async_(_program)(script, module, args))
        _cancel_leftovers(loop)
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
