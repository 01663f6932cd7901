"""Load balancing across real origins: distribution, stickiness, ejection, retries, 5xx."""

from __future__ import annotations

import asyncio
from collections import Counter

from edgeutil import edge_env, member

from edge.balancer import Balancer

__all__ = ["edge_env"]

NO_STORE = [("Cache-Control", "no-store")]


def same_route(env, path: str = "/p", headers=NO_STORE, **kw) -> None:
    """Every origin serves ``path``, answering its own name."""
    for o in env.origins:
        o.route(path, headers=headers, body=o.name.encode(), **kw)


async def served_by(env, paths) -> list[str]:
    out = []
    for path in paths:
        r = await env.get(path)
        assert r.status == 200, (path, r.status, r.body)
        out.append(r.body.decode())
    return out


async def test_round_robin_is_exact(edge_env):
    env = await edge_env(origins=3, lb="round_robin")
    same_route(env)
    names = await served_by(env, ["/p"] * 30)
    assert names == ["origin-1", "origin-2", "origin-3"] * 10
    assert [o.count("/p") for o in env.origins] == [10, 10, 10]


async def test_weighted_round_robin_is_smooth(edge_env):
    env = await edge_env(origins=3, weights=[5, 1, 1], lb="round_robin")
    same_route(env)
    names = await served_by(env, ["/p"] * 14)
    short = {"origin-1": "a", "origin-2": "b", "origin-3": "c"}
    assert "".join(short[n] for n in names) == "aabacaa" * 2


async def test_cached_responses_do_not_touch_the_balancer(edge_env):
    env = await edge_env(origins=2, lb="round_robin")
    same_route(env, headers=[("Cache-Control", "max-age=60")])
    assert await served_by(env, ["/p"] * 5) == ["origin-1"] * 5
    assert [o.count() for o in env.origins] == [1, 0]


async def test_consistent_hash_is_sticky_per_url(edge_env):
    env = await edge_env(origins=3, lb="consistent_hash")
    paths = [f"/item/{i}" for i in range(30)]
    for p in paths:
        same_route(env, p)
    first = await served_by(env, paths)
    again = await served_by(env, paths * 2)
    assert again == first * 2
    assert len(set(first)) == 3
    ring = Balancer(env.app.pool.origins, "consistent_hash")
    assert first == [ring.pick(0.0, key=env.key(p), client_ip="127.0.0.1").name for p in paths]

    dead = env.origins[1]
    await dead.stop()
    after = await served_by(env, paths)
    for p, before, now in zip(paths, first, after, strict=True):
        if before != dead.name:
            assert now == before, p  # keys of live origins do not move
        else:
            assert now != dead.name, p


async def test_ip_hash_pins_a_client(edge_env):
    env = await edge_env(origins=3, lb="ip_hash")
    same_route(env)
    names = await served_by(env, ["/p"] * 9)
    assert len(set(names)) == 1


async def test_least_conn_avoids_the_busy_origin(edge_env):
    env = await edge_env(origins=2, lb="least_conn")
    gate = asyncio.Event()
    same_route(env, "/slow", gate=gate)
    same_route(env)
    held = asyncio.create_task(env.get("/slow"))
    await env.origins[0].wait_count("/slow", 1)
    assert await served_by(env, ["/p"] * 6) == ["origin-2"] * 6
    gate.set()
    assert (await held).body == b"origin-1"


async def test_dead_origin_is_retried_elsewhere_then_ejected(edge_env):
    env = await edge_env(origins=3, lb="round_robin", max_fails=2, fail_timeout=60.0)
    same_route(env)
    dead = env.origins[1]
    await dead.stop()
    names = await served_by(env, ["/p"] * 30)  # every request succeeds
    assert "origin-2" not in names
    counts = Counter(names)
    assert counts["origin-1"] + counts["origin-3"] == 30
    assert abs(counts["origin-1"] - counts["origin-3"]) <= 2
    row = {r["name"]: r for r in env.app.pool.snapshot()}
    assert row["origin-2"]["ejected"] is True
    assert row["origin-1"]["ejected"] is row["origin-3"]["ejected"] is False
    assert env.app.metrics.counts["origin_errors"] == 0
    # once ejected, the dead origin is not tried at all: strict alternation of the others
    assert names[-10:] in (["origin-1", "origin-3"] * 5, ["origin-3", "origin-1"] * 5)


async def test_non_idempotent_requests_are_not_retried(edge_env):
    env = await edge_env(origins=2, lb="round_robin", max_fails=10)
    for o in env.origins:
        o.route("/form", echo=True)
    await env.origins[1].stop()
    r1 = await env.request("POST", "/form", data=b"1")
    r2 = await env.request("POST", "/form", data=b"2")
    assert r1.status == 200 and r1.json()["body"] == "1"
    assert r2.status == 502
    assert r2.cache_status == member("fwd=method", "detail=origin-unreachable")
    r3 = await env.request("PUT", "/form", data=b"3")  # idempotent: retried on origin-1
    assert (r3.status, r3.json()["body"]) == (200, "3")
    assert env.origins[0].count("/form") == 2


async def test_5xx_origin_is_passed_through_then_ejected(edge_env):
    env = await edge_env(origins=2, lb="round_robin", max_fails=2, fail_timeout=60.0)
    same_route(env)
    env.origins[1].fail_with = 500
    results = []
    for _ in range(10):
        r = await env.get("/p")
        results.append((r.status, r.body))
    ok, bad = (200, b"origin-1"), (500, b"origin failure\n")
    assert results == [ok, bad, ok, bad] + [ok] * 6
    assert env.origins[1].count("/p") == 2
    row = {r["name"]: r for r in env.app.pool.snapshot()}
    assert row["origin-2"]["ejected"] is True


async def test_unhealthy_origin_is_skipped_after_a_probe(edge_env):
    env = await edge_env(origins=3, lb="round_robin")
    same_route(env)
    env.origins[0].healthy = False
    assert await env.app.pool.probe_once() == {"origin-1": False, "origin-2": True,
                                               "origin-3": True}
    names = await served_by(env, ["/p"] * 6)
    assert sorted(Counter(names).items()) == [("origin-2", 3), ("origin-3", 3)]
    env.origins[0].healthy = True
    await env.app.pool.probe_once()
    names = await served_by(env, ["/p"] * 6)
    assert Counter(names) == {"origin-1": 2, "origin-2": 2, "origin-3": 2}


async def test_all_origins_down_fails_fast(edge_env):
    env = await edge_env(origins=2, lb="round_robin")
    same_route(env)
    for o in env.origins:
        await o.stop()
    r = await env.get("/p")
    assert r.status == 502
    assert r.cache_status == member("fwd=uri-miss", "detail=origin-unreachable")
