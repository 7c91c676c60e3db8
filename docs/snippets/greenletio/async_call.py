"""greenletio's async_ example, on greenbridge: a sync function awaited from a coroutine."""

import asyncio

from greenbridge import async_, await_


def sync_function(arg):
    await_(asyncio.sleep(0.01))  # waits without blocking the loop
    return arg * 2


@async_
def decorated(arg):
    await_(asyncio.sleep(0.01))
    return arg + 1


async def async_function():
    called = await async_(sync_function)(42)  # the call form
    applied = await decorated(42)  # the decorator form
    return called, applied


if __name__ == "__main__":
    print(asyncio.run(async_function()))
