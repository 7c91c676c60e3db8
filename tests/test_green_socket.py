"""Green socket, select, selectors and time: stdlib semantics, concurrency, faults."""

from __future__ import annotations

import asyncio
import errno
import os
import socket as std_socket
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import greenbridge
from greenbridge import _hub
from greenbridge.green import select as gselect
from greenbridge.green import selectors as gselectors
from greenbridge.green import socket as gsocket
from greenbridge.green import time as gtime

from .helpers import Backend, registered_fds, run_concurrently


def run_sync(backend: Backend, fn: Callable[[], Any]) -> Any:
    async def main() -> Any:
        return await greenbridge.async_(fn)()

    return backend.run(main)


def gather_sync(backend: Backend, fns: list[Callable[[], Any]]) -> list[Any]:
    """Run sync callables concurrently on one loop, with a heartbeat; return results + max gap."""
    results, _elapsed, gap = run_concurrently(backend, fns)
    return [*results, gap]


def test_module_exports_everything_the_stdlib_does() -> None:
    for name in std_socket.__all__:
        assert hasattr(gsocket, name), name
    assert gsocket.AF_INET is std_socket.AF_INET
    assert gsocket.timeout is std_socket.timeout
    assert gsocket.error is OSError
    assert issubclass(gsocket.socket, std_socket.socket)
    for name in ("select", "poll", "epoll", "POLLIN", "error"):
        assert hasattr(gselect, name)
    assert gselectors.DefaultSelector.__module__ == "greenbridge.green.selectors"


def test_timeout_semantics_match_the_stdlib() -> None:
    for cls in (std_socket.socket, gsocket.socket):
        s = cls()
        with s:
            assert s.gettimeout() is None and s.getblocking() and s.timeout is None
            s.settimeout(2)
            assert s.gettimeout() == 2.0 and s.getblocking() and s.timeout == 2.0
            s.setblocking(False)
            assert s.gettimeout() == 0.0 and not s.getblocking()
            s.setblocking(True)
            assert s.gettimeout() is None
            with pytest.raises(ValueError):
                s.settimeout(-1)
            with pytest.raises(TypeError):
                s.settimeout("1")  # type: ignore[arg-type]
    old = std_socket.getdefaulttimeout()
    std_socket.setdefaulttimeout(3.5)
    try:
        with gsocket.socket() as s:
            assert s.gettimeout() == 3.5
    finally:
        std_socket.setdefaulttimeout(old)


def test_echo_many_connections_concurrently(backend: Backend) -> None:
    srv = gsocket.create_server(("127.0.0.1", 0), backlog=128)
    port = srv.getsockname()[1]
    n = 30

    def server() -> int:
        handled = 0
        conns = []
        for _ in range(n):
            conn, _addr = srv.accept()
            assert isinstance(conn, gsocket.socket)
            conns.append(conn)
        # Answer each after a delay, all "at once": only concurrency makes this fast.
        for conn in conns:
            data = conn.recv(100)
            handled += 1
            conn.sendall(data.upper())
            conn.close()
        return handled

    def client(i: int) -> bytes:
        with gsocket.create_connection(("127.0.0.1", port), timeout=10) as s:
            gtime.sleep(0.2)
            s.sendall(b"hello %d" % i)
            return s.makefile("rb").read()

    t0 = time.monotonic()
    out = gather_sync(backend, [server] + [lambda i=i: client(i) for i in range(n)])
    elapsed = time.monotonic() - t0
    srv.close()
    assert out[0] == n
    assert out[1 : n + 1] == [b"HELLO %d" % i for i in range(n)]
    assert elapsed < 0.6  # 30 clients each sleeping 0.2 s: concurrent, not 6 s
    assert out[-1] < 0.1  # the heartbeat never stalled


def test_recv_timeout_and_nonblocking(backend: Backend) -> None:
    def body() -> tuple[str, str, float]:
        a, b = gsocket.socketpair()
        with a, b:
            a.settimeout(0.1)
            t0 = time.monotonic()
            with pytest.raises(std_socket.timeout) as info:
                a.recv(1)
            elapsed = time.monotonic() - t0
            a.setblocking(False)
            with pytest.raises(BlockingIOError):
                a.recv(1)
            with pytest.raises(BlockingIOError):
                a.recv_into(bytearray(1))
            return str(info.value), type(info.value).__name__, elapsed

    msg, name, elapsed = run_sync(backend, body)
    assert msg == "timed out"
    assert 0.09 <= elapsed < 2


def test_all_recv_and_send_variants(backend: Backend) -> None:
    def body() -> list[Any]:
        a, b = gsocket.socketpair(std_socket.AF_UNIX, std_socket.SOCK_DGRAM)
        out: list[Any] = []
        with a, b:
            a.send(b"one")
            out.append(b.recv(10))
            a.sendmsg([b"two"])
            out.append(b.recvmsg(10)[0])
            buf = bytearray(10)
            a.send(b"three")
            out.append(bytes(buf[: b.recv_into(buf)]))
            a.send(b"four")
            out.append(b.recvfrom(10)[0])
            a.send(b"five")
            n, _ = b.recvfrom_into(buf)
            out.append(bytes(buf[:n]))
            a.send(b"six")
            n, _, _, _ = b.recvmsg_into([buf])
            out.append(bytes(buf[:n]))
        u1 = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_DGRAM)
        u2 = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_DGRAM)
        with u1, u2:
            u2.bind(("127.0.0.1", 0))
            u1.sendto(b"seven", ("localhost", u2.getsockname()[1]))  # a name, resolved green
            out.append(u2.recvfrom(10)[0])
        return out

    assert run_sync(backend, body) == [b"one", b"two", b"three", b"four", b"five", b"six", b"seven"]


def test_sendall_large_payload_with_slow_reader(backend: Backend) -> None:
    payload = os.urandom(4 * 1024 * 1024)

    def writer(sock: gsocket.socket) -> None:
        sock.sendall(payload)
        sock.shutdown(std_socket.SHUT_WR)

    def body() -> bytes:
        a, b = gsocket.socketpair()
        with a, b:
            greenbridge_spawn(writer, a)
            chunks = []
            while True:
                data = b.recv(65536)
                if not data:
                    break
                chunks.append(data)
            return b"".join(chunks)

    assert run_sync(backend, body) == payload


def greenbridge_spawn(fn: Callable[..., Any], *args: Any) -> None:
    """Start fn(*args) concurrently, on asyncio or trio."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        import trio

        token = trio.lowlevel.current_trio_token()
        token.run_sync_soon(lambda: trio.lowlevel.spawn_system_task(greenbridge.async_(fn), *args))
        return
    greenbridge.spawn(fn, *args)


def test_sendall_timeout_covers_the_whole_call(backend: Backend) -> None:
    def body() -> tuple[float, str]:
        a, b = gsocket.socketpair()
        with a, b:
            a.settimeout(0.2)
            t0 = time.monotonic()
            with pytest.raises(std_socket.timeout) as info:
                a.sendall(b"x" * (64 * 1024 * 1024))  # nobody reads
            return time.monotonic() - t0, str(info.value)

    elapsed, msg = run_sync(backend, body)
    assert msg == "timed out"
    assert 0.15 <= elapsed < 2


def test_sendfile(backend: Backend, tmp_path: Any) -> None:
    data = os.urandom(300_000)
    path = tmp_path / "f.bin"
    path.write_bytes(data)

    def body() -> tuple[int, bytes]:
        a, b = gsocket.socketpair()
        received = []

        finished = []

        def reader() -> None:
            while chunk := b.recv(65536):
                received.append(chunk)
            finished.append(True)

        with a, b:
            greenbridge_spawn(reader)
            with open(path, "rb") as f:
                sent = a.sendfile(f, 1000)
            a.shutdown(std_socket.SHUT_WR)
            while not finished:
                gtime.sleep(0.01)
            return sent, b"".join(received)

    sent, got = run_sync(backend, body)
    assert sent == len(data) - 1000
    assert got == data[1000:]


def test_connect_refused_and_connect_ex(backend: Backend) -> None:
    probe = std_socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens on that port now

    def body() -> tuple[int, int]:
        s = gsocket.socket()
        with s, pytest.raises(ConnectionRefusedError):
            s.connect(("127.0.0.1", port))
        s2 = gsocket.socket()
        with s2:
            code = s2.connect_ex(("127.0.0.1", port))
        s3 = gsocket.socket()
        with s3:
            s3.setblocking(False)
            code_nb = s3.connect_ex(("127.0.0.1", port))
        return code, code_nb

    code, code_nb = run_sync(backend, body)
    assert code == errno.ECONNREFUSED
    assert code_nb in (errno.EINPROGRESS, errno.ECONNREFUSED)


def test_connect_timeout_on_a_full_backlog(aio: Backend) -> None:
    # A listener that never accepts, with its backlog filled: connect() hangs (SYNs dropped).
    srv = std_socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    fillers = []
    for _ in range(8):
        f = std_socket.socket()
        f.setblocking(False)
        f.connect_ex(("127.0.0.1", port))
        fillers.append(f)
    time.sleep(0.05)

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def body() -> tuple[bool, int]:
            s = gsocket.socket()
            s.settimeout(0.3)
            fd = s.fileno()
            try:
                s.connect(("127.0.0.1", port))
            except std_socket.timeout:
                timed_out = True
            else:  # pragma: no cover - the kernel accepted after all
                timed_out = False
            s.close()
            return timed_out, fd

        timed_out, fd = await greenbridge.async_(body)()
        if timed_out:
            assert fd not in registered_fds(loop)
            assert not _hub._asyncio.registry(loop).writers
        else:
            pytest.skip("the kernel did not drop SYNs on a full backlog here")

    try:
        aio.run(main)
    finally:
        for f in fillers:
            f.close()
        srv.close()


def test_reset_mid_read_raises_and_unregisters(aio: Backend) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        srv = gsocket.create_server(("127.0.0.1", 0))
        port = srv.getsockname()[1]

        def reader() -> tuple[type[BaseException], int]:
            c = gsocket.create_connection(("127.0.0.1", port))
            fd = c.fileno()
            try:
                c.recv(100)
                c.recv(100)
            except OSError as exc:
                c.close()
                return type(exc), fd
            raise AssertionError("no error")

        def resetter() -> None:
            conn, _ = srv.accept()
            conn.sendall(b"partial")
            gtime.sleep(0.05)
            # SO_LINGER 0: close() sends RST instead of FIN.
            conn.setsockopt(std_socket.SOL_SOCKET, std_socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            conn.close()

        res, _ = await asyncio.gather(greenbridge.async_(reader)(), greenbridge.async_(resetter)())
        exc_type, fd = res
        srv.close()
        assert issubclass(exc_type, ConnectionResetError)
        assert fd not in registered_fds(loop)
        assert not _hub._asyncio.registry(loop).readers

    aio.run(main)


def test_peer_closing_during_sendall(aio: Backend) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        a, b = gsocket.socketpair()

        def sender() -> type[BaseException]:
            try:
                a.sendall(b"x" * (32 * 1024 * 1024))
            except OSError as exc:
                return type(exc)
            finally:
                a.close()
            raise AssertionError("no error")

        def closer() -> None:
            b.recv(1000)
            b.close()

        exc_type, _ = await asyncio.gather(
            greenbridge.async_(sender)(), greenbridge.async_(closer)()
        )
        assert issubclass(exc_type, (BrokenPipeError, ConnectionResetError))
        assert not _hub._asyncio.registry(loop).writers
        assert not registered_fds(loop)

    aio.run(main)


def test_close_while_another_greenlet_waits(aio: Backend) -> None:
    async def main() -> None:
        a, b = gsocket.socketpair()
        task = greenbridge.spawn(a.recv, 10)
        await asyncio.sleep(0.01)
        a.close()
        with pytest.raises(OSError) as info:
            await task
        assert info.value.errno == errno.EBADF
        b.close()

    aio.run(main)


def test_outside_a_loop_the_module_blocks_like_the_stdlib() -> None:
    a, b = gsocket.socketpair()
    with a, b:
        threading.Timer(0.05, lambda: b.send(b"late")).start()
        assert a.recv(10) == b"late"  # really blocked until the timer thread sent
        a.settimeout(0.05)
        with pytest.raises(std_socket.timeout):
            a.recv(1)
        r, w, x = gselect.select([a], [a], [], 0)
        assert r == [] and w == [a]


def test_select_poll_epoll_selectors_wait_cooperatively(backend: Backend) -> None:
    def with_select(a: gsocket.socket) -> Any:
        return gselect.select([a], [], [], 5)[0] == [a]

    def with_poll(a: gsocket.socket) -> Any:
        p = gselect.poll()
        p.register(a, gselect.POLLIN)
        return p.poll(5000) == [(a.fileno(), gselect.POLLIN)]

    def with_epoll(a: gsocket.socket) -> Any:
        with gselect.epoll() as ep:
            ep.register(a.fileno(), gselect.EPOLLIN)
            return ep.poll(5) == [(a.fileno(), gselect.EPOLLIN)]

    def with_selector(a: gsocket.socket) -> Any:
        with gselectors.DefaultSelector() as sel:
            sel.register(a, gselectors.EVENT_READ, "data")
            events = sel.select(5)
            return [(key.fileobj, key.data, ev) for key, ev in events] == [
                (a, "data", gselectors.EVENT_READ)
            ]

    def timeouts() -> Any:
        a, b = gsocket.socketpair()
        with a, b:
            t0 = time.monotonic()
            assert gselect.select([a], [], [], 0.05) == ([], [], [])
            p = gselect.poll()
            p.register(a, gselect.POLLIN)
            assert p.poll(50) == []
            with gselectors.DefaultSelector() as sel:
                sel.register(a, gselectors.EVENT_READ)
                assert sel.select(0.05) == []
            return time.monotonic() - t0

    pairs = [gsocket.socketpair() for _ in range(4)]

    def later() -> None:
        gtime.sleep(0.2)
        for _a, b in pairs:
            b.send(b"x")

    fns = [
        lambda f=f, a=a: f(a)
        for f, (a, _b) in zip((with_select, with_poll, with_epoll, with_selector), pairs)
    ]
    t0 = time.monotonic()
    out = gather_sync(backend, [*fns, later, timeouts])
    elapsed = time.monotonic() - t0
    for a, b in pairs:
        a.close()
        b.close()
    assert out[:4] == [True, True, True, True]
    assert out[5] >= 0.14
    assert elapsed < 1.0
    assert out[-1] < 0.1  # heartbeat


def test_select_rejects_bad_arguments_like_the_stdlib(aio: Backend) -> None:
    def body() -> None:
        with pytest.raises(ValueError):
            gselect.select([], [], [], -1)
        with pytest.raises(TypeError):
            gselect.select([object()], [], [], 0)
        with pytest.raises((ValueError, OSError)):
            gselect.select([-1], [], [], 0)

    run_sync(aio, body)


def test_getaddrinfo_and_friends_do_not_block(aio: Backend) -> None:
    def body() -> Any:
        infos = gsocket.getaddrinfo("localhost", 80, type=gsocket.SOCK_STREAM)
        assert infos and infos[0][0] in (gsocket.AF_INET, gsocket.AF_INET6)
        assert isinstance(infos[0][0], gsocket.AddressFamily)
        assert gsocket.gethostbyname("localhost").startswith("127.")
        assert gsocket.gethostbyname_ex("localhost")[2]
        assert gsocket.getnameinfo(("127.0.0.1", 80), 0)[1] in ("http", "80")
        assert isinstance(gsocket.getfqdn(), str)
        with pytest.raises(gsocket.gaierror):
            gsocket.getaddrinfo("no-such-host.invalid", 80)
        return True

    assert run_sync(aio, body)


def test_unix_sockets_and_dup_and_fromfd(backend: Backend) -> None:
    def body() -> list[bytes]:
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "s")
            srv = gsocket.socket(gsocket.AF_UNIX)
            srv.bind(path)
            srv.listen()
            c = gsocket.socket(gsocket.AF_UNIX)
            c.connect(path)
            conn, _ = srv.accept()
            dup = conn.dup()
            other = gsocket.fromfd(c.fileno(), gsocket.AF_UNIX, gsocket.SOCK_STREAM)
            assert isinstance(dup, gsocket.socket) and isinstance(other, gsocket.socket)
            other.sendall(b"via fromfd")
            out = [dup.recv(100)]
            for s in (srv, c, conn, dup, other):
                s.close()
            return out

    assert run_sync(backend, body) == [b"via fromfd"]


def test_time_module() -> None:
    for name in ("monotonic", "time", "perf_counter", "struct_time", "strftime"):
        assert getattr(gtime, name) is getattr(time, name)
    t0 = time.monotonic()
    gtime.sleep(0.02)
    assert time.monotonic() - t0 >= 0.015


# ---------------------------------------------------------------- signals, flags, kept waits


def test_cleared_traceback_leaves_the_next_await_working(aio: Backend) -> None:
    # unittest's assertRaises clears the frames of the traceback it caught; the
    # generator greenbridge reuses for await_ must not be among them.
    import traceback

    def body() -> list[str]:
        seen = []
        for _ in range(2):
            try:
                gsocket.gethostbyaddr("0.1.2.3.4.5.invalid.")
            except OSError as exc:
                seen.append(type(exc).__name__)
                traceback.clear_frames(exc.__traceback__)
        return seen

    assert run_sync(aio, body) == ["gaierror", "gaierror"]


def test_signal_handler_runs_in_the_waiting_green_thread(aio: Backend) -> None:
    import signal as std_signal

    from greenbridge.green import signal as gsignal

    if not hasattr(std_signal, "setitimer"):
        pytest.skip("needs setitimer")

    def body() -> tuple[str, float, list[int], float]:
        a, b = gsocket.socketpair()
        calls: list[int] = []
        previous = gsignal.signal(std_signal.SIGALRM, lambda signum, frame: 1 / 0)
        try:
            a.settimeout(5)
            t0 = time.monotonic()
            std_signal.setitimer(std_signal.ITIMER_REAL, 0.05)
            try:
                a.recv(10)
                raised = "nothing"
            except ZeroDivisionError:
                raised = "ZeroDivisionError"
            first = time.monotonic() - t0
            # A handler that returns: the call goes on waiting for the rest of its timeout.
            gsignal.signal(std_signal.SIGALRM, lambda signum, frame: calls.append(signum))
            assert gsignal.getsignal(std_signal.SIGALRM) is not None
            a.settimeout(0.3)
            t0 = time.monotonic()
            std_signal.setitimer(std_signal.ITIMER_REAL, 0.05)
            with pytest.raises(gsocket.timeout):
                a.recv(10)
            second = time.monotonic() - t0
        finally:
            std_signal.setitimer(std_signal.ITIMER_REAL, 0)
            gsignal.signal(std_signal.SIGALRM, previous)
            a.close()
            b.close()
        return raised, first, calls, second

    raised, first, calls, second = run_sync(aio, body)
    assert raised == "ZeroDivisionError"
    assert first < 2.0
    assert calls == [std_signal.SIGALRM]
    assert 0.25 < second < 2.0


def test_getsignal_returns_the_handler_as_installed() -> None:
    import signal as std_signal

    from greenbridge.green import signal as gsignal

    def handler(signum: int, frame: Any) -> None:
        pass

    previous = gsignal.signal(std_signal.SIGUSR1, handler)
    try:
        assert gsignal.getsignal(std_signal.SIGUSR1) is handler
        assert gsignal.signal(std_signal.SIGUSR1, std_signal.SIG_IGN) is handler
        assert gsignal.getsignal(std_signal.SIGUSR1) is std_signal.SIG_IGN
    finally:
        gsignal.signal(std_signal.SIGUSR1, previous)


def test_msg_dontwait_never_waits(aio: Backend) -> None:
    def body() -> list[str]:
        a, b = gsocket.socketpair()
        with a, b:
            assert a.gettimeout() is None  # a blocking socket...
            out = []
            for call in (
                lambda: a.recv(10, gsocket.MSG_DONTWAIT),
                lambda: a.recv_into(bytearray(10), 10, gsocket.MSG_DONTWAIT),
                lambda: a.recvmsg(10, 0, gsocket.MSG_DONTWAIT),
            ):
                try:
                    call()
                except BlockingIOError:
                    out.append("BlockingIOError")  # ...but this call must not block
            return out

    assert run_sync(aio, body) == ["BlockingIOError"] * 3


def test_select_on_ready_descriptors_lets_other_green_threads_run(aio: Backend) -> None:
    # A loop over a select that never waits (the socket is always writable) would
    # keep the loop from ever running anything else; OS threads are preempted.
    async def main() -> int:
        ticks: list[int] = []
        stop: list[bool] = []

        async def ticker() -> None:
            while not stop:
                ticks.append(1)
                await asyncio.sleep(0)

        def busy() -> None:
            a, b = gsocket.socketpair()
            with a, b:
                end = time.monotonic() + 0.3
                while time.monotonic() < end:
                    assert gselect.select([], [a], [], 1)[1] == [a]
            stop.append(True)

        await asyncio.gather(ticker(), greenbridge.async_(busy)())
        return len(ticks)

    assert aio.run(main) > 5


def test_pthread_kill_to_a_green_thread_reaches_its_os_thread(aio: Backend) -> None:
    import signal as std_signal

    from greenbridge.green import signal as gsignal
    from greenbridge.green import threading as gthreading

    def body() -> list[int]:
        got: list[int] = []
        previous = gsignal.signal(std_signal.SIGUSR1, lambda signum, frame: got.append(signum))
        try:
            gsignal.pthread_kill(gthreading.get_ident(), std_signal.SIGUSR1)
            gtime.sleep(0.01)
        finally:
            gsignal.signal(std_signal.SIGUSR1, previous)
        return got

    assert run_sync(aio, body) == [std_signal.SIGUSR1]


@pytest.mark.skipif(
    not hasattr(std_socket, "_fallback_socketpair"), reason="no pure-Python socketpair here"
)
def test_pure_python_socketpair_makes_green_sockets(aio: Backend) -> None:
    def body() -> tuple[bool, bytes]:
        a, b = gsocket._fallback_socketpair()
        with a, b:
            b.settimeout(2)
            task = greenbridge.spawn(b.recv, 10)  # waits without blocking the loop
            gtime.sleep(0.01)
            a.sendall(b"hi")
            return isinstance(a, gsocket.socket), greenbridge.await_(task)

    assert run_sync(aio, body) == (True, b"hi")


def _reads_after_a_send(mod: Any, prime: Callable[[Any], None]) -> list[Any]:
    """Reads right after a send: what each one gives.  ``prime(sock)`` before each
    read puts a green socket in the mode where such a read waits before it tries."""

    def outcome(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except OSError as exc:
            return (type(exc).__name__, exc.errno)

    out: list[Any] = []
    a, b = mod.socketpair()
    with a, b:
        a.sendall(b"ping")
        out.append(b.recv(4))
        b.sendall(b"pong")
        prime(a)
        out.append(a.recv(4))  # the answer is there already
        a.sendall(b"x")
        prime(a)
        out.append(a.recv(0))  # zero bytes: at once
        out.append(b.recv(1))
        a.send(b"y")
        prime(a)
        out.append(outcome(lambda: a.recv(1, mod.MSG_DONTWAIT)))
        out.append(b.recv(1))
        a.settimeout(0.05)
        a.sendall(b"z")
        prime(a)
        out.append(outcome(lambda: a.recv(1)))  # nothing comes: the timeout
        out.append(b.recv(1))
        a.settimeout(None)
        b.sendall(b"abc")
        a.sendall(b"q")
        buf = bytearray(3)
        prime(a)
        out.append((a.recv_into(buf), bytes(buf)))
        out.append(b.recv(1))
        a.sendall(b"w")
        a.close()
        prime(a)
        out.append(outcome(lambda: a.recv(1)))  # closed: at once
    return out


def test_a_read_right_after_a_send_behaves_as_natively(backend: Backend) -> None:
    from greenbridge.green.socket import _WAIT_FIRST

    def wait_first(sock: Any) -> None:
        sock._gb_waits = _WAIT_FIRST

    native = _reads_after_a_send(std_socket, lambda sock: None)
    assert native[:4] == [b"ping", b"pong", b"", b"x"]
    assert native[4] == ("BlockingIOError", errno.EAGAIN)
    assert native[6][0] == std_socket.timeout.__name__  # (TimeoutError from 3.10)
    assert native[8] == (3, b"abc")
    assert native[10] == ("OSError", errno.EBADF)
    assert run_sync(backend, lambda: _reads_after_a_send(gsocket, lambda sock: None)) == native
    assert run_sync(backend, lambda: _reads_after_a_send(gsocket, wait_first)) == native


def test_a_read_right_after_a_send_waits_for_the_answer(backend: Backend) -> None:
    """Request, then answer: each read waits for its answer; the loop runs meanwhile."""
    a, b = gsocket.socketpair()

    def serve() -> int:
        with b:
            for _ in range(20):
                request = b.recv(16)
                gtime.sleep(0.005)
                b.sendall(request.upper())
        return 20

    def ask() -> list[bytes]:
        with a:
            answers = []
            for i in range(20):
                a.sendall(b"req%d" % i)
                answers.append(a.recv(16))
        return answers

    served, answers, gap = gather_sync(backend, [serve, ask])
    assert served == 20
    assert answers == [b"REQ%d" % i for i in range(20)]
    assert gap < 0.5


def test_reads_after_a_send_learn_whether_to_wait_first(aio: Backend) -> None:
    """A socket whose answers come late waits before it reads; one whose answers are there
    already tries first (each read after a send that waits first saves a failed recv)."""
    from greenbridge.green.socket import _WAIT_FIRST

    a, b = gsocket.socketpair()

    def answer_late() -> None:
        gtime.sleep(0.01)
        b.sendall(b"late")

    def main() -> list[int]:
        states = []
        with a, b:
            a.sendall(b"q")
            b.sendall(b"there")
            assert a.recv(5) == b"there"  # tried first: the answer was there
            states.append(a._gb_waits)
            for _ in range(2):
                a.sendall(b"q")
                greenbridge.spawn(answer_late)
                assert a.recv(4) == b"late"  # found nothing the first time
                states.append(a._gb_waits)
            assert b.recv(3) == b"qqq"
        return states

    assert run_sync(aio, main) == [0, _WAIT_FIRST, _WAIT_FIRST - 1]
