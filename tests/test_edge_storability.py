"""What the edge stores, for how long, and which fields it keeps (real origin, real edge)."""

from __future__ import annotations

import pytest
from edgeutil import FakeClock, edge_env, member

__all__ = ["edge_env"]

CLOCK = FakeClock()  # only for building dates in the table; every test has its own clock
D = CLOCK.http_date  # D(offset) -> an HTTP-date relative to the fake clock's start


def stored(ttl: int) -> tuple[str, str]:
    return member("fwd=uri-miss", "fwd-status=200", "stored"), member("hit", f"ttl={ttl}")


def passed(reason: str, status: int = 200) -> tuple[str, str]:
    return (member("fwd=uri-miss", f"fwd-status={status}", f"detail={reason}"),
            member("fwd=uri-miss", f"fwd-status={status}", "detail=hit-for-miss"))


def passed_for_request(reason: str) -> tuple[str, str]:
    """Not storable because of the request: nothing is marked, the next one asks again."""
    first = member("fwd=uri-miss", "fwd-status=200", f"detail={reason}")
    return first, first


# (response status, response headers, request headers, first Cache-Status, second Cache-Status)
CASES = {
    "max-age": (200, [("Cache-Control", "max-age=100")], [], *stored(100)),
    "no-store": (200, [("Cache-Control", "no-store, max-age=100")], [], *passed("no-store")),
    "private": (200, [("Cache-Control", "private, max-age=100")], [], *passed("private")),
    "authorization": (200, [("Cache-Control", "max-age=100")],
                      [("Authorization", "Bearer u")], *passed_for_request("authorization")),
    "authorization+public": (200, [("Cache-Control", "public, max-age=100")],
                             [("Authorization", "Bearer u")], *stored(100)),
    "authorization+s-maxage": (200, [("Cache-Control", "s-maxage=100")],
                               [("Authorization", "Bearer u")], *stored(100)),
    "authorization+must-revalidate": (200, [("Cache-Control", "max-age=100, must-revalidate")],
                                      [("Authorization", "Bearer u")], *stored(100)),
    "s-maxage wins over max-age": (200, [("Cache-Control", "max-age=10, s-maxage=300")], [],
                                   *stored(300)),
    "max-age wins over Expires": (200, [("Cache-Control", "max-age=50"), ("Expires", D(900))],
                                  [], *stored(50)),
    "Expires": (200, [("Expires", D(120))], [], *stored(120)),
    "Expires relative to Date": (200, [("Date", D(-30)), ("Expires", D(90))], [],
                                 # lifetime Expires-Date = 120, apparent age 30
                                 *stored(90)),
    "heuristic from Last-Modified": (200, [("Last-Modified", D(-1000))], [], *stored(100)),
    "heuristic 404": (404, [("Last-Modified", D(-500))], [],
                      member("fwd=uri-miss", "fwd-status=404", "stored"),
                      member("hit", "ttl=50")),
    "404 with max-age": (404, [("Cache-Control", "max-age=30")], [],
                         member("fwd=uri-miss", "fwd-status=404", "stored"),
                         member("hit", "ttl=30")),
    "500 not stored": (500, [("Last-Modified", D(-1000))], [], *passed("no-freshness", 500)),
    "500 with max-age": (500, [("Cache-Control", "max-age=30")], [],
                         member("fwd=uri-miss", "fwd-status=500", "stored"),
                         member("hit", "ttl=30")),
    "302 without freshness": (302, [("Location", "/elsewhere")], [],
                              *passed("no-freshness", 302)),
    "public gives heuristic to 302": (302, [("Cache-Control", "public"),
                                            ("Last-Modified", D(-1000)),
                                            ("Location", "/x")], [],
                                      member("fwd=uri-miss", "fwd-status=302", "stored"),
                                      member("hit", "ttl=100")),
    "set-cookie": (200, [("Cache-Control", "max-age=100"), ("Set-Cookie", "s=1")], [],
                   *passed("set-cookie")),
    "set-cookie+public": (200, [("Cache-Control", "public, max-age=100"),
                                ("Set-Cookie", "s=1")], [], *stored(100)),
    "set-cookie named by no-cache": (200, [("Cache-Control", 'max-age=100, no-cache="Set-Cookie"'),
                                           ("Set-Cookie", "s=1")], [], *stored(100)),
    "vary star": (200, [("Cache-Control", "max-age=100"), ("Vary", "*")], [],
                  *passed("vary-star")),
    "CDN-Cache-Control over no-store": (200, [("Cache-Control", "no-store"),
                                              ("CDN-Cache-Control", "max-age=120")], [],
                                        *stored(120)),
    "CDN-Cache-Control over max-age": (200, [("Cache-Control", "max-age=600"),
                                             ("CDN-Cache-Control", "max-age=20")], [],
                                       *stored(20)),
    "CDN-Cache-Control no-store": (200, [("Cache-Control", "max-age=600"),
                                         ("CDN-Cache-Control", "no-store")], [],
                                   *passed("no-store")),
    "CDN-Cache-Control ignores Expires": (200, [("CDN-Cache-Control", "public"),
                                                ("Expires", D(500)),
                                                ("Last-Modified", D(-100))], [], *stored(10)),
    "invalid CDN-Cache-Control falls back": (200, [("Cache-Control", "max-age=40"),
                                                   ("CDN-Cache-Control", "max-age=\"open")],
                                             [], *stored(40)),
    "Surrogate-Control over Cache-Control": (200, [("Cache-Control", "max-age=5"),
                                                   ("Surrogate-Control", "max-age=120")], [],
                                             *stored(120)),
    "Surrogate-Control no-store": (200, [("Cache-Control", "max-age=600"),
                                         ("Surrogate-Control", "no-store")], [],
                                   *passed("no-store")),
    "CDN-Cache-Control over Surrogate-Control": (200, [("CDN-Cache-Control", "max-age=70"),
                                                       ("Surrogate-Control", "max-age=700")],
                                                 [], *stored(70)),
}


@pytest.mark.parametrize(("status", "resp_headers", "req_headers", "first", "second"),
                         list(CASES.values()), ids=list(CASES))
async def test_storability(edge_env, status, resp_headers, req_headers, first, second):
    env = await edge_env()
    env.origin.route("/r", status=status, headers=resp_headers, body=b"body")
    r1 = await env.get("/r", req_headers)
    assert (r1.status, r1.body) == (status, b"body")
    assert r1.cache_status == first
    r2 = await env.get("/r", req_headers)
    assert (r2.status, r2.body) == (status, b"body")
    assert r2.cache_status == second
    assert env.origin.count("/r") == (1 if second.startswith(member("hit")) else 2)


@pytest.mark.parametrize("expires", ["0", "-1", "not a date", "Thu, 01 Jan 1970 00:00:00 GMT"])
async def test_invalid_or_past_expires_is_stale_at_once(edge_env, expires):
    env = await edge_env()
    env.origin.route("/r", headers=[("Expires", expires)], body=b"body")
    r1 = await env.get("/r")
    assert r1.cache_status == member("fwd=uri-miss", "fwd-status=200", "stored")
    r2 = await env.get("/r")  # lifetime 0: every use is a validation
    assert r2.cache_status == member("fwd=stale", "fwd-status=200", "stored")
    assert env.origin.count("/r") == 2


async def test_heuristic_freshness_only_for_heuristic_statuses(edge_env):
    env = await edge_env()
    lm = env.clock.http_date(-1000)
    env.origin.route("/ok", headers=[("Last-Modified", lm)], body=b"x")
    env.origin.route("/gone", status=410, headers=[("Last-Modified", lm)], body=b"x")
    env.origin.route("/created", status=201, headers=[("Last-Modified", lm)], body=b"x")
    env.origin.route("/teapot", status=418, headers=[("Last-Modified", lm)], body=b"x")
    for path, status in (("/ok", 200), ("/gone", 410)):
        await env.get(path)
        r = await env.get(path)
        assert r.cache_status == member("hit", "ttl=100"), path
        assert r.status == status
    for path, status in (("/created", 201), ("/teapot", 418)):
        await env.get(path)
        r = await env.get(path)
        assert r.cache_status == member("fwd=uri-miss", f"fwd-status={status}",
                                        "detail=hit-for-miss"), path
    assert [env.origin.count(p) for p in ("/ok", "/gone", "/created", "/teapot")] == [1, 1, 2, 2]


async def test_heuristic_is_capped_and_needs_last_modified_before_date(edge_env):
    env = await edge_env()
    env.origin.route("/old", headers=[("Last-Modified", env.clock.http_date(-10**8))])
    env.origin.route("/future", headers=[("Last-Modified", env.clock.http_date(+100))])
    await env.get("/old")
    assert (await env.get("/old")).cache_status == member("hit", "ttl=86400")
    await env.get("/future")  # lifetime 0: revalidated (If-Modified-Since) on every use
    assert (await env.get("/future")).cache_status == member("fwd=stale", "fwd-status=304")
    assert env.origin.last("/future").header("If-Modified-Since") == env.clock.http_date(100)


async def test_surrogate_control_is_stripped_from_client_responses(edge_env):
    env = await edge_env()
    env.origin.route("/r", body=b"x", headers=[("Cache-Control", "max-age=5"),
                                               ("Surrogate-Control", "max-age=120")])
    for _ in range(2):
        r = await env.get("/r")
        assert "Surrogate-Control" not in r.headers
        assert r.headers["Cache-Control"] == "max-age=5"  # forwarded unchanged
    env.clock.advance(100)
    r = await env.get("/r")
    assert (r.cache_status, r.age) == (member("hit", "ttl=20"), 100)
    assert "Surrogate-Control" not in r.headers
    assert env.origin.count("/r") == 1


async def test_cdn_cache_control_is_forwarded(edge_env):
    env = await edge_env()
    env.origin.route("/r", body=b"x", headers=[("Cache-Control", "no-store"),
                                               ("CDN-Cache-Control", "max-age=120")])
    for _ in range(2):
        r = await env.get("/r")
        assert r.headers["CDN-Cache-Control"] == "max-age=120"
        assert r.headers["Cache-Control"] == "no-store"


async def test_cdn_cache_control_configured_target_list(edge_env):
    env = await edge_env(targeted_cache_control=["Geoedge-Cache-Control", "CDN-Cache-Control"])
    env.origin.route("/r", body=b"x", headers=[("CDN-Cache-Control", "max-age=120"),
                                               ("Geoedge-Cache-Control", "max-age=7")])
    await env.get("/r")
    assert (await env.get("/r")).cache_status == member("hit", "ttl=7")


async def test_set_cookie_is_never_replayed_from_the_cache(edge_env):
    env = await edge_env()
    env.origin.route("/r", body=b"x", headers=[("Cache-Control", "public, max-age=100"),
                                               ("Set-Cookie", "session=alice"),
                                               ("X-Other", "kept")])
    await env.get("/r")
    r = await env.get("/r")
    assert r.cache_status == member("hit", "ttl=100")
    assert "Set-Cookie" not in r.headers
    assert r.headers["X-Other"] == "kept"
    entry = env.app.store.get(env.key("/r"), (), env.clock())
    assert "set-cookie" not in {n.lower() for n, _ in entry.meta.headers}


async def test_uncacheable_set_cookie_reaches_the_client(edge_env):
    env = await edge_env()
    env.origin.route("/r", body=b"x", headers=[("Cache-Control", "max-age=100"),
                                               ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")])
    for _ in range(2):
        r = await env.get("/r")
        assert r.headers.getall("Set-Cookie") == ["a=1", "b=2"]


async def test_set_cookie_reaches_the_client_that_fetched_it(edge_env):
    env = await edge_env()
    env.origin.route("/r", body=b"x", headers=[("Cache-Control", "public, max-age=100"),
                                               ("Set-Cookie", "session=alice")])
    r = await env.get("/r")
    assert r.cache_status == member("fwd=uri-miss", "fwd-status=200", "stored")
    assert r.headers.get("Set-Cookie") == "session=alice"


async def test_qualified_private_fields_reach_the_fetching_client_only(edge_env):
    env = await edge_env()
    env.origin.route("/r", body=b"x", headers=[
        ("Cache-Control", 'max-age=100, private="X-User"'), ("X-User", "alice")])
    r1 = await env.get("/r")
    r2 = await env.get("/r")
    assert r2.cache_status == member("hit", "ttl=100")
    assert "X-User" not in r2.headers
    assert r1.headers.get("X-User") == "alice"
