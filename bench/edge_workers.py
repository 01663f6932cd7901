"""Edge workers (#13): cache hits per second with 1 and with N worker processes.

Starts a redis-server (the region's tier, which more than one worker needs; the 1-worker run
has it too), a static origin (aiohttp, in this process: only the warm-up reaches it) and
``geoedge edge --workers W`` for each W of ``--workers``, unpinned; warms a 1 KiB object
(a request per new connection until every worker holds it), then runs
``wrk -t2 -c64 -d10s`` against it and prints requests/s and the ratio to 1 worker.

    .venv/bin/python bench/edge_workers.py [--workers 1,2] [--duration 10] [--size 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edgeproc import GEOEDGE, free_port, topology, wait_healthy


async def warm(port: int, count: int = 200) -> None:
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as s:
        for _ in range(count):
            async with s.get(f"http://127.0.0.1:{port}/obj",
                             headers={"Host": "www.example.test"}) as r:
                await r.read()


def wrk(port: int, duration: int) -> tuple[float, int]:
    """requests/s, and socket errors (read errors: the edge closes a connection after
    keepalive_requests, 1000 as nginx, which wrk counts)."""
    out = subprocess.run(["wrk", "-t2", "-c64", f"-d{duration}s", "-H",
                          "Host: www.example.test", f"http://127.0.0.1:{port}/obj"],
                         capture_output=True, text=True, check=True).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m or "Non-2xx" in out:
        raise SystemExit(f"wrk failed or saw errors:\n{out}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       out)
    return float(m.group(1)), sum(int(g) for g in errors.groups()) if errors else 0


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--size", type=int, default=1024)
    args = ap.parse_args()
    if not shutil.which("wrk") or not shutil.which("redis-server"):
        raise SystemExit("needs wrk and redis-server (apt-get install wrk redis-server)")
    body = os.urandom(args.size)
    fetches = 0

    async def handle(request: web.Request) -> web.Response:
        nonlocal fetches
        fetches += 1
        return web.Response(body=body, headers={"Cache-Control": "max-age=3600",
                                                "ETag": '"v1"'})

    app = web.Application()
    app.router.add_get("/healthz", lambda r: web.Response(text="ok"))
    app.router.add_get("/obj", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    origin_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", origin_port).start()
    redis_port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            conf = Path(tmp) / "topology.toml"
            conf.write_text(topology(
                origin_port, us_east=f'redis = {{ url = "redis://127.0.0.1:{redis_port}" }}\n'))
            for n in (int(w) for w in args.workers.split(",")):
                port = free_port()
                proc = subprocess.Popen([GEOEDGE, "edge", "--config", str(conf), "--name",
                                         "us-east-1", "--listen", f"127.0.0.1:{port}",
                                         "--workers", str(n), "--log-level", "warning"])
                try:
                    await wait_healthy(port)
                    await warm(port)
                    before = fetches
                    rate, errors = await asyncio.to_thread(wrk, port, args.duration)
                    if fetches != before:
                        raise SystemExit("the origin was asked during the measured run")
                    rows.append((n, rate, errors))
                finally:
                    proc.send_signal(signal.SIGINT)
                    proc.wait(30)
    finally:
        redis.terminate()
        redis.wait(10)
        await runner.cleanup()
    print(f"{args.size} B hits, wrk -t2 -c64 -d{args.duration}s, unpinned, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; origin fetches {fetches}")
    base = rows[0][1]
    print(f"{'workers':>8} {'req/s':>10} {'vs first':>9} {'socket errors':>14}")
    for n, rate, errors in rows:
        print(f"{n:>8} {rate:>10.0f} {rate / base:>8.2f}x {errors:>14}")


if __name__ == "__main__":
    asyncio.run(main())
