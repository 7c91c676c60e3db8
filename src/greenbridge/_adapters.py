"""Async objects for sync code: ``with sync_cm(acm)``, ``for x in sync_iter(ait)``.

Both adapters call :func:`greenbridge.await_` for each async step, so they
work wherever ``await_`` does: in sync code run by ``async_``/``spawn``, in a
task with a portal, or with no loop running (on this thread's private loop).
Elsewhere the first step raises :class:`greenbridge.MissingBridge`.

The async side is always closed as ``async with`` / ``async for`` plus
``aclose()`` would close it: ``__aexit__`` receives the exception that left
the ``with`` block, and an async iterator that has ``aclose()`` (every async
generator does) is closed when the sync iteration stops early: ``break``, an
exception in the loop body, ``close()``, or the end of a ``with`` block
around the iterator.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Generator
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Generic, TypeVar, overload

from ._bridge import await_
from ._errors import MissingBridge
from ._where import can_suspend, running_loop

__all__ = ["SyncContextManager", "SyncIterator", "sync_cm", "sync_iter"]

T = TypeVar("T")
Y = TypeVar("Y")
S = TypeVar("S")


def _wait(awaitable: Awaitable[T]) -> T:
    """``await_(awaitable)``; if it cannot run here, close the awaitable first.

    ``await_`` closes a coroutine it refuses; ``__anext__()`` of an async
    generator is not one, and would otherwise warn that it was never awaited.
    """
    try:
        return await_(awaitable)
    except MissingBridge:
        close = getattr(awaitable, "close", None)
        if close is not None:
            close()
        raise


class SyncContextManager(Generic[T]):
    """A sync context manager that drives an async one; see :func:`sync_cm`."""

    __slots__ = ("_acm", "_entered")

    def __init__(self, acm: AbstractAsyncContextManager[T]) -> None:
        self._acm = acm
        self._entered = False

    def __enter__(self) -> T:
        if self._entered:
            raise RuntimeError("sync_cm(): this async context manager was entered already")
        value = _wait(self._acm.__aenter__())
        self._entered = True
        return value

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return _wait(self._acm.__aexit__(exc_type, exc, tb))


def sync_cm(acm: AbstractAsyncContextManager[T]) -> SyncContextManager[T]:
    """Use an async context manager in a plain ``with`` statement.

    ``with sync_cm(acm) as value:`` awaits ``acm.__aenter__()`` on entry and
    ``acm.__aexit__(...)`` on exit, passing it the exception that leaves the
    block (which it may suppress, as under ``async with``).

    Raises:
        TypeError: ``acm`` is not an async context manager.
        MissingBridge: on entry, if ``await_`` cannot run here.
    """
    if not (hasattr(acm, "__aenter__") and hasattr(acm, "__aexit__")):
        raise TypeError(
            f"sync_cm() expects an async context manager (with __aenter__ and __aexit__), "
            f"got {type(acm).__name__!r}; use a plain `with` for a sync one"
        )
    return SyncContextManager(acm)


class SyncIterator(Generic[Y, S]):
    """A sync iterator/generator that drives an async one; see :func:`sync_iter`.

    Supports ``next()``, ``send()``, ``throw()`` and ``close()`` like a
    generator, and ``with`` to close the async side on exit.
    """

    __slots__ = ("_gen",)

    def __init__(self, ait: AsyncIterator[Y]) -> None:
        self._gen: Generator[Y, S, None] = _drive(ait)

    def __iter__(self) -> SyncIterator[Y, S]:
        return self

    def __next__(self) -> Y:
        return next(self._gen)

    def send(self, value: S) -> Y:
        """Send ``value`` to the async generator (``asend``); return what it yields next."""
        return self._gen.send(value)

    def throw(self, exc: BaseException) -> Y:
        """Raise ``exc`` in the async generator (``athrow``); return what it yields next."""
        return self._gen.throw(exc)

    def close(self) -> None:
        """Close the async side (``aclose()``); further ``next()`` raises StopIteration."""
        self._gen.close()

    def __enter__(self) -> SyncIterator[Y, S]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _drive(ait: AsyncIterator[Any]) -> Generator[Any, Any, None]:
    """A sync generator that mirrors ``ait`` step by step through await_."""
    started = False
    try:
        try:
            value = _wait(ait.__anext__())
            started = True
            while True:
                try:
                    sent = yield value
                except GeneratorExit:
                    raise
                except BaseException as exc:  # noqa: BLE001 - thrown in by the caller
                    athrow = getattr(ait, "athrow", None)
                    if athrow is None:
                        raise
                    value = _wait(athrow(exc))
                    del exc
                else:
                    if sent is None:
                        value = _wait(ait.__anext__())
                    else:
                        asend = getattr(ait, "asend", None)
                        if asend is None:
                            raise TypeError(
                                f"can't send a value to {type(ait).__name__!r}: "
                                "not an async generator"
                            )
                        value = _wait(asend(sent))
        except StopAsyncIteration:
            return
    finally:
        if started:
            _close(ait)


def _close(ait: AsyncIterator[Any]) -> None:
    aclose = getattr(ait, "aclose", None)
    if aclose is None:
        return
    # Where await_ can suspend (greenbridge's workers, SQLAlchemy's greenlets)
    # or runs the private loop, close it now, as ``async for`` would.
    if can_suspend() or running_loop() is None:
        _wait(aclose())
    # Otherwise (finalized by the garbage collector outside the bridge) the
    # async generator is left to its loop's own finalizer, which closes it.


@overload
def sync_iter(ait: AsyncGenerator[Y, S]) -> SyncIterator[Y, S]: ...


@overload
def sync_iter(ait: AsyncIterable[Y]) -> SyncIterator[Y, Any]: ...


def sync_iter(ait: AsyncIterable[Any]) -> SyncIterator[Any, Any]:
    """Iterate over an async iterable in a plain ``for`` loop.

    ``for item in sync_iter(agen):`` awaits each ``__anext__()``.  With an
    async generator, the result also supports ``send()`` (``asend``),
    ``throw()`` (``athrow``) and ``close()`` (``aclose``).  When the sync
    iteration ends early (``break``, an exception in the loop body, the
    adapter being dropped or closed), the async iterator's ``aclose()`` runs
    if it has one; ``with sync_iter(agen) as it:`` makes that point explicit.

    Raises:
        TypeError: ``ait`` is not an async iterable.
        MissingBridge: on the first step, if ``await_`` cannot run here.
    """
    aiter_method = getattr(type(ait), "__aiter__", None)
    if aiter_method is None:
        hint = "; use a plain `for` for a sync one" if hasattr(ait, "__iter__") else ""
        raise TypeError(f"sync_iter() expects an async iterable, got {type(ait).__name__!r}{hint}")
    return SyncIterator(aiter_method(ait))
