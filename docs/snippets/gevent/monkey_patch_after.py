import greenbridge

greenbridge.monkey_patch()

import asyncio  # noqa: E402
import socket  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402


def echo(conn):
    conn.sendall(conn.recv(100).upper())
    conn.close()


def worker(i, replies):
    time.sleep(0.2)
    ours, theirs = socket.socketpair()
    threading.Thread(target=echo, args=(theirs,)).start()
    ours.sendall(b"hello %d" % i)
    replies.append(ours.recv(100))
    ours.close()


def main():
    start = time.monotonic()
    replies = []
    threads = [threading.Thread(target=worker, args=(i, replies)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(len(replies), f"{time.monotonic() - start:.2f}", threading.active_count())


asyncio.run(greenbridge.async_(main)())
