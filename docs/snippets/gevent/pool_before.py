import gevent
from gevent.pool import Pool


def fetch(n):
    gevent.sleep(0.1)
    return n * n


def main():
    pool = Pool(3)
    in_order = pool.map(fetch, range(9))
    as_done = sorted(pool.imap_unordered(fetch, range(9)))
    return in_order, as_done


if __name__ == "__main__":
    print(main())
