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

* ``green LOOP N [PAIRS]``: two green threads (``greenbridge.spawn``)
  exchanging 64 bytes over a green socketpair, ``recv``/``sendall``; LOOP is
  ``asyncio`` or ``uvloop``; with ``PAIRS``, that many pairs at once (``N``
  round trips in all);
* ``floor LOOP N [PAIRS]``: the least the same exchange can cost on that loop
  with a greenlet per side: two bare greenlets, the reader registered once for
  good, its callback switching straight into the greenlet (on uvloop through
  ``call_soon``, as the hub must); no timeouts, signals, cancellation, task;
  with ``PAIRS``, that many socketpairs exchange at once (``N`` round trips
  in all), so that one poll reports many descriptors;
* ``floor-epoll N [PAIRS]``: the floor of another design on asyncio's
  selector loop: the descriptors registered in one ``select.epoll`` of our
  own, which alone is registered with the loop; its reader callback polls it
  and switches into each greenlet whose descriptor is ready (no selector key,
  no ``Handle`` per readiness report, one more ``epoll_wait`` per turn);
* ``gevent N [PAIRS]``: the same exchange on gevent's sockets and greenlets;
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


def green(loop_name: str, n: int, pairs: int = 1) -> None:
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
        socks = [gsocket.socketpair() for _ in range(pairs)]
        servers = [greenbridge.spawn(server, b) for _a, b in socks]
        for rounds in (WARM, n):
            for task in [greenbridge.spawn(client, a, rounds // pairs) for a, _b in socks]:
                await task
        for a, _b in socks:
            a.shutdown(gsocket.SHUT_WR)
        for task in servers:
            await task
        for pair in socks:
            for s in pair:
                s.close()

    _loop(loop_name).run_until_complete(main())


def floor(loop_name: str, n: int, pairs: int = 1, inner: bool = False) -> None:
    """The floor variants: ``pairs`` socketpairs, ``n`` round trips in all.

    ``inner``: the descriptors are registered in one ``select.epoll`` of our
    own, and only that is registered with the (asyncio) loop.
    """
    import select
    import socket

    from greenlet import getcurrent, greenlet

    loop = _loop(loop_name)
    hub = getcurrent()
    socks = [socket.socketpair() for _ in range(pairs)]
    left = [pairs]

    def recv(s: socket.socket) -> bytes:
        while True:
            try:
                return s.recv(64)
            except BlockingIOError:
                hub.switch()  # until the reader callback switches back

    def server(b: socket.socket) -> None:
        while data := recv(b):
            b.send(data)

    def client(a: socket.socket, rounds: int) -> None:
        for _ in range(rounds):
            a.send(MSG)
            recv(a)
        left[0] -= 1
        if not left[0]:
            loop.stop()

    epoll = select.epoll() if inner else None
    waiting: dict[int, Any] = {}
    if epoll is not None:
        poll = epoll.poll

        def ready() -> None:
            for fd, _events in poll(0, 1024):
                waiting[fd]()

        loop.add_reader(epoll.fileno(), ready)
    for a, b in socks:
        a.setblocking(False)
        b.setblocking(False)
        for s, g in ((b, greenlet(server)), (a, greenlet(client))):
            if epoll is not None:
                epoll.register(s.fileno(), select.EPOLLIN)
                waiting[s.fileno()] = g.switch
            elif loop_name == "uvloop":  # no switch inside uvloop's poll: see _hub._asyncio
                loop.add_reader(s.fileno(), loop.call_soon, g.switch)
            else:
                loop.add_reader(s.fileno(), g.switch)
            loop.call_soon(g.switch, s, *(() if s is b else ((WARM + n) // pairs,)))
    loop.run_forever()
    for pair in socks:
        for s in pair:
            if epoll is None:
                loop.remove_reader(s.fileno())
            s.close()
    if epoll is not None:
        loop.remove_reader(epoll.fileno())
        epoll.close()
    loop.close()


def gevent_echo(n: int, pairs: int = 1) -> None:
    import gevent
    from gevent import socket as gs

    def server(b: Any) -> None:
        while data := b.recv(64):
            b.sendall(data)

    def client(a: Any, rounds: int) -> None:
        for _ in range(rounds):
            a.sendall(MSG)
            a.recv(64)

    socks = [gs.socketpair() for _ in range(pairs)]
    servers = [gevent.spawn(server, b) for _a, b in socks]
    for rounds in (WARM, n):
        gevent.joinall([gevent.spawn(client, a, rounds // pairs) for a, _b in socks])
    for a, _b in socks:
        a.shutdown(gs.SHUT_WR)
    gevent.joinall(servers)
    for pair in socks:
        for s in pair:
            s.close()


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
        green(args[1], int(args[2]), int(args[3]) if len(args) > 3 else 1)
    elif args[0] in ("floor", "floor-epoll"):
        # floor LOOP N [PAIRS], floor-epoll N [PAIRS]
        inner = args[0] == "floor-epoll"
        rest = args[1:] if not inner else ["asyncio", *args[1:]]
        floor(rest[0], int(rest[1]), int(rest[2]) if len(rest) > 2 else 1, inner)
    elif args[0] == "gevent":
        gevent_echo(int(args[1]), int(args[2]) if len(args) > 2 else 1)
    elif args[0] == "requests":
        requests_gets(args[1], args[2], int(args[3]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
