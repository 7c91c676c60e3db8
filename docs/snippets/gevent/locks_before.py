import gevent
from gevent.event import AsyncResult, Event
from gevent.lock import BoundedSemaphore


def worker(i, gate, sem, active, peak):
    gate.wait()
    with sem:
        active.add(i)
        peak.append(len(active))
        gevent.sleep(0.05)
        active.discard(i)
    return i


def answer_later(result):
    gevent.sleep(0.05)
    result.set(42)


def main():
    gate, sem = Event(), BoundedSemaphore(2)
    active, peak = set(), []
    jobs = [gevent.spawn(worker, i, gate, sem, active, peak) for i in range(6)]
    gate.set()
    gevent.joinall(jobs)
    result = AsyncResult()
    gevent.spawn(answer_later, result)
    return [job.value for job in jobs], max(peak), result.get()


if __name__ == "__main__":
    print(main())
