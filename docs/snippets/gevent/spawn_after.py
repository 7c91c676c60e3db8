import asyncio

import greenbridge
from greenbridge.green import time


def fetch(n):
    time.sleep(0.1)
    return n * n


def main():
    jobs = [greenbridge.spawn(fetch, n) for n in range(10)]
    return greenbridge.await_(asyncio.gather(*jobs))


if __name__ == "__main__":
    print(asyncio.run(greenbridge.async_(main)()))
