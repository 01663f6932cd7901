"""Security holes an attacker could use against one edge (issue: cache poisoning, eviction).

Each test drives a real edge over real sockets in front of a real origin, the way the attack
was reproduced: key poisoning through Host and the target, Vary on a header the client asked
the edge to strip, GET bodies that hang the fill, and evictions any client could provoke.
"""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from edgeutil import WAIT, edge_env, member, read_response

__all__ = ["edge_env"]

CACHED = [("Cache-Control", "max-age=60")]


def raw_get(target: str, host: str, *extra: str, method: str = "GET") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", *extra, "", ""]
    return "\r\n".join(lines).encode("latin-1")


async def exchange(env, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection; the parsed response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", env.edge.port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(WAIT):
            status, headers, body = await read_response(reader)
        return status, dict(headers), body
    finally:
        writer.close()


# -- 1. cache key poisoning ---------------------------------------------------------------------
@pytest.mark.parametrize("host", [
    "{h}/page", "{h}?page", "{h}#page", "evil@{h}", "{h}\\page", "{h}:99999", "{h}..",
    "{h}:8o", "[::1", "{h}%2fpage",
])
async def test_a_host_that_is_not_host_port_is_refused_and_plants_nothing(edge_env, host):
    env = await edge_env()
    env.origin.route("/x", headers=CACHED, body=b"the answer for /x")
    env.origin.route("/page/x", headers=CACHED, body=b"the real /page/x")
    await env.get("/page/x")  # cached
    bad = host.format(h=env.host)
    status, _, _ = await exchange(env, raw_get("/x", bad, "Cache-Control: no-cache"))
    assert status == 400
    assert env.origin.count("/x") == 0  # never forwarded
    r = await env.get("/page/x")
    assert (r.body, r.cache_status) == (b"the real /page/x", member("hit", "ttl=60"))


@pytest.mark.parametrize(("target", "host_header"), [
    ("/a/../x", "{h}"),
    ("/%78", "{h}"),
    ("/./x", "{h}"),
    ("http://{h}/x", "other.example"),  # absolute-form: its authority, not Host
    ("http://{H}:{p}/x", "other.example"),
])
async def test_equivalent_requests_share_one_key_and_the_origin_sees_that_key(
        edge_env, target, host_header):
    env = await edge_env()
    env.origin.route("/x", headers=CACHED, body=b"X")
    await env.get("/x")
    port = env.edge.port
    t = target.format(h=env.host, H="127.0.0.1".upper(), p=port)
    status, headers, body = await exchange(env, raw_get(t, host_header.format(h=env.host)))
    assert (status, body) == (200, b"X")
    assert headers["Cache-Status"] == member("hit", "ttl=60")
    assert env.origin.count("/x") == 1


async def test_the_origin_receives_the_normalised_host_and_target(edge_env):
    env = await edge_env()
    env.origin.route("/x", headers=[("Cache-Control", "no-store")], body=b"X")
    status, _, _ = await exchange(env, raw_get("/y/../%78", f"127.0.0.1.:{env.edge.port}"))
    assert status == 200
    seen = env.origin.last("/x")
    assert seen.header("Host") == env.host
    assert seen.path == "/x"


async def test_connect_is_not_proxied(edge_env):
    env = await edge_env()
    status, _, _ = await exchange(env, raw_get(env.host, env.host, method="CONNECT"))
    assert status == 501
    assert env.origin.seen == []


@pytest.mark.parametrize("header", [
    "X-Forwarded-Host: evil.example", "X-Original-URL: /admin", "X-Rewrite-URL: /admin",
    "Forwarded: host=evil.example;proto=https", "X-Forwarded-Port: 4443", "X-Host: evil.example",
    "X-HTTP-Method-Override: DELETE", "X-Forwarded-Scheme: https",
])
async def test_unkeyed_forwarding_headers_never_reach_the_origin(edge_env, header):
    env = await edge_env()
    env.origin.route("/x", headers=CACHED, echo=True)
    status, _, body = await exchange(env, raw_get("/x", env.host, header))
    assert status == 200
    name, value = (part.strip() for part in header.split(":", 1))
    seen = env.origin.last("/x").header(name)
    assert seen is None or (name == "Forwarded" and seen == "for=127.0.0.1;proto=http")
    assert value.encode() not in body


async def test_trusted_forwarding_headers_are_forwarded_and_keyed(edge_env):
    env = await edge_env(trusted_forwarding_headers=["X-Forwarded-Host"])
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        fwd = request.headers.get("X-Forwarded-Host", "-")
        return web.Response(body=f"links to {fwd}".encode(), headers=dict(CACHED))

    env.origin.route("/x", handler=handler)
    a = await env.get("/x", [("X-Forwarded-Host", "a.example")])
    b = await env.get("/x", [("X-Forwarded-Host", "b.example")])
    plain = await env.get("/x")
    assert (a.body, b.body, plain.body) == (b"links to a.example", b"links to b.example",
                                             b"links to -")
    again = await env.get("/x", [("X-Forwarded-Host", "a.example")])
    assert (again.body, again.cache_status) == (b"links to a.example", member("hit", "ttl=60"))
    assert calls == 3
    assert (await env.purge("/x")).json()["purged"] == 3  # the URL's keyed variants too


# -- 2. Vary on a header the client named in Connection -----------------------------------------
@pytest.mark.parametrize("field", ["User-Agent", "Origin", "Accept-Language", "Cookie"])
async def test_vary_selects_by_what_the_origin_saw(edge_env, field):
    env = await edge_env()

    async def handler(request: web.Request) -> web.Response:
        seen = request.headers.get(field, "absent")
        return web.Response(body=f"for {seen}".encode(),
                            headers={"Cache-Control": "public, max-age=60", "Vary": field})

    env.origin.route("/v", handler=handler)
    popular = "popular-value"
    # the attack: ask the edge to strip the field, so the origin answers for "absent"
    attack = await env.get("/v", [(field, popular), ("Connection", field)])
    assert attack.body == b"for absent"
    victim = await env.get("/v", [(field, popular)])
    assert victim.body == f"for {popular}".encode()
    assert victim.cache_status.startswith(member("fwd="))
    # and the answer for "absent" is what a request that the origin sees without it gets
    again = await env.get("/v", [(field, popular), ("Connection", field)])
    assert (again.body, again.cache_status) == (b"for absent", member("hit", "ttl=60"))
    none = await env.get("/v")
    assert (none.body, none.cache_status) == (b"for absent", member("hit", "ttl=60"))


# -- 3. GET and HEAD with a body ----------------------------------------------------------------
@pytest.mark.parametrize("framing", [
    ["Content-Length: 5"], ["Transfer-Encoding: chunked"],
])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_a_get_body_and_its_framing_are_not_forwarded(edge_env, framing, method):
    env = await edge_env()
    env.origin.route("/b", headers=CACHED, body=b"B")
    body = b"hello" if framing[0].startswith("Content-Length") else b"5\r\nhello\r\n0\r\n\r\n"
    data = raw_get("/b", env.host, *framing, method=method) + body
    # a second request on the same connection proves the body was consumed, not parsed
    data += raw_get("/b", env.host, "Connection: close")
    reader, writer = await asyncio.open_connection("127.0.0.1", env.edge.port)
    try:
        writer.write(data)
        async with asyncio.timeout(WAIT):
            first = await read_response(reader)
            second = await read_response(reader)
    finally:
        writer.close()
    assert first[0] == second[0] == 200
    assert second[2] == b"B"
    seen = env.origin.last("/b")
    assert seen.header("Content-Length") is None
    assert seen.header("Transfer-Encoding") is None
    assert seen.body == b""
    assert env.app.pool.snapshot()[0]["up"] is True


async def test_a_passed_post_is_framed_by_what_is_sent(edge_env):
    env = await edge_env()
    env.origin.route("/p", echo=True)
    r = await env.request("POST", "/p", [("Content-Type", "text/plain")], b"12345")
    assert r.status == 200
    seen = env.origin.last("/p")
    assert (seen.body, seen.header("Content-Length")) == (b"12345", "5")


# -- 4. no free eviction ------------------------------------------------------------------------
async def test_a_request_that_cannot_be_stored_evicts_nothing(edge_env):
    env = await edge_env()
    env.origin.route("/e", headers=CACHED, body=b"E")
    await env.get("/e")
    r = await env.get("/e", [("Authorization", "Bearer x"), ("Cache-Control", "no-cache")])
    assert r.cache_status == member("fwd=request", "fwd-status=200", "detail=authorization")
    after = await env.get("/e")
    assert (after.body, after.cache_status) == (b"E", member("hit", "ttl=60"))
    assert env.origin.count("/e") == 2


async def test_a_new_variant_with_authorization_keeps_the_others(edge_env):
    env = await edge_env()
    env.origin.route("/l", headers=[*CACHED, ("Vary", "Accept-Language")], body=b"L")
    await env.get("/l", [("Accept-Language", "en")])
    await env.get("/l", [("Accept-Language", "de")])
    r = await env.get("/l", [("Accept-Language", "fr"), ("Authorization", "Bearer x")])
    assert r.cache_status.endswith("detail=authorization")
    for lang in ("en", "de"):
        hit = await env.get("/l", [("Accept-Language", lang)])
        assert hit.cache_status == member("hit", "ttl=60"), lang


async def test_an_uncacheable_answer_marks_only_its_own_variant(edge_env):
    env = await edge_env()
    route = env.origin.route("/m", headers=[*CACHED, ("Vary", "Accept-Language")], body=b"M")
    await env.get("/m", [("Accept-Language", "en")])
    route.headers = [("Cache-Control", "private"), ("Vary", "Accept-Language")]
    r = await env.get("/m", [("Accept-Language", "fr")])
    assert r.cache_status.endswith("detail=private")
    again = await env.get("/m", [("Accept-Language", "fr")])
    assert again.cache_status.endswith("detail=hit-for-miss")
    en = await env.get("/m", [("Accept-Language", "en")])
    assert en.cache_status == member("hit", "ttl=60")


async def test_an_uncacheable_answer_does_not_replace_a_stored_one(edge_env):
    env = await edge_env()
    route = env.origin.route("/n", headers=CACHED, body=b"N")
    await env.get("/n")
    route.headers = [("Cache-Control", "no-store")]
    r = await env.get("/n", [("Cache-Control", "no-cache")])  # revalidation gets no-store
    assert r.cache_status.endswith("detail=no-store")
    assert (await env.get("/n")).cache_status == member("hit", "ttl=60")


@pytest.mark.parametrize("directive", [
    ("Cache-Control", "no-cache"), ("Cache-Control", "max-age=0"), ("Pragma", "no-cache"),
    ("Cache-Control", "no-store"), ("Cache-Control", "min-fresh=3600"),
])
async def test_client_cache_control_is_ignored_by_default(edge_env, directive):
    env = await edge_env(request_cache_control=None)  # the default: "ignore"
    env.origin.route("/i", headers=CACHED, body=b"I")
    await env.get("/i")
    r = await env.get("/i", [directive])
    assert (r.body, r.cache_status) == (b"I", member("hit", "ttl=60"))
    assert env.origin.count("/i") == 1


async def test_client_cache_control_is_honoured_when_configured(edge_env):
    env = await edge_env(request_cache_control="honour")
    env.origin.route("/h", headers=CACHED, body=b"H")
    await env.get("/h")
    r = await env.get("/h", [("Cache-Control", "no-cache")])
    assert r.cache_status.startswith(member("fwd=request"))
    assert env.origin.count("/h") == 2


async def test_variants_per_url_are_capped_oldest_first(edge_env):
    env = await edge_env(max_variants=3)
    env.origin.route("/c", headers=[*CACHED, ("Vary", "User-Agent")], body=b"C")
    for i in range(5):
        await env.get("/c", [("User-Agent", f"agent-{i}")])
    assert env.app.store.variant_count(env.key("/c")) == 3
    assert (await env.get("/c", [("User-Agent", "agent-4")])).cache_status == member(
        "hit", "ttl=60")
    assert (await env.get("/c", [("User-Agent", "agent-0")])).cache_status.startswith(
        member("fwd="))


async def test_raw_brackets_and_high_bytes_are_encoded_alike_for_key_and_origin(edge_env):
    env = await edge_env()
    env.origin.route("/arr", headers=CACHED, body=b"ARR")
    status, _, _ = await exchange(env, raw_get("/arr?a[]=1", env.host))
    assert status == 200
    assert env.origin.last("/arr?a%5B%5D=1").path == "/arr?a%5B%5D=1"
    status, headers, _ = await exchange(env, raw_get("/arr?a%5b%5d=1", env.host))
    assert (status, headers["Cache-Status"]) == (200, member("hit", "ttl=60"))
    status, _, _ = await exchange(env, raw_get("/a\\..\\arr", env.host))
    assert status == 400
