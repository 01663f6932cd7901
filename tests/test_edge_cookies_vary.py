"""Requests with cookies (issue: leaking personalised pages) and Vary normalisation."""

from __future__ import annotations

import pytest
from aiohttp import web
from edgeutil import edge_env, member

from edge.policy.config import PolicyConfig
from edge.policy.freshness import storable
from edge.policy.vary import normalise_accept_encoding, normalise_accept_language

__all__ = ["edge_env"]

MAX60 = ("Cache-Control", "max-age=60")
COOKIE = ("Cookie", "session=abc")

# (request headers, response headers, config, storable reason)
STORABLE = [
    ((COOKIE,), (MAX60,), PolicyConfig(), "cookie"),
    ((COOKIE,), (("Cache-Control", "public, max-age=60"),), PolicyConfig(), "explicit"),
    ((COOKIE,), (("Cache-Control", "s-maxage=60"),), PolicyConfig(), "explicit"),
    ((COOKIE,), (MAX60, ("CDN-Cache-Control", "max-age=60")), PolicyConfig(), "explicit"),
    ((COOKIE,), (MAX60, ("Vary", "Accept-Encoding, Cookie")), PolicyConfig(), "explicit"),
    ((("Cookie", "_ga=1; _gid=2"),), (MAX60,), PolicyConfig(ignored_cookies={"_ga", "_gid"}),
     "explicit"),
    ((("Cookie", "_ga=1; session=2"),), (MAX60,), PolicyConfig(ignored_cookies={"_ga"}),
     "cookie"),
    ((COOKIE,), (MAX60,), PolicyConfig(store_cookie_requests=True), "explicit"),
    ((), (MAX60,), PolicyConfig(), "explicit"),
]


@pytest.mark.parametrize(("req", "resp", "config", "reason"), STORABLE)
def test_storable_with_cookies(req, resp, config, reason):
    assert storable("GET", req, 200, resp, config).reason == reason


@pytest.mark.parametrize(("lines", "expected"), [
    ([], None),
    (["gzip, deflate, br"], "br, gzip, deflate"),
    (["br;q=1.0, gzip;q=0.8, *;q=0.1"], "br, zstd, gzip, deflate"),
    (["GZIP", "x-gzip"], "gzip"),
    (["gzip;q=0, identity"], "identity"),
    (["*;q=0"], "identity"),
    (["compress, sdch"], "identity"),
    (["br;q=bad, gzip"], "gzip"),
    (["zstd, br, gzip"], "br, zstd, gzip"),
])
def test_normalise_accept_encoding(lines, expected):
    assert normalise_accept_encoding(lines) == expected


@pytest.mark.parametrize(("lines", "expected"), [
    ([], None),
    (["en-US,en;q=0.9,de;q=0.8"], "en-us, en, de"),
    (["de;q=0.5, EN-us"], "en-us, de"),
    (["fr;q=0"], None),
    (["en", "en-gb;q=0.7, en;q=0.5"], "en, en-gb"),
])
def test_normalise_accept_language(lines, expected):
    assert normalise_accept_language(lines) == expected


async def test_a_page_for_a_cookie_is_not_served_to_others(edge_env):
    env = await edge_env()

    async def handler(request: web.Request) -> web.Response:
        who = request.cookies.get("session", "anonymous")
        return web.Response(body=f"hello {who}".encode(), headers={"Cache-Control": "max-age=60"})

    env.origin.route("/me", handler=handler)
    mine = await env.get("/me", [COOKIE])
    assert mine.body == b"hello abc"
    assert mine.cache_status.endswith("detail=cookie")
    other = await env.get("/me")
    assert other.body == b"hello anonymous"
    assert other.cache_status.endswith("stored")
    # the shared page is served to cookie-carrying requests too (they were never the issue)
    again = await env.get("/me", [("Cookie", "session=xyz")])
    assert (again.body, again.cache_status) == (b"hello anonymous", member("hit", "ttl=60"))


async def test_ignored_cookies_and_the_opt_in(edge_env):
    env = await edge_env(ignored_cookies=["_ga"])
    env.origin.route("/a", headers=[MAX60], body=b"A")
    r = await env.get("/a", [("Cookie", "_ga=GA1.2.3")])
    assert r.cache_status.endswith("stored")
    env2 = await edge_env(cache_cookie_requests=True)
    env2.origin.route("/b", headers=[MAX60], body=b"B")
    assert (await env2.get("/b", [COOKIE])).cache_status.endswith("stored")


async def test_browsers_that_accept_the_same_codings_share_a_variant(edge_env):
    env = await edge_env()
    env.origin.route("/ae", headers=[MAX60, ("Vary", "Accept-Encoding")], body=b"AE")
    first = await env.get("/ae", [("Accept-Encoding", "gzip, deflate, br")])
    assert first.cache_status.endswith("stored")
    assert env.origin.last("/ae").header("Accept-Encoding") == "br, gzip, deflate"
    for ae in ("br;q=1.0, gzip;q=0.8, deflate", "deflate, gzip, br, sdch", "GZIP, br, deflate"):
        r = await env.get("/ae", [("Accept-Encoding", ae)])
        assert r.cache_status == member("hit", "ttl=60"), ae
    assert env.origin.count("/ae") == 1


async def test_default_ttl_for_answers_without_freshness(edge_env):
    env = await edge_env(default_ttl=300)
    env.origin.route("/d", body=b"D")  # no Cache-Control, no Last-Modified
    first = await env.get("/d")
    assert first.cache_status.endswith("stored")
    env.clock.advance(299)
    assert (await env.get("/d")).cache_status == member("hit", "ttl=1")
    env.origin.route("/x", headers=[("Cache-Control", "max-age=5")], body=b"X")
    await env.get("/x")
    env.clock.advance(6)
    assert (await env.get("/x")).cache_status.startswith(member("fwd="))  # explicit wins


async def test_store_set_cookie_never_replays_the_cookie(edge_env):
    env = await edge_env(store_set_cookie=True)
    env.origin.route("/sc", headers=[MAX60, ("Set-Cookie", "id=1")], body=b"S")
    first = await env.get("/sc")
    assert first.headers.get("Set-Cookie") == "id=1"  # the client that caused the fill
    hit = await env.get("/sc")
    assert hit.cache_status == member("hit", "ttl=60")
    assert "Set-Cookie" not in hit.headers
