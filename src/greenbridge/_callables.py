"""What kind of callable is this?  The checks behind the bridge's TypeErrors.

`greenbridge.async_`, `greenbridge.spawn`, `greenbridge.await_` (its
decorator form) and `greenbridge.offload` each accept only sync or only async
callables, and name the callable in the error that says so.  A bottom-layer
module: it imports nothing from the package.
"""

from __future__ import annotations

import functools
import inspect
import types

__all__ = ["callable_name", "is_async_callable"]

_CO_ITERABLE_COROUTINE = inspect.CO_ITERABLE_COROUTINE
_CO_ASYNC = inspect.CO_COROUTINE | _CO_ITERABLE_COROUTINE
_FunctionType = types.FunctionType
_MethodType = types.MethodType
_MARK = "_is_coroutine_marker"  # the attribute inspect.markcoroutinefunction sets


def callable_name(fn: object) -> str:
    """How error messages name the callable ``fn``."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    name = getattr(fn, "__qualname__", None)
    if isinstance(name, str) and name:
        return name
    if callable(fn) and not isinstance(fn, type):
        name = getattr(type(fn), "__qualname__", None)
        if isinstance(name, str) and name:
            return f"the {name} object"
    return repr(fn)


def is_async_callable(fn: object) -> bool:
    """True if calling ``fn`` makes a coroutine, as far as can be told without calling it.

    Coroutine functions and methods, ``functools.partial`` objects of them,
    objects whose class has an ``async def __call__``, and generator-based
    coroutine functions (``@types.coroutine``).
    """
    if type(fn) is _MethodType:  # a bound method is async if its function is
        fn = fn.__func__
    if type(fn) is _FunctionType:  # the usual case, kept cheap for spawn()
        if fn.__code__.co_flags & _CO_ASYNC:
            return True
        # inspect.markcoroutinefunction() (3.12+) leaves a mark in __dict__
        # (and functools.wraps fills __dict__ too: look for the mark first).
        return _MARK in fn.__dict__ and inspect.iscoroutinefunction(fn)
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn) or _is_generator_coroutine_function(fn):
        return True
    if isinstance(fn, type):  # calling a class makes an instance
        return False
    call = getattr(type(fn), "__call__", None)  # noqa: B004 - the method, not callable()
    return call is not None and (
        inspect.iscoroutinefunction(call) or _is_generator_coroutine_function(call)
    )


def _is_generator_coroutine_function(fn: object) -> bool:
    fn = getattr(fn, "__func__", fn)
    code = getattr(fn, "__code__", None)
    return (
        isinstance(code, types.CodeType)
        and bool(code.co_flags & inspect.CO_GENERATOR)
        and bool(code.co_flags & _CO_ITERABLE_COROUTINE)
    )
