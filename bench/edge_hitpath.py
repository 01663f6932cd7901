"""The edge's cache-hit path in one process, without sockets: microseconds per hit.

    .venv/bin/python bench/edge_hitpath.py [--requests 200000] [--profile] [--browser]
                                           [--access-log] [--https] [--pipeline 1]

Starts an origin (aiohttp) and ``start_edge`` on loopback, warms a 1 KiB object, then feeds
the edge's ``HttpProtocol`` the bytes of GET requests directly (``data_received``, a fake
transport that keeps what is written), ``--pipeline`` requests per call, and prints the
time per request. This is the Python cost of a hit (parse, route, look up, assemble, access
log) without the event loop's socket I/O: what ``bench/edge.sh`` measures end to end.
``--browser`` sends the headers a browser sends (User-Agent different on every request),
``--access-log`` turns the access log on, ``--https`` marks the connection as TLS (scheme
https, as the TLS listener's), ``--profile`` prints a cProfile of the run.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import tempfile
import time
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.httpserver import HttpProtocol  # noqa: E402
from edge.main import start_edge  # noqa: E402
from geoconfig.topology import parse_topology  # noqa: E402

BODY = b"x" * 1024


class FakeTransport:
    def __init__(self) -> None:
        self.out = 0
        self.last = b""
        self.reading = True

    def write(self, data: bytes) -> None:
        self.out += len(data)
        self.last = data

    def writelines(self, parts: list[bytes]) -> None:
        self.write(b"".join(parts))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def is_reading(self) -> bool:
        return self.reading

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        raise SystemExit("the edge closed the connection")

    abort = close


def request_bytes(host: str, i: int, browser: bool) -> bytes:
    if not browser:  # what wrk sends
        return f"GET /1k.bin HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    return (f"GET /1k.bin HTTP/1.1\r\nHost: {host}\r\n"
            f"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:{i % 100000}) Gecko/20100101 "
            f"Firefox/133.0\r\n"
            "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
            "Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br, zstd\r\n"
            "Referer: https://www.example.test/\r\nConnection: keep-alive\r\n"
            "Sec-Fetch-Dest: document\r\nSec-Fetch-Mode: navigate\r\n\r\n").encode()


async def main(args: argparse.Namespace) -> None:
    async def handle(_request: web.Request) -> web.Response:
        return web.Response(body=BODY, headers={"Cache-Control": "max-age=3600",
                                                "ETag": '"abc"',
                                                "Content-Type": "application/octet-stream"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    origin_port = runner.addresses[0][1]

    with (ROOT / "examples" / "demo.toml").open("rb") as f:
        data = tomllib.load(f)
    for region in data["regions"]:
        region.pop("redis", None)
    data["origins"] = [{"name": "o", "host": "127.0.0.1", "port": origin_port}]
    data["edge"] = {k: v for k, v in data["edge"].items()
                    if k not in ("access_log", "admin_listen")}
    tmp = tempfile.TemporaryDirectory()
    if args.access_log:
        data["edge"]["access_log"] = f"{tmp.name}/access.log"
    edge = await start_edge(parse_topology(data), "us-east-1", listen=("127.0.0.1", 0))
    host = f"127.0.0.1:{edge.port}"
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    for _ in range(2):  # the fill, then a hit
        writer.write(request_bytes(host, 0, False))
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(len(BODY))
    assert b"; hit" in head, head
    live = next(iter(edge.connections))  # the warming connection's: the listener's handler
    # one connection for the whole run (wrk reconnects every keepalive_requests)
    proto = HttpProtocol(live.handler, replace(live.limits, keepalive_requests=1 << 40))
    writer.close()
    if args.https:
        proto.scheme = "https"
    transport = FakeTransport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    n = args.requests
    batches = [b"".join(request_bytes(host, i * args.pipeline + j, args.browser)
                        for j in range(args.pipeline))
               for i in range(max(1, n // args.pipeline))]
    feed = proto.data_received
    for b in batches[:1000]:  # warm up
        feed(b)
    transport.out = 0
    prof = cProfile.Profile() if args.profile else None
    if prof:
        prof.enable()
    t0, c0 = time.perf_counter(), time.process_time()
    for b in batches:
        feed(b)
    took, cpu = time.perf_counter() - t0, time.process_time() - c0
    if prof:
        prof.disable()
    done = len(batches) * args.pipeline
    assert b"; hit" in transport.last, transport.last[:400]
    print(f"{done} hits in {took:.3f} s: {1e6 * took / done:.2f} us per hit, "
          f"{1e6 * cpu / done:.2f} us of CPU ({done / cpu:,.0f}/CPU-s), "
          f"{transport.out / done:.0f} bytes each")
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    await edge.stop()
    await runner.cleanup()
    tmp.cleanup()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=200_000)
    p.add_argument("--pipeline", type=int, default=1)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--browser", action="store_true")
    p.add_argument("--access-log", action="store_true")
    p.add_argument("--https", action="store_true")
    a = p.parse_args()
    try:
        import uvloop
        uvloop.run(main(a))
    except ImportError:
        asyncio.run(main(a))
