"""Putting the green modules in place: ``patch_blocking`` and ``monkey_patch``.

Mechanism: swap entries of ``sys.modules``.  While the green modules are in
place, ``import socket`` (and ``from socket import create_connection``) in a
module *being imported* binds the green module, so that library does green
I/O and the rest of the program does not change.  We never touch attributes
of the original module objects, so code that already holds them (asyncio,
greenbridge itself, anything imported before) keeps the stdlib behaviour.

The originals are imported eagerly, when this module is imported, for every
module ``greenbridge/green/`` replaces (the list is discovered by listing that
package, so a new green module joins without editing this file).
:func:`original` returns them.  ``import greenbridge`` does not import this
module: the first use of ``patch_blocking``/``monkey_patch`` or the first
import of a green module (each takes its stdlib twin from here) does, and
that is when the originals are taken from ``sys.modules``.  Nothing can have
put a green module there before, since only this module does that.

Packages that must keep the originals whatever happens (asyncio, greenbridge,
trio, uvloop, greenlet...) are imported with the originals back in place,
even when they are first imported while patching is active: a meta-path
finder wraps their loaders.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import pkgutil
import sys
import threading
import types
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

__all__ = [
    "PROTECTED",
    "green",
    "green_module_names",
    "is_patched",
    "monkey_patch",
    "original",
    "patch_blocking",
    "rebind",
]

_GREEN_PACKAGE = "greenbridge.green"

#: Top-level packages that always import (and keep) the original modules.
PROTECTED = frozenset(
    {
        "asyncio",
        "greenbridge",
        "greenlet",
        "trio",
        "uvloop",
        "anyio",
        "sniffio",
        "outcome",
        "concurrent",
    }
)


def _discover() -> tuple[str, ...]:
    """Names of the modules in ``greenbridge/green/`` (helpers without a stdlib twin are
    dropped later, when their original fails to import)."""
    spec = importlib.util.find_spec(_GREEN_PACKAGE)
    assert spec is not None and spec.submodule_search_locations is not None
    names = [
        info.name
        for info in pkgutil.iter_modules(list(spec.submodule_search_locations))
        if not info.name.startswith("__")
    ]
    return tuple(sorted(names))


_NAMES: tuple[str, ...] = _discover()
_ORIGINALS: dict[str, types.ModuleType] = {}
for _name in _NAMES:
    with contextlib.suppress(ImportError):  # a module this platform lacks
        _ORIGINALS[_name] = importlib.import_module(_name)
del _name

_lock = threading.RLock()
_depth = 0  # how many patch_blocking() blocks are active (monkey_patch counts as one, for ever)
_global: set[str] = set()  # modules monkey_patch() put in place


def green_module_names() -> tuple[str, ...]:
    """The names of the stdlib modules greenbridge has green replacements for."""
    return tuple(name for name in _NAMES if name in _ORIGINALS)


def original(name: str) -> types.ModuleType:
    """Return the stdlib module ``name`` as it was imported before any patching.

    Raises ``ValueError`` for a module greenbridge does not replace.
    """
    try:
        return _ORIGINALS[name]
    except KeyError:
        raise ValueError(
            f"greenbridge has no green replacement for {name!r}; "
            f"the replaced modules are {', '.join(green_module_names())}"
        ) from None


def rebind(fn: Any, namespace: dict[str, Any]) -> Any:
    """A copy of the stdlib function ``fn`` that looks its globals up in ``namespace``.

    Green modules reuse stdlib code this way: given the green module's
    ``globals()``, the names the function refers to (``socket``,
    ``select``, ...) resolve to the green objects instead of the originals.
    """
    new = types.FunctionType(fn.__code__, namespace, fn.__name__, fn.__defaults__, fn.__closure__)
    new.__kwdefaults__ = fn.__kwdefaults__
    new.__doc__ = fn.__doc__
    new.__qualname__ = fn.__qualname__
    new.__module__ = namespace["__name__"]
    return new


def green(name: str) -> types.ModuleType:
    """Return the green module that replaces ``name`` (importing it if needed)."""
    original(name)  # validates the name
    with _originals_in_place():
        return importlib.import_module(f"{_GREEN_PACKAGE}.{name}")


def _select(modules: Iterable[str] | None) -> list[str]:
    if modules is None:
        return list(green_module_names())
    if isinstance(modules, str):
        raise TypeError("modules must be a sequence of module names, not a str")
    names = list(modules)
    for name in names:
        original(name)
    return names


@contextlib.contextmanager
def _originals_in_place() -> Iterator[None]:
    """Put the original modules back in ``sys.modules`` for a moment."""
    saved = {name: sys.modules.get(name) for name in _ORIGINALS}
    sys.modules.update(_ORIGINALS)
    try:
        yield
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


class _ProtectedLoader(importlib.abc.Loader):
    """Runs a protected module's body with the original modules in place."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        create = getattr(self._loader, "create_module", None)
        return None if create is None else create(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        with _originals_in_place():
            self._loader.exec_module(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _ProtectedFinder(importlib.abc.MetaPathFinder):
    """While patching is active, makes protected packages import the originals."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if _depth == 0 or fullname.partition(".")[0] not in PROTECTED:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _ProtectedLoader(spec.loader)
                return spec
        return None


_finder = _ProtectedFinder()


def _install_finder() -> None:
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)


@contextlib.contextmanager
def patch_blocking(modules: Iterable[str] | None = None) -> Iterator[None]:
    """Put the green modules in ``sys.modules`` while the ``with`` block runs.

    ``with greenbridge.patch_blocking(): import requests`` makes requests (and
    every module first imported inside the block: urllib3, http.client...)
    bind the green ``socket``, ``ssl``, ``select``... so its I/O suspends only
    the calling greenlet.  Afterwards ``sys.modules`` is restored; the modules
    imported inside the block keep what they bound, and stay in
    ``sys.modules`` (a later ``import http.client`` elsewhere gets that same
    green-bound module, which blocks exactly like the stdlib outside a loop).
    A module imported *before* the block is not affected, and neither is a
    lazy ``import socket`` that runs after the block.

    Args:
        modules: names of the stdlib modules to replace (default: every module
            in ``greenbridge.green``, see :func:`green_module_names`).

    asyncio, greenbridge, trio, uvloop and greenlet always keep the original
    modules, even when first imported inside the block.  Blocks nest.
    """
    global _depth
    names = _select(modules)
    greens = {name: green(name) for name in names}
    with _lock:
        saved = {name: sys.modules.get(name) for name in names}
        _install_finder()
        _depth += 1
        sys.modules.update(greens)
    try:
        yield
    finally:
        with _lock:
            for name, module in saved.items():
                if module is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = module
            _depth -= 1


def monkey_patch(modules: Iterable[str] | None = None) -> None:
    """Put the green modules in ``sys.modules`` for good (the global :func:`patch_blocking`).

    Every module imported afterwards binds the green ones.  Modules imported
    before keep the originals (nothing is patched inside module objects), so
    call it as early as possible, before importing the libraries to make
    green.  Idempotent; asyncio, greenbridge, trio, uvloop and greenlet keep
    the originals.
    """
    global _depth
    names = _select(modules)
    greens = {name: green(name) for name in names}
    with _lock:
        _install_finder()
        if not _global:
            _depth += 1
        _global.update(names)
        sys.modules.update(greens)


def is_patched(name: str) -> bool:
    """Return true when ``sys.modules[name]`` is currently the green module."""
    module = sys.modules.get(name)
    return module is not None and module.__name__ == f"{_GREEN_PACKAGE}.{name}"
