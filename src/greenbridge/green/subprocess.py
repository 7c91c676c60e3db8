"""Green ``subprocess``: ``Popen`` whose pipes and waits suspend only the calling greenlet.

:class:`Popen` subclasses the stdlib class; after the child starts, its pipe
ends are switched to non-blocking descriptors behind green file objects, so
``p.stdout.read()``, ``p.stdin.write()``, ``communicate()`` and ``wait()``
(with or without timeouts) let the event loop run while they wait:

* ``wait()`` waits on a ``pidfd`` (Linux 5.3+) or polls with ``WNOHANG`` and
  a backoff from 0.5 ms to 50 ms;
* ``communicate()`` feeds stdin and drains stdout/stderr in helper tasks; on
  ``TimeoutExpired`` they keep collecting, and the next ``communicate()``
  returns everything, as the stdlib promises.

``run``, ``call``, ``check_call``, ``check_output``, ``getstatusoutput`` and
``getoutput`` are the stdlib's own functions rebound to this module, so they
create the green :class:`Popen` and keep their exact semantics.  Everything
else (``PIPE``, ``TimeoutExpired``, ``CalledProcessError``, ...) is the
stdlib's object.  With no loop running, or in code that cannot suspend,
everything behaves (and blocks) like the stdlib.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import Callable
from time import monotonic as _monotonic
from typing import TYPE_CHECKING, Any

from .. import _where
from .._bridge import await_, spawn
from .._hub import notify_closing
from .._patcher import original
from . import _util
from . import os as _green_os
from . import select as _green_select
from . import selectors as _green_selectors
from . import signal as _green_signal
from . import threading as _green_threading
from . import time as _green_time

if TYPE_CHECKING:
    import os as _os
    import subprocess as _sp
else:
    _os = original("os")
    _sp = original("subprocess")

_util.reexport(globals(), _sp)

_CHUNK = 65536


class _GreenPipe(io.RawIOBase):
    """A non-blocking pipe end whose reads and writes wait on the event loop."""

    def __init__(self, fd: int, readable: bool) -> None:
        super().__init__()
        _os.set_blocking(fd, False)
        self._fd = fd
        # True once the descriptor was handed to a child, which needs it blocking.
        self.blocking = False
        self._reading = readable
        self.name = fd
        self.mode = "rb" if readable else "wb"

    def fileno(self) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        return self._fd

    def readable(self) -> bool:
        return self._reading

    def writable(self) -> bool:
        return not self._reading

    def isatty(self) -> bool:
        return False

    def readinto(self, buffer: Any) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if self.blocking:
            _util.wait_fd(self._fd, True)  # then the read cannot block
        return _util.until_ready(_os.readv, self._fd, True, [buffer])

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if self.blocking:
            # Writable means room for PIPE_BUF bytes: a write that size cannot block.
            _util.wait_fd(self._fd, False)
            view = memoryview(data).cast("B")
            return _os.write(self._fd, view[: _util.PIPE_BUF])
        return _util.until_ready(_os.write, self._fd, False, data)

    def close(self) -> None:
        if not self.closed:
            try:
                notify_closing(self._fd)
                _os.close(self._fd)
            finally:
                super().close()


def _greenify(fileobj: Any, readable: bool, bufsize: int = -1) -> Any:
    """An equivalent file object over a non-blocking duplicate of ``fileobj``'s pipe."""
    if fileobj is None:
        return None
    text = fileobj if isinstance(fileobj, io.TextIOWrapper) else None
    buffered = text.buffer if text is not None else fileobj
    raw = _GreenPipe(_os.dup(fileobj.fileno()), readable)
    fileobj.close()  # our duplicate keeps the pipe open
    new: Any = raw
    if not isinstance(buffered, io.FileIO):
        size = bufsize if bufsize > 1 else io.DEFAULT_BUFFER_SIZE
        new = io.BufferedReader(raw, size) if readable else io.BufferedWriter(raw, size)
    if text is not None:
        new = io.TextIOWrapper(
            new,
            encoding=text.encoding,
            errors=text.errors,
            line_buffering=text.line_buffering,
            write_through=text.write_through,
        )
    return new


def _hand_to_child(fileobj: Any) -> None:
    """A green pipe end passed to a child (``stdin=p.stdout``) must be blocking for it.

    O_NONBLOCK belongs to the open file description, which the child shares,
    so our end turns blocking too; our file object then waits for readiness
    before each call instead of after ``EAGAIN``.
    """
    raw = getattr(getattr(fileobj, "buffer", fileobj), "raw", fileobj)
    if isinstance(raw, _GreenPipe) and not raw.closed and not raw.blocking:
        _os.set_blocking(raw.fileno(), True)
        raw.blocking = True


def _drain(fileobj: Any, chunks: list[bytes]) -> None:
    fd = fileobj.fileno()
    try:
        while True:
            data = _util.until_ready(_os.read, fd, True, _CHUNK)
            if not data:
                return
            chunks.append(data)
    finally:
        fileobj.close()


def _feed(fileobj: Any, data: bytes) -> None:
    fd = fileobj.fileno()
    view = memoryview(data)
    offset = 0
    try:
        while offset < len(view):
            try:
                offset += _util.until_ready(_os.write, fd, False, view[offset : offset + _CHUNK])
            except BrokenPipeError:
                return  # the child does not read all its input: ignored, as the stdlib
    finally:
        with contextlib.suppress(BrokenPipeError):
            fileobj.close()


def _decode(data: bytes, fileobj: Any) -> str:
    text = data.decode(fileobj.encoding, fileobj.errors)
    return text.replace("\r\n", "\n").replace("\r", "\n")


class Popen(_sp.Popen):  # type: ignore[type-arg]
    """``subprocess.Popen`` whose pipes, ``wait()`` and ``communicate()`` are green."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._gb_comm: tuple[list[asyncio.Task[None]], list[bytes], list[bytes]] | None = None
        for index, name in ((3, "stdin"), (4, "stdout"), (5, "stderr")):
            given = args[index] if len(args) > index else kwargs.get(name)
            _hand_to_child(given)
        super().__init__(*args, **kwargs)
        bufsize = args[1] if len(args) > 1 else kwargs.get("bufsize", -1)
        self.stdin = _greenify(self.stdin, False, bufsize)
        self.stdout = _greenify(self.stdout, True, bufsize)
        self.stderr = _greenify(self.stderr, True, bufsize)

    def _wait(self, timeout: float | None) -> int:
        if self.returncode is not None:
            return self.returncode
        if _where.where() not in _util.ON_A_LOOP:
            return super()._wait(timeout)  # type: ignore[no-any-return, misc]
        if _util.wait_child(self.pid, 0, self._reap_nohang, timeout) is None:
            raise _sp.TimeoutExpired(self.args, timeout)  # type: ignore[arg-type]
        returncode: int = self.returncode  # type: ignore[assignment]
        return returncode

    def _reap_nohang(self) -> bool | None:
        """Collect the child's exit status if it has ended; True once it is known, else None."""
        lock: Any = self._waitpid_lock  # type: ignore[attr-defined]
        if self.returncode is None and lock.acquire(False):
            try:
                if self.returncode is None:
                    pid, status = self._try_wait(_os.WNOHANG)  # type: ignore[attr-defined]
                    if pid == self.pid:
                        self._handle_exitstatus(status)  # type: ignore[attr-defined]
            finally:
                lock.release()
        return True if self.returncode is not None else None

    def _communicate(self, input: Any, endtime: float | None, orig_timeout: float | None) -> Any:
        if self._gb_comm is None and _where.where() is not _where.Where.ASYNCIO:
            return super()._communicate(input, endtime, orig_timeout)  # type: ignore[misc]
        if self._gb_comm is None:
            if self.stdin and not self._communication_started:  # type: ignore[attr-defined]
                with contextlib.suppress(BrokenPipeError):
                    self.stdin.flush()
                if not input:
                    with contextlib.suppress(BrokenPipeError):
                        self.stdin.close()
            tasks: list[asyncio.Task[None]] = []
            out: list[bytes] = []
            err: list[bytes] = []
            if self.stdin and input:
                data = input
                if self.text_mode:  # type: ignore[attr-defined]
                    stdin: Any = self.stdin
                    data = input.encode(stdin.encoding, stdin.errors)
                tasks.append(spawn(_feed, self.stdin, data))
            if self.stdout:
                tasks.append(spawn(_drain, self.stdout, out))
            if self.stderr:
                tasks.append(spawn(_drain, self.stderr, err))
            self._gb_comm = (tasks, out, err)
        tasks, out, err = self._gb_comm
        pending = [t for t in tasks if not t.done()]
        if pending:
            timeout = None if endtime is None else max(0.0, endtime - _monotonic())
            await_(asyncio.wait(pending, timeout=timeout))
        if not all(t.done() for t in tasks):
            raise _sp.TimeoutExpired(
                self.args,
                orig_timeout,  # type: ignore[arg-type]
                output=b"".join(out) if out else None,
                stderr=b"".join(err) if err else None,
            )
        for task in tasks:
            task.result()  # re-raise an unexpected error of a helper
        stdout: Any = None if self.stdout is None else b"".join(out)
        stderr: Any = None if self.stderr is None else b"".join(err)
        if self.text_mode:  # type: ignore[attr-defined]
            if stdout is not None:
                stdout = _decode(stdout, self.stdout)
            if stderr is not None:
                stderr = _decode(stderr, self.stderr)
        return stdout, stderr


# The stdlib's functions, running with this module's globals (our Popen).
_rebind = _util.rebinder(globals())
run: Callable[..., _sp.CompletedProcess[Any]] = _rebind(_sp.run)
call: Callable[..., int] = _rebind(_sp.call)
check_call: Callable[..., int] = _rebind(_sp.check_call)
check_output: Callable[..., Any] = _rebind(_sp.check_output)
getstatusoutput: Callable[..., tuple[int, str]] = _rebind(_sp.getstatusoutput)
getoutput: Callable[..., str] = _rebind(_sp.getoutput)


# The stdlib Popen methods we do not override run with the stdlib module's
# globals: those that wait (the exec handshake's read of the error pipe and its
# waitpid, ``_try_wait``) run with ours instead, so they use the green os.
for _name in ("_execute_child", "_try_wait", "_posix_spawn"):
    if hasattr(_sp.Popen, _name):
        setattr(Popen, _name, _rebind(getattr(_sp.Popen, _name)))
del _name
if hasattr(_sp, "_use_posix_spawn"):
    _use_posix_spawn = _rebind(_sp._use_posix_spawn)
_PopenSelector = getattr(
    _green_selectors, "PollSelector", getattr(_green_selectors, "SelectSelector", None)
)

# The stdlib module's names for the modules it uses, green (as every name here).
os = _green_os
select = _green_select
selectors = _green_selectors
signal = _green_signal
threading = _green_threading
time = _green_time
