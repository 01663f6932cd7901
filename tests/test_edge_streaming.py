"""Large bodies stream through unbuffered and unstored; the store stays within its byte bound."""

from __future__ import annotations

import asyncio
import hashlib

import aiohttp
import pytest
from aiohttp import web
from edgeutil import WAIT, edge_env, member

__all__ = ["edge_env"]

KIB = 1024
MIB = 1024 * KIB
LIMITS = {"max_object_bytes": 64 * KIB, "cache_max_bytes": 1 * MIB}
CACHEABLE = [("Cache-Control", "public, max-age=60")]


def blob(n: int, seed: bytes = b"seed") -> bytes:
    """n bytes that differ everywhere (a misplaced chunk changes the hash)."""
    out = bytearray()
    block = seed
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


TOO_LARGE = member("fwd=uri-miss", "fwd-status=200", "detail=too-large")
HFM = member("fwd=uri-miss", "fwd-status=200", "detail=hit-for-miss")


async def test_large_body_with_length_streams_byte_exact_and_is_not_stored(edge_env):
    env = await edge_env(**LIMITS)
    body = blob(1 * MIB)
    env.origin.route("/big", headers=CACHEABLE, body=body)
    r1 = await env.get("/big")
    assert (r1.status, r1.headers["Content-Length"], r1.cache_status) == (200, str(MIB),
                                                                          TOO_LARGE)
    assert r1.body == body
    r2 = await env.get("/big")
    assert (r2.body == body, r2.cache_status) == (True, HFM)
    assert env.origin.count("/big") == 2
    assert env.app.store.size_bytes < 64 * KIB
    r3 = await env.request("HEAD", "/big")
    assert (r3.status, r3.body, r3.headers["Content-Length"]) == (200, b"", str(MIB))


async def test_chunked_body_growing_past_the_limit_streams_through(edge_env):
    env = await edge_env(**LIMITS)
    chunks = [blob(16 * KIB, bytes([i])) for i in range(64)]  # 1 MiB, no length
    env.origin.route("/grow", headers=CACHEABLE, chunks=chunks)
    for expected in (TOO_LARGE, HFM):
        r = await env.get("/grow")
        assert r.status == 200
        assert r.cache_status == expected
        assert "Content-Length" not in r.headers
        assert r.headers["Transfer-Encoding"] == "chunked"
        assert r.body == b"".join(chunks)
    assert env.origin.count("/grow") == 2
    assert env.app.store.size_bytes < 64 * KIB


async def test_chunked_body_within_the_limit_is_stored(edge_env):
    env = await edge_env(**LIMITS)
    chunks = [blob(8 * KIB, bytes([i])) for i in range(8)]  # exactly 64 KiB
    env.origin.route("/fits", headers=CACHEABLE, chunks=chunks)
    r = await env.get("/fits")
    assert r.cache_status == member("fwd=uri-miss", "fwd-status=200", "stored")
    r = await env.get("/fits")
    assert (r.cache_status, r.headers["Content-Length"]) == (member("hit", "ttl=60"),
                                                             str(64 * KIB))
    assert r.body == b"".join(chunks)


@pytest.mark.parametrize("with_length", [True, False])
async def test_large_body_reaches_the_client_before_the_origin_finishes(edge_env, with_length):
    env = await edge_env(**LIMITS)
    first = [blob(64 * KIB, b"a"), blob(64 * KIB, b"b")]
    rest = blob(512 * KIB, b"c")
    gate = asyncio.Event()
    headers = list(CACHEABLE)
    if with_length:
        headers.append(("Content-Length", str(128 * KIB + len(rest))))
    env.origin.route("/live", headers=headers, chunks=[*first, rest], chunk_gate=(1, gate))
    async with asyncio.timeout(WAIT), env.client.get(env.url("/live")) as r:
        head = await r.content.readexactly(128 * KIB)  # while the origin is still held
        assert head == b"".join(first)
        assert not gate.is_set()
        gate.set()
        tail = await r.read()
    assert tail == rest
    assert r.headers["Cache-Status"] == TOO_LARGE


async def test_origin_dying_mid_body_truncates_the_client_response(edge_env):
    env = await edge_env(**LIMITS)

    async def dies(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Cache-Control": "max-age=60",
                                           "Content-Length": str(MIB)})
        await resp.prepare(request)
        await resp.write(blob(200 * KIB))
        assert request.transport is not None
        request.transport.abort()
        return resp

    env.origin.route("/dies", handler=dies)
    with pytest.raises(aiohttp.ClientPayloadError):
        async with asyncio.timeout(WAIT), env.client.get(env.url("/dies")) as r:
            await r.read()
    assert env.app.store.get(env.key("/dies"), (), env.clock()).hit_for_miss
    r = await env.get("/healthz")  # the edge is fine
    assert r.status == 200


# -- the byte bound of the store -------------------------------------------------------------------
async def test_store_stays_within_cache_max_bytes_and_evicts_lru(edge_env):
    bound = 96 * KIB  # ten 4000-byte objects and their real overhead (edge/store.py) fit
    env = await edge_env(cache_max_bytes=bound, max_object_bytes=8 * KIB)
    store = env.app.store
    paths = [f"/o/{i}" for i in range(40)]
    for i, p in enumerate(paths):
        env.origin.route(p, headers=CACHEABLE, body=blob(4000, bytes([i])))

    for p in paths[:10]:
        assert (await env.get(p)).cache_status == member("fwd=uri-miss", "fwd-status=200",
                                                         "stored")
        assert store.size_bytes <= bound
    assert len(store) == 10
    assert (await env.get(paths[0])).cache_status == member("hit", "ttl=60")  # touch /o/0
    for p in paths[10:]:
        await env.get(p)
        assert store.size_bytes <= bound
    kept = len(store)
    assert 10 < kept < 40
    one = store.get(env.key(paths[-1]), (), env.clock()).size
    assert store.size_bytes + one > bound  # full: another entry would not fit
    lru_order = paths[1:10] + paths[:1] + paths[10:]  # least recently used first
    survivors = set(lru_order[-kept:])
    stored = {p for p in paths if store.get(env.key(p), (), env.clock()) is not None}
    assert stored == survivors
    assert env.origin.count() == 40
    r = await env.get(paths[-1])
    assert (r.cache_status, r.body) == (member("hit", "ttl=60"), blob(4000, bytes([39])))


async def test_object_above_max_object_bytes_evicts_nothing(edge_env):
    env = await edge_env(cache_max_bytes=64 * KIB, max_object_bytes=8 * KIB)
    env.origin.route("/small", headers=CACHEABLE, body=b"s")
    env.origin.route("/huge", headers=CACHEABLE, body=blob(60 * KIB))
    await env.get("/small")
    r = await env.get("/huge")
    assert r.cache_status == TOO_LARGE
    assert r.body == blob(60 * KIB)
    assert (await env.get("/small")).cache_status == member("hit", "ttl=60")


async def test_origin_dying_while_the_edge_buffers_is_502_and_nothing_is_stored(edge_env):
    env = await edge_env(**LIMITS)

    async def dies(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Cache-Control": "max-age=60"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(blob(10 * KIB))
        assert request.transport is not None
        request.transport.abort()
        return resp

    env.origin.route("/dies", handler=dies)
    r = await env.get("/dies")
    assert r.status == 502
    assert r.cache_status == member("fwd=uri-miss", "detail=origin-unreachable")
    assert env.app.store.get(env.key("/dies"), (), env.clock()) is None
