"""Origin fetches per object, for 1 and 3 client regions, with and without the origin shield.

Usage: ``.venv/bin/python bench/shield.py [--objects N] [--concurrency C]``

Real processes: one redis-server per region, six ``geoedge edge`` processes (examples/
demo.toml's three regions of two edges, on 127.0.0.1 and free ports), and an origin in this
process that counts the requests it gets per path. For every scenario, fresh processes and
caches; the clients of each client region ask every edge of their region for every object,
all regions at once (``C`` requests in flight per edge), so fills race across regions the way
they do in production. The shield runs with ``parent = "us-east"`` for eu-west and
ap-southeast. With 1 client region, the clients are in eu-west (a child).

The peer is the same edges without the shield (each region fills from the origin). Prints one
line per scenario: origin fetches per object (1.00 is the ideal) and the wall time, plus
``uptime``'s load, which docs/benchmarks.md records with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter
from pathlib import Path

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from geoedge.demo.main import redis_binary  # noqa: E402
from geoedge.deploy.writers import dump_toml  # noqa: E402

HOST = "www.example.test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Origin:
    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def handle(request: web.Request) -> web.Response:
            if request.path != "/healthz":
                self.seen[request.path] += 1
                await asyncio.sleep(0.005)  # a little origin work widens the race windows
            return web.Response(body=b"x" * 2048, headers={"Cache-Control": "max-age=600"})

        app = web.Application()
        app.router.add_get("/{tail:.*}", handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def wait_up(url: str, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as s:
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with s.get(url, timeout=aiohttp.ClientTimeout(1)) as r:
                    if r.status == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up")
            await asyncio.sleep(0.05)


async def scenario(shield: bool, client_regions: tuple[str, ...], objects: int,
                   concurrency: int, workdir: Path) -> tuple[float, float]:
    origin = Origin()
    await origin.start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with (ROOT / "examples" / "demo.toml").open("rb") as f:
            doc = tomllib.load(f)
        doc["origins"] = [{"name": "origin-1", "host": "127.0.0.1", "port": origin.port}]
        doc["dns"]["listen"] = [f"127.0.0.1:{free_port()}"]
        binary = redis_binary()
        assert binary is not None, "no redis-server"
        for region in doc["regions"]:
            port = free_port()
            rdir = workdir / f"redis-{region['name']}-{port}"
            rdir.mkdir()
            procs.append(subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(rdir)], stdout=subprocess.DEVNULL))
            region["redis"] = {"url": f"redis://127.0.0.1:{port}/0", "timeout": 0.5}
            if shield and region["name"] != "us-east":
                region["parent"] = "us-east"
            for e in region["edges"]:
                e.pop("ipv6", None)
                e["ipv4"], e["port"] = "127.0.0.1", free_port()
        config = workdir / f"topology-{time.monotonic_ns()}.toml"
        config.write_text(dump_toml(doc))
        edges: dict[str, list[str]] = {}
        for region in doc["regions"]:  # the parent region first: children probe it at start
            if region["name"] != "us-east":
                for url in edges.get("us-east", []):
                    await wait_up(url + "/healthz")
            for e in region["edges"]:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "geoedge.cli", "edge", "--config", str(config),
                     "--name", e["name"], "--log-level", "error"], cwd=ROOT))
                edges.setdefault(region["name"], []).append(
                    f"http://127.0.0.1:{e['port']}")
        for urls in edges.values():
            for url in urls:
                await wait_up(url + "/healthz")
        paths = [f"/bench/{i}" for i in range(objects)]
        started = time.monotonic()
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0)) as session:

            async def one_edge(base: str) -> None:
                sem = asyncio.Semaphore(concurrency)

                async def get(path: str) -> None:
                    async with sem, session.get(base + path, headers={"Host": HOST}) as r:
                        await r.read()
                        assert r.status == 200, r.status

                await asyncio.gather(*(get(p) for p in paths))

            await asyncio.gather(*(one_edge(u) for r in client_regions for u in edges[r]))
        elapsed = time.monotonic() - started
        fetches = sum(origin.seen[p] for p in paths)
        return fetches / objects, elapsed
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)  # edges: stop at once (SIGTERM drains)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        await origin.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    load = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    print(f"load: {load.strip()}  ({os.cpu_count()} cores)")
    print(f"{args.objects} objects, every edge of every client region asks for each, "
          f"{args.concurrency} in flight per edge")
    print(f"{'client regions':<16}{'shield':<8}{'origin fetches/object':>22}{'seconds':>10}")
    workdir = Path(tempfile.mkdtemp(prefix="geoedge-bench-shield-"))
    try:
        for regions in (("eu-west",), ("us-east", "eu-west", "ap-southeast")):
            for shield in (False, True):
                per_object, elapsed = await scenario(shield, regions, args.objects,
                                                     args.concurrency, workdir)
                print(f"{len(regions):<16}{'yes' if shield else 'no':<8}"
                      f"{per_object:>22.2f}{elapsed:>10.2f}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    load = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    print(f"load after: {load.strip()}")


if __name__ == "__main__":
    asyncio.run(main())
