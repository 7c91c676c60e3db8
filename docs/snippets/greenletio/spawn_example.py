"""greenletio's spawn, on greenbridge: a sync function started as an asyncio Task."""

import asyncio

from greenbridge import await_, spawn


def job(name, delay):
    await_(asyncio.sleep(delay))
    return name


async def main():
    # spawn() returns an asyncio.Task (greenletio returned a greenlet).
    tasks = [spawn(job, name, delay) for name, delay in (("a", 0.03), ("b", 0.01))]
    return await asyncio.gather(*tasks)


if __name__ == "__main__":
    print(asyncio.run(main()))
