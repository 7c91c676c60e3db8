"""Green ``selectors``: the stdlib ``selectors`` module bound to the green ``select``.

Every selector class (``SelectSelector``, ``PollSelector``, ``EpollSelector``...,
``DefaultSelector``) is the stdlib's own code, executed here against
:mod:`greenbridge.green.select`, so its semantics are exactly the stdlib's and
its ``select()`` suspends only the calling greenlet under greenbridge.
"""

from __future__ import annotations

import sys
import types

from .._patcher import original
from . import _util
from . import select as _green_select

_selectors = original("selectors")


def _load() -> None:
    loader = _selectors.__loader__
    source = loader.get_source(_selectors.__name__)  # type: ignore[union-attr]
    code = compile(source, _selectors.__file__ or "<selectors>", "exec")
    namespace = globals()
    # The module body's ``import select`` must bind the green module.  (Replacing
    # __import__ in __builtins__ is not enough on Python 3.9, whose frames inherit
    # the caller's builtins.)
    saved = sys.modules.get("select")
    sys.modules["select"] = _green_select
    try:
        exec(code, namespace)  # the stdlib module's body, with our select
    finally:
        if saved is None:
            sys.modules.pop("select", None)
        else:
            sys.modules["select"] = saved
    namespace["__doc__"] = _selectors.__doc__
    namespace["__all__"] = _util.star_names(_selectors)
    # ``_select = select.select`` in the class body: the C function is not bound
    # as a method, but our Python ``select`` would be.
    cls = namespace["SelectSelector"]
    if isinstance(cls.__dict__.get("_select"), types.FunctionType):
        cls._select = staticmethod(cls.__dict__["_select"])


_load()
