import gevent


def fetch(n):
    gevent.sleep(0.1)
    return n * n


def main():
    jobs = [gevent.spawn(fetch, n) for n in range(10)]
    gevent.joinall(jobs)
    return [job.value for job in jobs]


if __name__ == "__main__":
    print(main())
