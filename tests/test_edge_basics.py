"""Miss, store, hit: Age, Date, Cache-Status, Via, hop-by-hop fields, X-Forwarded-For."""

from __future__ import annotations

import pytest
from edgeutil import VIA, edge_env, member

from geoconfig.httpdate import format_http_date, parse_http_date

__all__ = ["edge_env"]

MAX60 = [("Cache-Control", "max-age=60")]


async def test_miss_then_hit_then_age_follows_the_clock(edge_env):
    env = await edge_env()
    env.origin.route("/a", headers=MAX60, body=b"A" * 100)

    r1 = await env.get("/a")
    assert (r1.status, r1.body) == (200, b"A" * 100)
    assert r1.cache_status == member("fwd=uri-miss", "fwd-status=200", "stored")
    assert r1.age == 0
    assert r1.headers["Via"] == VIA
    assert r1.headers["Content-Length"] == "100"
    assert parse_http_date(r1.headers["Date"]) == env.clock.now

    r2 = await env.get("/a")
    assert (r2.status, r2.body) == (200, b"A" * 100)
    assert r2.cache_status == member("hit", "ttl=60")
    assert r2.age == 0

    env.clock.advance(30)
    r3 = await env.get("/a")
    assert r3.cache_status == member("hit", "ttl=30")
    assert r3.age == 30
    # the origin's Date is kept (RFC 9110 §6.6.1); Age says how old the response is
    assert r3.headers["Date"] == format_http_date(env.clock.now - 30) == r1.headers["Date"]
    assert r3.headers["Via"] == VIA

    env.clock.advance(29.5)  # age 59.5: still fresh, ttl floors to 0
    r4 = await env.get("/a")
    assert (r4.cache_status, r4.age) == (member("hit", "ttl=0"), 59)
    assert env.origin.count("/a") == 1


async def test_entry_becomes_stale_and_is_fetched_again(edge_env):
    env = await edge_env()
    env.origin.route("/a", headers=MAX60, body=b"v1")
    await env.get("/a")
    env.origin.routes["/a"].body = b"v2"
    env.clock.advance(60)  # age == lifetime: stale (fresh only while lifetime > age)
    r = await env.get("/a")
    assert r.body == b"v2"
    assert r.cache_status == member("fwd=stale", "fwd-status=200", "stored")
    assert env.origin.count("/a") == 2
    r = await env.get("/a")
    assert (r.body, r.cache_status, r.age) == (b"v2", member("hit", "ttl=60"), 0)


@pytest.mark.parametrize(
    ("origin_age", "date_offset", "initial"),
    [
        (None, 0, 0),  # nothing: Age starts at 0
        ("10", 0, 10),  # corrected_age_value = Age + response_delay (0)
        ("10", -100, 100),  # apparent_age = response_time - Date wins
        ("100", -10, 100),  # Age wins over apparent age
        (None, -25, 25),  # apparent age alone
        (None, +50, 0),  # a Date in the future: apparent_age is max(0, ...)
        ("junk", 0, 0),  # invalid Age is ignored
    ],
)
async def test_age_per_rfc9111_4_2_3(edge_env, origin_age, date_offset, initial):
    env = await edge_env()
    headers = [("Cache-Control", "max-age=600"), ("Date", env.clock.http_date(date_offset))]
    if origin_age is not None:
        headers.append(("Age", origin_age))
    env.origin.route("/a", headers=headers, body=b"x")
    r1 = await env.get("/a")
    assert r1.age == initial
    assert r1.headers.getall("Age") == [str(initial)]  # the origin's Age is replaced, not added
    env.clock.advance(30)
    r2 = await env.get("/a")
    assert r2.age == initial + 30
    assert r2.cache_status == member("hit", f"ttl={600 - initial - 30}")


async def test_initial_age_beyond_lifetime_is_stale_at_once(edge_env):
    env = await edge_env()
    env.origin.route("/a", headers=[("Cache-Control", "max-age=60"), ("Age", "90")], body=b"x")
    r1 = await env.get("/a")
    assert r1.age == 90
    r2 = await env.get("/a")
    assert r2.cache_status == member("fwd=stale", "fwd-status=200", "stored")
    assert env.origin.count("/a") == 2


async def test_hop_by_hop_fields_are_not_forwarded_to_the_origin(edge_env):
    env = await edge_env()
    env.origin.route("/a", headers=MAX60, body=b"x")
    await env.get("/a", [
        ("Connection", "X-Client-Secret, keep-alive"), ("X-Client-Secret", "s"),
        ("Keep-Alive", "timeout=5"), ("Proxy-Authorization", "Basic eDp5"),
        ("Proxy-Connection", "keep-alive"), ("TE", "trailers"), ("Trailer", "X-T"),
        ("Upgrade", "h2c"), ("X-Client", "kept"),
    ])
    seen = env.origin.last("/a")
    names = {n.lower() for n, _ in seen.raw_headers}
    for hop in ("connection", "x-client-secret", "keep-alive", "proxy-authorization",
                "proxy-connection", "te", "trailer", "upgrade"):
        assert hop not in names, hop
    assert seen.header("X-Client") == "kept"
    assert seen.header("Host") == env.host
    assert seen.header("Via") == VIA
    assert seen.header("X-Forwarded-Proto") == "http"


async def test_hop_by_hop_response_fields_are_neither_stored_nor_sent(edge_env):
    env = await edge_env()
    env.origin.route("/a", body=b"x", headers=[
        ("Cache-Control", "max-age=60"), ("Connection", "X-Secret"), ("X-Secret", "1"),
        ("Keep-Alive", "timeout=5"), ("Proxy-Authenticate", "Basic"), ("Trailer", "X-T"),
        ("Upgrade", "foo"), ("X-Kept", "yes"),
    ])
    for expected in (member("fwd=uri-miss", "fwd-status=200", "stored"),
                     member("hit", "ttl=60")):
        r = await env.get("/a")
        assert r.cache_status == expected
        for hop in ("X-Secret", "Keep-Alive", "Proxy-Authenticate", "Trailer", "Upgrade"):
            assert hop not in r.headers, hop
        assert r.headers.get("Connection", "keep-alive").lower() == "keep-alive"
        assert r.headers["X-Kept"] == "yes"
    entry = env.app.store.get(env.key("/a"), (), env.clock())
    stored = {n.lower() for n, _ in entry.meta.headers}
    assert not stored & {"connection", "x-secret", "keep-alive", "proxy-authenticate",
                         "trailer", "upgrade"}


async def test_x_forwarded_for_and_via_are_appended(edge_env):
    env = await edge_env()
    env.origin.route("/a", headers=[("Cache-Control", "no-store")], body=b"x")
    await env.get("/a", [("X-Forwarded-For", "203.0.113.7, 10.0.0.1"), ("Via", "1.1 lb")])
    seen = env.origin.last("/a")
    assert seen.header("X-Forwarded-For") == "203.0.113.7, 10.0.0.1, 127.0.0.1"
    assert seen.header("Via") == f"1.1 lb, {VIA}"
    await env.get("/a")
    assert env.origin.last("/a").header("X-Forwarded-For") == "127.0.0.1"


async def test_upstream_via_and_cache_status_are_kept_before_ours(edge_env):
    env = await edge_env()
    env.origin.route("/a", body=b"x", headers=[
        ("Cache-Control", "max-age=60"), ("Via", "1.1 shield"),
        ("Cache-Status", "shield; hit"),
    ])
    r = await env.get("/a")
    assert r.headers.getall("Via") == ["1.1 shield", VIA]
    assert ", ".join(r.headers.getall("Cache-Status")) == (
        "shield; hit, " + member("fwd=uri-miss", "fwd-status=200", "stored"))
    r = await env.get("/a")
    assert ", ".join(r.headers.getall("Cache-Status")) == "shield; hit, " + member("hit",
                                                                                   "ttl=60")


async def test_head_miss_fills_the_cache_with_get(edge_env):
    env = await edge_env()
    env.origin.route("/a", headers=MAX60, body=b"0123456789")
    r = await env.request("HEAD", "/a")
    assert (r.status, r.body, r.headers["Content-Length"]) == (200, b"", "10")
    assert r.cache_status == member("fwd=uri-miss", "fwd-status=200", "stored")
    assert [s.method for s in env.origin.seen] == ["GET"]
    r = await env.get("/a")
    assert (r.body, r.cache_status) == (b"0123456789", member("hit", "ttl=60"))
    r = await env.request("HEAD", "/a")
    assert (r.body, r.headers["Content-Length"], r.cache_status) == (
        b"", "10", member("hit", "ttl=60"))
    assert env.origin.count() == 1


async def test_query_strings_are_distinct_keys(edge_env):
    env = await edge_env()
    env.origin.route("/q?a=1", headers=MAX60, body=b"one")
    env.origin.route("/q?a=2", headers=MAX60, body=b"two")
    assert (await env.get("/q?a=1")).body == b"one"
    assert (await env.get("/q?a=2")).body == b"two"
    r = await env.get("/q?a=1")
    assert (r.body, r.cache_status) == (b"one", member("hit", "ttl=60"))
    assert env.origin.count("/q?a=1") == env.origin.count("/q?a=2") == 1


async def test_host_header_is_part_of_the_key(edge_env):
    env = await edge_env()
    env.origin.route("/a", headers=MAX60, body=b"x")
    await env.get("/a", [("Host", "www.example.test")])
    r = await env.get("/a", [("Host", "WWW.example.test:80")])  # same normalised host
    assert r.cache_status == member("hit", "ttl=60")
    r = await env.get("/a", [("Host", "cdn.example.test")])
    assert r.cache_status == member("fwd=uri-miss", "fwd-status=200", "stored")
    assert env.origin.count("/a") == 2


async def test_passed_responses_keep_a_date(edge_env):
    env = await edge_env()
    env.origin.route("/p", headers=[("Cache-Control", "private")], body=b"x")
    r = await env.get("/p")
    assert r.cache_status == member("fwd=uri-miss", "fwd-status=200", "detail=private")
    assert parse_http_date(r.headers.get("Date")) == env.clock.now


async def test_cache_status_ttl_is_floored_when_stale(edge_env):
    env = await edge_env()
    env.origin.route("/a", headers=[("Cache-Control", "max-age=60")], body=b"x")
    await env.get("/a")
    env.clock.advance(60.5)
    r = await env.get("/a", [("Cache-Control", "max-stale")])
    assert r.cache_status == member("hit", "ttl=-1", "detail=request-max-stale")



def test_a_stored_response_without_date_keeps_the_time_it_was_received():
    from edge.policy.freshness import StoredMeta
    from edge.respond import hit_bytes, serialize_stored_head, with_date

    received = 1_750_000_000.0
    headers = with_date((("Cache-Control", "max-age=60"),), received)
    assert headers[-1] == ("Date", format_http_date(received))
    assert with_date((("Date", "x"),), received) == (("Date", "x"),)
    meta = StoredMeta(200, headers, received, received)
    head = serialize_stored_head(meta.status, meta.headers, VIA, 1)
    raw = hit_bytes(head, 20, b"c", b"N", True)
    assert raw.count(b"Date: ") == 1
    assert f"Date: {format_http_date(received)}".encode() in raw
