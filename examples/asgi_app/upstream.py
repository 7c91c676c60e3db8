"""A tiny HTTP/1.1 upstream for the example: every reply takes 50 ms.

``GET /anything?x=N`` answers ``{"x": "N"}`` after ``--delay`` seconds
(default 0.05), with keep-alive.  Plain asyncio streams: no dependencies.
Run: ``python examples/asgi_app/upstream.py --port 8765``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from urllib.parse import parse_qs, urlsplit


async def _serve_one(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            target = request_line.split(" ")[1]
            query = parse_qs(urlsplit(target).query)
            await asyncio.sleep(delay)
            body = json.dumps({k: v[0] for k, v in query.items()}).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(host: str, port: int, delay: float) -> None:
    """Serve until cancelled."""
    server = await asyncio.start_server(
        lambda r, w: _serve_one(r, w, delay), host, port, backlog=1024
    )
    async with server:
        print(f"upstream listening on http://{host}:{port} (delay {delay} s)", flush=True)
        await server.serve_forever()


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--delay", type=float, default=0.05)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, args.delay))


if __name__ == "__main__":
    main()
