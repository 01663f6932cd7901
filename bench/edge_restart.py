"""Restart with a disk cache (#13): origin fetches for a pass over what the edge held.

Starts a counting origin (aiohttp, in this process) and a real ``geoedge edge`` process with
``[edge] disk_path`` set, fetches ``--objects`` distinct URLs of ``--size`` bytes through it
(the fill: one origin fetch each), stops the edge (SIGINT), starts a new edge process on the
same directory and fetches the same URLs again. Prints the fetches of each pass (the goal of
the second: 0), the restart time until ``/healthz`` answers, and the pass rates.

    .venv/bin/python bench/edge_restart.py [--objects 10000] [--size 4096] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edgeproc import GEOEDGE, free_port, topology, wait_healthy


async def one_pass(port: int, objects: int, concurrency: int) -> tuple[float, int]:
    todo = iter(range(objects))
    failed = 0

    async def worker(s: aiohttp.ClientSession) -> None:
        nonlocal failed
        for i in todo:
            async with s.get(f"http://127.0.0.1:{port}/objects/{i}",
                             headers={"Host": "www.example.test"}) as r:
                await r.read()
                failed += r.status != 200

    start = time.monotonic()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as s:
        await asyncio.gather(*(worker(s) for _ in range(concurrency)))
    return time.monotonic() - start, failed


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--objects", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--concurrency", type=int, default=32)
    args = ap.parse_args()
    fetches = 0
    body = os.urandom(args.size)

    async def handle(request: web.Request) -> web.Response:
        nonlocal fetches
        fetches += 1
        return web.Response(body=body, headers={"Cache-Control": "max-age=3600",
                                                "Content-Type": "application/octet-stream"})

    app = web.Application()
    app.router.add_get("/healthz", lambda r: web.Response(text="ok"))
    app.router.add_get("/objects/{n}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    origin_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", origin_port).start()
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "topology.toml"
        conf.write_text(topology(origin_port, edge=f'disk_path = "{Path(tmp) / "cache"}"\n'))
        port = free_port()
        cmd = [GEOEDGE, "edge", "--config", str(conf), "--name", "us-east-1",
               "--listen", f"127.0.0.1:{port}", "--log-level", "warning"]
        rows = []
        for label in ("fill (cold)", "after restart"):
            proc = subprocess.Popen(cmd)
            try:
                ready = await wait_healthy(port)
                before = fetches
                seconds, failed = await one_pass(port, args.objects, args.concurrency)
                rows.append((label, ready, fetches - before, failed, args.objects / seconds))
            finally:
                proc.send_signal(signal.SIGINT)
                proc.wait(30)
        disk = sum(p.stat().st_size for p in (Path(tmp) / "cache").rglob("*.obj"))
    await runner.cleanup()
    print(f"{args.objects} objects of {args.size} B, disk cache {disk / 2**20:.1f} MiB, "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"{'pass':<15} {'ready s':>8} {'origin fetches':>15} {'failed':>7} {'req/s':>9}")
    for label, ready, n, failed, rate in rows:
        print(f"{label:<15} {ready:>8.2f} {n:>15} {failed:>7} {rate:>9.0f}")


if __name__ == "__main__":
    asyncio.run(main())
