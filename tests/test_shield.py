"""Three regions with an origin shield and a purge log each: real redis-servers, edges, origin.

The topology is examples/demo.toml with every edge on 127.0.0.1 and a free port, one
redis-server per region (tests/redisutil.py), eu-west and ap-southeast with
``parent = "us-east"``, and one test origin (tests/edgeutil.py). The edges run in the test's
loop (``start_edge``) except where a test needs to stop an edge's process (SIGSTOP): that edge
is a real ``geoedge edge`` subprocess. The cache clock is real time (``WallClock``) so that the
subprocess and the in-process edges agree on ages. Every wait is a bounded poll.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from edgeutil import DEMO, FakeClock, Resp, TestOrigin, until
from multidict import CIMultiDict
from redisutil import RedisServer

from edge.main import RunningEdge, start_edge
from edge.policy.tiering import PurgeHistory, cdn_loop_ids, purge_matches, use_parent
from edge.tier.purgelog import confirmed
from geoconfig.httpdate import format_http_date
from geoconfig.topology import parse_topology
from geoconfig.validate import ConfigError
from geoedge.deploy.writers import dump_toml

HOST = "www.example.test"
TOKEN = "demo-purge-token"
REGIONS = ("us-east", "eu-west", "ap-southeast")
WAIT = 10.0
EDGE = {"origin_health_interval": 3600.0, "connect_timeout": 1.0, "read_timeout": 10.0,
        "coalesce_timeout": 10.0}


class WallClock(FakeClock):
    def __init__(self) -> None:
        super().__init__(0.0)

    def __call__(self) -> float:
        return time.time() + self.now

    def http_date(self, offset: float = 0.0) -> str:
        return format_http_date(self() + offset)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- pure rules -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("region", "parent", "loop", "expected"), [
    ("eu-west", "us-east", [], True),
    ("eu-west", None, [], False),
    ("eu-west", "us-east", ["geoedge-eu-west"], False),
    ("eu-west", "us-east", ["other-cdn; v=1, GEOEDGE-EU-WEST"], False),
    ("eu-west", "us-east", ["geoedge-ap-southeast"], True),
    ("eu-west", "us-east", ["geoedge-eu-west-1"], True),
])
def test_use_parent(region: str, parent: str | None, loop: list[str], expected: bool) -> None:
    assert use_parent(region, parent, loop) is expected


def test_cdn_loop_ids() -> None:
    assert cdn_loop_ids(['a; x=1, "b" ', "c"]) == ["a", '"b"', "c"]


@pytest.mark.parametrize(("kind", "value", "key", "tags", "expected"), [
    ("url", "http://h/a", "http://h/a", (), True),
    ("url", "http://h/a", "http://h/a x-forwarded-host=x", (), True),
    ("url", "http://h/a", "http://h/ab", (), False),
    ("prefix", "http://h/a", "http://h/ab", (), True),
    ("prefix", "http://h/b", "http://h/ab", (), False),
    ("key", "html", "http://h/a", ("html", "x"), True),
    ("key", "css", "http://h/a", ("html",), False),
])
def test_purge_matches(kind: str, value: str, key: str, tags: tuple[str, ...],
                       expected: bool) -> None:
    assert purge_matches(kind, value, key, tags) is expected


def test_purge_history() -> None:
    h = PurgeHistory(limit=2)
    mark = h.mark()
    assert not h.purged_since(mark, "http://h/a", ())
    h.record("url", "http://h/b")
    assert not h.purged_since(mark, "http://h/a", ())
    h.record("prefix", "http://h/")
    assert h.purged_since(mark, "http://h/a", ())
    later = h.mark()
    assert not h.purged_since(later, "http://h/a", ())
    h.record("key", "x")
    h.record("key", "y")  # the history no longer reaches ``mark``: assume purged
    assert h.purged_since(mark, "http://other/", ())


@pytest.mark.parametrize(("parents", "message"), [
    ({"eu-west": "eu-west"}, "its own parent"),
    ({"eu-west": "mars"}, "not one of the regions"),
    ({"eu-west": "us-east", "us-east": "eu-west"}, "cycle"),
])
def test_bad_parent(parents: dict[str, str], message: str) -> None:
    with DEMO.open("rb") as f:
        doc = tomllib.load(f)
    for region in doc["regions"]:
        if region["name"] in parents:
            region["parent"] = parents[region["name"]]
    with pytest.raises(ConfigError, match=message) as info:
        parse_topology(doc)
    assert re.fullmatch(r"regions\[\d\]\.parent", info.value.key)


# -- the three regions ----------------------------------------------------------------------------
@dataclass
class World:
    origin: TestOrigin
    clock: FakeClock
    doc: dict[str, Any]
    config: Path
    redis: dict[str, RedisServer]
    client: aiohttp.ClientSession
    edges: dict[str, RunningEdge] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def address(self, name: str) -> str:
        for region in self.doc["regions"]:
            for e in region["edges"]:
                if e["name"] == name:
                    return f"http://127.0.0.1:{e['port']}"
        raise KeyError(name)

    async def get(self, name: str, path: str, headers: list[tuple[str, str]] | None = None
                  ) -> Resp:
        hdrs = CIMultiDict([("Host", HOST), *(headers or [])])
        async with asyncio.timeout(WAIT), self.client.get(
                self.address(name) + path, headers=hdrs,
                skip_auto_headers=("Accept-Encoding", "User-Agent", "Accept")) as r:
            return Resp(r.status, r.headers, await r.read())

    def local(self, name: str, path: str) -> Any:
        return self.edges[name].app.store.get(f"http://{HOST}{path}", (), self.clock())

    def tier_keys(self, region: str) -> list[bytes]:
        with redis.Redis(port=self.redis[region].port) as c:
            return [k for k in c.keys("*") if b"purgelog" not in k]

    async def settle(self) -> None:
        async with asyncio.timeout(WAIT):
            for _ in range(3):
                tasks = [t for e in self.edges.values() if e.app.tier is not None
                         for t in e.app.tier.background if not t.done()]
                if not tasks:
                    return
                await asyncio.gather(*tasks, return_exceptions=True)

    async def purge(self, *args: str, timeout: float = 3.0) -> subprocess.CompletedProcess[str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "geoedge.cli", "purge", "--config", str(self.config),
            "--timeout", str(timeout), *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), WAIT + timeout)
        assert proc.returncode is not None
        return subprocess.CompletedProcess(args, proc.returncode, out.decode(), err.decode())


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    made: list[World] = []

    async def make(shield: bool = True, subprocess_edges: tuple[str, ...] = ()) -> World:
        clock = WallClock()
        origin = TestOrigin("origin-1", clock)
        await origin.start()
        servers = {r: RedisServer() for r in REGIONS}
        for s in servers.values():
            await asyncio.to_thread(s.start)
        with DEMO.open("rb") as f:
            doc = tomllib.load(f)
        doc["origins"] = [{"name": "origin-1", "host": "127.0.0.1", "port": origin.port}]
        doc["edge"] = {**doc["edge"], **EDGE}
        doc["dns"]["listen"] = [f"127.0.0.1:{free_port()}"]
        for region in doc["regions"]:
            region["redis"] = {"url": servers[region["name"]].url, "timeout": 1.0}
            if shield and region["name"] != "us-east":
                region["parent"] = "us-east"
            for e in region["edges"]:
                e.pop("ipv6", None)
                e["ipv4"], e["port"] = "127.0.0.1", free_port()
        config = tmp_path / f"topology-{len(made)}.toml"
        config.write_text(dump_toml(doc))
        w = World(origin, clock, doc, config, servers, aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), auto_decompress=False))
        made.append(w)
        topology = parse_topology(doc)
        for name in (e.name for e in topology.edges):  # the parent region's edges first
            if name in subprocess_edges:
                w.procs[name] = subprocess.Popen(
                    [sys.executable, "-m", "geoedge.cli", "edge", "--config", str(config),
                     "--name", name, "--log-level", "warning"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            else:
                w.edges[name] = await start_edge(topology, name, clock=clock,
                                                 admin_listen=("127.0.0.1", 0))
        for name in w.procs:
            assert await until(lambda n=name: _healthy(w.address(n))), f"{name} did not start"
        return w

    yield make
    for w in made:
        for proc in w.procs.values():
            with _suppress():
                os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait(5)
        await w.client.close()
        for e in w.edges.values():
            await e.stop()
        await w.origin.stop()
        for s in w.redis.values():
            s.cleanup()


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return isinstance(exc[1], ProcessLookupError)


async def _healthy(base: str) -> bool:
    try:
        async with aiohttp.ClientSession() as s, s.get(base + "/healthz",
                                                       timeout=aiohttp.ClientTimeout(1)) as r:
            return r.status == 200
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


def cache_status(r: Resp) -> str:
    return ", ".join(r.headers.getall("Cache-Status"))


async def test_three_regions_one_origin_fetch_per_object(world) -> None:
    w: World = await world()
    paths = [f"/obj/{i}" for i in range(6)]
    for p in paths:
        w.origin.route(p, headers=[("Cache-Control", "max-age=300")], body=p.encode())
    # every object through every edge, the children first
    for name in ("eu-west-1", "ap-southeast-2", "eu-west-2", "ap-southeast-1", "us-east-1",
                 "us-east-2"):
        for p in paths:
            r = await w.get(name, p)
            assert (r.status, r.body) == (200, p.encode())
        await w.settle()
    assert [w.origin.count(p) for p in paths] == [1] * len(paths)
    # the parent's member first, then the child's (RFC 9211 §2)
    w.origin.route("/chain", headers=[("Cache-Control", "max-age=300")], body=b"c")
    r = await w.get("eu-west-1", "/chain")
    assert re.fullmatch(r"geoedge-us-east-[12]; fwd=uri-miss; fwd-status=200; stored, "
                        r"geoedge-eu-west-1; fwd=uri-miss; fwd-status=200; stored",
                        cache_status(r)), cache_status(r)
    # the origin saw the child's CDN-Loop token (passed on by the parent)
    assert w.origin.last("/chain").header("cdn-loop") == "geoedge-eu-west"
    # consistent hashing: one parent edge holds each object
    holders = [n for n in ("us-east-1", "us-east-2") if w.local(n, "/chain") is not None]
    assert len(holders) == 1
    r = await w.get("ap-southeast-1", "/chain")
    assert re.fullmatch(rf"geoedge-{holders[0]}; hit; ttl=\d+, "
                        r"geoedge-ap-southeast-1; fwd=uri-miss; fwd-status=200; stored",
                        cache_status(r)), cache_status(r)
    assert w.origin.count("/chain") == 1


async def test_without_the_shield_each_region_fetches(world) -> None:
    w: World = await world(shield=False)
    w.origin.route("/o", headers=[("Cache-Control", "max-age=300")], body=b"o")
    for name in ("eu-west-1", "ap-southeast-1", "us-east-1", "eu-west-2"):
        assert (await w.get(name, "/o")).status == 200
        await w.settle()
    assert w.origin.count("/o") == 3  # one per region (the second eu-west edge: its tier)


async def test_loop_and_fallback_go_to_the_origin(world) -> None:
    w: World = await world()
    w.origin.route("/l", headers=[("Cache-Control", "max-age=300")], body=b"l")
    # a request that has been through eu-west already: no second trip to the parent
    r = await w.get("eu-west-1", "/l", [("CDN-Loop", "geoedge-eu-west")])
    assert cache_status(r) == "geoedge-eu-west-1; fwd=uri-miss; fwd-status=200; stored"
    assert w.origin.count("/l") == 1
    assert w.local("us-east-1", "/l") is None and w.local("us-east-2", "/l") is None
    assert w.edges["eu-west-1"].app.shield.counts["loops"] == 1
    # every parent edge down: straight to the origin
    for name in ("us-east-1", "us-east-2"):
        await w.edges.pop(name).stop()
    w.origin.route("/f", headers=[("Cache-Control", "max-age=300")], body=b"f")
    r = await w.get("ap-southeast-1", "/f")
    assert (r.status, r.body) == (200, b"f")
    assert cache_status(r) == "geoedge-ap-southeast-1; fwd=uri-miss; fwd-status=200; stored"
    assert w.origin.count("/f") == 1
    assert w.edges["ap-southeast-1"].app.shield.counts["fallbacks"] == 1


async def test_purge_reaches_every_edge_of_every_region(world) -> None:
    w: World = await world()
    w.origin.route("/p", headers=[("Cache-Control", "max-age=300"), ("Surrogate-Key", "pk")],
                   body=b"v1")
    for name in w.edges:
        assert (await w.get(name, "/p")).body == b"v1"
    await w.settle()
    assert all(w.local(n, "/p") is not None for n in w.edges)
    assert all(w.tier_keys(r) for r in REGIONS)
    out = await w.purge("--key", "pk")
    assert out.returncode == 0, out.stdout + out.stderr
    for region in REGIONS:
        assert re.search(rf"region {region}: 2 of 2 edges confirmed, purge log entry \d+-\d+",
                         out.stdout), out.stdout
    assert len(re.findall(r" purged \d+\n", out.stdout)) == 6, out.stdout
    assert all(w.local(n, "/p") is None for n in w.edges)
    assert not any(w.tier_keys(r) for r in REGIONS)
    w.origin.route("/p", headers=[("Cache-Control", "max-age=300")], body=b"v2")
    for name in w.edges:
        assert (await w.get(name, "/p")).body == b"v2"
    assert w.origin.count("/p") == 2


async def test_a_stopped_edge_catches_up_from_the_log_before_serving(world) -> None:
    """eu-west-2 is a real process, stopped with SIGSTOP while the purge is sent."""
    w: World = await world(subprocess_edges=("eu-west-2",))
    w.origin.route("/s", headers=[("Cache-Control", "max-age=300")], body=b"old")
    for name in ("eu-west-2", "eu-west-1", "us-east-1"):
        assert (await w.get(name, "/s")).body == b"old"
    r = await w.get("eu-west-2", "/s")
    assert re.search(r"geoedge-eu-west-2; hit; ttl=\d+$", cache_status(r)), cache_status(r)
    pid = w.procs["eu-west-2"].pid
    os.kill(pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        w.origin.route("/s", headers=[("Cache-Control", "max-age=300")], body=b"new")
        out = await w.purge(f"http://{HOST}/s", timeout=2.0)
        assert out.returncode == 1, out.stdout
        assert re.search(r"region eu-west: 1 of 2 edges confirmed", out.stdout), out.stdout
        assert re.search(r"eu-west-2 .* NOT CONFIRMED: not reached.*catches up", out.stdout)
        assert re.search(r"region us-east: 2 of 2", out.stdout), out.stdout
        # stopped for longer than the follower's in-sync window (edge/tier/purgelog.py)
        await until(lambda: time.monotonic() - stopped > 3.5, 5.0, step=0.1)
    finally:
        os.kill(pid, signal.SIGCONT)
    # the first request after it resumes does not get the purged copy
    r = await w.get("eu-west-2", "/s")
    assert r.body == b"new", cache_status(r)
    # and it acknowledges the log entry
    def acked() -> bool:
        with redis.Redis(port=w.redis["eu-west"].port) as c:
            ack = c.hget("geoedge:eu-west:{purgelog}:acks", "eu-west-2")
            last = c.xrevrange("geoedge:eu-west:{purgelog}:log", count=1)[0][0]
        return ack == last

    assert await until(acked)


async def test_purge_racing_with_a_fill_leaves_nothing_stored(world) -> None:
    """The origin blocks mid-response until the purge has been confirmed everywhere."""
    w: World = await world()
    release = asyncio.Event()
    w.origin.route("/race", headers=[("Cache-Control", "max-age=300"),
                                     ("Content-Length", "8")],
                   chunks=[b"old-", b"body"], chunk_gate=(0, release))
    fill = asyncio.create_task(w.get("eu-west-1", "/race"))
    await w.origin.wait_count("/race", 1)  # the parent's fill is at the origin, blocked
    out = await w.purge(f"http://{HOST}/race")
    assert out.returncode == 0, out.stdout
    w.origin.route("/race", headers=[("Cache-Control", "max-age=300")], body=b"new-body")
    release.set()
    r = await fill
    assert r.body == b"old-body"  # asked before the purge: it gets what was current then
    await w.settle()
    assert all(w.local(n, "/race") is None for n in w.edges), [
        n for n in w.edges if w.local(n, "/race") is not None]
    assert not any(w.tier_keys(r) for r in REGIONS), {r: w.tier_keys(r) for r in REGIONS}
    for name in w.edges:
        assert (await w.get(name, "/race")).body == b"new-body"


async def test_purge_racing_with_a_fill_in_one_region_tier(world) -> None:
    """A fill stored into the tier after the tier's purge removes it again (log check)."""
    w: World = await world(shield=False)
    release = asyncio.Event()
    w.origin.route("/t", headers=[("Cache-Control", "max-age=300"), ("Content-Length", "2")],
                   chunks=[b"o", b"1"], chunk_gate=(0, release))
    fill = asyncio.create_task(w.get("us-east-2", "/t"))
    await w.origin.wait_count("/t", 1)
    # the purge reaches only us-east-1 and the region's tier and log
    async with w.client.post(w.address("us-east-1") + "/.geoedge/purge",
                             json={"url": f"http://{HOST}/t", "wait": 2},
                             headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
        doc = await resp.json()
    assert resp.status == 200 and doc["region"]["edges"] == {"us-east-1": True,
                                                             "us-east-2": True}
    release.set()
    assert (await fill).body == b"o1"
    await w.settle()
    assert w.local("us-east-2", "/t") is None
    assert not w.tier_keys("us-east")


@pytest.mark.parametrize(("acks", "node", "expected"), [
    ({"e1": "5-0"}, "e1", True),
    ({"e1": "4-9"}, "e1", False),
    ({"e1": "5-1", "e1/workers": "1"}, "e1", True),
    ({}, "e1", False),
    # two workers: both must have applied it; the edge's own field does not count then
    ({"e1/workers": "2", "e1/w0": "5-0", "e1/w1": "6-0"}, "e1", True),
    ({"e1/workers": "2", "e1/w0": "5-0", "e1/w1": "4-0", "e1": "9-0"}, "e1", False),
    ({"e1/workers": "2", "e1/w0": "5-0"}, "e1", False),
    # a worker left from an earlier run with more workers is not asked
    ({"e1/workers": "2", "e1/w0": "5-0", "e1/w1": "5-0", "e1/w2": "1-0"}, "e1", True),
    # unreadable fields: not confirmed, never an error
    ({"e1": "garbage"}, "e1", False),
    ({"e1/workers": "x", "e1": "5-0"}, "e1", True),
])
def test_confirmed(acks: dict[str, str], node: str, expected: bool) -> None:
    assert confirmed((5, 0), acks, node) is expected
