"""Putting the green modules in place: ``patch_blocking`` and ``monkey_patch``.

Public (re-exported by the package): :func:`monkey_patch`,
:func:`patch_blocking`, :func:`original`, :func:`is_patched`,
:func:`green_module_names` and :class:`PatchWarning`.

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
import functools
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import pkgutil
import sys
import sysconfig
import threading
import types
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypedDict

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "PROTECTED",
    "SWITCHES",
    "PatchWarning",
    "find_early_imports",
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


class PatchWarning(RuntimeWarning):
    """:func:`monkey_patch` found modules that were imported before it and keep the originals.

    Such a module bound the standard ``socket``, ``time``, ``threading``...
    when it was imported, so its blocking calls still block the whole event
    loop after patching.  The message names the modules and the originals
    each one holds, and the fix: call :func:`monkey_patch` before importing
    them, or run the program with ``python -m greenbridge``.
    ``monkey_patch(early_imports="error")`` raises it instead (and patches
    nothing); ``early_imports="ignore"`` leaves the check out.
    """


def green_module_names() -> tuple[str, ...]:
    """The names of the stdlib modules greenbridge has green replacements for, sorted.

    Every name is accepted by :func:`original`, :func:`is_patched` and the
    module lists of :func:`monkey_patch` and :func:`patch_blocking`.
    """
    return tuple(name for name in _NAMES if name in _ORIGINALS)


def _unknown(name: object) -> ValueError:
    return ValueError(
        f"greenbridge has no green replacement for {name!r}; "
        f"the replaced modules are {', '.join(green_module_names())}"
    )


def original(name: str) -> types.ModuleType:
    """Return the stdlib module ``name`` as it was imported before any patching.

    What ``gevent.monkey.get_original`` and ``eventlet.patcher.original``
    give: the blocking module, whatever ``sys.modules`` holds now.

    Raises:
        ValueError: ``name`` is not one of :func:`green_module_names`.
    """
    try:
        return _ORIGINALS[name]
    except (KeyError, TypeError):
        raise _unknown(name) from None


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


class Switches(TypedDict, total=False):
    """The keyword switches of :func:`monkey_patch` and :func:`patch_blocking` (see SWITCHES)."""

    os: bool
    queue: bool
    select: bool
    signal: bool
    socket: bool
    ssl: bool
    subprocess: bool
    thread: bool
    time: bool


#: Keyword switch -> the stdlib modules it covers.  The names are those of
#: gevent's ``patch_all`` and eventlet's ``monkey_patch``; where they group
#: modules, eventlet's grouping is kept: ``thread`` covers ``queue`` too (a
#: stdlib ``Queue`` shared by green threads would block the loop in ``get``),
#: ``socket`` covers ``ssl`` (TLS over a green socket is what a client wants).
SWITCHES: Mapping[str, tuple[str, ...]] = types.MappingProxyType(
    {
        "os": ("os",),
        "queue": ("queue",),
        "select": ("select", "selectors"),
        "signal": ("signal",),
        "socket": ("socket", "ssl"),
        "ssl": ("ssl",),
        "subprocess": ("subprocess",),
        "thread": ("threading", "_thread", "queue"),
        "time": ("time",),
    }
)

# What the peers' other switches are, for the error message of a call ported
# from them.
_PEER_SWITCHES = {
    "dns": "name resolution is part of socket=",
    "psycopg": "use greenbridge.patch_psycopg() or patch_psycopg2()",
    "builtins": "there is nothing to replace in builtins",
    "sys": "there is nothing to replace in sys",
    "Event": "the green threading.Event is part of thread=",
    "contextvars": "green threads already have their own context",
    "aggressive": "the green modules replace whole modules already",
}


def _select(
    caller: str, modules: Iterable[str] | None, switches: Mapping[str, object]
) -> list[str]:
    """The module names a call asks for: its module list, or what its switches say."""
    if switches:
        unknown = sorted(set(switches) - set(SWITCHES))
        if unknown:
            hints = "".join(
                f"; {name}: {_PEER_SWITCHES[name]}" for name in unknown if name in _PEER_SWITCHES
            )
            raise TypeError(
                f"{caller}() got unknown switch(es) {', '.join(unknown)}; the switches are "
                f"{', '.join(SWITCHES)} (or pass a list of module names){hints}"
            )
        for name, value in switches.items():
            if not isinstance(value, bool):
                raise TypeError(f"{caller}({name}=...) takes True or False, not {value!r}")
        if modules is not None:
            raise TypeError(
                f"{caller}() takes a list of module names or keyword switches, not both"
            )
        on = {name for name, value in switches.items() if value}
        off = {name for name, value in switches.items() if not value}
        if on and off:
            raise TypeError(
                f"{caller}(): say which modules to patch ({'=True, '.join(sorted(on))}=True) "
                f"or which to leave alone ({'=False, '.join(sorted(off))}=False), not both"
            )
        available = green_module_names()
        if on:
            wanted = {module for name in on for module in SWITCHES[name]}
            return [name for name in available if name in wanted]
        unwanted = {module for name in off for module in SWITCHES[name]}
        return [name for name in available if name not in unwanted]
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
def patch_blocking(
    modules: Iterable[str] | None = None, **switches: Unpack[Switches]
) -> Iterator[None]:
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
        **switches: instead of ``modules``, the keyword switches of
            :func:`monkey_patch` (``patch_blocking(thread=False)``...).

    asyncio, greenbridge, trio, uvloop and greenlet always keep the original
    modules, even when first imported inside the block.  Blocks nest.
    """
    global _depth
    names = _select("patch_blocking", modules, switches)
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


_EARLY_IMPORTS = ("warn", "error", "ignore")


def monkey_patch(
    modules: Iterable[str] | None = None,
    *,
    early_imports: Literal["warn", "error", "ignore"] = "warn",
    **switches: Unpack[Switches],
) -> None:
    """Put the green modules in ``sys.modules`` for good (the global :func:`patch_blocking`).

    Every module imported afterwards binds the green ones.  Modules imported
    before keep the originals (nothing is patched inside module objects), so
    call it as early as possible, before importing the libraries to make
    green, or run the program with ``python -m greenbridge``, which calls it
    before the program starts.  Idempotent; asyncio, greenbridge, trio,
    uvloop and greenlet keep the originals.

    Which modules: all of :func:`green_module_names` by default; a list of
    names (``monkey_patch(["socket", "ssl"])``); or keyword switches, named as
    gevent's ``patch_all`` and eventlet's ``monkey_patch`` name them (see
    ``SWITCHES`` in the documentation): ``monkey_patch(thread=False,
    subprocess=False)`` patches everything else, ``monkey_patch(socket=True,
    time=True)`` patches only those.  Switches set to True and to False in
    one call, switches with a module list, or an unknown switch are a
    ``TypeError``.

    Args:
        modules: names of the stdlib modules to replace.
        early_imports: what to do about modules imported before this call
            that hold one of the originals being replaced (a ``requests``
            imported first keeps the blocking ``socket``): ``"warn"`` emits a
            :class:`PatchWarning` naming them, then patches; ``"error"``
            raises it and patches nothing; ``"ignore"`` does not look.
        **switches: ``os``, ``queue``, ``select``, ``signal``, ``socket``,
            ``ssl``, ``subprocess``, ``thread``, ``time``: True or False.

    Raises:
        PatchWarning: with ``early_imports="error"``, when modules were
            imported too early.
        TypeError: bad switches (the message names the valid ones).
        ValueError: an unknown module name or ``early_imports`` value.
    """
    global _depth
    if early_imports not in _EARLY_IMPORTS:
        raise ValueError(
            f"monkey_patch(early_imports={early_imports!r}): expected one of "
            f"{', '.join(map(repr, _EARLY_IMPORTS))}"
        )
    names = _select("monkey_patch", modules, switches)
    greens = {name: green(name) for name in names}
    with _lock:
        new = [name for name in names if name not in _global]
        if new and early_imports != "ignore":
            # Before anything changes, so that an error (or a warning filter
            # that turns the warning into one) leaves nothing half patched.
            message = _early_imports_message(new)
            if message is not None:
                if early_imports == "error":
                    raise PatchWarning(message)
                warnings.warn(message, PatchWarning, stacklevel=2)
        _install_finder()
        if not _global:
            _depth += 1
        _global.update(names)
        sys.modules.update(greens)


def is_patched(name: str) -> bool:
    """Return true when ``sys.modules[name]`` is currently the green module.

    True inside a :func:`patch_blocking` block that covers ``name`` and after
    a :func:`monkey_patch` that did.

    Raises:
        ValueError: ``name`` is not one of :func:`green_module_names`.
    """
    original(name)  # validates the name
    module = sys.modules.get(name)
    return module is not None and module.__name__ == f"{_GREEN_PACKAGE}.{name}"


# ---------------------------------------------------------------------------
# modules imported before monkey_patch(): the PatchWarning
#
# A module holds the original when one of its globals is the original module
# object, or an object of it that the green module replaces (``from socket
# import create_connection``, ``from time import sleep``).  One pass over
# ``sys.modules`` comparing identities: a few milliseconds for a thousand
# modules, once per monkey_patch().

# The stdlib's own modules are not counted (the interpreter, asyncio and
# greenbridge import many of them before anyone can patch), except when they
# hold the network modules: nothing that runs before a program does imports
# http.client, urllib.request, smtplib, socketserver..., so those were
# imported by the program, too early.
_NETWORK = frozenset({"socket", "ssl", "select", "selectors"})

# Not counted either: what the protected packages (trio, anyio) import along
# with themselves, and keep with them.
_LOADED_WITH_PROTECTED = frozenset({"attr", "attrs", "exceptiongroup", "idna", "sortedcontainers"})


def _is_stdlib(name: str, module: types.ModuleType) -> bool:
    top = name.partition(".")[0]
    names = getattr(sys, "stdlib_module_names", None)  # Python 3.10+
    if names is not None:
        return top in names
    if top in sys.builtin_module_names:
        return True
    if getattr(getattr(module, "__spec__", None), "origin", None) in ("built-in", "frozen"):
        return True  # zipimport, _frozen_importlib...
    path = getattr(module, "__file__", None)
    if not isinstance(path, str):
        return False
    path = os.path.normcase(os.path.realpath(path))
    return (
        "site-packages" not in path
        and "dist-packages" not in path
        and (path.startswith(_stdlib_dirs()))
    )


@functools.cache
def _stdlib_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple(
        {
            os.path.normcase(os.path.realpath(paths[key])) + os.sep
            for key in ("stdlib", "platstdlib")
        }
    )


def _held_objects(names: Iterable[str]) -> dict[int, str]:
    """id of each object whose holder keeps an original -> the original's name."""
    held: dict[int, str] = {}
    for name in names:
        module = _ORIGINALS[name]
        # The os module itself does not count: nearly every library imports
        # it for paths and the environment, and only its pipe I/O and child
        # waits are green (a ``from os import waitpid`` does count).
        if name != "os":
            held[id(module)] = name
        replacement = vars(green(name))
        for attr, value in vars(module).items():
            if (
                not attr.startswith("__")  # __loader__, __spec__...: every module has its own
                and callable(value)
                and not isinstance(value, types.ModuleType)
                and attr in replacement
                and replacement[attr] is not value
            ):
                held.setdefault(id(value), name)
    return held


def _module_name(key: str, module: types.ModuleType) -> str:
    spec = getattr(module, "__spec__", None)
    return getattr(spec, "name", None) or key


def find_early_imports(names: Iterable[str]) -> dict[str, set[str]]:
    """Modules in ``sys.modules`` that hold originals of ``names``: reported name -> originals.

    A package outside the standard library is reported by its top-level name
    (``urllib3``), a standard-library module by its full name (``http.client``).
    """
    names = list(names)
    held = _held_objects(names)
    network = {id(_ORIGINALS[name]) for name in names if name in _NETWORK}
    network.update(key for key, name in held.items() if name in _NETWORK)
    found: dict[str, set[str]] = {}
    entries: list[tuple[str, object]] = list(sys.modules.items())
    for key, module in entries:
        if not isinstance(module, types.ModuleType):  # sys.modules may hold anything
            continue
        name = _module_name(key, module)
        top = name.partition(".")[0]
        if top in PROTECTED or top in _LOADED_WITH_PROTECTED or name in _ORIGINALS:
            continue
        if key in _ORIGINALS:
            continue
        stdlib = _is_stdlib(name, module)
        if stdlib and name.startswith("_"):
            continue  # the C parts of the originals (_socket, _ssl...) hold their own objects
        hits = {
            held[id(value)]
            for value in list(vars(module).values())
            if id(value) in held and (not stdlib or id(value) in network)
        }
        if hits:
            shown = key if stdlib or key == "__main__" else key.partition(".")[0]
            found.setdefault(shown, set()).update(hits)
    return found


_SHOWN = 12  # modules named in a PatchWarning before "and N more"


def _early_imports_message(names: Iterable[str]) -> str | None:
    found = find_early_imports(names)
    if not found:
        return None
    items = [f"{name} ({', '.join(sorted(found[name]))})" for name in sorted(found)]
    more = len(items) - _SHOWN
    listed = ", ".join(items[:_SHOWN]) + (f" and {more} more" if more > 0 else "")
    return (
        f"monkey_patch(): these modules were imported before it and keep the original "
        f"blocking modules named in brackets, so their blocking calls block the event "
        f"loop: {listed}. Call greenbridge.monkey_patch() before importing them (first "
        f"thing in the program), or run the program with `python -m greenbridge`, which "
        f"patches before the program starts. "
        f'(monkey_patch(early_imports="ignore") skips this check; "error" raises.)'
    )
