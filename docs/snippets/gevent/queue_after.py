import asyncio

import greenbridge
from greenbridge.green.queue import Queue


def producer(q, n):
    for i in range(n):
        q.put(i)
    q.put(None)


def consumer(q):
    total = 0
    while (item := q.get()) is not None:
        total += item
    return total


def main():
    q = Queue(maxsize=5)
    jobs = [greenbridge.spawn(producer, q, 100), greenbridge.spawn(consumer, q)]
    return greenbridge.await_(asyncio.gather(*jobs))[1]


if __name__ == "__main__":
    print(asyncio.run(greenbridge.async_(main)()))
