"""Edge cases of the bridge, each compared with the same program written natively.

The private loop (await_ with no loop running): Ctrl-C, SystemExit, context
variables, trio awaitables, shutdown; validation of what async_, spawn and
await_ accept; how spawn() tasks and warnings name the user's code.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import gc
import logging
import os
import re
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

import greenbridge
from greenbridge import MissingBridge, async_, await_, close_private_loop, spawn


@pytest.fixture(autouse=True)
def _fresh_private_loop() -> Iterator[None]:
    close_private_loop()
    yield
    close_private_loop()


@pytest.fixture
def default_sigint() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt, as in a program run by ``python``."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread only")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _ctrl_c_soon() -> None:
    """Press Ctrl-C once the loop is idle (from a loop callback, as a real one lands)."""
    asyncio.get_running_loop().call_later(0.02, os.kill, os.getpid(), signal.SIGINT)


def _outcome(run: Callable[[], Any]) -> str:
    try:
        return f"returned {run()!r}"
    except BaseException as exc:  # noqa: BLE001 - what escaped is the result
        return f"raised {type(exc).__name__}"


# ---------------------------------------------------------------------------
# Ctrl-C and SystemExit on the private loop


def _interrupted_program(log: list[str]) -> Callable[[], Coroutine[Any, Any, str]]:
    async def child() -> None:
        try:
            await asyncio.sleep(10)
            log.append("child done")
        except BaseException as exc:
            log.append(f"child {type(exc).__name__}")
            raise

    async def job() -> str:
        asyncio.ensure_future(child())
        _ctrl_c_soon()
        try:
            await asyncio.sleep(10)
            log.append("job done")
        except BaseException as exc:
            log.append(f"job {type(exc).__name__}")
            raise
        finally:
            log.append("job finally")
        return "result"

    return job


def test_ctrl_c_during_await_cancels_the_job_like_asyncio_run(default_sigint: None) -> None:
    native: list[str] = []
    outcome = _outcome(lambda: asyncio.run(_interrupted_program(native)()))
    assert outcome == "raised KeyboardInterrupt"

    bridged: list[str] = []
    assert _outcome(lambda: await_(_interrupted_program(bridged)())) == outcome
    # The job saw CancelledError and ran its finally before KeyboardInterrupt
    # left await_; the child task it started was cancelled too.
    assert sorted(bridged) == sorted(native)
    assert sorted(native) == ["child CancelledError", "job CancelledError", "job finally"]
    assert bridged.index("job CancelledError") < bridged.index("job finally")

    # The interrupted work does not come back to life in a later call.
    await_(asyncio.sleep(0.05))
    assert sorted(bridged) == sorted(native)
    if sys.version_info >= (3, 11):  # asyncio.Runner's KeyboardInterrupt: chained the same way

        def chained(run: Callable[[], Any]) -> tuple[Any, bool]:
            with pytest.raises(KeyboardInterrupt) as error:
                run()
            return type(error.value.__context__), error.value.__suppress_context__

        assert chained(lambda: await_(_interrupted_program([])())) == chained(
            lambda: asyncio.run(_interrupted_program([])())
        )
    # The private loop is still usable and its SIGINT handler is gone.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert await_(asyncio.sleep(0, "again")) == "again"


def test_ctrl_c_in_nested_await_through_a_portal(default_sigint: None) -> None:
    """The cancellation reaches an await_ in sync code the job calls, as a native await."""

    def program(
        log: list[str], call: Callable[[Any], Any]
    ) -> Callable[[], Coroutine[Any, Any, Any]]:
        async def inner() -> None:
            _ctrl_c_soon()
            try:
                await asyncio.sleep(10)
            except BaseException as exc:
                log.append(f"inner {type(exc).__name__}")
                raise

        async def job() -> Any:
            try:
                return await call_inner(inner)
            finally:
                log.append("job finally")

        async def call_inner(inner: Callable[[], Coroutine[Any, Any, None]]) -> Any:
            return await call(inner)

        return job

    async def native_call(inner: Callable[[], Coroutine[Any, Any, None]]) -> Any:
        return await inner()

    def sync_middle(inner: Callable[[], Coroutine[Any, Any, None]]) -> Any:
        return await_(inner())  # a plain sync function: runs through the job's portal

    async def bridged_call(inner: Callable[[], Coroutine[Any, Any, None]]) -> Any:
        return sync_middle(inner)

    native: list[str] = []
    outcome = _outcome(lambda: asyncio.run(program(native, native_call)()))
    bridged: list[str] = []
    assert _outcome(lambda: await_(program(bridged, bridged_call)())) == outcome
    assert outcome == "raised KeyboardInterrupt"
    assert bridged == native == ["inner CancelledError", "job finally"]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.Runner's SIGINT handling (3.11+)")
def test_ctrl_c_swallowed_by_the_job_returns_its_result(default_sigint: None) -> None:
    def program(log: list[str]) -> Callable[[], Coroutine[Any, Any, str]]:
        async def job() -> str:
            _ctrl_c_soon()
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                log.append("swallowed")
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
            return "finished anyway"

        return job

    native: list[str] = []
    outcome = _outcome(lambda: asyncio.run(program(native)()))
    bridged: list[str] = []
    assert _outcome(lambda: await_(program(bridged)())) == outcome
    assert outcome == "returned 'finished anyway'"
    assert bridged == native == ["swallowed"]


def _exiting_program(log: list[str]) -> Callable[[], Coroutine[Any, Any, None]]:
    async def child() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            log.append("child finally")

    def leave() -> None:
        sys.exit(3)

    async def job() -> None:
        asyncio.ensure_future(child())
        await asyncio.sleep(0)  # the child starts
        try:
            leave()
        finally:
            log.append("job finally")

    return job


@pytest.mark.parametrize("where", ["main thread", "other thread"])
def test_system_exit_cancels_what_the_job_started(where: str) -> None:
    def compare() -> tuple[str, list[str], str, list[str]]:
        native: list[str] = []
        native_outcome = _outcome(lambda: asyncio.run(_exiting_program(native)()))
        bridged: list[str] = []
        bridged_outcome = _outcome(lambda: await_(_exiting_program(bridged)()))
        await_(asyncio.sleep(0.01))  # a later call: nothing left to resume
        return native_outcome, native, bridged_outcome, bridged

    if where == "main thread":
        results = compare()
    else:
        box: list[Any] = []
        thread = threading.Thread(target=lambda: box.append(compare()))
        thread.start()
        thread.join()
        results = box[0]
    native_outcome, native, bridged_outcome, bridged = results
    assert native_outcome == bridged_outcome == "raised SystemExit"
    assert bridged == native == ["job finally", "child finally"]


# ---------------------------------------------------------------------------
# context variables


_var: contextvars.ContextVar[str] = contextvars.ContextVar("_var", default="unset")


async def _set_var(value: str) -> None:
    await asyncio.sleep(0)
    _var.set(value)


def test_context_var_set_by_the_awaited_coroutine_is_seen_by_the_caller() -> None:
    async def native_caller() -> str:
        await _set_var("native")
        return _var.get()

    def bridged_caller() -> str:
        await_(_set_var("bridged"))
        return _var.get()

    async def with_loop() -> str:
        return await async_(bridged_caller)()

    assert contextvars.Context().run(asyncio.run, native_caller()) == "native"
    # No loop running (the private loop), and a loop running: the same.
    assert contextvars.Context().run(bridged_caller) == "bridged"
    assert contextvars.Context().run(asyncio.run, with_loop()) == "bridged"


def test_context_var_set_by_the_caller_is_seen_by_the_awaited_coroutine() -> None:
    async def read() -> str:
        await asyncio.sleep(0)
        return _var.get()

    def caller() -> str:
        _var.set("caller")
        return await_(read())

    async def native_caller() -> str:
        _var.set("caller")
        return await read()

    assert contextvars.Context().run(caller) == asyncio.run(native_caller()) == "caller"


# ---------------------------------------------------------------------------
# the exception being handled (sys.exc_info, implicit chaining)


async def _inside_except() -> tuple[BaseException | None, BaseException | None]:
    await asyncio.sleep(0)
    seen = sys.exc_info()[1]
    try:
        raise KeyError("inner")
    except KeyError as exc:
        return seen, exc.__context__


def _sync_inside_except() -> tuple[BaseException | None, BaseException | None]:
    seen = sys.exc_info()[1]
    try:
        raise KeyError("inner")
    except KeyError as exc:
        return seen, exc.__context__


def test_await_in_an_except_block_sees_the_handled_exception() -> None:
    outer = ValueError("outer")

    async def native() -> Any:
        try:
            raise outer
        except ValueError:
            return await _inside_except()

    def bridged() -> Any:
        try:
            raise outer
        except ValueError:
            return await_(_inside_except())  # no loop running: the private loop

    async def in_loop() -> Any:
        return await async_(bridged)()

    expected = asyncio.run(native())
    assert expected == (outer, outer)
    assert bridged() == expected
    assert asyncio.run(in_loop()) == expected
    # The handled exception's traceback is left as raised: no greenbridge frame.
    tb = outer.__traceback__
    while tb is not None:
        assert tb.tb_frame.f_code.co_filename == __file__
        tb = tb.tb_next


@pytest.mark.parametrize("with_context", [True, False])
def test_async_in_an_except_block_sees_the_handled_exception(with_context: bool) -> None:
    async def ainside() -> Any:
        return _sync_inside_except()

    async def main(call: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        try:
            raise ValueError("outer")
        except ValueError as outer:
            seen, context = await call()
            return seen is outer, context is outer

    def bridged() -> Coroutine[Any, Any, Any]:
        return async_(_sync_inside_except, with_context=with_context)()

    assert asyncio.run(main(bridged)) == asyncio.run(main(ainside)) == (True, True)


# ---------------------------------------------------------------------------
# trio


def test_trio_awaitable_without_a_loop_says_what_it_needs() -> None:
    trio = pytest.importorskip("trio")

    def program(log: list[str]) -> Coroutine[Any, Any, None]:
        async def job() -> None:
            try:
                await trio.sleep(0)
            finally:
                log.append("finally")

        return job()

    native: list[str] = []
    with pytest.raises(RuntimeError) as native_error:
        asyncio.run(program(native))  # type: ignore[arg-type]
    bridged: list[str] = []
    with pytest.raises(RuntimeError, match=r"trio awaitables need a running trio\.run") as error:
        await_(program(bridged))
    assert isinstance(error.value, MissingBridge)
    assert "bad yield" in str(native_error.value)
    assert bridged == native == ["finally"]
    assert await_(asyncio.sleep(0, "ok")) == "ok"  # the private loop is fine


def test_missing_bridge_under_trio_names_trio_fixes() -> None:
    trio = pytest.importorskip("trio")

    def plain() -> None:
        await_(trio.sleep(0))

    async def main() -> str:
        with pytest.raises(MissingBridge) as error:
            plain()
        return str(error.value)

    message = trio.run(main)
    assert "nursery.start_soon" in message and "ensure_portal" in message
    assert "install_portal_factory" not in message and "spawn" not in message

    async def asyncio_main() -> str:
        with pytest.raises(MissingBridge) as error:
            plain_asyncio()
        return str(error.value)

    def plain_asyncio() -> None:
        await_(asyncio.sleep(0))

    assert "install_portal_factory" in asyncio.run(asyncio_main())


# ---------------------------------------------------------------------------
# what the decorator form of await_ accepts


async def _add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


class _AsyncCallable:
    async def __call__(self, a: int, b: int) -> int:
        return await _add(a, b)


def _returns_coroutine(a: int, b: int) -> Coroutine[Any, Any, int]:
    return _add(a, b)


@pytest.mark.parametrize(
    "fn",
    [_add, functools.partial(_add, 1), _AsyncCallable(), functools.partial(_AsyncCallable(), 1)],
    ids=["coroutine function", "partial", "async __call__", "partial of async __call__"],
)
def test_await_decorator_accepts_async_callables(fn: Callable[..., Any]) -> None:
    args = (2,) if isinstance(fn, functools.partial) else (1, 2)

    async def native() -> int:
        return await fn(*args)  # type: ignore[no-any-return]

    assert await_(fn)(*args) == asyncio.run(native()) == 3


@pytest.mark.parametrize(
    "fn", [len, _returns_coroutine, int], ids=["builtin", "returns a coroutine", "class"]
)
def test_await_of_a_sync_callable_is_a_type_error(fn: Callable[..., Any]) -> None:
    async def native() -> None:
        await fn  # type: ignore[misc]

    with pytest.raises(TypeError):
        asyncio.run(native())
    with pytest.raises(TypeError, match=r"is a sync callable: call it directly") as error:
        await_(fn)
    assert f"await_({fn.__qualname__}(...))" in str(error.value)

    # The same inside bridged code.
    async def main() -> None:
        with pytest.raises(TypeError, match="sync callable"):
            await async_(await_)(fn)

    asyncio.run(main())


def test_await_of_an_async_generator_function_points_at_sync_iter() -> None:
    async def numbers() -> Any:
        yield 1

    async def native() -> None:
        await numbers()  # type: ignore[misc]

    with pytest.raises(TypeError):
        asyncio.run(native())
    with pytest.raises(TypeError, match=r"async generator function: .*sync_iter"):
        await_(numbers)
    assert list(greenbridge.sync_iter(numbers())) == [1]  # what the message says to do


def test_await_of_a_plain_object_keeps_the_native_message() -> None:
    async def native() -> None:
        await 5  # type: ignore[misc]

    with pytest.raises(TypeError) as native_error:
        asyncio.run(native())
    with pytest.raises(TypeError) as error:
        await_(5)
    assert str(error.value) == str(native_error.value)


# ---------------------------------------------------------------------------
# what async_ and spawn accept


@pytest.mark.parametrize(
    "fn",
    [_add, functools.partial(_add, 1), _AsyncCallable(), functools.partial(_AsyncCallable(), 1)],
    ids=["coroutine function", "partial", "async __call__", "partial of async __call__"],
)
def test_async_and_spawn_reject_async_callables(fn: Callable[..., Any]) -> None:
    with pytest.raises(TypeError, match="is already (a coroutine|async).*: await it directly"):
        async_(fn)

    async def main() -> None:
        with pytest.raises(TypeError, match="is async: use asyncio.create_task"):
            spawn(fn, 1, 2)

    asyncio.run(main())


def test_sync_function_returning_a_coroutine_is_a_clear_error() -> None:
    """No "coroutine was never awaited" warning (an error under this suite's filters)."""

    async def main() -> list[str]:
        errors = []
        with pytest.raises(TypeError, match="returned a coroutine") as error:
            await async_(_returns_coroutine)(1, 2)
        errors.append(str(error.value))
        with pytest.raises(TypeError, match="returned a coroutine") as error:
            await async_(_returns_coroutine, with_context=False)(1, 2)
        errors.append(str(error.value))
        with pytest.raises(TypeError, match="returned a coroutine") as error:
            await spawn(_returns_coroutine, 1, 2)
        errors.append(str(error.value))
        return errors

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        errors = asyncio.run(main())
        gc.collect()
    assert all("_returns_coroutine" in e and "await it directly" in e for e in errors)


def test_async_and_spawn_given_a_coroutine_close_it() -> None:
    """The mistake async_(af()) / spawn(af()): a TypeError, and no "never awaited" warning."""

    async def main() -> None:
        with pytest.raises(TypeError, match=r"got the coroutine .*_add\(\): await it directly"):
            async_(_add(1, 2))  # type: ignore[call-overload]
        with pytest.raises(TypeError, match=r"coroutine .*_add\(\): for a coroutine use asyncio"):
            spawn(_add(1, 2))  # type: ignore[arg-type]

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        asyncio.run(main())
        gc.collect()


def test_public_entry_points_reject_bad_input_clearly() -> None:
    with pytest.raises(TypeError, match="async_.. expects a sync callable"):
        async_(42)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="spawn.. expects a sync callable"):
        spawn(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="install_portal_factory.. expects an asyncio event loop"):
        greenbridge.install_portal_factory(42)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# spawn() tasks name the user's function


def _coro_name(text: str) -> str:
    found = re.search(r"coro=<(\S+?)\(\)", text)
    assert found is not None, text
    return found.group(1)


def _task_name(text: str) -> str:
    found = re.search(r"name='([^']+)'", text)
    assert found is not None, text
    return found.group(1)


def test_spawn_task_repr_shows_the_function() -> None:
    def work() -> None:
        await_(asyncio.sleep(0))

    async def awork() -> None:
        await asyncio.sleep(0)

    async def main() -> list[str]:
        native = asyncio.create_task(awork())
        bridged = spawn(work)
        reprs = [repr(native), repr(bridged)]
        await asyncio.gather(native, bridged)
        return [*reprs, repr(native), repr(bridged)]

    native_pending, bridged_pending, native_done, bridged_done = asyncio.run(main())
    assert _coro_name(native_pending) == _coro_name(native_done) == awork.__qualname__
    assert _coro_name(bridged_pending) == _coro_name(bridged_done) == work.__qualname__
    # Default names stay Task-N, as for create_task.
    assert re.fullmatch(r"Task-\d+", _task_name(bridged_pending))
    assert int(_task_name(bridged_pending)[5:]) == int(_task_name(native_pending)[5:]) + 1


def test_private_loop_task_repr_shows_the_awaited_coroutine() -> None:
    async def job() -> str:
        await asyncio.sleep(0)
        return repr(asyncio.current_task())

    native = asyncio.run(job())
    bridged = await_(job())
    assert _coro_name(bridged) == _coro_name(native) == job.__qualname__
    assert re.fullmatch(r"Task-\d+", _task_name(bridged))


def test_never_retrieved_log_names_the_function(caplog: pytest.LogCaptureFixture) -> None:
    def fails() -> None:
        raise LookupError("lost")

    async def afails() -> None:
        raise LookupError("lost")

    async def main() -> None:
        asyncio.create_task(afails())
        spawn(fails)
        await asyncio.sleep(0.01)

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio.run(main())
        gc.collect()
    logged = [r.getMessage() for r in caplog.records if "never retrieved" in r.getMessage()]
    assert sorted(_coro_name(m) for m in logged) == sorted(
        [afails.__qualname__, fails.__qualname__]
    )


# ---------------------------------------------------------------------------
# warnings (documented in docs/limits.md: "Warnings' stacklevel")


def _deprecated() -> None:
    warnings.warn("old", DeprecationWarning, stacklevel=2)


async def _adeprecated() -> None:
    warnings.warn("old", DeprecationWarning, stacklevel=2)


def test_warning_stacklevel_from_code_called_by_sync_code_matches_native() -> None:
    def sync_caller() -> None:
        _deprecated()  # the line the warning must point at

    async def native_caller() -> None:
        await _adeprecated()  # the line the native warning points at

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(native_caller())
        asyncio.run(async_(sync_caller)())
        await_(async_(sync_caller)())
    assert len(caught) == 3
    assert {w.filename for w in caught} == {__file__}
    lines = [w.lineno for w in caught]
    assert lines[0] == native_caller.__code__.co_firstlineno + 1
    assert lines[1] == lines[2] == sync_caller.__code__.co_firstlineno + 1


def test_warning_stacklevel_2_in_the_function_run_by_async_points_at_greenbridge() -> None:
    """The documented limit: the function async_ runs has no Python caller of the user's.

    A worker greenlet's bottom frame has no ``f_back`` (greenlet does not
    link it to the frame that switched in), so ``stacklevel=2`` lands on
    greenbridge's worker loop instead of the awaiting coroutine.
    """

    async def native() -> None:
        await _adeprecated()

    async def bridged() -> None:
        await async_(_deprecated)()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(native())
        asyncio.run(bridged())
    native_warning, bridged_warning = caught
    assert native_warning.filename == __file__
    assert bridged_warning.filename == greenbridge._trampoline.__file__


# ---------------------------------------------------------------------------
# shutdown of the private loop


def test_close_private_loop_cancels_pending_tasks_like_asyncio_run() -> None:
    def program(log: list[str]) -> Coroutine[Any, Any, None]:
        async def background() -> None:
            try:
                await asyncio.sleep(10)
            except BaseException as exc:
                log.append(f"background {type(exc).__name__}")
                raise

        async def start() -> None:
            asyncio.ensure_future(background())
            await asyncio.sleep(0)

        return start()

    native: list[str] = []
    asyncio.run(program(native))
    bridged: list[str] = []
    await_(program(bridged))
    assert bridged == []  # the loop persists between calls: the task keeps waiting
    close_private_loop()
    assert bridged == native == ["background CancelledError"]


def test_close_private_loop_finalizes_async_generators_like_asyncio_run() -> None:
    def program(log: list[str]) -> Coroutine[Any, Any, Any]:
        async def numbers() -> Any:
            try:
                yield 1
                yield 2
            finally:
                log.append("agen finally")

        async def first() -> Any:
            agen = numbers()
            value = await agen.__anext__()
            return value, agen

        return first()

    native: list[str] = []
    native_value, native_agen = asyncio.run(program(native))
    bridged: list[str] = []
    bridged_value, bridged_agen = await_(program(bridged))
    assert bridged == []
    close_private_loop()
    assert (bridged_value, bridged) == (native_value, native) == (1, ["agen finally"])
    del native_agen, bridged_agen


def test_close_private_loop_from_inside_it_keeps_the_loop() -> None:
    async def native() -> str:
        try:
            asyncio.get_running_loop().close()
        except RuntimeError as exc:
            return type(exc).__name__
        return "closed"

    async def bridged() -> tuple[str, asyncio.AbstractEventLoop]:
        loop = asyncio.get_running_loop()
        try:
            close_private_loop()
        except RuntimeError as exc:
            return type(exc).__name__, loop
        return "closed", loop

    outcome, loop = await_(bridged())
    assert outcome == asyncio.run(native()) == "RuntimeError"
    # The loop that refused to close is still this thread's private loop.
    assert await_(_running_loop()) is loop


async def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="inspect.markcoroutinefunction is 3.12+")
def test_functions_marked_as_coroutine_functions_count_as_async() -> None:
    import inspect

    def marked(a: int, b: int) -> Coroutine[Any, Any, int]:
        return _add(a, b)

    inspect.markcoroutinefunction(marked)

    async def native() -> int:
        return await marked(1, 2)

    assert await_(marked)(1, 2) == asyncio.run(native()) == 3
    with pytest.raises(TypeError, match="already a coroutine function"):
        async_(marked)


_AT_EXIT_PROGRAM = """
import asyncio
import greenbridge

async def background():
    try:
        await asyncio.sleep(10)
    finally:
        print("background finally", flush=True)

async def start():
    asyncio.ensure_future(background())
    await asyncio.sleep(0)

{run}(start())
print("end of program", flush=True)
"""


def test_pending_tasks_of_the_main_thread_run_their_finally_at_exit() -> None:
    """As asyncio.run's pending tasks do when it returns (here: when the program ends)."""
    import subprocess

    def run(runner: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, "-c", _AT_EXIT_PROGRAM.format(run=runner)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        return done.stdout.splitlines()

    native = run("asyncio.run")
    bridged = run("greenbridge.await_")
    assert sorted(bridged) == sorted(native) == ["background finally", "end of program"]


def test_system_exit_in_a_background_task_cancels_the_job(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def program(log: list[str]) -> Coroutine[Any, Any, None]:
        def leave() -> None:
            sys.exit(4)

        async def background() -> None:
            await asyncio.sleep(0.01)
            leave()

        async def job() -> None:
            asyncio.ensure_future(background())
            try:
                await asyncio.sleep(10)
            except BaseException as exc:
                log.append(f"job {type(exc).__name__}")
                raise

        return job()

    def never_retrieved() -> list[str]:
        gc.collect()
        found = [r.getMessage() for r in caplog.records if "never retrieved" in r.getMessage()]
        caplog.clear()
        return [_coro_name(m) for m in found]

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        native: list[str] = []
        native_outcome = _outcome(lambda: asyncio.run(program(native)))
        native_logged = never_retrieved()
        bridged: list[str] = []
        assert _outcome(lambda: await_(program(bridged))) == native_outcome == "raised SystemExit"
        assert bridged == native == ["job CancelledError"]
        await_(asyncio.sleep(0.02))
        assert bridged == native
        # The background task's SystemExit is reported the same way, naming it.
        assert never_retrieved() == native_logged


def test_portal_factory_tasks_keep_their_coroutine_name() -> None:
    async def work() -> str:
        await asyncio.sleep(0)
        return repr(asyncio.current_task())

    async def main(portal: bool) -> str:
        if portal:
            greenbridge.install_portal_factory()
        return await asyncio.get_running_loop().create_task(work())

    native = asyncio.run(main(False))
    bridged = asyncio.run(main(True))
    assert _coro_name(bridged) == _coro_name(native) == work.__qualname__


def test_cancelled_error_from_the_awaitable_leaves_other_tasks_running() -> None:
    """A CancelledError from await_ is an outcome, not an interrupt, as for a native await."""

    async def background(log: list[str]) -> None:
        await asyncio.sleep(0.02)
        log.append("background done")

    async def cancelled() -> None:
        fut = asyncio.get_running_loop().create_future()
        fut.cancel()
        await fut

    async def native(log: list[str]) -> None:
        task = asyncio.ensure_future(background(log))
        with pytest.raises(asyncio.CancelledError):
            await cancelled()
        await task

    def bridged(log: list[str]) -> None:
        async def start() -> asyncio.Task[None]:
            return asyncio.ensure_future(background(log))

        task = await_(start())
        with pytest.raises(asyncio.CancelledError):
            await_(cancelled())
        await_(task)

    native_log: list[str] = []
    asyncio.run(native(native_log))
    bridged_log: list[str] = []
    bridged(bridged_log)
    assert bridged_log == native_log == ["background done"]


def test_loop_stopped_inside_the_job_cancels_it_like_asyncio_run() -> None:
    def program(log: list[str]) -> Coroutine[Any, Any, None]:
        async def job() -> None:
            asyncio.get_running_loop().stop()
            try:
                await asyncio.sleep(0.01)
                log.append("job done")
            except BaseException as exc:
                log.append(f"job {type(exc).__name__}")
                raise

        return job()

    native: list[str] = []
    with pytest.raises(RuntimeError) as native_error:
        asyncio.run(program(native))
    bridged: list[str] = []
    with pytest.raises(RuntimeError) as error:
        await_(program(bridged))
    assert str(error.value) == str(native_error.value)
    await_(asyncio.sleep(0.05))  # a later call does not resume the stopped job
    assert bridged == native == ["job CancelledError"]
