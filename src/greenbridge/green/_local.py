"""Green ``threading.local``: one namespace per green thread (per task) and per OS thread.

A namespace is kept under the key of its green thread (see
:func:`greenbridge.green._ident.thread_key`) and dropped when that key (the
task, or the OS thread's key object) is garbage collected.
"""

from __future__ import annotations

import _thread as _real_thread
import weakref
from typing import Any

from ._ident import thread_key

__all__ = ["local"]

_real_rlock = _real_thread.RLock


class _LocalImpl:
    __slots__ = ("dicts", "args", "mutex", "__weakref__")

    def __init__(self, args: tuple[tuple[Any, ...], dict[str, Any]]) -> None:
        self.dicts: dict[int, tuple[Any, dict[str, Any]]] = {}
        self.args = args
        self.mutex = _real_rlock()

    def get(self) -> dict[str, Any] | None:
        entry = self.dicts.get(id(thread_key()))
        return None if entry is None else entry[1]

    def create(self) -> dict[str, Any]:
        key = thread_key()
        ident = id(key)
        me = weakref.ref(self)

        def forget(_: object) -> None:
            impl = me()
            if impl is not None:
                impl.dicts.pop(ident, None)

        namespace: dict[str, Any] = {}
        self.dicts[ident] = (weakref.ref(key, forget), namespace)
        return namespace


class local:  # noqa: N801 - the stdlib's name
    """Attributes that are private to each green thread (and to each OS thread).

    As with ``threading.local``, a subclass's ``__init__`` runs again, with the
    constructor's arguments, the first time another thread touches the object.
    """

    __slots__ = ("_local__impl", "__dict__")

    def __new__(cls, *args: Any, **kw: Any) -> local:
        if (args or kw) and (cls.__init__ is object.__init__):
            raise TypeError("Initialization arguments are not supported")
        self = object.__new__(cls)
        impl = _LocalImpl((args, kw))
        object.__setattr__(self, "_local__impl", impl)
        object.__setattr__(self, "__dict__", impl.create())
        return self

    def _local__enter(self) -> _LocalImpl:
        impl: _LocalImpl = object.__getattribute__(self, "_local__impl")
        impl.mutex.acquire()
        try:
            namespace = impl.get()
            if namespace is None:
                namespace = impl.create()
                object.__setattr__(self, "__dict__", namespace)
                args, kw = impl.args
                try:
                    type(self).__init__(self, *args, **kw)
                except BaseException:
                    # As the stdlib: no namespace is kept, the next access runs
                    # __init__ again.
                    impl.dicts.pop(id(thread_key()), None)
                    raise
            else:
                object.__setattr__(self, "__dict__", namespace)
        except BaseException:
            impl.mutex.release()
            raise
        return impl

    def __getattribute__(self, name: str) -> Any:
        impl = local._local__enter(self)
        try:
            return object.__getattribute__(self, name)
        finally:
            impl.mutex.release()

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "__dict__":
            raise AttributeError(
                f"{type(self).__name__!r} object attribute '__dict__' is read-only"
            )
        impl = local._local__enter(self)
        try:
            object.__setattr__(self, name, value)
        finally:
            impl.mutex.release()

    def __delattr__(self, name: str) -> None:
        if name == "__dict__":
            raise AttributeError(
                f"{type(self).__name__!r} object attribute '__dict__' is read-only"
            )
        impl = local._local__enter(self)
        try:
            object.__delattr__(self, name)
        finally:
            impl.mutex.release()


# Its users know it as a member of the green ``threading``, which re-exports it.
local.__module__ = "greenbridge.green.threading"
