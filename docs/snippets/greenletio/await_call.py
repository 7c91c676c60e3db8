"""greenletio's await_ example, on greenbridge: a coroutine awaited from sync code."""

import asyncio

from greenbridge import async_, await_


async def async_function(arg):
    await asyncio.sleep(0.01)
    return arg * 3


@await_
async def decorated(arg):
    await asyncio.sleep(0.01)
    return arg - 1


def sync_function():
    awaited = await_(async_function(5))  # the call form
    called = decorated(5)  # the decorator form: a plain sync function now
    return awaited, called


if __name__ == "__main__":
    # Under a loop: the sync code runs in a greenlet started by async_.
    print(asyncio.run(async_(sync_function)()))
    # With no loop running, await_ runs each coroutine on a private loop.
    print(sync_function())
