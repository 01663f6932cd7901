"""The shared (Redis) tier against real servers: a standalone redis-server and a 3-master cluster.

Two ``SharedTier`` instances with different node ids stand for two edges of one region. Waits
are bounded polls (``eventually``); TTLs are checked with PTTL, never by sleeping them out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redisutil import RedisCluster3, RedisServer, redis_cluster, redis_server

from edge.breaker import BreakerState
from edge.policy.vary import vary_key
from edge.tier.keys import SharedHit, SharedSettings
from edge.tier.protocol import SharedTier

__all__ = ["redis_cluster", "redis_server"]

URL = "http://example.test"
WAIT = 5.0

Purges = list[tuple[str, str, bool]]
MakeTier = Callable[..., Awaitable[tuple[SharedTier, Purges]]]


async def eventually(pred: Callable[[], bool], within: float = 1.0) -> bool:
    deadline = time.monotonic() + within
    while not pred():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


@pytest.fixture
async def make_tier() -> AsyncIterator[MakeTier]:
    started: list[SharedTier] = []

    async def make(node: str, url: str | None = None, nodes: tuple[str, ...] = (),
                   **kw: object) -> tuple[SharedTier, Purges]:
        got: Purges = []
        tier = SharedTier(SharedSettings(url, nodes, **kw), node,  # type: ignore[arg-type]
                          on_purge=lambda *a: got.append(a))
        started.append(tier)
        await tier.start()
        assert await eventually(tier.listening.is_set, WAIT)
        return tier, got

    yield make
    for tier in started:
        await tier.stop()


# -- standalone -----------------------------------------------------------------------------------
async def test_a_store_by_one_edge_is_a_hit_for_the_other(redis_server: RedisServer, make_tier):
    a, _ = await make_tier("edge-a", redis_server.url)
    b, _ = await make_tier("edge-b", redis_server.url)
    assert await b.lookup(f"{URL}/x", ()) is None
    assert await a.store(f"{URL}/x", "", (), b"\x00entry bytes\xff", 30, ["t"])
    assert await b.lookup(f"{URL}/x", ()) == SharedHit(b"\x00entry bytes\xff", False)
    assert b.snapshot()["hits"] == 1 and b.snapshot()["misses"] == 1
    assert a.snapshot()["stores"] == 1 and a.snapshot()["latency_ms"]["count"] >= 1
    with redis_server.client() as c:  # raw bytes in Redis, under the documented layout
        assert c.get(a.base(f"{URL}/x") + "e:") == b"\x00entry bytes\xff"
        assert c.get(a.base(f"{URL}/x") + "key") == f"{URL}/x".encode()
        assert a.base(f"{URL}/x").startswith("geoedge:{") and c.sismember("geoedge:tag:t",
                                                                          f"{URL}/x")


async def test_vary_variants_and_vary_star(redis_server: RedisServer, make_tier):
    a, _ = await make_tier("edge-a", redis_server.url)
    b, _ = await make_tier("edge-b", redis_server.url)
    vary = ("Accept-Encoding",)
    gz, br = (("Accept-Encoding", "gzip"),), (("accept-encoding", "br"),)
    for headers, blob in ((gz, b"GZ"), (br, b"BR")):
        variant = vary_key(vary, headers)
        assert variant
        assert await a.store(f"{URL}/v", variant, vary, blob, 30, ())
    assert (await b.lookup(f"{URL}/v", gz)).blob == b"GZ"
    assert (await b.lookup(f"{URL}/v", (("Accept-Encoding", " GZIP "),))).blob == b"GZ"
    assert (await b.lookup(f"{URL}/v", br)).blob == b"BR"
    assert await b.lookup(f"{URL}/v", (("Accept-Encoding", "zstd"),)) is None
    assert await b.lookup(f"{URL}/v", ()) is None  # absent field: its own variant
    assert await a.store(f"{URL}/star", "", ("*",), b"S", 30, ())
    assert await b.lookup(f"{URL}/star", ()) is None


async def test_ttls_follow_the_entry_and_never_shrink(redis_server: RedisServer, make_tier):
    a, _ = await make_tier("edge-a", redis_server.url)
    vary = ("Accept",)
    v1, v2 = vary_key(vary, (("Accept", "a"),)), vary_key(vary, (("Accept", "b"),))
    assert await a.store(f"{URL}/t", v1, vary, b"1", 30.0, ["tag1"])
    assert await a.store(f"{URL}/t", v2, vary, b"2", 5.5, ["tag1"])
    b = a.base(f"{URL}/t")
    with redis_server.client() as c:
        assert 29_000 < c.pttl(b + "e:" + v1) <= 30_000
        assert 5_000 < c.pttl(b + "e:" + v2) <= 5_500
        for meta in ("vary", "variants", "key"):
            assert 29_000 < c.pttl(b + meta) <= 30_000, meta  # the longest entry's, not 5.5 s
        assert 29_000 < c.pttl("geoedge:tag:tag1") <= 30_000
    assert not await a.store(f"{URL}/t0", "", (), b"x", 0.0, ())  # nothing left to keep


async def test_max_object_bytes(redis_server: RedisServer, make_tier):
    a, _ = await make_tier("edge-a", redis_server.url, max_object_bytes=1000)
    assert not await a.store(f"{URL}/big", "", (), b"x" * 1001, 30, ["t"])
    with redis_server.client() as c:
        assert c.dbsize() == 0
    assert await a.store(f"{URL}/big", "", (), b"x" * 1000, 30, ["t"])
    assert a.snapshot()["store_skipped"] == 1 and a.snapshot()["stores"] == 1


async def test_purge_url_hard_and_soft_reach_the_other_edge(redis_server: RedisServer,
                                                            make_tier):
    a, got_a = await make_tier("edge-a", redis_server.url)
    b, got_b = await make_tier("edge-b", redis_server.url)
    vary = ("Accept",)
    ha, hb = (("Accept", "a"),), (("Accept", "b"),)
    for headers in (ha, hb):
        assert await a.store(f"{URL}/p", vary_key(vary, headers), vary, b"P", 30, ())
    assert await a.purge_url(f"{URL}/p", soft=True) == 2
    assert await eventually(lambda: got_b == [("url", f"{URL}/p", True)])
    assert (await b.lookup(f"{URL}/p", ha)).soft and (await b.lookup(f"{URL}/p", hb)).soft
    assert await b.store(f"{URL}/p", vary_key(vary, ha), vary, b"P2", 30, ())  # refetched
    assert await a.lookup(f"{URL}/p", ha) == SharedHit(b"P2", False)
    assert (await a.lookup(f"{URL}/p", hb)).soft  # the other variant stays soft-purged
    assert await b.purge_url(f"{URL}/p") == 2
    assert await eventually(lambda: got_a == [("url", f"{URL}/p", False)])
    assert await a.lookup(f"{URL}/p", ha) is None and await a.lookup(f"{URL}/p", hb) is None
    with redis_server.client() as c:
        assert c.keys(a.base(f"{URL}/p") + "*") == []
    assert got_b == [("url", f"{URL}/p", True)]  # never our own purges
    assert await a.purge_url(f"{URL}/nothing") == 0


async def test_purge_prefix(redis_server: RedisServer, make_tier):
    a, got_a = await make_tier("edge-a", redis_server.url)
    b, got_b = await make_tier("edge-b", redis_server.url)
    for path in ("/a/1", "/a/2", "/a", "/b/1"):
        assert await a.store(URL + path, "", (), path.encode(), 30, ())
    assert await b.purge_prefix(f"{URL}/a/", soft=True) == 2
    assert (await a.lookup(f"{URL}/a/1", ())).soft and not (await a.lookup(f"{URL}/a", ())).soft
    assert await b.purge_prefix(f"{URL}/a") == 3
    assert await a.lookup(f"{URL}/a/2", ()) is None and await a.lookup(f"{URL}/a", ()) is None
    assert await a.lookup(f"{URL}/b/1", ()) == SharedHit(b"/b/1", False)
    assert await eventually(lambda: len(got_a) == 2)
    assert got_a == [("prefix", f"{URL}/a/", True), ("prefix", f"{URL}/a", False)]
    assert got_b == []


async def test_purge_tag(redis_server: RedisServer, make_tier):
    a, got_a = await make_tier("edge-a", redis_server.url)
    b, _ = await make_tier("edge-b", redis_server.url)
    assert await a.store(f"{URL}/1", "", (), b"1", 30, ["red", "all"])
    assert await a.store(f"{URL}/2", "", (), b"2", 30, ["blue", "all"])
    assert await b.purge_tag("red", soft=True) == 1
    assert (await a.lookup(f"{URL}/1", ())).soft and not (await a.lookup(f"{URL}/2", ())).soft
    assert await b.purge_tag("all") == 2
    assert await a.lookup(f"{URL}/1", ()) is None and await a.lookup(f"{URL}/2", ()) is None
    assert await b.purge_tag("all") == 0
    assert await eventually(lambda: len(got_a) == 3)
    assert got_a == [("tag", "red", True), ("tag", "all", False), ("tag", "all", False)]


async def test_lease_has_one_owner(redis_server: RedisServer, make_tier):
    a, _ = await make_tier("edge-a", redis_server.url, lease_ms=3000)
    b, _ = await make_tier("edge-b", redis_server.url)
    assert await a.try_lease(f"{URL}/l")
    assert not await b.try_lease(f"{URL}/l")
    lease = a.base(f"{URL}/l") + "lease"
    with redis_server.client() as c:
        assert c.get(lease) == b"edge-a" and 2_000 < c.pttl(lease) <= 3_000
        assert not await b.release_lease(f"{URL}/l")  # not b's lease: untouched
        assert c.get(lease) == b"edge-a"
        assert await a.release_lease(f"{URL}/l")
        assert c.get(lease) is None
    assert await b.try_lease(f"{URL}/l")
    assert a.snapshot()["leases_won"] == 1 and b.snapshot()["leases_lost"] == 1


async def test_wait_filled(redis_server: RedisServer, make_tier):
    a, _ = await make_tier("edge-a", redis_server.url)
    b, _ = await make_tier("edge-b", redis_server.url)
    key = f"{URL}/w"
    assert await b.wait_filled(key, 0.5)  # nobody holds a lease: look again at once
    assert await a.try_lease(key)
    t0 = time.monotonic()
    ops = b.latency["count"]
    waiter = asyncio.create_task(b.wait_filled(key, WAIT))
    # registered, and past its look at the lease (one more timed call): waiting for the notice
    assert await eventually(lambda: bool(b._waiters) and b.latency["count"] > ops, WAIT)
    assert not waiter.done()
    assert await a.store(key, "", (), b"W", 30, ()) and await a.notify_filled(key)
    assert await asyncio.wait_for(waiter, WAIT) is True
    assert time.monotonic() - t0 < 1.0
    assert await b.lookup(key, ()) == SharedHit(b"W", False)
    t0 = time.monotonic()  # the lease is still held and nobody notifies: bounded wait
    assert await b.wait_filled(key, 0.2) is False
    assert 0.19 < time.monotonic() - t0 < 1.0
    assert b.snapshot()["waits_timed_out"] == 1 and not b._waiters


async def test_a_slow_redis_is_a_miss_not_an_error(redis_server: RedisServer, make_tier):
    a, _ = await make_tier("edge-a", redis_server.url, timeout=0.05)
    assert await a.store(f"{URL}/s", "", (), b"S", 30, ())
    with redis_server.client() as c:
        c.execute_command("CLIENT", "PAUSE", 400)
    t0 = time.monotonic()
    assert await a.lookup(f"{URL}/s", ()) is None
    assert time.monotonic() - t0 < 0.2
    snap = a.snapshot()
    assert snap["timeouts"] == 1 and snap["errors"] == 1 and snap["breaker"]["state"] == "closed"


async def test_dead_redis_opens_the_breaker_and_a_restart_closes_it(redis_server: RedisServer,
                                                                    make_tier):
    a, got_a = await make_tier("edge-a", redis_server.url, breaker_threshold=3,
                               breaker_reset=0.3)
    b, _ = await make_tier("edge-b", redis_server.url, breaker_reset=0.3)
    assert await a.store(f"{URL}/k", "", (), b"K", 30, ())
    redis_server.kill()
    for _ in range(3):
        assert await a.lookup(f"{URL}/k", ()) is None
    assert a.breaker.state(a.clock()) is BreakerState.OPEN
    t0 = time.perf_counter()
    assert await a.lookup(f"{URL}/k", ()) is None
    assert not await a.store(f"{URL}/k", "", (), b"K", 30, ())
    assert not await a.try_lease(f"{URL}/k") and not await a.wait_filled(f"{URL}/k", 5.0)
    assert time.perf_counter() - t0 < 0.005  # nothing waits for a timeout any more
    snap = a.snapshot()
    assert snap["errors"] >= 3 and snap["short_circuits"] >= 3
    assert snap["breaker"]["state"] == "open" and snap["breaker"]["times_opened"] == 1

    redis_server.restart()  # same port, empty
    assert await eventually(lambda: a.breaker.state(a.clock()) is BreakerState.CLOSED, WAIT)
    assert await a.store(f"{URL}/k", "", (), b"K2", 30, ())
    assert await a.lookup(f"{URL}/k", ()) == SharedHit(b"K2", False)
    assert await eventually(lambda: a.listening.is_set() and b.listening.is_set(), WAIT)
    assert await b.purge_url(f"{URL}/k") == 1  # pub/sub is back too
    assert await eventually(lambda: got_a == [("url", f"{URL}/k", False)])


async def test_starting_without_redis_does_not_raise():
    down = RedisServer()  # a free port, never started
    try:
        tier = SharedTier(SharedSettings(down.url, (), breaker_reset=0.2), "edge-a")
        await tier.start()
        assert await tier.lookup(f"{URL}/x", ()) is None and not tier.listening.is_set()
        down.start()
        assert await eventually(lambda: tier.listening.is_set(), WAIT)
        assert await tier.store(f"{URL}/x", "", (), b"X", 30, ())
        await tier.stop()
    finally:
        down.cleanup()


def test_settings_are_validated():
    with pytest.raises(ValueError):
        SharedSettings(None, ())
    with pytest.raises(ValueError):
        SharedSettings("redis://127.0.0.1:1/0", ("127.0.0.1:2",))
    with pytest.raises(ValueError):
        SharedSettings("http://127.0.0.1:1/0", ())
    with pytest.raises(ValueError):
        SharedSettings(None, ("127.0.0.1",))
    with pytest.raises(ValueError):
        SharedSettings("redis://127.0.0.1:1/0", (), prefix="a{b}:")
    s = SharedSettings("redis://127.0.0.1:1/0", ())
    assert (s.timeout, s.max_object_bytes, s.prefix) == (0.05, 1 << 20, "geoedge:")


# -- Redis Cluster --------------------------------------------------------------------------------
async def test_cluster_spreads_keys_and_purges_across_slots(redis_cluster: RedisCluster3,
                                                            make_tier):
    redis_cluster.flushall()
    a, got_a = await make_tier("edge-a", nodes=redis_cluster.nodes)
    b, got_b = await make_tier("edge-b", nodes=redis_cluster.nodes)
    keys = [f"{URL}/c/{i}" for i in range(120)]
    for i, key in enumerate(keys):
        assert await a.store(key, "", (), b"C%d" % i, 30, ["even" if i % 2 == 0 else "odd"])
    assert all(n > 0 for n in redis_cluster.dbsizes()), redis_cluster.dbsizes()
    assert await b.lookup(keys[7], ()) == SharedHit(b"C7", False)
    vary = ("Accept-Language",)
    fr = (("Accept-Language", "fr"),)
    assert await a.store(f"{URL}/lang", vary_key(vary, fr), vary, b"FR", 30, ["odd"])
    assert (await b.lookup(f"{URL}/lang", fr)).blob == b"FR"

    assert await b.purge_tag("even", soft=True) == 60
    assert (await a.lookup(keys[0], ())).soft and not (await a.lookup(keys[1], ())).soft
    assert await b.purge_tag("odd") == 61
    assert await a.lookup(keys[1], ()) is None and await a.lookup(f"{URL}/lang", fr) is None
    # /c/1, /c/10-19 and /c/100-119 match; only the soft-purged even ones are still stored
    assert await a.purge_prefix(f"{URL}/c/1") == 15
    assert await b.lookup(keys[10], ()) is None and (await b.lookup(keys[20], ())).soft
    assert await eventually(lambda: len(got_a) == 2 and len(got_b) == 1)
    assert got_b == [("prefix", f"{URL}/c/1", False)]

    assert await a.try_lease(keys[3]) and not await b.try_lease(keys[3])
    assert not await b.release_lease(keys[3]) and await a.release_lease(keys[3])
    assert a.snapshot()["errors"] == 0 and b.snapshot()["errors"] == 0


async def test_a_failing_purge_callback_does_not_stop_the_listener(redis_server: RedisServer,
                                                                   make_tier):
    a, _ = await make_tier("edge-a", redis_server.url)
    b, got_b = await make_tier("edge-b", redis_server.url)
    calls: Purges = []

    def broken(kind: str, value: str, soft: bool) -> None:
        calls.append((kind, value, soft))
        raise KeyError(value)  # reported by the loop's exception handler, nothing else

    b.on_purge = broken
    await a.purge_url(f"{URL}/1")
    assert await eventually(lambda: len(calls) == 1)
    b.on_purge = lambda *args: got_b.append(args)
    await a.purge_url(f"{URL}/2")
    assert await eventually(lambda: got_b == [("url", f"{URL}/2", False)])
    assert b.listening.is_set() and b.snapshot()["purges_received"] == 2
