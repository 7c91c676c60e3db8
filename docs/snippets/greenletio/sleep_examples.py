"""greenletio's two sleep examples, on greenbridge (the imports are the only change)."""

import asyncio
import random

from greenbridge import async_, await_


@async_
def sleep(delay):
    await_(asyncio.sleep(delay))


async def async_to_sync():
    done = []
    for i in range(5):
        await sleep(random.random() / 50)
        done.append(i)
    return done


def sync_to_async():
    done = []
    for i in range(5):
        await_(asyncio.sleep(random.random() / 50))  # no loop running: the private loop
        done.append(i)
    return done


if __name__ == "__main__":
    print(asyncio.run(async_to_sync()))
    print(sync_to_async())
