"""Purge (PURGE method and JSON API), soft purge, /healthz, drain and /metrics."""

from __future__ import annotations

import asyncio
import re

import pytest
from aiohttp import web
from edgeutil import TOKEN, WAIT, edge_env, member, until

__all__ = ["edge_env"]

MISS = member("fwd=uri-miss", "fwd-status=200", "stored")
HIT = member("hit", "ttl=60")


async def fill(env, *paths: str, extra=()):
    for path in paths:
        if path not in env.origin.routes:
            env.origin.route(path, headers=[("Cache-Control", "max-age=60"), ("ETag", '"e"'),
                                            *extra], body=path.encode())
        assert (await env.get(path)).cache_status == MISS, path


async def state(env, *paths: str) -> dict[str, str]:
    return {p: (await env.get(p)).cache_status for p in paths}


# -- authorisation ---------------------------------------------------------------------------------
async def test_purge_needs_the_bearer_token(edge_env):
    env = await edge_env()
    await fill(env, "/a")
    for token in (None, "wrong-token-value"):
        r = await env.purge("/a", token=token)
        assert r.status == 401
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="geoedge"'
    r = await env.request("PURGE", "/a", [("Authorization", f"Basic {TOKEN}")])
    assert r.status == 401
    assert (await env.get("/a")).cache_status == HIT
    for action, doc in (("purge", {"url": "/a"}), ("drain", None)):
        assert (await env.admin(action, doc, token=None)).status == 401
        assert (await env.admin(action, doc, token="nope-nope")).status == 401
    assert (await env.get("/a")).cache_status == HIT
    assert (await env.get("/healthz")).status == 200


async def test_purge_is_disabled_without_a_configured_token(edge_env):
    env = await edge_env(purge_token=None)
    await fill(env, "/a")
    r = await env.purge("/a")
    assert r.status == 403
    assert r.json() == {"error": "purging is disabled (no edge.purge_token)"}
    assert (await env.admin("purge", {"url": "/a"})).status == 403
    assert (await env.get("/a")).cache_status == HIT


# -- PURGE -----------------------------------------------------------------------------------------
async def test_purge_url_removes_every_variant_of_that_url_only(edge_env):
    env = await edge_env()

    async def by_language(request: web.Request) -> web.Response:
        return web.Response(body=request.headers.get("Accept-Language", "-").encode(), headers={
            "Cache-Control": "max-age=60", "Vary": "Accept-Language",
            "Date": env.clock.http_date()})

    env.origin.route("/v", handler=by_language)
    for lang in ("en", "fr"):
        await env.get("/v", [("Accept-Language", lang)])
    await fill(env, "/a", "/a?x=1")
    r = await env.purge("/v")
    assert (r.status, r.json()) == (200, {"purged": 2, "soft": False})
    for lang in ("en", "fr"):
        r = await env.get("/v", [("Accept-Language", lang)])
        assert r.body == lang.encode()
        assert r.cache_status != HIT
    assert await state(env, "/a", "/a?x=1") == {"/a": HIT, "/a?x=1": HIT}
    assert env.origin.count("/v") == 4
    r = await env.purge("/missing")
    assert r.json() == {"purged": 0, "soft": False}


async def test_purge_is_per_host(edge_env):
    env = await edge_env()
    env.origin.route("/a", headers=[("Cache-Control", "max-age=60")], body=b"a")
    for host in ("one.test", "two.test"):
        await env.get("/a", [("Host", host)])
    r = await env.purge("/a", headers=[("Host", "one.test")])
    assert r.json()["purged"] == 1
    assert (await env.get("/a", [("Host", "two.test")])).cache_status == HIT
    assert (await env.get("/a", [("Host", "one.test")])).cache_status == MISS


async def test_purge_prefix(edge_env):
    env = await edge_env()
    paths = ("/static/a.css", "/static/img/b.png", "/static/c?v=2", "/other", "/stat")
    await fill(env, *paths)
    r = await env.purge("/static*")
    assert r.json() == {"purged": 3, "soft": False}
    assert await state(env, *paths) == {
        "/static/a.css": MISS, "/static/img/b.png": MISS, "/static/c?v=2": MISS,
        "/other": HIT, "/stat": HIT}


# -- the JSON API ----------------------------------------------------------------------------------
async def test_purge_by_surrogate_key_and_cache_tag(edge_env):
    env = await edge_env()
    await fill(env, "/p1", extra=[("Surrogate-Key", "html page-1")])
    await fill(env, "/p2", extra=[("Surrogate-Key", "html  page-2")])
    await fill(env, "/img", extra=[("Cache-Tag", "images, page-1")])
    await fill(env, "/none")
    r = await env.admin("purge", {"key": "html"})
    assert (r.status, r.json()) == (200, {"purged": 2, "soft": False})
    assert await state(env, "/p1", "/p2", "/img", "/none") == {
        "/p1": MISS, "/p2": MISS, "/img": HIT, "/none": HIT}
    r = await env.admin("purge", {"key": "page-1"})
    assert r.json()["purged"] == 2  # /p1 (stored again) and /img
    assert await state(env, "/p1", "/p2", "/img") == {"/p1": MISS, "/p2": HIT, "/img": MISS}
    assert (await env.admin("purge", {"key": "nothing-tagged"})).json()["purged"] == 0


async def test_purge_api_by_url_and_prefix(edge_env):
    env = await edge_env()
    await fill(env, "/a", "/b", "/dir/x", "/dir/y")
    assert (await env.admin("purge", {"url": "/a"})).json()["purged"] == 1
    assert (await env.admin("purge", {"url": f"http://{env.host}/b"})).json()["purged"] == 1
    assert (await env.admin("purge", {"prefix": "/dir/"})).json()["purged"] == 2
    assert await state(env, "/a", "/b", "/dir/x", "/dir/y") == {
        "/a": MISS, "/b": MISS, "/dir/x": MISS, "/dir/y": MISS}
    assert env.app.metrics.counts["purges"] == 4


@pytest.mark.parametrize(("body", "status"), [
    (b"not json", 400), (b'{"url": "/a", "key": "k"}', 400), (b'{"url": ""}', 400),
    (b'{"key": 5}', 400), (b"[]", 400), (b"{}", 400),
])
async def test_purge_api_rejects_bad_documents(edge_env, body, status):
    env = await edge_env()
    r = await env.request("POST", "/.geoedge/purge", [("Authorization", f"Bearer {TOKEN}")],
                          body)
    assert r.status == status
    assert "error" in r.json()


async def test_admin_methods_and_paths(edge_env):
    env = await edge_env()
    assert (await env.get("/.geoedge/purge")).status == 405
    assert (await env.admin("nonsense")).status == 404
    stats = (await env.private("/.geoedge/stats")).json()
    assert stats["edge"] == "us-east-1"
    assert stats["draining"] is False
    assert [o["name"] for o in stats["origins"]] == ["origin-1"]
    assert env.origin.count() == 0  # the admin paths never reach the origin


# -- the order of a purge's steps ----------------------------------------------------------------
@pytest.mark.parametrize("how", ["PURGE", "api", "api-wait"])
async def test_a_purge_is_answered_after_the_region_tier_then_the_other_workers(edge_env, how):
    """The region's tier is purged before the other workers are asked, and both before the
    answer: a worker that had dropped its copy could otherwise refill it from the tier's old
    one after the client was told it is gone."""
    env = await edge_env()
    await fill(env, "/a")
    steps: list[str] = []
    tier_may_finish = asyncio.Event()

    async def region_purge(kind, value, soft, wait, purge_id):
        steps.append(f"tier {kind} {value} wait={wait:g}")
        await tier_may_finish.wait()
        steps.append("tier done")
        return {"logged": "1-0"}

    async def confirm(kind, value, soft):
        steps.append(f"worker {kind} {value}")

    env.app.admin.region_purge = region_purge
    env.app.admin.confirmers.append(confirm)
    if how == "PURGE":
        request = env.purge("/a")
    else:
        request = env.admin("purge", {"url": "/a", **({"wait": 1} if how == "api-wait" else {})})
    wait = 1 if how == "api-wait" else 0
    answer = asyncio.ensure_future(request)
    try:
        await until(lambda: steps, WAIT)
        await asyncio.sleep(0)  # room for a worker to be asked too early
        early = (answer.done(), list(steps))
    finally:
        tier_may_finish.set()
        r = await answer
    assert early == (False, [f"tier url {env.url('/a')} wait={wait}"])
    assert r.status == 200 and r.json()["purged"] == 1
    assert steps[1:] == ["tier done", f"worker url {env.url('/a')}"]


# -- soft purge ------------------------------------------------------------------------------------
async def test_soft_purge_revalidates_with_a_conditional_request(edge_env):
    env = await edge_env()
    await fill(env, "/a")
    r = await env.purge("/a", headers=[("X-Purge-Soft", "1")])
    assert r.json() == {"purged": 1, "soft": True}
    r = await env.get("/a")
    assert (r.body, r.cache_status) == (b"/a", member("fwd=stale", "fwd-status=304"))
    assert env.origin.last("/a").header("If-None-Match") == '"e"'
    r = await env.get("/a")
    assert r.cache_status == HIT
    assert env.origin.count("/a") == 2


async def test_soft_purge_by_key_then_origin_error_serves_stale(edge_env):
    env = await edge_env()
    await fill(env, "/a", extra=[("Surrogate-Key", "k"), ("Cache-Control", "stale-if-error=300")])
    r = await env.admin("purge", {"key": "k", "soft": True})
    assert r.json() == {"purged": 1, "soft": True}
    env.origin.fail_with = 503
    r = await env.get("/a")
    assert (r.status, r.body) == (200, b"/a")
    assert r.cache_status == member("fwd=stale", "fwd-status=503", "detail=stale-if-error")
    env.origin.fail_with = None
    r = await env.get("/a")  # still soft-purged: validated again
    assert r.cache_status == member("fwd=stale", "fwd-status=304")
    assert (await env.get("/a")).cache_status == HIT


async def test_soft_purge_prefix_then_origin_refused_serves_stale(edge_env):
    env = await edge_env()
    await fill(env, "/s/1", "/s/2")
    r = await env.purge("/s/*", headers=[("X-Purge-Soft", "yes")])
    assert r.json() == {"purged": 2, "soft": True}
    await env.origin.stop()
    r = await env.get("/s/1")
    assert (r.status, r.body, r.cache_status) == (200, b"/s/1", member(
        "fwd=stale", "detail=origin-unreachable"))


# -- health, drain, metrics ---------------------------------------------------------------------
async def test_healthz_and_drain(edge_env):
    env = await edge_env()
    await fill(env, "/a")
    r = await env.get("/healthz")
    assert (r.status, r.body, r.headers["Cache-Control"]) == (200, b"ok\n", "no-store")
    r = await env.admin("drain")
    assert (r.status, r.json()) == (200, {"draining": True})
    r = await env.get("/healthz")
    assert (r.status, r.body) == (503, b"draining\n")
    assert (await env.get("/a")).cache_status == HIT  # still serving while draining
    assert (await env.private("/.geoedge/stats")).json()["draining"] is True
    r = await env.admin("undrain")
    assert (r.status, r.json()) == (200, {"draining": False})
    assert (await env.get("/healthz")).status == 200
    assert env.origin.count() == 1


def metric(text: str, name: str, **labels: str) -> float:
    want = {"edge": "us-east-1", **labels}
    for line in text.splitlines():
        m = re.fullmatch(r"(\w+)\{(.*)\} (\S+)", line)
        if m and m[1] == name:
            got = dict(re.findall(r'(\w+)="([^"]*)"', m[2]))
            if got == want:
                return float(m[3])
    raise AssertionError(f"no {name}{want} in metrics")


async def test_metrics(edge_env):
    env = await edge_env()
    env.origin.route("/a", headers=[("Cache-Control", "max-age=60")], body=b"x" * 1000)
    env.origin.route("/p", headers=[("Cache-Control", "private")], body=b"y" * 10)
    await env.get("/a")  # miss, stored
    await env.get("/a")  # fast-path hit
    await env.get("/a", [("Cache-Control", "max-stale=0")])  # full-path hit
    await env.get("/p")  # uncacheable
    await env.get("/p")  # hit-for-miss pass
    await env.get("/nope")  # 404 stored
    r = await env.private("/metrics")
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = r.body.decode()
    assert "# TYPE geoedge_hits_total counter" in text
    expected = {"geoedge_requests_total": 6, "geoedge_hits_total": 2,  # /metrics: admin listener
                "geoedge_misses_total": 3, "geoedge_stored_total": 2,
                "geoedge_passes_total": 1, "geoedge_stale_total": 0,
                "geoedge_coalesced_total": 0, "geoedge_purges_total": 0,
                "geoedge_origin_errors_total": 0,
                "geoedge_bytes_sent_total": 3000 + 20 + len(b"no such route\n"),
                "geoedge_store_objects": 3,  # /a, /nope and the hit-for-miss marker of /p
                "geoedge_store_bytes": env.app.store.size_bytes,
                "geoedge_draining": 0}
    assert {k: metric(text, k) for k in expected} == expected
    assert metric(text, "geoedge_responses_total", code="200") == 5
    assert metric(text, "geoedge_responses_total", code="404") == 1
    assert metric(text, "geoedge_origin_up", origin="origin-1") == 1
    assert metric(text, "geoedge_origin_active", origin="origin-1") == 0
    assert metric(text, "geoedge_origin_ewma_ms", origin="origin-1") > 0

    await env.origin.stop()
    for i in range(3):  # max_fails (3) connection failures eject the origin
        assert (await env.get(f"/down{i}")).status == 502
    text = (await env.private("/metrics")).body.decode()
    assert metric(text, "geoedge_origin_up", origin="origin-1") == 0
    assert metric(text, "geoedge_origin_errors_total") == 3
    assert metric(text, "geoedge_responses_total", code="502") == 3


async def test_metrics_gauges_are_exact(edge_env):
    env = await edge_env(cache_max_bytes=268435456, max_object_bytes=4 * 1024 * 1024)
    env.origin.route("/big", headers=[("Cache-Control", "max-age=60")],
                     body=b"z" * (3 * 1024 * 1024 + 9))
    await env.get("/big")
    text = (await env.private("/metrics")).body.decode()
    size = env.app.store.size_bytes
    assert size > 3 * 1024 * 1024
    assert size % 100 != 0  # not representable in 6 significant digits
    assert (metric(text, "geoedge_store_bytes"), metric(text, "geoedge_store_max_bytes")) == (
        size, 268435456)
