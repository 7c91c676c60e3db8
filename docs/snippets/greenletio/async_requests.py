"""greenletio's requests example, on greenbridge: requests imported with the green modules.

Run it with ``python async_requests.py``: it serves five slow pages on the
loop itself (asyncio streams) and fetches them concurrently with requests.
"""

import asyncio
import time

import greenbridge

with greenbridge.patch_blocking():
    import requests  # binds the green socket, ssl, select... for good


async def slow_page(reader, writer):
    await reader.readuntil(b"\r\n\r\n")
    await asyncio.sleep(0.2)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    await writer.drain()
    writer.close()


async def req(url):
    r = await greenbridge.async_(requests.get)(url, timeout=5)
    return r.status_code


async def main():
    server = await asyncio.start_server(slow_page, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    start = time.perf_counter()
    async with server:
        codes = await asyncio.gather(*(req(f"http://127.0.0.1:{port}/{i}") for i in range(5)))
    return codes, time.perf_counter() - start


if __name__ == "__main__":
    codes, elapsed = asyncio.run(main())
    print(codes, f"{elapsed:.2f}")
