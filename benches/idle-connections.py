#!/usr/bin/env python3
# Usage: benches/idle-connections.py HOST PORT N NODE_PID [--tls]  (against `portcullis serve --workers 1`,
# release build; N above 250 needs the 127.0.x.y source addresses loopback gives on Linux)
# Opens N keep-alive connections to HOST:PORT (spread over 127.0.0.x; with
# --tls, TLS without verifying the certificate), each makes one request and
# then idles; prints the node's RSS before and after.
import asyncio, sys, os, ssl
host, port, n, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
tls = None
if "--tls" in sys.argv[5:]:
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])
async def one(i, held):
    src = f"127.0.{1 + i // 250}.{1 + i % 250}"
    r, w = await asyncio.open_connection(host, port, local_addr=(src, 0), ssl=tls, server_hostname="bench.test" if tls else None)
    w.write(b"GET /hello HTTP/1.1\r\nhost: gw.test\r\n\r\n")
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    length = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")]
    if length: await r.readexactly(length[0])
    held.append((r, w))
async def main():
    before = rss()
    held = []
    sem = asyncio.Semaphore(200)
    async def guarded(i):
        async with sem: await one(i, held)
    await asyncio.gather(*(guarded(i) for i in range(n)))
    await asyncio.sleep(1)
    after = rss()
    print(f"connections={len(held)} rss_before_kib={before} rss_after_kib={after} per_conn_bytes={(after-before)*1024//max(1,len(held))}")
asyncio.run(main())
