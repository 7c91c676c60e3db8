"""One wave of echo clients, in a process of its own (the soak test runs it).

``python _echo_clients.py HOST PORT CLIENTS ROUNDS LARGEST SEED`` opens CLIENTS
connections at once with asyncio streams (on uvloop when it is installed: the
clients must not be the bottleneck), makes each do ROUNDS round trips of
random sizes from 1 to LARGEST bytes, checks every byte that comes back, and
prints one JSON line: ``{"ok": clients that finished, "round_trips": ...,
"bytes": ..., "errors": [the first few failures]}``.  A separate process keeps
the clients' descriptors and memory out of the server's figures.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from typing import Any


def payload(rng: random.Random, block: bytes, largest: int) -> bytes:
    """A random slice of ``block``, of a log-uniform size from 1 to ``largest`` bytes."""
    size = min(largest, max(1, int(2 ** rng.uniform(0, largest.bit_length() - 1))))
    start = rng.randrange(len(block) - size + 1)
    return block[start : start + size]


async def client(host: str, port: int, rounds: int, largest: int, seed: int, block: bytes) -> int:
    rng = random.Random(seed)
    reader, writer = await asyncio.open_connection(host, port)
    sent = 0
    try:
        for _ in range(rounds):
            data = payload(rng, block, largest)
            writer.write(data)
            await writer.drain()
            echoed = await reader.readexactly(len(data))
            if echoed != data:
                raise AssertionError(f"client {seed}: echo of {len(data)} bytes differs")
            sent += len(data)
    finally:
        writer.close()
        await writer.wait_closed()
    return sent


async def wave(host: str, port: int, clients: int, rounds: int, largest: int, seed: int) -> Any:
    block = random.Random(seed).randbytes(largest * 4)
    outcomes = await asyncio.gather(
        *(client(host, port, rounds, largest, seed * 100_000 + i, block) for i in range(clients)),
        return_exceptions=True,
    )
    errors = [repr(o) for o in outcomes if isinstance(o, BaseException)]
    done = [o for o in outcomes if not isinstance(o, BaseException)]
    return {
        "ok": len(done),
        "round_trips": len(done) * rounds,
        "bytes": sum(done),
        "errors": errors[:5],
        "failed": len(errors),
    }


def main() -> None:
    host, port, clients, rounds, largest, seed = sys.argv[1:7]
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    try:
        result = loop.run_until_complete(
            wave(host, int(port), int(clients), int(rounds), int(largest), int(seed))
        )
    finally:
        loop.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
