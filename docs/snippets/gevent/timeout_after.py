import asyncio

import greenbridge
from greenbridge.green import time

cleaned = []


def slow():
    try:
        time.sleep(10)
        return "finished"
    finally:
        cleaned.append("slow")


def call_with_timeout(seconds, fn, *args):
    """Run fn(*args) in its own greenlet; cancel it at its next wait after ``seconds``."""
    return greenbridge.await_(asyncio.wait_for(greenbridge.async_(fn)(*args), seconds))


def main():
    try:
        return call_with_timeout(0.1, slow)
    except asyncio.TimeoutError:
        return "timed out"


if __name__ == "__main__":
    print(asyncio.run(greenbridge.async_(main)()), cleaned)
