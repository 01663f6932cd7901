"""Request coalescing (one origin request per key) and hit-for-miss (no serialisation)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from aiohttp import web
from edgeutil import CACHE, edge_env, member

__all__ = ["edge_env"]

MISS = member("fwd=uri-miss", "fwd-status=200", "stored")
BODY = bytes(range(256)) * 64  # 16 KiB


async def test_200_concurrent_cold_misses_make_one_origin_request(edge_env):
    env = await edge_env()
    env.origin.route("/cold", headers=[("Cache-Control", "max-age=60")], body=BODY, delay=0.3)
    rs = await asyncio.gather(*(env.get("/cold") for _ in range(200)))
    assert env.origin.count("/cold") == 1
    assert all(r.status == 200 and r.body == BODY for r in rs)
    assert Counter(r.cache_status for r in rs) == {
        MISS: 1, member("fwd=uri-miss", "collapsed"): 199}
    assert {r.age for r in rs} == {0}
    assert env.app.metrics.counts["coalesced"] == 199
    assert env.app.metrics.counts["misses"] == 200
    assert env.app.coalescer.flights == {}
    r = await env.get("/cold")
    assert r.cache_status == member("hit", "ttl=60")


async def test_concurrent_revalidations_make_one_conditional_request(edge_env):
    env = await edge_env()
    route = env.origin.route("/r", headers=[("Cache-Control", "max-age=10"), ("ETag", '"v1"')],
                             body=b"v1")
    await env.get("/r")
    env.clock.advance(20)
    route.delay = 0.3
    rs = await asyncio.gather(*(env.get("/r") for _ in range(50)))
    assert env.origin.count("/r") == 2
    assert env.origin.last("/r").header("If-None-Match") == '"v1"'
    assert {r.body for r in rs} == {b"v1"}
    assert Counter(r.cache_status for r in rs) == {
        member("fwd=stale", "fwd-status=304"): 1, member("fwd=stale", "collapsed"): 49}


async def test_a_failing_leader_does_not_send_every_waiter_to_the_origin(edge_env):
    env = await edge_env(read_timeout=0.3)
    env.origin.route("/slow", headers=[("Cache-Control", "max-age=60")], delay=1.0)
    rs = await asyncio.gather(*(env.get("/slow") for _ in range(30)))
    assert env.origin.count("/slow") == 1

    def params(r) -> tuple[str, ...]:  # (parameter order is not what is tested here)
        return tuple(sorted(r.cache_status.split("; ")))

    assert Counter((r.status, params(r)) for r in rs) == {
        (504, tuple(sorted([CACHE, "fwd=uri-miss", "detail=origin-unreachable"]))): 1,
        (504, tuple(sorted([CACHE, "fwd=uri-miss", "detail=origin-unreachable",
                            "collapsed"]))): 29}


async def test_different_keys_are_not_coalesced(edge_env):
    env = await edge_env()
    for i in range(10):
        env.origin.route(f"/k{i}", headers=[("Cache-Control", "max-age=60")],
                         body=str(i).encode(), delay=0.2)
    rs = await asyncio.gather(*(env.get(f"/k{i}") for i in range(10)))
    assert [r.body for r in rs] == [str(i).encode() for i in range(10)]
    assert {r.cache_status for r in rs} == {MISS}
    assert env.origin.max_in_flight == 10


def by_language(env):
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(0.2)
        lang = request.headers.get("Accept-Language", "-")
        return web.Response(body=lang.encode(), headers={
            "Cache-Control": "max-age=60", "Vary": "Accept-Language",
            "Date": env.clock.http_date()})
    return handler


LANGS = ["en", "fr", "en", "de", "fr", "en"] * 5


async def test_waiters_for_another_variant_get_their_own_variant(edge_env):
    env = await edge_env()
    env.origin.route("/v", handler=by_language(env))
    rs = await asyncio.gather(*(env.get("/v", [("Accept-Language", lang)]) for lang in LANGS))
    assert [r.body.decode() for r in rs] == LANGS
    # one leader per variant, everyone else collapsed onto their own variant's fetch
    assert sum(1 for r in rs if r.cache_status.endswith("collapsed")) == len(LANGS) - 3
    assert env.origin.count("/v") == 3
    for lang in ("en", "fr", "de"):
        r = await env.get("/v", [("Accept-Language", lang)])
        assert (r.body, r.cache_status) == (lang.encode(), member("hit", "ttl=60"))


async def test_concurrent_requests_make_one_origin_request_per_variant(edge_env):
    env = await edge_env()
    env.origin.route("/v", handler=by_language(env))
    await asyncio.gather(*(env.get("/v", [("Accept-Language", lang)]) for lang in LANGS))
    assert env.origin.count("/v") == 3


async def test_uncacheable_leaves_hit_for_miss_so_later_requests_run_in_parallel(edge_env):
    env = await edge_env()
    route = env.origin.route("/p", headers=[("Cache-Control", "private")], body=b"p")
    r = await env.get("/p")
    assert r.cache_status == member("fwd=uri-miss", "fwd-status=200", "detail=private")

    route.delay = 0.3
    env.origin.max_in_flight = 0
    started = time.monotonic()
    rs = await asyncio.gather(*(env.get("/p") for _ in range(20)))
    elapsed = time.monotonic() - started
    assert env.origin.count("/p") == 21
    assert env.origin.max_in_flight == 20  # all at once, not one after another
    assert elapsed < 1.5  # serialised would take 20 x 0.3 s
    assert {(r.body, r.cache_status) for r in rs} == {
        (b"p", member("fwd=uri-miss", "fwd-status=200", "detail=hit-for-miss"))}
    assert env.app.metrics.counts["passes"] == 20


async def test_hit_for_miss_marker_expires_with_the_clock(edge_env):
    env = await edge_env(hit_for_miss_ttl=10.0)
    route = env.origin.route("/p", headers=[("Cache-Control", "no-store")], body=b"p")
    await env.get("/p")
    env.clock.advance(9)
    r = await env.get("/p")
    assert r.cache_status == member("fwd=uri-miss", "fwd-status=200", "detail=hit-for-miss")
    env.clock.advance(2)
    route.headers = [("Cache-Control", "max-age=60")]
    r = await env.get("/p")
    assert r.cache_status == MISS
    r = await env.get("/p")
    assert r.cache_status == member("hit", "ttl=60")


async def test_first_uncacheable_batch_waits_for_the_leader_then_fetches(edge_env):
    """Waiters learn "not shareable" from the leader and then each fetch for themselves."""
    env = await edge_env()
    env.origin.route("/p", headers=[("Cache-Control", "private")], body=b"p", delay=0.2)
    rs = await asyncio.gather(*(env.get("/p") for _ in range(10)))
    assert env.origin.count("/p") == 10
    assert {r.body for r in rs} == {b"p"}
    assert {r.cache_status for r in rs} == {
        member("fwd=uri-miss", "fwd-status=200", "detail=private")}


async def test_waiter_limit_sends_the_excess_to_the_origin(edge_env):
    env = await edge_env(coalesce_max_waiters=5)
    gate = asyncio.Event()
    env.origin.route("/w", headers=[("Cache-Control", "max-age=60")], body=b"w", gate=gate)
    tasks = [asyncio.create_task(env.get("/w")) for _ in range(20)]
    await env.origin.wait_count("/w", 15)  # the leader and the 14 that could not wait
    gate.set()
    rs = await asyncio.gather(*tasks)
    assert env.origin.count("/w") == 15
    assert {r.body for r in rs} == {b"w"}
    assert sum(1 for r in rs if r.cache_status.endswith("collapsed")) == 5
