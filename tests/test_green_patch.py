"""patch_blocking / monkey_patch / original: sys.modules swapping."""

from __future__ import annotations

import asyncio
import importlib
import select
import socket
import subprocess
import sys
import textwrap
import time

import pytest

import greenbridge
from greenbridge import _patcher
from greenbridge.green import socket as gsocket


def test_original_returns_the_stdlib_modules() -> None:
    assert _patcher.original("socket") is socket
    assert _patcher.original("select") is select
    assert _patcher.original("time") is time
    with pytest.raises(ValueError, match="no green replacement"):
        _patcher.original("json")


def test_green_modules_are_discovered_from_the_package() -> None:
    names = _patcher.green_module_names()
    for name in ("socket", "select", "selectors", "time"):
        assert name in names


def test_patch_blocking_swaps_and_restores(tmp_path: object) -> None:
    before = {name: sys.modules.get(name) for name in _patcher.green_module_names()}
    with greenbridge.patch_blocking():
        import socket as inside

        assert inside is gsocket
        assert _patcher.is_patched("socket")
        with greenbridge.patch_blocking(["time"]):  # nests
            assert sys.modules["socket"] is gsocket
        assert sys.modules["socket"] is gsocket
    assert {name: sys.modules.get(name) for name in before} == before
    import socket as after

    assert after is socket


def test_only_the_named_modules_are_swapped() -> None:
    with greenbridge.patch_blocking(["time"]):
        assert sys.modules["socket"] is socket
        assert sys.modules["time"].__name__ == "greenbridge.green.time"
    with pytest.raises(TypeError), greenbridge.patch_blocking("socket"):
        pass
    with pytest.raises(ValueError), greenbridge.patch_blocking(["json"]):
        pass


def test_modules_imported_inside_the_block_bind_green_ones(tmp_path: object) -> None:
    path = tmp_path / "gb_sample_lib.py"  # type: ignore[operator]
    path.write_text("import socket\nfrom time import sleep\n")
    sys.path.insert(0, str(tmp_path))
    try:
        with greenbridge.patch_blocking():
            mod = importlib.import_module("gb_sample_lib")
        assert mod.socket is gsocket
        assert mod.sleep.__module__ == "greenbridge.green.time"
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("gb_sample_lib", None)


def test_protected_packages_import_the_originals_inside_the_block() -> None:
    # asyncio submodules never imported yet in this process would be the case in point;
    # check the mechanism in a fresh interpreter with a protected package imported lazily.
    code = textwrap.dedent(
        """
        import sys, greenbridge
        assert "trio" not in sys.modules
        with greenbridge.patch_blocking():
            import trio, socket
            assert socket.__name__ == "greenbridge.green.socket"
        import trio._core._io_epoll as io
        assert io.select.__name__ == "select", io.select
        assert trio.socket._stdlib_socket.__name__ == "socket"
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_monkey_patch_in_a_fresh_process() -> None:
    code = textwrap.dedent(
        """
        import asyncio, greenbridge, time as t0
        greenbridge.monkey_patch()
        greenbridge.monkey_patch()  # idempotent
        import socket, time, select, selectors
        assert socket.socket.__module__ == "greenbridge.green.socket"
        assert asyncio.base_events.socket.__name__ == "socket"  # asyncio keeps originals
        def slow():
            time.sleep(0.2)
        async def main():
            start = t0.monotonic()
            await asyncio.gather(*[greenbridge.async_(slow)() for _ in range(20)])
            return t0.monotonic() - start
        print(asyncio.run(main()) < 1)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "True", out.stderr


def test_patched_library_runs_concurrently_on_the_loop() -> None:
    async def main() -> float:
        start = time.monotonic()
        with greenbridge.patch_blocking():
            t = importlib.import_module("time")

        await asyncio.gather(*[greenbridge.async_(t.sleep)(0.2) for _ in range(20)])
        return time.monotonic() - start

    assert asyncio.run(main()) < 1
