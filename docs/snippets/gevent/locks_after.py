import asyncio

import greenbridge
from greenbridge.green import time
from greenbridge.green.threading import BoundedSemaphore, Event


def worker(i, gate, sem, active, peak):
    gate.wait()
    with sem:
        active.add(i)
        peak.append(len(active))
        time.sleep(0.05)
        active.discard(i)
    return i


def answer_later(result):
    time.sleep(0.05)
    result.set_result(42)


def main():
    gate, sem = Event(), BoundedSemaphore(2)
    active, peak = set(), []
    jobs = [greenbridge.spawn(worker, i, gate, sem, active, peak) for i in range(6)]
    gate.set()
    done = greenbridge.await_(asyncio.gather(*jobs))
    result = asyncio.get_running_loop().create_future()
    helper = greenbridge.spawn(answer_later, result)
    return done, max(peak), greenbridge.await_(result), greenbridge.await_(helper)


if __name__ == "__main__":
    print(asyncio.run(greenbridge.async_(main)()))
