# Served by: celery -A tasks worker -P threads (or the default prefork pool)
import asyncio

import greenbridge
from greenbridge.green import time


def fetch(n):
    time.sleep(0.1)  # stands for a requests call imported under patch_blocking()
    return n * n


async def _gather(count):
    return await asyncio.gather(*(greenbridge.async_(fetch)(n) for n in range(count)))


def fetch_all(count):  # decorated with @app.task in tasks.py
    # No loop runs in a celery pool thread: await_ runs this on the thread's private loop.
    return greenbridge.await_(_gather(count))


if __name__ == "__main__":
    print(fetch_all(10))
