"""The client-facing HTTP/1.1 server over raw sockets: limits, timeouts, 1.0, pipelining."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from edgeutil import WAIT, edge_env, member, read_response

__all__ = ["edge_env"]

CACHEABLE = [("Cache-Control", "max-age=60")]


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


async def connect(env):
    return await asyncio.open_connection("127.0.0.1", env.edge.port)


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> tuple[bytes, float]:
    """Everything the edge sends until it closes, and how long that took."""
    started = time.monotonic()
    async with asyncio.timeout(seconds):
        data = await reader.read(-1)
    return data, time.monotonic() - started


def get(path: str, host: str = "edge.test", extra: str = "", version: str = "1.1") -> bytes:
    return f"GET {path} HTTP/{version}\r\nHost: {host}\r\n{extra}\r\n".encode()


# -- limits ---------------------------------------------------------------------------------------
async def oversized_header(env) -> bytes:
    return await env.raw(get("/a", extra="X-Big: " + "a" * 4000 + "\r\n"))


async def oversized_body(env) -> bytes:
    return await env.raw(b"POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")


async def test_oversized_requests_are_refused_and_closed(edge_env):
    env = await edge_env(max_header_bytes=2048, max_body_bytes=1000)
    env.origin.route("/post", echo=True)
    ok = await env.raw(get("/healthz", extra="X-Fill: " + "a" * 1500 + "\r\nConnection: close\r\n"))
    assert status_of(ok) == 200
    for raw in (await oversized_header(env), await oversized_body(env),
                await env.raw(b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")):
        assert status_of(raw) in (413, 431)  # exact codes: the tests below
        assert b"\r\nConnection: close\r\n" in raw  # and raw() returned: the edge closed
    chunked = (b"POST /post HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"200\r\n" + b"x" * 512 + b"\r\n" + b"200\r\n" + b"y" * 512 + b"\r\n0\r\n\r\n")
    assert status_of(await env.raw(chunked)) in (400, 413)
    r = await env.request("POST", "/post", data=b"z" * 1000)  # at the limit: fine
    assert r.status == 200 and r.json()["body"] == "z" * 1000
    assert env.origin.count() == 1


async def test_header_too_large_is_431(edge_env):
    env = await edge_env(max_header_bytes=2048)
    assert status_of(await oversized_header(env)) == 431


async def test_body_too_large_is_413(edge_env):
    env = await edge_env(max_body_bytes=1000)
    assert status_of(await oversized_body(env)) == 413


@pytest.mark.parametrize("garbage", [b"\x00\x01\x02garbage\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                                     b"GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
                                     b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
                                     b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
                                     # request smuggling shapes
                                     b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                                     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                                     b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                                     b"Content-Length: 2\r\n\r\nab",
                                     b"GET / HTTP/1.1\r\nHost : x\r\n\r\n"])
async def test_garbage_is_400_and_close(edge_env, garbage):
    env = await edge_env()
    raw = await env.raw(garbage)
    assert status_of(raw) == 400
    assert raw.endswith(b"400 Bad Request\n")


@pytest.mark.parametrize("cached", [False, True])
async def test_h2c_upgrade_request_gets_one_response(edge_env, cached):
    env = await edge_env()
    env.origin.route("/a", headers=CACHEABLE, body=b"hello")
    if cached:
        await env.get("/a", [("Host", "x")])
    reader, writer = await connect(env)
    writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                 b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
    async with asyncio.timeout(WAIT):
        status, _, body = await read_response(reader)
        writer.write(get("/healthz", host="x"))  # and the connection is still usable
        status2, _, _ = await read_response(reader)
    writer.close()
    assert (status, body, status2) == (200, b"hello", 200)


@pytest.mark.parametrize("hosts", [b"", b"Host: a.test\r\nHost: b.test\r\n"])
async def test_missing_or_repeated_host_is_400(edge_env, hosts):
    env = await edge_env()
    env.origin.route("/a", headers=CACHEABLE, body=b"x")
    raw = await env.raw(b"GET /a HTTP/1.1\r\n" + hosts + b"Connection: close\r\n\r\n")
    assert status_of(raw) == 400
    assert env.origin.count() == 0


@pytest.mark.parametrize("line", [b"GET http://example.test/a HTTP/1.1", b"OPTIONS * HTTP/1.1"])
async def test_absolute_and_asterisk_form_get_a_response(edge_env, line):
    env = await edge_env()
    env.origin.route("/a", headers=CACHEABLE, body=b"hello")
    env.origin.route("*", echo=True)
    raw = await env.raw(line + b"\r\nHost: example.test\r\nConnection: close\r\n\r\n",
                        timeout=1.0)
    assert status_of(raw) == 200


# -- timeouts --------------------------------------------------------------------------------------
async def test_slowloris_partial_request_line_gets_408(edge_env):
    env = await edge_env(client_header_timeout=0.5)
    reader, writer = await connect(env)
    writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
    data, took = await closed_within(reader, 3.0)
    writer.close()
    assert status_of(data) == 408
    assert 0.4 <= took <= 1.6


async def test_slowloris_trickling_bytes_does_not_extend_the_deadline(edge_env):
    env = await edge_env(client_header_timeout=0.5)
    reader, writer = await connect(env)
    started = time.monotonic()
    request = get("/a", extra="X-Slow: " + "s" * 200 + "\r\n")
    got = b""

    async def trickle() -> None:
        for byte in request[:-2]:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)

    sender = asyncio.create_task(trickle())
    with contextlib.suppress(ConnectionError):
        async with asyncio.timeout(3.0):
            got = await reader.read(-1)
    sender.cancel()
    with contextlib.suppress(asyncio.CancelledError, ConnectionError):
        await sender
    writer.close()
    assert status_of(got) == 408
    assert time.monotonic() - started <= 1.6


async def test_slow_body_gets_408(edge_env):
    env = await edge_env(client_header_timeout=0.5, client_body_timeout=0.5)
    env.origin.route("/post", echo=True)
    reader, writer = await connect(env)
    writer.write(b"POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"b" * 10)
    data, took = await closed_within(reader, 3.0)
    writer.close()
    assert status_of(data) == 408
    assert took <= 1.6
    assert env.origin.count() == 0


async def test_silent_and_idle_connections_are_closed(edge_env):
    env = await edge_env(client_header_timeout=0.5, keepalive_timeout=0.5)
    reader, writer = await connect(env)  # says nothing at all
    data, took = await closed_within(reader, 3.0)
    writer.close()
    assert data == b"" and took <= 1.6

    reader, writer = await connect(env)  # one request, then idle on keep-alive
    writer.write(get("/healthz"))
    status, _, body = await read_response(reader)
    assert (status, body) == (200, b"ok\n")
    data, took = await closed_within(reader, 3.0)
    writer.close()
    assert data == b"" and took <= 1.6


async def test_a_slow_origin_is_not_cut_by_the_client_timeouts(edge_env):
    env = await edge_env(client_header_timeout=0.3, keepalive_timeout=0.3)
    env.origin.route("/slow", headers=CACHEABLE, body=b"late", delay=1.0)
    reader, writer = await connect(env)
    writer.write(get("/slow", env.host) + get("/slow", env.host))
    async with asyncio.timeout(WAIT):
        first = await read_response(reader)
        second = await read_response(reader)
    writer.close()
    assert (first[0], first[2], second[0], second[2]) == (200, b"late", 200, b"late")
    assert second[1]["Cache-Status"] == member("hit", "ttl=60")


# -- HTTP/1.0, Connection: close, Expect -----------------------------------------------------------
async def test_http10_request_is_answered_and_closed(edge_env):
    env = await edge_env()
    env.origin.route("/a", headers=CACHEABLE, body=b"hello")
    for expected in (member("fwd=uri-miss", "fwd-status=200", "stored"), member("hit", "ttl=60")):
        raw = await env.raw(get("/a", version="1.0"))  # returns only once the edge closes
        head, _, body = raw.partition(b"\r\n\r\n")
        assert status_of(raw) == 200
        assert body == b"hello"
        assert b"\r\nConnection: close" in head
        assert f"\r\nCache-Status: {expected}\r\n".encode() in head + b"\r\n"


async def test_http10_stream_without_length_is_close_delimited(edge_env):
    env = await edge_env(max_object_bytes=16 * 1024)
    chunks = [bytes([i]) * 8192 for i in range(8)]
    env.origin.route("/s", headers=CACHEABLE, chunks=chunks)
    raw = await env.raw(b"GET /s HTTP/1.0\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert status_of(raw) == 200
    assert b"Transfer-Encoding" not in head and b"Content-Length" not in head
    assert body == b"".join(chunks)


async def test_connection_close_on_a_fast_hit_closes(edge_env):
    env = await edge_env()
    env.origin.route("/a", headers=CACHEABLE, body=b"x")
    await env.get("/a")
    raw = await env.raw(get("/a", extra="Connection: close\r\n"))
    assert status_of(raw) == 200 and raw.endswith(b"\r\n\r\nx")


async def test_expect_100_continue(edge_env):
    env = await edge_env()
    env.origin.route("/post", echo=True)
    reader, writer = await connect(env)
    writer.write(b"POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                 b"Expect: 100-continue\r\n\r\n")
    async with asyncio.timeout(WAIT):
        interim = await reader.readuntil(b"\r\n\r\n")
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"data")
        status, _, _ = await read_response(reader)
    writer.close()
    assert status == 200
    seen = env.origin.last("/post")
    assert seen.body == b"data"
    assert seen.header("Expect") is None


async def test_expect_100_continue_waits_for_the_previous_pipelined_response(edge_env):
    env = await edge_env(max_object_bytes=1024)
    gate = asyncio.Event()
    env.origin.route("/live", headers=CACHEABLE, chunks=[b"a" * 4096, b"b" * 4096],
                     chunk_gate=(0, gate))
    env.origin.route("/post", echo=True)
    reader, writer = await connect(env)
    writer.write(get("/live", env.host))
    async with asyncio.timeout(WAIT):
        await reader.readuntil(b"a" * 4096)  # the edge is mid-body, the origin held
        writer.write(b"POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        await asyncio.sleep(0.2)  # let the edge parse it (not a TTL wait)
        gate.set()
        writer.write(b"data")
        rest = b""
        while b"0\r\n\r\n" not in rest:
            rest += await reader.read(65536)
    writer.close()
    assert rest.startswith(b"\r\n1000\r\n" + b"b" * 4096 + b"\r\n0\r\n\r\n")


# -- pipelining -----------------------------------------------------------------------------------
async def test_pipelined_requests_are_answered_in_order(edge_env):
    env = await edge_env()
    env.origin.route("/slow", headers=CACHEABLE, body=b"slow", delay=0.2)
    env.origin.route("/hit", headers=CACHEABLE, body=b"hit")
    env.origin.route("/pass", headers=[("Cache-Control", "no-store")], body=b"pass")
    env.origin.route("/post", echo=True)
    await env.get("/hit")
    reader, writer = await connect(env)
    h = env.host
    writer.write(get("/slow", h) + get("/hit", h) + get("/pass", h)
                 + b"POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                 + get("/hit", h) + get("/slow", h) + get("/healthz", h))
    answers = []
    async with asyncio.timeout(WAIT):
        for _ in range(7):
            answers.append(await read_response(reader))
    writer.close()
    bodies = [body for _, _, body in answers]
    assert bodies[:3] == [b"slow", b"hit", b"pass"]
    assert b'"body": "abc"' in bodies[3]
    assert bodies[4:] == [b"hit", b"slow", b"ok\n"]
    assert [h["Cache-Status"] for _, h, _ in answers[:3]] == [
        member("fwd=uri-miss", "fwd-status=200", "stored"), member("hit", "ttl=60"),
        member("fwd=uri-miss", "fwd-status=200", "detail=no-store")]
    assert env.origin.count("/slow") == 1


async def test_deep_pipeline_of_passes_pauses_and_resumes_reading(edge_env):
    env = await edge_env()
    env.origin.route("/p", headers=[("Cache-Control", "no-store")], body=b"p")
    reader, writer = await connect(env)
    writer.write(b"".join(get(f"/p?{i}", env.host) for i in range(60)))  # > 32 queued
    async with asyncio.timeout(WAIT):
        answers = [await read_response(reader) for _ in range(60)]
    writer.close()
    assert [(s, b) for s, _, b in answers] == [(200, b"p")] * 60
    assert [s.path for s in env.origin.seen] == [f"/p?{i}" for i in range(60)]


async def test_many_pipelined_hits(edge_env):
    env = await edge_env()
    env.origin.route("/a", headers=CACHEABLE, body=b"A")
    env.origin.route("/b", headers=CACHEABLE, body=b"B")
    await env.get("/a")
    reader, writer = await connect(env)
    paths = ["/a", "/b"] * 50
    writer.write(b"".join(get(p, env.host) for p in paths))
    async with asyncio.timeout(WAIT):
        bodies = [(await read_response(reader))[2] for _ in paths]
    writer.close()
    assert bodies == [p[1:].upper().encode() for p in paths]
    assert env.origin.count("/b") == 1
