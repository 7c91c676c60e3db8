import gevent
from gevent.queue import Queue


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
    jobs = [gevent.spawn(producer, q, 100), gevent.spawn(consumer, q)]
    gevent.joinall(jobs)
    return jobs[1].value


if __name__ == "__main__":
    print(main())
