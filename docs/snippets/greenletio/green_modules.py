"""greenletio.green.* -> greenbridge.green.*: the same stdlib-shaped modules."""

import asyncio

from greenbridge import async_
from greenbridge.green import queue, socket, threading, time


def echo_twice(conn):
    for _ in range(2):
        conn.sendall(conn.recv(100).upper())


def main():
    ours, theirs = socket.socketpair()
    results = queue.Queue()
    server = threading.Thread(target=echo_twice, args=(theirs,))
    server.start()  # a task on the running loop
    for word in (b"green", b"io"):
        ours.sendall(word)
        results.put(ours.recv(100))  # waits on the loop, not in the OS
    server.join()
    time.sleep(0.01)
    ours.close()
    theirs.close()
    return [results.get(), results.get()]


if __name__ == "__main__":
    print(asyncio.run(async_(main)()))
