"""Green ``os``: every name of the stdlib ``os``, with cooperative pipe I/O and child waits.

Replaced, when the caller can suspend on a running loop (a greenbridge
worker or an SQLAlchemy greenlet: see `greenbridge._where`); with no loop
running, or in code that cannot suspend, each one is exactly the stdlib
function:

* :func:`read` / :func:`write` on a pipe, socket or other pollable descriptor
  wait for readiness on the event loop, then do the call.  On a non-blocking
  descriptor they retry after ``EAGAIN``; on a blocking one they wait first
  (a write is then capped at ``PIPE_BUF`` bytes, so it cannot block, and may
  return a short count, which ``os.write`` allows).  Regular files and other
  descriptors the loop cannot watch are read and written directly.
* :func:`popen` runs the command with the green ``subprocess.Popen``, and the
  stdlib's ``spawn*`` functions run with this module's globals, so their
  ``P_WAIT`` waits with the green ``waitpid``.
* :func:`waitpid`, :func:`wait`, :func:`wait3`, :func:`wait4` wait for a
  child without blocking the loop: on a ``pidfd`` when one can be opened
  (Linux 5.3+), otherwise by polling with ``WNOHANG`` and a backoff from
  0.5 ms up to 50 ms.  Calls with ``WNOHANG`` are passed straight through.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

from .. import _where
from .._patcher import green as _green_module
from .._patcher import original
from . import _util

if TYPE_CHECKING:
    import os as _os
else:
    _os = original("os")

# Every name of the stdlib module first; the green functions below replace some.
_util.reexport(globals(), _os)
_rebind = _util.rebinder(globals())


def _try_wait(fd: int, readable: bool) -> bool:
    """Wait for ``fd``; False when the loop cannot watch it (do the call directly then)."""
    try:
        _util.wait_fd(fd, readable)
    except (OSError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.errno == errno.EBADF:
            raise
        return False
    return True


def read(fd: int, length: int, /) -> bytes:
    """Read at most ``length`` bytes from ``fd``; under greenbridge only this greenlet waits."""
    if _where.where() not in _util.ON_A_LOOP or not _util.pollable(fd):
        return _os.read(fd, length)
    if _os.get_blocking(fd) and not _try_wait(fd, True):
        return _os.read(fd, length)
    return _util.until_ready(_os.read, fd, True, length, _try_wait)


def write(fd: int, data: Any, /) -> int:
    """Write ``data`` to ``fd``; return the count written (possibly short)."""
    if _where.where() not in _util.ON_A_LOOP or not _util.pollable(fd):
        return _os.write(fd, data)
    if _os.get_blocking(fd):
        if not _try_wait(fd, False):
            return _os.write(fd, data)
        view = memoryview(data).cast("B")
        return _os.write(fd, view[: _util.PIPE_BUF] if len(view) > _util.PIPE_BUF else view)
    return _util.until_ready(_os.write, fd, False, data, _try_wait)


def _poll_child(call: Any, pid: int, options: int, args: tuple[Any, ...]) -> Any:
    """Repeat ``call(*args, options | WNOHANG)`` until it reports a child."""
    nohang = options | _os.WNOHANG

    def check() -> Any:
        result = call(*args, nohang)
        return result if result[0] != 0 else None

    return _util.wait_child(pid, options, check)


def waitpid(pid: int, options: int, /) -> tuple[int, int]:
    """Wait for a child as ``os.waitpid``; under greenbridge only this greenlet waits."""
    if options & _os.WNOHANG or _where.where() not in _util.ON_A_LOOP:
        return _os.waitpid(pid, options)
    return _poll_child(_os.waitpid, pid, options, (pid,))  # type: ignore[no-any-return]


def wait() -> tuple[int, int]:
    """Wait for any child as ``os.wait``; under greenbridge only this greenlet waits."""
    if _where.where() not in _util.ON_A_LOOP:
        return _os.wait()
    return waitpid(-1, 0)


# The stdlib's spawn*() functions call each other and then ``waitpid`` (P_WAIT):
# run them with this module's globals, so they wait with the green waitpid.
for _name in (
    "_spawnvef", "spawnv", "spawnve", "spawnvp", "spawnvpe",
    "spawnl", "spawnle", "spawnlp", "spawnlpe",
):  # fmt: skip
    if hasattr(_os, _name):
        globals()[_name] = _rebind(getattr(_os, _name))
del _name


if hasattr(_os, "popen") and hasattr(_os, "_wrap_close"):

    def popen(cmd: str, mode: str = "r", buffering: int = -1) -> Any:
        """``os.popen`` on the green ``subprocess.Popen``: reading, writing and
        ``close()`` (which waits for the command) suspend only this greenlet.

        (The stdlib's ``os.popen`` imports ``subprocess`` when called: the
        original module, unless greenbridge patched the imports.)
        """
        if not isinstance(cmd, str):
            raise TypeError(f"invalid cmd type ({type(cmd)}, expected string)")
        if mode not in ("r", "w"):
            raise ValueError(f"invalid mode {mode!r}")
        if buffering == 0 or buffering is None:
            raise ValueError("popen() does not support unbuffered streams")
        # Looked up through the patcher's registry when called, as the stdlib
        # imports subprocess inside os.popen: green subprocess is built on
        # this module, so this module cannot import it.
        green_subprocess = _green_module("subprocess")

        pipe: Any = getattr(green_subprocess, "PIPE")  # noqa: B009 - a re-exported name
        wrap: Any = getattr(_os, "_wrap_close")  # noqa: B009 - private stdlib helper
        if mode == "r":
            proc = green_subprocess.Popen(
                cmd, shell=True, text=True, stdout=pipe, bufsize=buffering
            )
            return wrap(proc.stdout, proc)
        proc = green_subprocess.Popen(cmd, shell=True, text=True, stdin=pipe, bufsize=buffering)
        return wrap(proc.stdin, proc)


def wait3(options: int) -> tuple[int, int, Any]:
    """``os.wait3``; under greenbridge only this greenlet waits."""
    if options & _os.WNOHANG or _where.where() not in _util.ON_A_LOOP:
        return _os.wait3(options)
    return _poll_child(_os.wait3, -1, options, ())  # type: ignore[no-any-return]


def wait4(pid: int, options: int) -> tuple[int, int, Any]:
    """``os.wait4``; under greenbridge only this greenlet waits."""
    if options & _os.WNOHANG or _where.where() not in _util.ON_A_LOOP:
        return _os.wait4(pid, options)
    return _poll_child(_os.wait4, pid, options, (pid,))  # type: ignore[no-any-return]
