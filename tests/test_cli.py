"""``python -m greenbridge``: real sync programs run as one green thread on a fresh loop."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SERVER_PROGRAM = """
import socket, socketserver, sys, threading, time

class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        line = self.rfile.readline()
        time.sleep(0.2)  # a blocking call in every handler thread
        self.wfile.write(line.upper())

class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

server = Server(("127.0.0.1", 0), Handler)
port = server.server_address[1]
threading.Thread(target=server.serve_forever, daemon=True).start()
replies = []

def client(i):
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(b"hello %d\\n" % i)
        replies.append(conn.makefile("rb").readline())

start = time.monotonic()
clients = [threading.Thread(target=client, args=(i,)) for i in range(int(sys.argv[1]))]
for t in clients:
    t.start()
for t in clients:
    t.join()
elapsed = time.monotonic() - start
server.shutdown()
server.server_close()
assert sorted(replies) == sorted(b"HELLO %d\\n" % i for i in range(len(clients)))
print(len(replies), f"{elapsed:.3f}", threading.current_thread().name, __name__)
"""


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "greenbridge", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_threaded_socketserver_serves_100_clients(tmp_path: Path, loop: str) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    script = tmp_path / "server.py"
    script.write_text(SERVER_PROGRAM)
    options = ["--uvloop"] if loop == "uvloop" else []
    done = run_cli(*options, str(script), "100")
    assert done.returncode == 0, done.stderr
    count, elapsed, thread_name, module_name = done.stdout.split()
    assert (count, thread_name, module_name) == ("100", "MainThread", "__main__")
    # 100 handlers each sleeping 0.2 s in "threads" overlapped on one loop (< 3x one sleep).
    assert float(elapsed) < 0.6


def test_argv_path_exit_code_and_non_daemon_threads(tmp_path: Path) -> None:
    (tmp_path / "helper.py").write_text("VALUE = 'imported from the script dir'\n")
    script = tmp_path / "prog.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, threading, time
            import helper
            print(sys.argv[1:], helper.VALUE, sys.modules["__main__"].__file__ == __file__)
            print(type(threading.Lock()).__module__, time.sleep.__module__)

            def late():
                time.sleep(0.2)
                print("non-daemon thread finished")

            def forever():
                time.sleep(60)
                print("daemon thread must not finish")

            threading.Thread(target=late).start()
            threading.Thread(target=forever, daemon=True).start()
            sys.exit(7)
            """
        )
    )
    done = run_cli(str(script), "a", "--b")
    assert done.returncode == 7, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "['a', '--b'] imported from the script dir True"
    assert lines[1] == "greenbridge.green.threading greenbridge.green.time"
    assert lines[2:] == ["non-daemon thread finished"]


def test_module_mode_and_uncaught_exception(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tool.py").write_text(
        "import sys\nprint(__name__, sys.argv[0].endswith('tool.py'), sys.argv[1:])\n"
        "raise ValueError('boom')\n"
    )
    done = run_cli("-m", "pkg.tool", "x", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout == "__main__ True ['x']\n"
    assert "ValueError: boom" in done.stderr and "Traceback" in done.stderr


def test_usage_errors() -> None:
    done = run_cli()
    assert done.returncode == 2 and "a script or -m module is required" in done.stderr
    done = run_cli("--nope", "x.py")
    assert done.returncode == 2 and "unknown option" in done.stderr
    done = run_cli("missing_script.py")
    assert done.returncode == 2 and "can't open file" in done.stderr
    done = run_cli("--help")
    assert done.returncode == 0 and "usage: python -m greenbridge" in done.stdout
