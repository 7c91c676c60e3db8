# Served by: celery -A tasks worker -P gevent -c 100
import gevent


def fetch(n):
    gevent.sleep(0.1)  # stands for a requests call, green under -P gevent
    return n * n


def fetch_all(count):  # decorated with @app.task in tasks.py
    jobs = [gevent.spawn(fetch, n) for n in range(count)]
    gevent.joinall(jobs)
    return [job.value for job in jobs]


if __name__ == "__main__":
    print(fetch_all(10))
