"""RFC 5861 and disconnected operation: stale-while-revalidate, stale-if-error, dead origins."""

from __future__ import annotations

import asyncio

import pytest
from edgeutil import edge_env, member

__all__ = ["edge_env"]

MISS = member("fwd=uri-miss", "fwd-status=200", "stored")
UNREACHABLE_STALE = member("fwd=stale", "detail=origin-unreachable")


async def stored(env, cache_control: str, path: str = "/s", etag: str | None = '"v1"'):
    headers = [("Cache-Control", cache_control)] + ([("ETag", etag)] if etag else [])
    route = env.origin.route(path, headers=headers, body=b"v1")
    r = await env.get(path)
    assert r.cache_status == MISS
    return route


# -- stale-while-revalidate ------------------------------------------------------------------------
async def test_swr_serves_stale_at_once_and_refreshes_exactly_once(edge_env):
    env = await edge_env()
    route = await stored(env, "max-age=10, stale-while-revalidate=60")
    route.headers = [("Cache-Control", "max-age=10, stale-while-revalidate=60"),
                     ("ETag", '"v2"')]
    route.body = b"v2"
    route.gate = asyncio.Event()  # the refresh is held at the origin until we release it
    env.clock.advance(15)

    stale = member("hit", "ttl=-5", "detail=stale-while-revalidate")
    rs = await asyncio.gather(*(env.get("/s") for _ in range(20)))
    assert {(r.status, r.body, r.cache_status, r.age) for r in rs} == {(200, b"v1", stale, 15)}
    await env.origin.wait_count("/s", 2)
    rs = await asyncio.gather(*(env.get("/s") for _ in range(5)))  # refresh still in flight
    assert {r.cache_status for r in rs} == {stale}
    assert env.origin.count("/s") == 2
    refresh = env.origin.last("/s")
    assert refresh.header("If-None-Match") == '"v1"'

    route.gate.set()
    await env.settle()
    assert env.origin.count("/s") == 2
    r = await env.get("/s")
    assert (r.body, r.cache_status, r.age) == (b"v2", member("hit", "ttl=10"), 0)
    assert env.app.metrics.counts["stale"] == 25


async def test_swr_refresh_with_304_freshens(edge_env):
    env = await edge_env()
    await stored(env, "max-age=10, stale-while-revalidate=60")
    env.clock.advance(20)
    r = await env.get("/s")
    assert r.cache_status == member("hit", "ttl=-10", "detail=stale-while-revalidate")
    await env.origin.wait_count("/s", 2)
    await env.settle()
    r = await env.get("/s")
    assert (r.body, r.cache_status, r.age) == (b"v1", member("hit", "ttl=10"), 0)
    assert env.origin.count("/s") == 2


async def test_swr_window_is_bounded(edge_env):
    env = await edge_env()
    route = await stored(env, "max-age=10, stale-while-revalidate=30")
    route.gate = None
    env.clock.advance(41)  # staleness 31 > 30: validate synchronously
    r = await env.get("/s")
    assert (r.body, r.cache_status) == (b"v1", member("fwd=stale", "fwd-status=304"))
    assert env.origin.count("/s") == 2


async def test_swr_does_not_apply_with_s_maxage(edge_env):
    """RFC 9111 §5.2.2.10: s-maxage implies proxy-revalidate for a shared cache."""
    env = await edge_env()
    await stored(env, "s-maxage=10, stale-while-revalidate=60")
    env.clock.advance(15)
    r = await env.get("/s")
    assert r.cache_status == member("fwd=stale", "fwd-status=304")


# -- stale-if-error --------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_stale_if_error_serves_stale_on_origin_5xx(edge_env, status):
    env = await edge_env()
    await stored(env, "max-age=10, stale-if-error=60")
    env.clock.advance(30)
    env.origin.fail_with = status
    r = await env.get("/s")
    assert (r.status, r.body, r.age) == (200, b"v1", 30)
    assert r.cache_status == member("fwd=stale", f"fwd-status={status}", "detail=stale-if-error")
    assert env.origin.count("/s") == 2
    env.origin.fail_with = None  # the entry is still there to be validated
    r = await env.get("/s")
    assert (r.status, r.body, r.cache_status) == (200, b"v1", member("fwd=stale",
                                                                     "fwd-status=304"))


async def test_stale_if_error_window_is_bounded(edge_env):
    env = await edge_env()
    await stored(env, "max-age=10, stale-if-error=60")
    env.clock.advance(71)  # staleness 61
    env.origin.fail_with = 500
    r = await env.get("/s")
    assert (r.status, r.body) == (500, b"origin failure\n")
    assert r.cache_status == member("fwd=stale", "fwd-status=500", "detail=no-freshness")


async def test_without_stale_if_error_a_5xx_is_passed_on(edge_env):
    env = await edge_env()
    await stored(env, "max-age=10")
    env.clock.advance(15)
    env.origin.fail_with = 503
    r = await env.get("/s")
    assert (r.status, r.body) == (503, b"origin failure\n")
    assert r.cache_status == member("fwd=stale", "fwd-status=503", "detail=no-freshness")


async def test_request_stale_if_error_grants_the_window(edge_env):
    env = await edge_env()
    await stored(env, "max-age=10")
    env.clock.advance(15)
    env.origin.fail_with = 500
    r = await env.get("/s", [("Cache-Control", "stale-if-error=10")])
    assert (r.status, r.body) == (200, b"v1")
    assert r.cache_status == member("fwd=stale", "fwd-status=500", "detail=stale-if-error")


async def test_must_revalidate_forbids_stale_if_error(edge_env):
    env = await edge_env()
    await stored(env, "max-age=10, must-revalidate, stale-if-error=600")
    env.clock.advance(15)
    env.origin.fail_with = 500
    r = await env.get("/s")
    assert r.status == 500


async def test_fresh_entry_with_request_no_cache_and_origin_5xx(edge_env):
    env = await edge_env()
    await stored(env, "max-age=100, stale-if-error=60")
    env.origin.fail_with = 502
    r = await env.get("/s", [("Cache-Control", "no-cache")])
    # the stored response is still fresh: usable when the validation fails (RFC 5861 §4)
    assert (r.status, r.body) == (200, b"v1")
    assert r.cache_status.endswith("fwd-status=502; detail=stale-if-error")


# -- the origin refuses connections: "disconnected" (RFC 9111 §4.2.4) ----------------------------
async def test_refused_origin_serves_stale_even_without_stale_if_error(edge_env):
    env = await edge_env()
    await stored(env, "max-age=10")
    await stored(env, "max-age=10, stale-if-error=5", path="/sie")
    env.clock.advance(100)
    await env.origin.stop()
    for path in ("/s", "/sie"):  # also beyond the stale-if-error window: disconnected
        r = await env.get(path)
        assert (r.status, r.body, r.age) == (200, b"v1", 100)
        assert r.cache_status == UNREACHABLE_STALE


@pytest.mark.parametrize("cache_control", ["max-age=10, must-revalidate",
                                           "max-age=10, proxy-revalidate",
                                           "s-maxage=10"])
async def test_refused_origin_and_a_directive_forbidding_stale(edge_env, cache_control):
    env = await edge_env()
    await stored(env, cache_control)
    env.clock.advance(15)
    await env.origin.stop()
    r = await env.get("/s")
    assert r.status == 502
    assert r.cache_status == UNREACHABLE_STALE
    assert r.headers["Cache-Control"] == "no-store"


async def test_refused_origin_on_a_miss_is_502(edge_env):
    env = await edge_env()
    await env.origin.stop()
    r = await env.get("/nothing")
    assert r.status == 502
    assert r.cache_status == member("fwd=uri-miss", "detail=origin-unreachable")
    r = await env.request("POST", "/nothing", data=b"x")
    assert r.status == 502
    assert r.cache_status == member("fwd=method", "detail=origin-unreachable")
    assert env.app.metrics.counts["origin_errors"] == 2


async def test_origin_timeout_is_504_or_stale(edge_env):
    env = await edge_env(read_timeout=0.3)
    await stored(env, "max-age=10")
    await stored(env, "max-age=10, must-revalidate", path="/mr")
    env.origin.route("/slow", delay=2.0, body=b"late")
    env.clock.advance(15)
    for path in ("/s", "/mr"):
        env.origin.routes[path].delay = 2.0
    r_miss, r_stale, r_mr = await asyncio.gather(env.get("/slow"), env.get("/s"),
                                                 env.get("/mr"))
    assert r_miss.status == 504
    assert r_miss.cache_status == member("fwd=uri-miss", "detail=origin-unreachable")
    assert (r_stale.status, r_stale.body, r_stale.cache_status) == (200, b"v1",
                                                                    UNREACHABLE_STALE)
    assert (r_mr.status, r_mr.cache_status) == (504, UNREACHABLE_STALE)


async def test_origin_back_after_refusing(edge_env):
    env = await edge_env()
    route = await stored(env, "max-age=10")
    env.clock.advance(15)
    await env.origin.stop()
    assert (await env.get("/s")).cache_status == UNREACHABLE_STALE
    await env.origin.start()
    env.app.pool.balancer.state("origin-1").ejected_until = float("-inf")
    route.body = b"v2"
    route.headers = [("Cache-Control", "max-age=10")]
    r = await env.get("/s")
    assert (r.status, r.body, r.cache_status) == (200, b"v2", member(
        "fwd=stale", "fwd-status=200", "stored"))


# -- what an origin error leaves behind ------------------------------------------------------------
async def test_a_5xx_does_not_evict_the_stale_copy(edge_env):
    env = await edge_env()
    await stored(env, "max-age=10")
    env.clock.advance(15)
    env.origin.fail_with = 500
    assert (await env.get("/s")).status == 500
    await env.origin.stop()
    r = await env.get("/s")
    assert (r.status, r.body, r.cache_status) == (200, b"v1", UNREACHABLE_STALE)


async def test_hit_for_miss_still_stores_a_cacheable_response(edge_env):
    env = await edge_env()
    route = env.origin.route("/h", status=503, body=b"down")
    assert (await env.get("/h")).status == 503
    route.status, route.headers, route.body = 200, [("Cache-Control", "max-age=60")], b"up"
    r = await env.get("/h")
    assert (r.status, r.body) == (200, b"up")
    r = await env.get("/h")
    assert r.cache_status == member("hit", "ttl=60")
