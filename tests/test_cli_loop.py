"""``python -m greenbridge --loop ...``: uvicorn's loop values, and no PatchWarning from the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PROGRAM = """
import asyncio, socket, time
loop = asyncio.get_running_loop()
time.sleep(0.01)  # green: suspends the main green thread on that loop
print(type(loop).__module__, type(loop).__name__, socket.socket.__module__)
"""


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-m", "greenbridge", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def loop_of(tmp_path: Path, *options: str) -> str:
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    done = run_cli(*options, str(script), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # in particular, no PatchWarning
    module, name, socket_module = done.stdout.split()
    assert socket_module == "greenbridge.green.socket"
    return f"{module}.{name}"


def has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def test_the_default_is_asyncio(tmp_path: Path) -> None:
    assert loop_of(tmp_path) == "asyncio.unix_events._UnixSelectorEventLoop"
    assert loop_of(tmp_path, "--loop", "asyncio") == "asyncio.unix_events._UnixSelectorEventLoop"


def test_uvloop_and_auto(tmp_path: Path) -> None:
    auto = loop_of(tmp_path, "--loop=auto")
    if not has_uvloop():
        assert auto == "asyncio.unix_events._UnixSelectorEventLoop"
        pytest.skip("uvloop is not installed")
    assert auto == "uvloop.Loop"
    assert loop_of(tmp_path, "--loop", "uvloop") == "uvloop.Loop"
    assert loop_of(tmp_path, "--uvloop") == "uvloop.Loop"  # the alias


def test_module_function_is_a_loop_factory(tmp_path: Path) -> None:
    (tmp_path / "myloops.py").write_text(
        "import asyncio\n"
        "class MyLoop(asyncio.SelectorEventLoop):\n"
        "    pass\n"
        "def new_event_loop():\n"
        "    return MyLoop()\n"
        "def factory():  # uvicorn's docs: a function that returns a loop factory\n"
        "    return MyLoop\n"
        "class Namespace:\n"
        "    make = staticmethod(new_event_loop)\n"
    )
    assert loop_of(tmp_path, "--loop", "myloops:new_event_loop") == "myloops.MyLoop"
    assert loop_of(tmp_path, "--loop", "myloops:factory") == "myloops.MyLoop"
    assert loop_of(tmp_path, "--loop", "myloops:Namespace.make") == "myloops.MyLoop"
    assert loop_of(tmp_path, "--loop", "myloops:MyLoop") == "myloops.MyLoop"
    assert (
        loop_of(tmp_path, "--loop", "asyncio:SelectorEventLoop")
        == "asyncio.unix_events._UnixSelectorEventLoop"
    )


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("tokio", "--loop tokio: expected auto, asyncio, uvloop or module:function"),
        (":new_event_loop", "expected auto, asyncio, uvloop or module:function"),
        ("no_such_module:f", "--loop no_such_module:f: cannot import 'no_such_module'"),
        ("asyncio:no_such_name", "'asyncio' has no attribute 'no_such_name'"),
        ("asyncio:events", "expected a callable that returns a new event loop, got <module"),
        ("asyncio:get_event_loop_policy", "it returned <asyncio.unix_events"),
    ],
)
def test_bad_values_name_the_accepted_ones(tmp_path: Path, value: str, error: str) -> None:
    script = tmp_path / "prog.py"
    script.write_text("print('must not run')\n")
    done = run_cli("--loop", value, str(script), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert f"python -m greenbridge: error: --loop {value}: " in done.stderr
    assert error in done.stderr


def test_loop_without_a_value(tmp_path: Path) -> None:
    done = run_cli("--loop", cwd=tmp_path)
    assert done.returncode == 2
    assert "argument --loop: expected auto, asyncio, uvloop or module:function" in done.stderr
    done = run_cli("--help", cwd=tmp_path)
    assert "--loop LOOP" in done.stdout and "--uvloop" in done.stdout


def test_uvloop_missing_is_a_usage_error(tmp_path: Path) -> None:
    if has_uvloop():
        pytest.skip("uvloop is installed")
    done = run_cli("--loop", "uvloop", "x.py", cwd=tmp_path)
    assert done.returncode == 2 and "pip install 'greenbridge[uvloop]'" in done.stderr
