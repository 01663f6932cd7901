"""Two edges of one region sharing a real Redis (standalone or a three-master cluster).

Both edges (us-east-1 and us-east-2 of examples/demo.toml) run in the test's loop on
127.0.0.1 port 0, in front of one test origin, with ``regions[0].redis`` pointing at a
redis-server started by the test (tests/redisutil.py). Clients send ``Host: www.example.test``
to both, so both compute the same primary key. Cache time comes from one ``FakeClock`` shared
by the two edges (and the origin's Date), except where the behaviour under test is about wall
time (the breaker's recovery after a Redis restart), which uses ``WallClock``.

Every wait is a bounded poll (``until``); the edges' background tier writes are awaited with
``Pair.settle`` before a test looks at Redis or at the other edge.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
import tomllib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import redis
from aiohttp import web
from edgeutil import DEMO, FakeClock, Resp, TestOrigin, until
from multidict import CIMultiDict
from redis.cluster import RedisCluster as SyncCluster
from redis.crc import key_slot
from redisutil import RedisCluster3, RedisServer, free_port, redis_cluster, redis_server

from edge.main import RunningEdge, start_edge
from geoconfig.httpdate import format_http_date
from geoconfig.topology import parse_topology

__all__ = ["redis_cluster", "redis_server"]  # fixtures, re-exported for pytest

HOST = "www.example.test"
TOKEN = "demo-purge-token"  # examples/demo.toml [edge] purge_token
NAMES = ("us-east-1", "us-east-2")
E1, E2 = (f"geoedge-{n}" for n in NAMES)  # the edges' Cache-Status members
TIER = "geoedge-us-east-redis"  # the region tier's Cache-Status member
PREFIX = "geoedge:us-east:"  # parse_redis's default prefix for region us-east
WAIT = 5.0  # bound for one request
PROPAGATE = 2.0  # bound for a purge to reach the other edge
STALE_KEEP = 3600  # edge/proxy.py: seconds an entry is kept past its freshness at least
EDGE = {  # merged over demo.toml's [edge]
    "origin_health_interval": 3600.0,
    "connect_timeout": 1.0,
    "read_timeout": 5.0,
    "coalesce_timeout": 5.0,
}
# A Redis timeout generous enough for a loaded CI machine: a tier miss caused by a slow
# Redis would make the exact Cache-Status assertions flaky (the default is 50 ms).
TIMEOUT = 1.0


def key_of(path: str) -> str:
    return f"http://{HOST}{path}"


def base_of(path: str) -> str:
    """The Redis key base of a primary key (edge/tier/keys.py's documented layout)."""
    return f"{PREFIX}{{{hashlib.sha256(key_of(path).encode()).hexdigest()[:32]}}}:"


class WallClock(FakeClock):
    """Real time, for the tests whose subject is wall time (breaker recovery)."""

    def __init__(self) -> None:
        super().__init__(0.0)  # ``now`` is an offset here; advance() still works

    def __call__(self) -> float:
        return time.time() + self.now

    def http_date(self, offset: float = 0.0) -> str:
        return format_http_date(self() + offset)


@dataclass
class Pair:
    """Two running edges of region us-east, their origin, the shared clock and a client."""

    origin: TestOrigin
    clock: FakeClock
    client: aiohttp.ClientSession
    edges: list[RunningEdge] = field(default_factory=list)

    async def request(self, i: int, method: str, path: str,
                      headers: list[tuple[str, str]] | None = None,
                      data: bytes | None = None) -> Resp:
        hdrs = CIMultiDict([("Host", HOST), *(headers or [])])
        async with asyncio.timeout(WAIT), self.client.request(
                method, self.edges[i].url + path, headers=hdrs, data=data,
                allow_redirects=False,
                skip_auto_headers=("Accept-Encoding", "User-Agent", "Accept")) as r:
            return Resp(r.status, r.headers, await r.read())

    async def get(self, i: int, path: str, headers: list[tuple[str, str]] | None = None) -> Resp:
        return await self.request(i, "GET", path, headers)

    async def purge(self, i: int, path: str, soft: bool = False) -> Resp:
        headers = [("Authorization", f"Bearer {TOKEN}")]
        if soft:
            headers.append(("X-Purge-Soft", "1"))
        return await self.request(i, "PURGE", path, headers)

    async def admin_purge(self, i: int, doc: dict[str, Any]) -> Resp:
        return await self.request(i, "POST", "/.geoedge/purge",
                                  [("Authorization", f"Bearer {TOKEN}"),
                                   ("Content-Type", "application/json")],
                                  json.dumps(doc).encode())

    async def shared_stats(self, i: int) -> dict[str, Any]:
        host, port = self.edges[i].admin_address or ("127.0.0.1", 0)  # the admin listener
        async with asyncio.timeout(WAIT), self.client.get(
                f"http://{host}:{port}/.geoedge/stats") as resp:
            r = Resp(resp.status, resp.headers, await resp.read())
        assert r.status == 200
        return r.json()["shared"]

    def local(self, i: int, path: str, headers: tuple[tuple[str, str], ...] = ()) -> Any:
        """Edge i's in-process entry for ``path`` (None: not there)."""
        return self.edges[i].app.store.get(key_of(path), headers, self.clock())

    async def settle(self) -> None:
        """Wait (bounded) for both edges' background tier writes and refreshes."""
        async with asyncio.timeout(WAIT):
            for _ in range(3):  # a refresh spawns a tier write; a load spawns without end
                tasks = [t for e in self.edges for t in (*e.app.tier.background,
                                                         *e.app.background)
                         if not t.done() and "housekeeping" not in repr(t.get_coro())]
                if not tasks:
                    return
                await asyncio.gather(*tasks, return_exceptions=True)

    async def recovered(self) -> bool:
        """Both edges' tiers usable again: breaker closed and purge listener subscribed."""
        for i in range(2):
            s = await self.shared_stats(i)
            if s["breaker"]["state"] != "closed" or not s["listening"]:
                return False
        # and each edge has read the region's purge log since: until then it revalidates
        # what it finds (it cannot know which purges it missed), which is not what is tested
        return not any(e.app._untrusted() or e.app.tier.log.cursor is None for e in self.edges)


MakePair = Callable[..., Awaitable[Pair]]


@pytest.fixture
async def make_pair() -> AsyncIterator[MakePair]:
    """A factory: ``await make_pair({"url": ...})`` -> two started edges sharing that tier."""
    made: list[Pair] = []

    async def make(redis_table: dict[str, Any], clock: FakeClock | None = None) -> Pair:
        clock = clock or FakeClock()
        origin = TestOrigin("origin-1", clock)
        pair = Pair(origin, clock, aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), auto_decompress=False))
        made.append(pair)
        await origin.start()
        with DEMO.open("rb") as f:
            doc = tomllib.load(f)
        doc["origins"] = [{"name": "origin-1", "host": "127.0.0.1", "port": origin.port}]
        doc["edge"] = {**doc["edge"], **EDGE}
        assert doc["regions"][0]["name"] == "us-east"
        doc["regions"][0]["redis"] = {"timeout": TIMEOUT, **redis_table}
        topology = parse_topology(doc)
        for name in NAMES:
            pair.edges.append(await start_edge(topology, name, ("127.0.0.1", 0), clock,
                                                   admin_listen=("127.0.0.1", 0)))
        assert all(e.app.tier is not None for e in pair.edges)
        # each pool probes the origin once at start: let those land first
        await origin.wait_for(lambda: origin.probes >= 2)
        for e in pair.edges:
            await e.pool.probe_once()
        return pair

    yield make
    errors: list[BaseException] = []
    for pair in made:  # stop everything, then report the first failure to stop
        for stop in (pair.client.close, *(e.stop for e in pair.edges), pair.origin.stop):
            try:
                await stop()
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
    if errors:
        raise errors[0]


async def _stop_edges(pair: Pair | None) -> None:
    """Stop the edges now (before their Redis goes away); the fixture then skips them."""
    if pair is None:
        return
    edges, pair.edges = pair.edges, []
    errors = []
    for e in edges:
        try:
            await e.stop()
        except Exception as exc:  # noqa: BLE001 -- stop the others, then report it
            errors.append(exc)
            await e.pool.stop()  # what RunningEdge.stop() did not get to
    if errors:
        raise errors[0]


def _paths_by_master(cluster: RedisCluster3, stem: str, each: int) -> list[list[str]]:
    """For each master, ``each`` paths ``stem<n>`` whose tier keys live in its slots."""
    ranges = []
    for server in cluster.servers:
        with server.client() as c:
            mine = c.execute_command("CLUSTER", "MYID")
            mine = mine.decode() if isinstance(mine, bytes) else str(mine)
            slots = c.execute_command("CLUSTER", "SLOTS")
        ranges.append([(int(lo), int(hi)) for lo, hi, master, *_ in slots
                       if (master[2].decode() if isinstance(master[2], bytes)
                           else str(master[2])) == mine])
    out: list[list[str]] = [[] for _ in cluster.servers]
    n = 0
    while min(map(len, out)) < each:
        path = f"{stem}{n}"
        slot = key_slot(base_of(path).encode())
        for i, rs in enumerate(ranges):
            if len(out[i]) < each and any(lo <= slot <= hi for lo, hi in rs):
                out[i].append(path)
        n += 1
    return out


def miss_stored(cache: str, status: int = 200, fwd: str = "uri-miss") -> str:
    return f"{cache}; fwd={fwd}; fwd-status={status}; stored"


def tier_hit(ttl: int, cache: str = E2, fwd: str = "uri-miss") -> str:
    return f"{TIER}; hit; ttl={ttl}, {cache}; fwd={fwd}"


# -- a miss on one edge is a hit on the other -----------------------------------------------------
async def test_miss_on_one_edge_is_a_tier_hit_on_the_other_with_the_right_age(
        redis_server: RedisServer, make_pair: MakePair):
    pair = await make_pair({"url": redis_server.url})
    pair.origin.route("/a", headers=[("Cache-Control", "max-age=60"),
                                     ("Content-Type", "text/plain")], body=b"alpha")
    r1 = await pair.get(0, "/a")
    assert (r1.status, r1.body, r1.age) == (200, b"alpha", 0)
    assert r1.cache_status == miss_stored(E1)
    await pair.settle()
    with redis_server.client() as c:
        assert c.exists(base_of("/a") + "e:") == 1
        assert c.get(base_of("/a") + "key") == key_of("/a").encode()

    pair.clock.advance(30)
    r2 = await pair.get(1, "/a")
    assert (r2.status, r2.body, r2.age) == (200, b"alpha", 30)
    assert r2.cache_status == tier_hit(30)
    assert r2.headers["Date"] == pair.clock.http_date(-30)  # the origin's Date, kept
    assert r2.headers["Via"] == "1.1 geoedge-us-east-2"
    assert r2.headers["Content-Type"] == "text/plain"
    assert pair.origin.count("/a") == 1

    # the tier hit filled edge 2's own store: a plain in-process hit now, Redis not asked
    before = (await pair.shared_stats(1))["hits"]
    pair.clock.advance(5)
    r3 = await pair.get(1, "/a")
    assert (r3.status, r3.body, r3.age) == (200, b"alpha", 35)
    assert r3.cache_status == f"{E2}; hit; ttl=25"
    stats = await pair.shared_stats(1)
    assert stats["hits"] == before == 1
    assert stats["breaker"]["state"] == "closed" and stats["listening"] is True
    assert pair.origin.count("/a") == 1
    # edge 1 still answers from its own memory
    r4 = await pair.get(0, "/a")
    assert (r4.age, r4.cache_status) == (35, f"{E1}; hit; ttl=25")


@pytest.mark.parametrize(("date_offset", "age", "delay", "initial"), [
    (-5, 10, 0, 10),  # corrected_age_value (Age + delay) wins over apparent_age
    (-25, 10, 0, 25),  # apparent_age (response_time - Date) wins
    (0, 10, 3, 13),  # response_delay is added to the origin's Age
], ids=["age-field", "apparent-age", "response-delay"])
async def test_tier_hit_age_follows_rfc9111_current_age(
        redis_server: RedisServer, make_pair: MakePair, date_offset: int, age: int,
        delay: int, initial: int):
    """RFC 9111 §4.2.3 across the tier: edge 2 answers initial age + 30 s resident time."""
    pair = await make_pair({"url": redis_server.url})
    clock = pair.clock

    async def handler(request: web.Request) -> web.Response:
        clock.advance(delay)  # the origin takes ``delay`` seconds of cache time to answer
        return web.Response(body=b"aged", headers={
            "Cache-Control": "max-age=100", "Age": str(age),
            "Date": clock.http_date(date_offset)})

    pair.origin.route("/aged", handler=handler)
    r1 = await pair.get(0, "/aged")
    assert r1.cache_status == miss_stored(E1)
    assert r1.age == initial
    await pair.settle()
    clock.advance(30)
    r2 = await pair.get(1, "/aged")
    assert (r2.status, r2.body) == (200, b"aged")
    assert r2.age == initial + 30
    assert r2.cache_status == tier_hit(100 - initial - 30)
    r3 = await pair.get(1, "/aged")
    assert (r3.age, r3.cache_status) == (initial + 30, f"{E2}; hit; ttl={70 - initial}")
    assert pair.origin.count("/aged") == 1


async def test_stale_tier_entry_is_revalidated_by_the_other_edge(
        redis_server: RedisServer, make_pair: MakePair):
    """Past its freshness (but kept for STALE_KEEP) a tier entry is validated, not refetched."""
    pair = await make_pair({"url": redis_server.url})
    pair.origin.route("/old", headers=[("Cache-Control", "max-age=10"), ("ETag", '"v1"')],
                      body=b"old")
    assert (await pair.get(0, "/old")).cache_status == miss_stored(E1)
    await pair.settle()
    pair.clock.advance(20)
    r = await pair.get(1, "/old")
    assert (r.status, r.body) == (200, b"old")
    assert r.cache_status == f"{E2}; fwd=uri-miss; fwd-status=304"
    assert pair.origin.count("/old") == 2
    assert pair.origin.last("/old").header("If-None-Match") == '"v1"'
    assert r.age == 0
    r = await pair.get(1, "/old")
    assert (r.age, r.cache_status) == (0, f"{E2}; hit; ttl=10")


async def test_vary_variants_travel_through_the_tier(
        redis_server: RedisServer, make_pair: MakePair):
    pair = await make_pair({"url": redis_server.url})

    async def handler(request: web.Request) -> web.Response:
        enc = request.headers.get("Accept-Encoding", "none")
        return web.Response(body=f"enc={enc}".encode(), headers={
            "Cache-Control": "max-age=60", "Vary": "Accept-Encoding",
            "Date": pair.clock.http_date()})

    pair.origin.route("/v", handler=handler)

    def ae(value: str) -> list[tuple[str, str]]:
        return [("Accept-Encoding", value)]

    r = await pair.get(0, "/v", ae("gzip"))
    assert (r.body, r.cache_status) == (b"enc=gzip", miss_stored(E1))
    r = await pair.get(0, "/v", ae("br"))
    assert (r.body, r.cache_status) == (b"enc=br", miss_stored(E1, fwd="vary-miss"))
    await pair.settle()
    with redis_server.client() as c:
        assert c.scard(base_of("/v") + "variants") == 2
        assert json.loads(c.get(base_of("/v") + "vary")) == ["Accept-Encoding"]

    pair.clock.advance(7)
    r = await pair.get(1, "/v", ae("gzip"))
    assert (r.body, r.age, r.cache_status) == (b"enc=gzip", 7, tier_hit(53))
    assert r.headers["Vary"] == "Accept-Encoding"
    r = await pair.get(1, "/v", ae("br"))
    assert (r.body, r.age, r.cache_status) == (b"enc=br", 7, tier_hit(53, fwd="vary-miss"))
    assert pair.origin.count("/v") == 2
    # a variant nobody stored yet: a miss in the tier too, fetched once by edge 2...
    r = await pair.get(1, "/v", ae("deflate"))
    assert (r.body, r.cache_status) == (b"enc=deflate", miss_stored(E2, fwd="vary-miss"))
    assert pair.origin.count("/v") == 3
    await pair.settle()
    # ...and then a tier hit for edge 1
    r = await pair.get(0, "/v", ae("deflate"))
    assert (r.body, r.cache_status) == (b"enc=deflate", tier_hit(60, E1, "vary-miss"))
    # each edge now has all three in memory
    for i, cache in enumerate((E1, E2)):
        for enc in ("gzip", "br", "deflate"):
            r = await pair.get(i, "/v", ae(enc))
            assert r.body == f"enc={enc}".encode()
            assert r.cache_status.startswith(f"{cache}; hit; ttl=")
    assert pair.origin.count("/v") == 3
    with redis_server.client() as c:
        assert c.scard(base_of("/v") + "variants") == 3


@pytest.mark.parametrize(("headers", "fresh", "keep"), [
    ([("Cache-Control", "max-age=60")], 60, 60 + STALE_KEEP),
    ([("Cache-Control", "max-age=60, stale-while-revalidate=30, stale-if-error=600")],
     60, 60 + STALE_KEEP),
    ([("Cache-Control", "max-age=60, stale-if-error=7200")], 60, 60 + 7200),
    ([("Cache-Control", "max-age=60, stale-while-revalidate=5000")], 60, 60 + 5000),
    ([("Cache-Control", "max-age=100"), ("Age", "40")], 60, 60 + STALE_KEEP),
], ids=["max-age", "small-windows", "stale-if-error", "swr", "origin-age"])
async def test_redis_expiry_is_freshness_plus_stale_windows(
        redis_server: RedisServer, make_pair: MakePair, headers: list[tuple[str, str]],
        fresh: int, keep: int):
    """PX = keep_until - now = remaining freshness + max(stale windows, STALE_KEEP)."""
    pair = await make_pair({"url": redis_server.url})
    pair.origin.route("/ttl", headers=[*headers, ("Surrogate-Key", "ttl-tag")], body=b"t")
    assert (await pair.get(0, "/ttl")).status == 200
    await pair.settle()
    b = base_of("/ttl")
    with redis_server.client() as c:
        pttl = c.pttl(b + "e:")
        assert keep * 1000 - 2000 < pttl <= keep * 1000
        assert pttl > fresh * 1000  # never expires while still fresh
        for name in ("vary", "variants", "key"):  # companions live at least as long
            assert pttl - 2000 < c.pttl(b + name) <= keep * 1000
        assert pttl - 2000 < c.pttl(f"{PREFIX}tag:ttl-tag") <= keep * 1000
        assert c.exists(b + "soft", b + "lease") == 0


# -- a three-master cluster -----------------------------------------------------------------------
async def test_cluster_spreads_keys_over_all_masters_and_shares_entries(
        redis_cluster: RedisCluster3, make_pair: MakePair):
    redis_cluster.flushall()
    pair = await make_pair({"cluster": list(redis_cluster.nodes)})
    n = 50
    for i in range(n):
        pair.origin.route(f"/c/{i}", headers=[("Cache-Control", "max-age=300"),
                                              ("Surrogate-Key", "clu")], body=b"c%d" % i)
    results = await asyncio.gather(*(pair.get(i % 2, f"/c/{i}") for i in range(n)))
    for i, r in enumerate(results):
        assert (r.status, r.body) == (200, b"c%d" % i)
        assert r.cache_status == miss_stored((E1, E2)[i % 2])
    await pair.settle()
    sizes = redis_cluster.dbsizes()
    assert all(s > 0 for s in sizes), sizes
    # per URL: e:, vary, variants, key; plus the one tag set and the purge log's
    # acknowledgements (edge/tier/purgelog.py); no lease left behind
    assert sum(sizes) == 4 * n + 2
    # each URL stored by one edge is a tier hit on the other
    results = await asyncio.gather(*(pair.get((i + 1) % 2, f"/c/{i}") for i in range(n)))
    for i, r in enumerate(results):
        assert (r.status, r.body) == (200, b"c%d" % i)
        assert r.cache_status == tier_hit(300, (E1, E2)[(i + 1) % 2])
    assert sum(pair.origin.count(f"/c/{i}") for i in range(n)) == n
    # a prefix purge on edge 1 SCANs every master and reaches edge 2
    r = await pair.purge(0, "/c/*")
    assert r.status == 200 and r.json() == {"purged": n, "soft": False}
    assert await until(lambda: all(pair.local(1, f"/c/{i}") is None for i in range(n)),
                       PROPAGATE)
    await pair.settle()
    # only the tag set is left (a prefix purge does not touch tag sets), and the purge log:
    # its stream, acknowledgements and the purge's id (edge/tier/purgelog.py)
    assert await until(lambda: sum(redis_cluster.dbsizes()) == 4, PROPAGATE)
    r = await pair.get(1, "/c/7")
    assert r.cache_status == miss_stored(E2)


async def test_cluster_miss_on_edge_1_is_hit_on_edge_2_and_tag_purge(
        redis_cluster: RedisCluster3, make_pair: MakePair):
    redis_cluster.flushall()
    pair = await make_pair({"cluster": list(redis_cluster.nodes)})
    pair.origin.route("/x", headers=[("Cache-Control", "max-age=60"),
                                     ("Surrogate-Key", "xs")], body=b"x")
    assert (await pair.get(0, "/x")).cache_status == miss_stored(E1)
    await pair.settle()
    pair.clock.advance(12)
    r = await pair.get(1, "/x")
    assert (r.body, r.age, r.cache_status) == (b"x", 12, tier_hit(48))
    nodes = [{"host": "127.0.0.1", "port": int(n.rpartition(":")[2])}
             for n in redis_cluster.nodes]
    with SyncCluster(startup_nodes=[redis.cluster.ClusterNode(**n) for n in nodes]) as c:
        assert c.exists(base_of("/x") + "e:") == 1
        r = await pair.admin_purge(1, {"key": "xs"})
        assert r.status == 200 and r.json() == {"purged": 1, "soft": False}
        assert await until(lambda: pair.local(0, "/x") is None, PROPAGATE)
        assert await until(lambda: c.exists(base_of("/x") + "e:", f"{PREFIX}tag:xs") == 0,
                           PROPAGATE)
    assert (await pair.get(0, "/x")).cache_status == miss_stored(E1)


# -- cross-node coalescing ------------------------------------------------------------------------
async def test_cross_node_coalescing_makes_one_origin_request(
        redis_server: RedisServer, make_pair: MakePair):
    """100 requests per edge for one cold URL: one origin request in the whole region."""
    pair = await make_pair({"url": redis_server.url})
    gate = asyncio.Event()
    pair.origin.route("/hot", headers=[("Cache-Control", "max-age=60")], body=b"hot",
                      delay=0.3, gate=gate)
    per_edge = 100
    key = key_of("/hot")
    jobs = [asyncio.ensure_future(pair.get(i % 2, "/hot")) for i in range(2 * per_edge)]

    def all_in() -> bool:  # every request is queued behind its edge's leader
        flights = [e.app.coalescer.flights.get(key) for e in pair.edges]
        return pair.origin.count("/hot") == 1 and all(
            f is not None and f.waiters == per_edge - 1 for f in flights)

    # the lease loser waits at most 1 s (SharedSettings.wait_timeout) for the filled notice
    try:
        assert await until(all_in, 0.6, step=0.005)
    finally:
        gate.set()
    results = await asyncio.gather(*jobs)
    assert [(r.status, r.body) for r in results] == [(200, b"hot")] * (2 * per_edge)
    assert pair.origin.count("/hot") == 1
    stats = [await pair.shared_stats(i) for i in range(2)]
    winner = 0 if stats[0]["leases_won"] == 1 else 1
    loser, caches = 1 - winner, (E1, E2)
    assert [s["leases_won"] for s in stats] == [int(winner == 0), int(winner == 1)]
    assert stats[loser]["leases_lost"] == 1 and stats[loser]["waits_filled"] == 1
    assert stats[loser]["waits_timed_out"] == 0
    assert Counter(r.cache_status for r in results) == {
        miss_stored(caches[winner]): 1,
        f"{caches[winner]}; fwd=uri-miss; collapsed": per_edge - 1,
        f"{TIER}; hit; ttl=60, {caches[loser]}; fwd=uri-miss; collapsed": 1,
        f"{caches[loser]}; fwd=uri-miss; collapsed": per_edge - 1,
    }
    await pair.settle()
    with redis_server.client() as c:
        assert c.exists(base_of("/hot") + "lease") == 0  # released after the fill


# -- purges propagate through the tier ------------------------------------------------------------
async def _cached_on_both(pair: Pair, path: str) -> None:
    """``path`` fetched by edge 1, then a tier hit for edge 2: in both memories and in Redis."""
    r = await pair.get(0, path)
    assert r.cache_status == miss_stored(E1)
    await pair.settle()
    r = await pair.get(1, path)
    assert r.cache_status is not None and r.cache_status.startswith(f"{TIER}; hit; ")
    assert pair.local(0, path) is not None and pair.local(1, path) is not None


def _redis_keys(server: RedisServer, path: str) -> int:
    b = base_of(path)
    with server.client() as c:
        return int(c.exists(b + "e:", b + "vary", b + "variants", b + "key", b + "soft"))


async def test_purge_method_on_one_edge_reaches_the_other_and_redis(
        redis_server: RedisServer, make_pair: MakePair):
    pair = await make_pair({"url": redis_server.url})
    for p in ("/p", "/keep"):
        pair.origin.route(p, headers=[("Cache-Control", "max-age=600")], body=p.encode())
        await _cached_on_both(pair, p)
    assert _redis_keys(redis_server, "/p") == 4
    r = await pair.purge(0, "/p")
    assert r.status == 200 and r.json() == {"purged": 1, "soft": False}
    assert pair.local(0, "/p") is None
    assert await until(lambda: pair.local(1, "/p") is None, PROPAGATE)
    assert await until(lambda: _redis_keys(redis_server, "/p") == 0, PROPAGATE)
    # nothing else was touched
    assert pair.local(1, "/keep") is not None and _redis_keys(redis_server, "/keep") == 4
    r = await pair.get(1, "/p")
    assert (r.body, r.cache_status) == (b"/p", miss_stored(E2))
    assert pair.origin.count("/p") == 2
    assert (await pair.get(1, "/keep")).cache_status == f"{E2}; hit; ttl=600"
    stats = await pair.shared_stats(1)
    assert stats["purges_received"] == 1 and stats["purges"] == 0


async def test_purge_api_by_surrogate_key_reaches_the_other_edge_and_redis(
        redis_server: RedisServer, make_pair: MakePair):
    pair = await make_pair({"url": redis_server.url})
    tags = {"/t/1": "grp one", "/t/2": "two grp", "/t/3": "other"}
    for p, t in tags.items():
        pair.origin.route(p, headers=[("Cache-Control", "max-age=600"), ("Surrogate-Key", t)],
                          body=p.encode())
        await _cached_on_both(pair, p)
    with redis_server.client() as c:
        assert c.smembers(f"{PREFIX}tag:grp") == {key_of("/t/1").encode(),
                                                  key_of("/t/2").encode()}
    r = await pair.admin_purge(1, {"key": "grp"})  # this time from edge 2
    assert r.status == 200 and r.json() == {"purged": 2, "soft": False}
    assert await until(lambda: pair.local(0, "/t/1") is None and pair.local(0, "/t/2") is None,
                       PROPAGATE)
    assert await until(lambda: _redis_keys(redis_server, "/t/1") == 0
                       and _redis_keys(redis_server, "/t/2") == 0, PROPAGATE)
    with redis_server.client() as c:
        assert c.exists(f"{PREFIX}tag:grp") == 0
        assert c.exists(f"{PREFIX}tag:other") == 1
    assert pair.local(0, "/t/3") is not None and _redis_keys(redis_server, "/t/3") == 4
    assert (await pair.get(0, "/t/1")).cache_status == miss_stored(E1)
    assert (await pair.get(0, "/t/3")).cache_status == f"{E1}; hit; ttl=600"


async def test_soft_purge_makes_the_other_edge_revalidate(
        redis_server: RedisServer, make_pair: MakePair):
    pair = await make_pair({"url": redis_server.url})
    pair.origin.route("/s", headers=[("Cache-Control", "max-age=600"), ("ETag", '"s1"')],
                      body=b"soft")
    await _cached_on_both(pair, "/s")
    r = await pair.purge(0, "/s", soft=True)
    assert r.status == 200 and r.json() == {"purged": 1, "soft": True}
    assert await until(lambda: pair.local(1, "/s").soft_purged, PROPAGATE)
    b = base_of("/s")
    with redis_server.client() as c:
        assert await until(lambda: c.sismember(b + "soft", ""), PROPAGATE)
        assert c.exists(b + "e:") == 1  # kept, only marked
    r = await pair.get(1, "/s")
    assert (r.status, r.body) == (200, b"soft")
    assert r.cache_status == f"{E2}; fwd=stale; fwd-status=304"
    assert pair.origin.count("/s") == 2
    assert pair.origin.last("/s").header("If-None-Match") == '"s1"'
    await pair.settle()
    with redis_server.client() as c:  # the revalidated entry replaced the soft mark
        assert not c.sismember(b + "soft", "")
    assert (await pair.get(1, "/s")).cache_status == f"{E2}; hit; ttl=600"
    # edge 1 marked its own copy: it revalidates too, once
    r = await pair.get(0, "/s")
    assert r.cache_status == f"{E1}; fwd=stale; fwd-status=304"
    assert (await pair.get(0, "/s")).cache_status == f"{E1}; hit; ttl=600"
    assert pair.origin.count("/s") == 3


async def test_soft_purge_flag_in_redis_forces_validation_of_a_tier_hit(
        redis_server: RedisServer, make_pair: MakePair):
    """An edge that did not hold the entry in memory still honours the tier's soft mark."""
    pair = await make_pair({"url": redis_server.url})
    pair.origin.route("/sf", headers=[("Cache-Control", "max-age=600"), ("ETag", '"f1"')],
                      body=b"flag")
    assert (await pair.get(0, "/sf")).cache_status == miss_stored(E1)
    await pair.settle()
    r = await pair.admin_purge(0, {"url": "/sf", "soft": True})
    assert r.status == 200 and r.json() == {"purged": 1, "soft": True}
    with redis_server.client() as c:
        assert await until(lambda: c.sismember(base_of("/sf") + "soft", ""), PROPAGATE)
    r = await pair.get(1, "/sf")  # edge 2 never had it: from the tier, marked soft
    assert (r.status, r.body) == (200, b"flag")
    assert r.cache_status == f"{E2}; fwd=uri-miss; fwd-status=304"
    assert pair.origin.last("/sf").header("If-None-Match") == '"f1"'
    assert pair.origin.count("/sf") == 2


# -- Redis failures never fail a request ----------------------------------------------------------
async def test_redis_killed_under_load_then_restarted(
        redis_server: RedisServer, make_pair: MakePair):
    """SIGKILL Redis mid-load: all 200, breakers open, memory + origin serve; restart on the same
    port: the tier is used again within a bounded (wall) time. The breaker reads the edges'
    clock, so this test runs on real time."""
    pair = await make_pair({"url": redis_server.url}, clock=WallClock())
    pair.origin.route("/k", headers=[("Cache-Control", "max-age=3600")], body=b"k")
    pair.origin.route("/only", headers=[("Cache-Control", "max-age=3600")], body=b"only")
    # before: /only is in edge 1's memory and in Redis, not in edge 2's memory
    assert (await pair.get(0, "/only")).cache_status == miss_stored(E1)
    await pair.settle()

    stop = asyncio.Event()
    seen: list[tuple[int, bytes]] = []
    counter = iter(range(10**9))

    async def worker(w: int) -> None:
        while not stop.is_set():
            n = next(counter)
            # half new URLs (tier lookups, origin fetches), half repeats (memory hits)
            q = n if n % 2 else n // 7
            r = await pair.get(n % 2, f"/k?n={q}")
            seen.append((r.status, r.body))

    workers = [asyncio.create_task(worker(w)) for w in range(16)]
    try:
        assert await until(lambda: len(seen) >= 50, WAIT)  # the load is running
        before_kill = len(seen)
        redis_server.kill()
        for i in range(2):  # both breakers open (tier lookups and the listener fail)
            assert await until(lambda i=i: _breaker_is(pair, i, "open"), 3.0), i
        stats = [await pair.shared_stats(i) for i in range(2)]
        assert all(s["errors"] >= 5 and s["breaker"]["times_opened"] >= 1 for s in stats)
        # memory still answers, the origin still answers
        r = await pair.get(0, "/only")
        assert r.cache_status is not None and r.cache_status.startswith(f"{E1}; hit; ttl=")
        r = await pair.get(1, "/only")
        assert (r.body, r.cache_status) == (b"only", miss_stored(E2))
        assert await until(lambda: len(seen) >= before_kill + 50, WAIT)  # served, Redis down
        during = len(seen)

        redis_server.restart()  # same port, empty
        t0 = time.monotonic()
        assert await until(pair.recovered, 8.0, step=0.05)
        recovery = time.monotonic() - t0
        # a new URL stored by edge 1 is a tier hit on edge 2
        pair.origin.route("/after", headers=[("Cache-Control", "max-age=3600")], body=b"after")
        assert (await pair.get(0, "/after")).cache_status == miss_stored(E1)
        await pair.settle()
        r = await pair.get(1, "/after")
        assert r.body == b"after"
        assert re.fullmatch(tier_hit(r"(\d+)"), r.cache_status or "")  # ttl: wall time
        after = len(seen)
        assert await until(lambda: len(seen) >= after + 50, WAIT)  # and after recovery
    finally:
        stop.set()
        await asyncio.gather(*workers, return_exceptions=True)
    assert before_kill > 0 and during > before_kill and len(seen) > during
    assert Counter(seen) == {(200, b"k"): len(seen)}
    assert recovery < 6.0  # breaker_reset (2 s) + probe period + listener back-off


async def test_listening_turns_false_soon_after_redis_dies(
        redis_server: RedisServer, make_pair: MakePair):
    pair = await make_pair({"url": redis_server.url})
    assert all([(await pair.shared_stats(i))["listening"] for i in range(2)])
    redis_server.kill()
    assert await until(lambda: not any(e.app.tier.shared.listening.is_set()
                                       for e in pair.edges), 0.5)


async def _breaker_is(pair: Pair, i: int, state: str) -> bool:
    return (await pair.shared_stats(i))["breaker"]["state"] == state


async def test_edges_start_and_serve_with_redis_down_then_use_it_once_up(
        make_pair: MakePair):
    port = free_port()
    t0 = time.monotonic()
    pair = await make_pair({"url": f"redis://127.0.0.1:{port}/0"})
    assert time.monotonic() - t0 < 5.0  # start() waits at most ~1 s for the listener
    for i in range(8):
        pair.origin.route(f"/d/{i}", headers=[("Cache-Control", "max-age=3600")],
                          body=b"d%d" % i)
    for i in range(8):
        for e, cache in enumerate((E1, E2)):
            r = await pair.get(e, f"/d/{i}")
            assert (r.status, r.body, r.cache_status) == (200, b"d%d" % i, miss_stored(cache))
            r = await pair.get(e, f"/d/{i}")
            assert (r.status, r.cache_status) == (200, f"{cache}; hit; ttl=3600")
    assert pair.origin.count() == 16
    stats = [await pair.shared_stats(i) for i in range(2)]
    for s in stats:
        assert s["listening"] is False and s["breaker"]["state"] == "open"
        assert s["stores"] == 0 and s["hits"] == 0
        assert s["errors"] >= 5 and s["short_circuits"] > 0
    # purging works without Redis
    r = await pair.purge(0, "/d/0")
    assert r.status == 200 and r.json() == {"purged": 1, "soft": False}

    server = RedisServer(port)
    try:
        await asyncio.to_thread(server.start)
        pair.clock.advance(3)  # past the breaker's reset (2 s of the edges' clock)
        assert await until(pair.recovered, 6.0, step=0.05)
        pair.origin.route("/up", headers=[("Cache-Control", "max-age=3600")], body=b"up")
        assert (await pair.get(0, "/up")).cache_status == miss_stored(E1)
        await pair.settle()
        r = await pair.get(1, "/up")
        assert (r.body, r.cache_status) == (b"up", tier_hit(3600))
    finally:
        try:
            await _stop_edges(pair)  # the tier clients go before the server
        finally:
            server.cleanup()


async def test_edges_start_with_the_cluster_down_then_use_it_once_up(make_pair: MakePair):
    """The cluster client's first initialize fails; it initializes later, on first use. (Kept
    under the breaker threshold: recovery through the cluster probe is tested further down.)"""
    cluster, pair = RedisCluster3(), None  # ports chosen, nothing started yet
    try:
        pair = await make_pair({"cluster": list(cluster.nodes)})
        pair.origin.route("/cd", headers=[("Cache-Control", "max-age=3600")], body=b"cd")
        for e, cache in enumerate((E1, E2)):
            r = await pair.get(e, "/cd")
            assert (r.status, r.body, r.cache_status) == (200, b"cd", miss_stored(cache))
            assert (await pair.get(e, "/cd")).cache_status == f"{cache}; hit; ttl=3600"
        await pair.settle()
        for i in range(2):  # lookup, lease and fill failed; the breaker is still closed
            stats = await pair.shared_stats(i)
            assert (stats["errors"], stats["listening"]) == (3, False)
            assert stats["breaker"]["state"] == "closed"
        await asyncio.to_thread(cluster.start)
        assert await until(pair.recovered, 6.0, step=0.05)
        pair.origin.route("/cu", headers=[("Cache-Control", "max-age=3600")], body=b"cu")
        assert (await pair.get(0, "/cu")).cache_status == miss_stored(E1)
        await pair.settle()
        r = await pair.get(1, "/cu")
        assert (r.body, r.cache_status) == (b"cu", tier_hit(3600))
    finally:
        try:
            await _stop_edges(pair)
        finally:
            cluster.cleanup()


# -- more of the tier's contract ------------------------------------------------------------------
async def test_uncacheable_answer_under_a_lease_wakes_the_other_edge_at_once(
        redis_server: RedisServer, make_pair: MakePair):
    """The lease holder gives the lease up with a notice: the other edge fetches for itself
    right away instead of waiting out wait_timeout (1 s)."""
    pair = await make_pair({"url": redis_server.url})
    gate = asyncio.Event()
    pair.origin.route("/priv", headers=[("Cache-Control", "private")], body=b"mine", gate=gate)
    jobs = [asyncio.ensure_future(pair.get(i, "/priv")) for i in range(2)]
    try:
        assert await until(lambda: pair.origin.count("/priv") == 1 and all(
            key_of("/priv") in e.app.coalescer.flights for e in pair.edges), 1.0)
        assert await until(lambda: sum(e.app.tier.shared.counts["leases_lost"]
                                       for e in pair.edges) == 1, 0.5)
        assert await until(lambda: any(e.app.tier.shared._waiters for e in pair.edges), 0.5)
        # the loser is now waiting for the notice
    finally:
        gate.set()
    t0 = time.monotonic()
    results = await asyncio.gather(*jobs)
    assert time.monotonic() - t0 < 0.5  # not the 1 s wait_timeout
    assert [(r.status, r.body) for r in results] == [(200, b"mine")] * 2
    assert [r.cache_status for r in results] == [
        f"{c}; fwd=uri-miss; fwd-status=200; detail=private" for c in (E1, E2)]
    assert pair.origin.count("/priv") == 2
    stats = [await pair.shared_stats(i) for i in range(2)]
    assert sum(s["waits_filled"] for s in stats) == 1
    assert sum(s["waits_timed_out"] for s in stats) == 0
    assert sum(s["stores"] for s in stats) == 0
    await pair.settle()
    with redis_server.client() as c:
        assert c.exists(base_of("/priv") + "lease", base_of("/priv") + "e:") == 0


async def test_tier_member_ttl_is_floored_for_a_stale_hit(
        redis_server: RedisServer, make_pair: MakePair):
    pair = await make_pair({"url": redis_server.url})
    pair.origin.route("/swr", headers=[("Cache-Control", "max-age=60, stale-while-revalidate=30")],
                      body=b"swr")
    assert (await pair.get(0, "/swr")).cache_status == miss_stored(E1)
    await pair.settle()
    pair.clock.advance(60.5)
    r = await pair.get(1, "/swr")
    assert (r.status, r.body, r.age) == (200, b"swr", 60)
    assert r.cache_status == (f"{TIER}; hit; ttl=-1, "
                              f"{E2}; fwd=uri-miss; detail=stale-while-revalidate")


async def test_purge_then_pipelined_get_on_the_same_edge_is_not_answered_from_the_tier(
        redis_server: RedisServer, make_pair: MakePair):
    pair = await make_pair({"url": redis_server.url})
    pair.origin.route("/pp", headers=[("Cache-Control", "max-age=600")], body=b"pp")
    await _cached_on_both(pair, "/pp")
    reader, writer = await asyncio.open_connection("127.0.0.1", pair.edges[0].port)
    try:
        writer.write(f"PURGE /pp HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {TOKEN}\r\n"
                     f"\r\nGET /pp HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
                     .encode())
        await writer.drain()
        async with asyncio.timeout(WAIT):
            data = await reader.read(-1)
    finally:
        writer.close()
    first, _, second = data.partition(b'{"purged": 1, "soft": false}')
    assert first.startswith(b"HTTP/1.1 200 ") and second.startswith(b"\nHTTP/1.1 200 ")
    assert f"\r\nCache-Status: {miss_stored(E1)}\r\n".encode() in second
    assert second.endswith(b"\r\n\r\npp")
    assert pair.origin.count("/pp") == 2


async def test_purge_on_an_edge_that_never_held_the_url(
        redis_server: RedisServer, make_pair: MakePair):
    """The tier (and the other edge) is purged even when the purging edge had nothing."""
    pair = await make_pair({"url": redis_server.url})
    pair.origin.route("/np", headers=[("Cache-Control", "max-age=600")], body=b"np")
    assert (await pair.get(0, "/np")).cache_status == miss_stored(E1)
    await pair.settle()
    assert pair.local(1, "/np") is None and _redis_keys(redis_server, "/np") == 4
    # by absolute URL, in a non-normalised spelling
    r = await pair.admin_purge(1, {"url": "HTTP://WWW.Example.TEST:80/np"})
    assert r.status == 200 and r.json()["soft"] is False
    assert await until(lambda: _redis_keys(redis_server, "/np") == 0, PROPAGATE)
    assert await until(lambda: pair.local(0, "/np") is None, PROPAGATE)
    assert (await pair.get(0, "/np")).cache_status == miss_stored(E1)
    assert pair.origin.count("/np") == 2


async def test_head_miss_fills_the_tier_with_the_whole_response(
        redis_server: RedisServer, make_pair: MakePair):
    pair = await make_pair({"url": redis_server.url})
    pair.origin.route("/h", headers=[("Cache-Control", "max-age=60")], body=b"headless")
    r = await pair.request(0, "HEAD", "/h")
    assert (r.status, r.body, r.cache_status) == (200, b"", miss_stored(E1))
    assert pair.origin.last("/h").method == "GET"
    await pair.settle()
    r = await pair.get(1, "/h")
    assert (r.status, r.body, r.cache_status) == (200, b"headless", tier_hit(60))
    assert r.headers["Content-Length"] == "8"
    assert pair.origin.count("/h") == 1


async def test_tier_settings_prefix_database_and_object_limit(
        redis_server: RedisServer, make_pair: MakePair):
    pair = await make_pair({"url": f"redis://127.0.0.1:{redis_server.port}/3",
                            "prefix": "edge-test:", "max_object_bytes": 1000})
    pair.origin.route("/small", headers=[("Cache-Control", "max-age=60")], body=b"s" * 100)
    pair.origin.route("/large", headers=[("Cache-Control", "max-age=60")], body=b"L" * 5000)
    for p in ("/small", "/large"):
        assert (await pair.get(0, p)).cache_status == miss_stored(E1)
    await pair.settle()
    h = hashlib.sha256(key_of("/small").encode()).hexdigest()[:32]
    with redis.Redis(port=redis_server.port, db=3, socket_timeout=2.0) as c:
        assert sorted(c.keys("*")) == sorted([*(f"edge-test:{{{h}}}:{k}".encode()
                                                for k in ("e:", "vary", "variants", "key")),
                                              b"edge-test:{purgelog}:acks"])  # purge log
    with redis.Redis(port=redis_server.port, db=0, socket_timeout=2.0) as c:
        assert c.dbsize() == 0
    assert (await pair.shared_stats(0))["store_skipped"] == 1
    # the small one is shared, the large one (over the tier's limit) is not
    assert (await pair.get(1, "/small")).cache_status == tier_hit(60)
    r = await pair.get(1, "/large")
    assert (r.body, r.cache_status) == (b"L" * 5000, miss_stored(E2))
    assert pair.origin.count("/large") == 2


async def test_cluster_master_killed_nothing_fails(make_pair: MakePair):
    """One dead master trips the breaker for every key; memory and the origin keep serving."""
    cluster, pair = RedisCluster3(), None
    try:
        cluster.start()
        pair = await make_pair({"cluster": list(cluster.nodes)})
        pair.origin.route("/m", headers=[("Cache-Control", "max-age=3600")], body=b"m")
        seen: list[tuple[int, bytes]] = []
        for i in range(10):
            r = await pair.get(i % 2, f"/m?n={i}")
            assert r.cache_status == miss_stored((E1, E2)[i % 2])
        await pair.settle()
        assert sum(cluster.dbsizes()) == 41  # 4 keys per URL and the purge log's acks
        cluster.servers[1].kill()
        results = await asyncio.gather(*(pair.get(i % 2, f"/m?n={i}") for i in range(10, 60)))
        seen += [(r.status, r.body) for r in results]
        for i in range(2):
            stats = await pair.shared_stats(i)
            assert stats["breaker"]["state"] == "open" and stats["errors"] >= 5
            assert stats["short_circuits"] > 0
        # stored before the kill: each edge answers from memory
        for i in range(10):
            r = await pair.get(i % 2, f"/m?n={i}")
            seen.append((r.status, r.body))
            assert r.cache_status == f"{(E1, E2)[i % 2]}; hit; ttl=3600"
        # the other edge's URLs: from the origin, no tier
        r = await pair.get(1, "/m?n=0")
        assert r.cache_status == miss_stored(E2)
        assert Counter(seen) == {(200, b"m"): len(seen)}
        assert pair.origin.count() == 61
    finally:
        try:
            await _stop_edges(pair)
        finally:
            cluster.cleanup()


async def test_cluster_tier_recovers_by_itself_after_a_master_restart(make_pair: MakePair):
    cluster, pair = RedisCluster3(), None
    try:
        cluster.start()
        pair = await make_pair({"cluster": list(cluster.nodes)})
        pair.origin.route("/r", headers=[("Cache-Control", "max-age=3600")], body=b"r")
        cluster.servers[1].kill()
        for i in range(20):
            assert (await pair.get(i % 2, f"/r?n={i}")).status == 200
        assert all([(await pair.shared_stats(i))["breaker"]["state"] == "open"
                    for i in range(2)])
        cluster.servers[1].start()  # same port and nodes.conf: it takes its slots back
        await asyncio.to_thread(cluster._wait_ok)  # the cluster's own recovery (bounded)
        pair.clock.advance(3)  # past breaker_reset: the probe's PING may close it
        assert await until(pair.recovered, 3.0, step=0.05)
        pair.origin.route("/r2", headers=[("Cache-Control", "max-age=3600")], body=b"r2")
        on = _paths_by_master(cluster, "/r2?n=", 40)
        # a URL on the restarted master becomes a tier hit within a bounded time (the first
        # command on a connection to the restarted node may still fail)
        fresh = iter(on[1])

        async def shared_again() -> bool:
            path = next(fresh)
            assert (await pair.get(0, path)).cache_status == miss_stored(E1)
            await pair.settle()
            return (await pair.get(1, path)).cache_status == tier_hit(3600)

        assert await until(shared_again, 3.0, step=0.05)
        for paths in on:  # then on every master, at once
            for path in (next(fresh) if paths is on[1] else p for p in paths[:3]):
                assert (await pair.get(0, path)).cache_status == miss_stored(E1)
                await pair.settle()
                assert (await pair.get(1, path)).cache_status == tier_hit(3600)
    finally:
        try:
            await _stop_edges(pair)
        finally:
            cluster.cleanup()
