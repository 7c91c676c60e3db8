"""Green ``selectors``: the stdlib ``selectors`` module bound to the green ``select``.

Every selector class (``SelectSelector``, ``PollSelector``, ``EpollSelector``...,
``DefaultSelector``) is the stdlib's own code, executed here against
:mod:`greenbridge.green.select`, so its semantics are exactly the stdlib's and
its ``select()`` suspends only the calling greenlet under greenbridge.
"""

from __future__ import annotations

import builtins as _builtins
from typing import Any

from .._patcher import original
from . import select as _green_select

_selectors = original("selectors")


def _import(name: str, *args: Any, **kwargs: Any) -> Any:
    if name == "select":
        return _green_select
    return _builtins.__import__(name, *args, **kwargs)


def _load() -> None:
    loader = _selectors.__loader__
    source = loader.get_source(_selectors.__name__)  # type: ignore[union-attr]
    code = compile(source, _selectors.__file__ or "<selectors>", "exec")
    namespace = globals()
    namespace["__builtins__"] = dict(vars(_builtins), __import__=_import)
    exec(code, namespace)  # the stdlib module's body, with our select
    namespace["__doc__"] = _selectors.__doc__


_load()
