import asyncio

import greenbridge
from greenbridge.green import time


def fetch(n):
    time.sleep(0.1)
    return n * n


def _limited(fn, items, size):
    """One coroutine per item; at most ``size`` of them run ``fn`` at a time."""
    limit = asyncio.Semaphore(size)

    async def one(item):
        async with limit:
            return await greenbridge.async_(fn)(item)

    return [one(item) for item in items]


def pool_map(fn, items, size):
    """Pool(size).map(fn, items): the results in the order of ``items``."""
    return greenbridge.await_(asyncio.gather(*_limited(fn, items, size)))


def pool_imap_unordered(fn, items, size):
    """Pool(size).imap_unordered(fn, items): each result as soon as it is there."""
    for next_done in asyncio.as_completed(_limited(fn, items, size)):
        yield greenbridge.await_(next_done)


def main():
    in_order = pool_map(fetch, range(9), 3)
    as_done = sorted(pool_imap_unordered(fetch, range(9), 3))
    return in_order, as_done


if __name__ == "__main__":
    print(asyncio.run(greenbridge.async_(main)()))
