"""Instruction counts (callgrind) of one echo round trip and of one ``requests`` GET.

Wall-clock figures on a shared 2-core machine are noisy; machine instructions
counted by callgrind repeat to a fraction of a percent.  Each variant runs
``N`` operations after a warm-up; run it twice with different ``N`` and take
the difference, divided by the difference of ``N``, so that start-up and
imports cancel out::

    for n in 1000 3000; do
        valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.$n \\
            python benchmarks/callgrind_round_trip.py green asyncio $n
    done   # instructions per round trip: (total(3000) - total(1000)) / 2000

Variants (the interpreter must have what the variant imports):

* ``green LOOP N``: two green threads (``greenbridge.spawn``) exchanging 64
  bytes over a green socketpair, ``recv``/``sendall``; LOOP is ``asyncio`` or
  ``uvloop``;
* ``floor LOOP N``: the least the same exchange can cost on that loop with a
  greenlet per side: two bare greenlets, the reader registered once for good,
  its callback switching straight into the greenlet (on uvloop through
  ``call_soon``, as the hub must); no timeouts, signals, cancellation, task;
* ``gevent N``: the same exchange on gevent's sockets and greenlets;
* ``requests KIND URL N``: ``N`` GETs of ``URL`` on one ``requests.Session``
  (keep-alive); KIND is ``green`` (``patch_blocking()``, one green thread on
  asyncio), ``plain`` (the stdlib's blocking sockets, no loop: the floor),
  ``gevent`` or ``eventlet`` (monkey-patched).  For URL, start a server with
  ``python benchmarks/bench_requests.py --serve PORT``.
"""

from __future__ import annotations

import sys
from typing import Any

MSG = b"x" * 64
WARM = 200


def _loop(name: str) -> Any:
    import asyncio

    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def green(loop_name: str, n: int) -> None:
    import greenbridge
    from greenbridge.green import socket as gsocket

    def server(s: Any) -> None:
        recv, sendall = s.recv, s.sendall
        while data := recv(64):
            sendall(data)

    def client(s: Any, rounds: int) -> None:
        recv, sendall = s.recv, s.sendall
        for _ in range(rounds):
            sendall(MSG)
            recv(64)

    async def main() -> None:
        a, b = gsocket.socketpair()
        with a, b:
            srv = greenbridge.spawn(server, b)
            await greenbridge.spawn(client, a, WARM)
            await greenbridge.spawn(client, a, n)
            a.shutdown(gsocket.SHUT_WR)
            await srv

    _loop(loop_name).run_until_complete(main())


def floor(loop_name: str, n: int) -> None:
    import socket

    from greenlet import getcurrent, greenlet

    loop = _loop(loop_name)
    hub = getcurrent()
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)

    def recv(s: socket.socket) -> bytes:
        while True:
            try:
                return s.recv(64)
            except BlockingIOError:
                hub.switch()  # until the reader callback switches back

    def server() -> None:
        while data := recv(b):
            b.send(data)

    def client() -> None:
        for _ in range(WARM + n):
            a.send(MSG)
            recv(a)
        loop.stop()

    gs, gc = greenlet(server), greenlet(client)
    if loop_name == "uvloop":  # no switch inside uvloop's poll: see greenbridge._hub._asyncio
        loop.add_reader(b.fileno(), loop.call_soon, gs.switch)
        loop.add_reader(a.fileno(), loop.call_soon, gc.switch)
    else:
        loop.add_reader(b.fileno(), gs.switch)
        loop.add_reader(a.fileno(), gc.switch)
    loop.call_soon(gs.switch)
    loop.call_soon(gc.switch)
    loop.run_forever()
    for s in (a, b):
        loop.remove_reader(s.fileno())
        s.close()
    loop.close()


def gevent_echo(n: int) -> None:
    import gevent
    from gevent import socket as gs

    a, b = gs.socketpair()

    def server() -> None:
        while data := b.recv(64):
            b.sendall(data)

    def client(rounds: int) -> None:
        for _ in range(rounds):
            a.sendall(MSG)
            a.recv(64)

    srv = gevent.spawn(server)
    gevent.spawn(client, WARM).join()
    gevent.spawn(client, n).join()
    a.shutdown(gs.SHUT_WR)
    srv.join()
    a.close()
    b.close()


def requests_gets(kind: str, url: str, n: int) -> None:
    if kind == "gevent":
        from gevent import monkey

        monkey.patch_all()
    elif kind == "eventlet":
        import eventlet

        eventlet.monkey_patch()
    if kind == "green":
        import greenbridge

        with greenbridge.patch_blocking():
            import requests
    else:
        import requests

    def run() -> None:
        with requests.Session() as session:
            for _ in range(WARM // 10 + n):
                session.get(url).content  # noqa: B018 - read the body

    if kind == "green":

        async def spawn_run() -> None:
            await greenbridge.spawn(run)

        _loop("asyncio").run_until_complete(spawn_run())
    elif kind == "gevent":
        import gevent

        gevent.spawn(run).join()
    elif kind == "eventlet":
        eventlet.spawn(run).wait()
    else:
        run()


def main() -> None:
    args = sys.argv[1:]
    if args[0] == "green":
        green(args[1], int(args[2]))
    elif args[0] == "floor":
        floor(args[1], int(args[2]))
    elif args[0] == "gevent":
        gevent_echo(int(args[1]))
    elif args[0] == "requests":
        requests_gets(args[1], args[2], int(args[3]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
