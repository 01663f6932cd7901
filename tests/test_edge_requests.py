"""Request directives, validation, Vary and invalidation by unsafe methods."""

from __future__ import annotations

import json

import pytest
from aiohttp import web
from edgeutil import edge_env, member

from geoconfig.httpdate import parse_http_date

__all__ = ["edge_env"]

MISS = member("fwd=uri-miss", "fwd-status=200", "stored")


def validated(status: int = 304, fwd: str = "stale") -> str:
    return member(f"fwd={fwd}", f"fwd-status={status}")


async def cached(env, path="/a", headers=None, body=b"v1", etag='"v1"', lm: float | None = None):
    """Store ``path`` (max-age=60 unless ``headers``) and return the route."""
    hdrs = list(headers or [("Cache-Control", "max-age=60")])
    if etag:
        hdrs.append(("ETag", etag))
    if lm is not None:
        hdrs.append(("Last-Modified", env.clock.http_date(lm)))
    route = env.origin.route(path, headers=hdrs, body=body)
    r = await env.get(path)
    assert r.cache_status == MISS
    return route


# -- request directives --------------------------------------------------------------------------
@pytest.mark.parametrize("directive", [[("Cache-Control", "no-cache")], [("Pragma", "no-cache")],
                                       [("Cache-Control", "max-age=0, no-cache")]])
async def test_request_no_cache_revalidates_a_fresh_entry(edge_env, directive):
    env = await edge_env()
    await cached(env, lm=-1000)
    r = await env.get("/a", directive)
    assert (r.status, r.body) == (200, b"v1")
    assert r.cache_status.startswith(member("fwd="))
    assert r.cache_status.endswith("; fwd-status=304")
    seen = env.origin.last("/a")
    assert seen.header("If-None-Match") == '"v1"'
    assert seen.header("If-Modified-Since") == env.clock.http_date(-1000)
    assert env.origin.count("/a") == 2


async def test_request_no_cache_reports_fwd_request(edge_env):
    env = await edge_env()
    await cached(env)
    r = await env.get("/a", [("Cache-Control", "no-cache")])
    assert r.cache_status == member("fwd=request", "fwd-status=304")


async def test_request_no_store_bypasses_and_stores_nothing(edge_env):
    env = await edge_env()
    route = await cached(env)
    route.body = b"v2"
    r = await env.get("/a", [("Cache-Control", "no-store")])
    assert (r.body, r.cache_status) == (
        b"v2", member("fwd=bypass", "fwd-status=200", "detail=request-no-store"))
    assert env.origin.last("/a").header("If-None-Match") is None
    r = await env.get("/a")
    assert (r.body, r.cache_status) == (b"v1", member("hit", "ttl=60"))  # old entry untouched

    env.origin.route("/cold", headers=[("Cache-Control", "max-age=60")], body=b"c")
    await env.get("/cold", [("Cache-Control", "no-store")])
    r = await env.get("/cold")
    assert r.cache_status == MISS
    assert env.origin.count("/cold") == 2


async def test_request_max_age(edge_env):
    env = await edge_env()
    await cached(env)
    r = await env.get("/a", [("Cache-Control", "max-age=0")])  # age 0 is not > 0
    assert r.cache_status == member("hit", "ttl=60")
    env.clock.advance(5)
    r = await env.get("/a", [("Cache-Control", "max-age=10")])
    assert (r.cache_status, r.age) == (member("hit", "ttl=55"), 5)
    r = await env.get("/a", [("Cache-Control", "max-age=0")])  # fresh, but the client asks
    assert (r.body, r.cache_status, r.age) == (b"v1", validated(fwd="request"), 0)
    assert env.origin.last("/a").header("If-None-Match") == '"v1"'
    assert env.origin.count("/a") == 2
    r = await env.get("/a")  # the 304 restarted the entry's age
    assert (r.cache_status, r.age) == (member("hit", "ttl=60"), 0)


async def test_request_max_stale(edge_env):
    env = await edge_env()
    await cached(env, headers=[("Cache-Control", "max-age=10")])
    env.clock.advance(15)
    for value in ("max-stale=10", "max-stale=5", "max-stale"):
        r = await env.get("/a", [("Cache-Control", value)])
        assert (r.body, r.age) == (b"v1", 15)
        assert r.cache_status == member("hit", "ttl=-5", "detail=request-max-stale"), value
    assert env.origin.count("/a") == 1
    r = await env.get("/a", [("Cache-Control", "max-stale=4")])
    assert r.cache_status == validated()
    assert env.origin.count("/a") == 2


async def test_max_stale_does_not_override_must_revalidate(edge_env):
    env = await edge_env()
    await cached(env, headers=[("Cache-Control", "max-age=10, must-revalidate")])
    env.clock.advance(15)
    r = await env.get("/a", [("Cache-Control", "max-stale")])
    assert r.cache_status == validated()
    assert env.origin.count("/a") == 2


async def test_request_min_fresh(edge_env):
    env = await edge_env()
    await cached(env)
    env.clock.advance(30)
    r = await env.get("/a", [("Cache-Control", "min-fresh=20")])
    assert r.cache_status == member("hit", "ttl=30")
    r = await env.get("/a", [("Cache-Control", "min-fresh=40")])  # fresh, not fresh enough
    assert (r.cache_status, r.age) == (validated(fwd="request"), 0)
    assert env.origin.count("/a") == 2


async def test_only_if_cached(edge_env):
    env = await edge_env()
    oic = [("Cache-Control", "only-if-cached")]
    r = await env.get("/a", oic)
    assert r.status == 504
    assert r.cache_status == member("fwd=miss", "detail=only-if-cached")
    assert env.origin.count() == 0
    await cached(env, headers=[("Cache-Control", "max-age=10")])
    r = await env.get("/a", oic)
    assert (r.status, r.body, r.cache_status) == (200, b"v1", member("hit", "ttl=10"))
    env.clock.advance(20)
    r = await env.get("/a", oic)  # stale: would need the origin
    assert r.status == 504
    r = await env.get("/a", [("Cache-Control", "only-if-cached, max-stale=30")])
    assert (r.status, r.cache_status) == (200, member("hit", "ttl=-10",
                                                      "detail=request-max-stale"))
    assert env.origin.count() == 1


# -- validation ----------------------------------------------------------------------------------
async def test_stale_entry_is_validated_with_its_validators(edge_env):
    env = await edge_env()
    route = await cached(env, etag='"abc"', lm=-500)
    route.body = b"must not be used"
    env.clock.advance(61)
    r = await env.get("/a", [("If-None-Match", '"client"'), ("If-Modified-Since",
                                                             env.clock.http_date(-1))])
    assert (r.status, r.body, r.cache_status) == (200, b"v1", validated())
    seen = env.origin.last("/a")
    assert seen.headers.getall("If-None-Match") == ['"abc"']  # the stored one, not the client's
    assert seen.headers.getall("If-Modified-Since") == [env.clock.http_date(-561)]


async def test_304_freshens_stored_headers_and_keeps_the_body(edge_env):
    env = await edge_env()
    route = await cached(env, headers=[("Cache-Control", "max-age=60"), ("X-Version", "1"),
                                       ("X-Untouched", "u"), ("Content-Type", "text/plain")])
    route.body = b"NEW BODY THAT MUST NOT BE USED"
    env.clock.advance(100)
    route.not_modified = [("Cache-Control", "max-age=300"), ("ETag", '"v1"'),
                          ("X-Version", "2"), ("X-Added", "a"),
                          ("Content-Length", "999"), ("Connection", "X-Drop"), ("X-Drop", "d")]
    r = await env.get("/a")
    assert (r.status, r.body, r.cache_status, r.age) == (200, b"v1", validated(), 0)
    assert r.headers["X-Version"] == "2"
    assert r.headers["Cache-Control"] == "max-age=300"
    assert r.headers["Content-Type"] == "text/plain"
    assert r.headers["Content-Length"] == "2"
    assert "X-Drop" not in r.headers
    env.clock.advance(200)
    r = await env.get("/a")
    assert (r.body, r.cache_status, r.age) == (b"v1", member("hit", "ttl=100"), 200)
    assert (r.headers["X-Version"], r.headers["X-Added"], r.headers["X-Untouched"]) == (
        "2", "a", "u")
    assert r.headers.getall("X-Version") == ["2"]
    assert env.origin.count("/a") == 2


async def test_304_that_does_not_select_the_entry_causes_a_full_fetch(edge_env):
    env = await edge_env()
    route = await cached(env)
    route.not_modified = [("ETag", '"other"'), ("Cache-Control", "max-age=60")]
    route.headers = [("Cache-Control", "max-age=60"), ("ETag", '"v1"')]
    route.body = b"v2"
    env.clock.advance(61)
    r = await env.get("/a")
    assert r.body == b"v2"
    assert r.cache_status == member("fwd=stale", "fwd-status=200", "stored")
    conditional, full = env.origin.requests("/a")[1:]
    assert conditional.header("If-None-Match") == '"v1"'
    assert full.header("If-None-Match") is None


async def test_changed_resource_replaces_the_entry(edge_env):
    env = await edge_env()
    route = await cached(env)
    route.headers = [("Cache-Control", "max-age=60"), ("ETag", '"v2"')]
    route.body = b"v2"
    env.clock.advance(61)
    r = await env.get("/a")
    assert (r.body, r.headers["ETag"]) == (b"v2", '"v2"')
    assert r.cache_status == member("fwd=stale", "fwd-status=200", "stored")
    r = await env.get("/a")
    assert (r.body, r.cache_status) == (b"v2", member("hit", "ttl=60"))


async def test_response_no_cache_is_validated_on_every_use(edge_env):
    env = await edge_env()
    await cached(env, headers=[("Cache-Control", "max-age=600, no-cache")])
    for n in (2, 3):
        r = await env.get("/a")
        assert (r.body, r.cache_status) == (b"v1", validated())
        assert env.origin.count("/a") == n


async def test_must_revalidate_validates_when_stale(edge_env):
    env = await edge_env()
    await cached(env, headers=[("Cache-Control", "max-age=10, must-revalidate, "
                                                 "stale-while-revalidate=100")])
    r = await env.get("/a")
    assert r.cache_status == member("hit", "ttl=10")
    env.clock.advance(11)
    r = await env.get("/a")
    assert r.cache_status == validated()
    assert env.origin.count("/a") == 2


@pytest.mark.parametrize(("conditional", "expect"), [
    ([("If-None-Match", '"v1"')], 304),
    ([("If-None-Match", 'W/"v1"')], 304),  # weak comparison
    ([("If-None-Match", '"x", "v1"')], 304),
    ([("If-None-Match", "*")], 304),
    ([("If-None-Match", '"v2"')], 200),
    ([("If-Modified-Since", "LM")], 304),
    ([("If-Modified-Since", "LM-1")], 200),
    ([("If-None-Match", '"v2"'), ("If-Modified-Since", "LM")], 200),  # INM wins
])
async def test_client_conditionals_are_answered_by_the_edge(edge_env, conditional, expect):
    env = await edge_env()
    await cached(env, lm=-100)
    lm = env.clock.http_date(-100)
    headers = [(n, lm if v == "LM" else env.clock.http_date(-101) if v == "LM-1" else v)
               for n, v in conditional]
    r = await env.get("/a", headers)
    assert r.status == expect
    assert r.cache_status == member("hit", "ttl=60")
    if expect == 304:
        assert r.body == b""
        assert r.headers["ETag"] == '"v1"'
        assert r.headers["Cache-Control"] == "max-age=60"
        assert r.headers["Last-Modified"] == lm
        assert "Content-Length" not in r.headers
    else:
        assert r.body == b"v1"
    assert env.origin.count("/a") == 1


async def test_client_conditional_on_a_miss_is_not_forwarded(edge_env):
    env = await edge_env()
    env.origin.route("/a", headers=[("Cache-Control", "max-age=60"), ("ETag", '"v1"')],
                     body=b"v1")
    r = await env.get("/a", [("If-None-Match", '"v1"'), ("Range", "bytes=0-0")])
    assert (r.status, r.cache_status) == (304, MISS)
    seen = env.origin.last("/a")
    assert seen.header("If-None-Match") is None and seen.header("Range") is None
    r = await env.get("/a")
    assert (r.status, r.body) == (200, b"v1")


async def test_304_from_the_edge_has_a_date(edge_env):
    env = await edge_env()
    await cached(env)
    r = await env.get("/a", [("If-None-Match", '"v1"')])
    assert r.status == 304
    assert parse_http_date(r.headers.get("Date")) == env.clock.now


# -- Vary ----------------------------------------------------------------------------------------
def by_language(env):
    async def handler(request: web.Request) -> web.Response:
        lang = request.headers.get("Accept-Language", "none")
        return web.Response(body=f"hello in {lang}".encode(), headers={
            "Cache-Control": "max-age=60", "Vary": "Accept-Language",
            "Date": env.clock.http_date()})
    return handler


async def test_vary_variants_are_stored_side_by_side(edge_env):
    env = await edge_env()
    env.origin.route("/v", handler=by_language(env))
    steps = [("en", b"hello in en", MISS),
             ("fr", b"hello in fr", member("fwd=vary-miss", "fwd-status=200", "stored")),
             ("en", b"hello in en", member("hit", "ttl=60")),
             ("fr", b"hello in fr", member("hit", "ttl=60")),
             (None, b"hello in none", member("fwd=vary-miss", "fwd-status=200", "stored")),
             (None, b"hello in none", member("hit", "ttl=60")),
             ("fr", b"hello in fr", member("hit", "ttl=60"))]
    for lang, body, status in steps:
        r = await env.get("/v", [("Accept-Language", lang)] if lang else [])
        assert (r.body, r.cache_status, r.headers["Vary"]) == (body, status, "Accept-Language")
    assert env.origin.count("/v") == 3
    assert [s.header("Accept-Language") for s in env.origin.requests("/v")] == ["en", "fr", None]


async def test_vary_star_is_never_served_from_cache(edge_env):
    env = await edge_env()
    env.origin.route("/v", headers=[("Cache-Control", "public, max-age=60"), ("Vary", "*")],
                     body=b"x")
    statuses = [(await env.get("/v")).cache_status for _ in range(3)]
    assert statuses == [member("fwd=uri-miss", "fwd-status=200", "detail=vary-star")] + [
        member("fwd=uri-miss", "fwd-status=200", "detail=hit-for-miss")] * 2
    assert env.origin.count("/v") == 3


# -- invalidation --------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_unsafe_methods_are_forwarded_with_body_and_invalidate(edge_env, method):
    env = await edge_env()
    env.origin.route("/a", echo=True, headers=[("Cache-Control", "max-age=60")])
    assert (await env.get("/a")).cache_status == MISS
    payload = bytes(range(256)) * 4
    r = await env.request(method, "/a", [("Content-Type", "application/x-test")], payload)
    assert r.status == 200
    assert r.cache_status == member("fwd=method", "fwd-status=200")
    doc = r.json()
    assert doc["method"] == method
    assert doc["body"].encode("latin-1") == payload
    assert ["Content-Type", "application/x-test"] in doc["headers"]
    r = await env.get("/a")
    assert r.cache_status == MISS
    assert r.json()["method"] == "GET"
    assert [s.method for s in env.origin.seen] == ["GET", method, "GET"]


async def test_location_and_content_location_are_invalidated_same_origin_only(edge_env):
    env = await edge_env()
    for path in ("/a", "/b", "/c", "/d"):
        env.origin.route(path, headers=[("Cache-Control", "max-age=60")], body=path.encode())
        await env.get(path)
    env.origin.route("/form", status=303, headers=[
        ("Location", "/a"), ("Content-Location", f"http://{env.host}/b")])
    env.origin.route("/form2", status=201, headers=[
        ("Location", "http://other.example/c"), ("Content-Location", "d")])
    assert (await env.request("POST", "/form", data=b"x")).status == 303
    assert (await env.request("POST", "/form2", data=b"x")).status == 201
    statuses = {p: (await env.get(p)).cache_status for p in ("/a", "/b", "/c", "/d")}
    assert statuses == {"/a": MISS, "/b": MISS, "/c": member("hit", "ttl=60"), "/d": MISS}


async def test_error_responses_do_not_invalidate(edge_env):
    env = await edge_env()
    env.origin.route("/a", headers=[("Cache-Control", "max-age=60")], body=b"x")
    await env.get("/a")
    env.origin.routes["/a"].status = 500
    r = await env.request("POST", "/a", data=b"x")
    assert (r.status, r.cache_status) == (500, member("fwd=method", "fwd-status=500"))
    r = await env.get("/a")
    assert (r.status, r.cache_status) == (200, member("hit", "ttl=60"))


async def test_options_is_passed_and_does_not_invalidate(edge_env):
    env = await edge_env()
    env.origin.route("/a", echo=True, headers=[("Cache-Control", "max-age=60")])
    await env.get("/a")
    r = await env.request("OPTIONS", "/a")
    assert json.loads(r.body)["method"] == "OPTIONS"
    assert r.cache_status == member("fwd=method", "fwd-status=200")
    assert (await env.get("/a")).cache_status == member("hit", "ttl=60")


async def test_a_response_that_starts_to_vary_is_cached_again(edge_env):
    env = await edge_env()
    route = env.origin.route("/v", headers=[("Cache-Control", "max-age=10")], body=b"plain")
    await env.get("/v")
    route.headers = [("Cache-Control", "max-age=10"), ("Vary", "Accept-Language")]
    route.body = b"varied"
    env.clock.advance(15)
    en = [("Accept-Language", "en")]
    assert (await env.get("/v", en)).cache_status == member("fwd=stale", "fwd-status=200",
                                                            "stored")
    r = await env.get("/v", en)
    assert (r.body, r.cache_status) == (b"varied", member("hit", "ttl=10"))
    assert env.origin.count("/v") == 2
