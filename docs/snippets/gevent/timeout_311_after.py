import asyncio

import greenbridge
from greenbridge.green import time


def slow():
    time.sleep(10)
    return "finished"


async def within(seconds, fn, *args):
    async with asyncio.timeout(seconds):  # Python 3.11+
        return await greenbridge.async_(fn)(*args)


def main():
    try:
        return greenbridge.await_(within(0.1, slow))
    except TimeoutError:
        return "timed out"


if __name__ == "__main__":
    print(asyncio.run(greenbridge.async_(main)()))
