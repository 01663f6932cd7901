"""The edge's origin client on the wire (edge/originclient.py via OriginPool): keep-alive
reuse, framing (Content-Length, chunked, close-delimited), a body longer than its
Content-Length (#12 item 6), HEAD, interim responses and malformed answers, against raw
asyncio origins that answer exactly the bytes each case needs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest
from aiohttp import web
from edgeutil import edge_env, member

from edge.upstream import OriginPool, UpstreamError
from geoconfig.cdnconfig import EdgeSettings, OriginServer

__all__ = ["edge_env"]

WAIT = 5.0


def settings(**kw) -> EdgeSettings:
    base = {"connect_timeout": 1.0, "read_timeout": 2.0, "origin_health_interval": 3600.0,
            "retries": 0}
    return replace(EdgeSettings(), **(base | kw))


class RawOrigin:
    """Reads each request head (and a Content-Length body) and writes ``answer(n)`` bytes,
    n counting requests; counts connections."""

    def __init__(self, answer: Callable[[int, bytes], bytes]) -> None:
        self.answer = answer
        self.connections = 0
        self.one_answer_per_connection = False  # then close on the next request, unread
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        answered = False
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if self.one_answer_per_connection and answered:
                    self.requests.append(head)
                    break
                answered = True
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        head += await reader.readexactly(int(line.split(b":")[1]))
                self.requests.append(head)
                data = self.answer(len(self.requests), head)
                writer.write(data)
                await writer.drain()
                if b"Connection: close" in data:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self) -> OriginServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return OriginServer("raw", "127.0.0.1", self.server.sockets[0].getsockname()[1])


@pytest.fixture
async def raw() -> AsyncIterator[Callable[..., object]]:
    started: list[RawOrigin] = []

    async def make(answer: Callable[[int, bytes], bytes]) -> tuple[RawOrigin, OriginPool]:
        origin = RawOrigin(answer)
        server = await origin.start()
        started.append(origin)
        return origin, OriginPool([server], settings())

    yield make
    for origin in started:
        assert origin.server is not None
        origin.server.close()


async def fetch(pool: OriginPool, method: str = "GET", path: str = "/",
                **kw) -> tuple[int, list[tuple[str, str]], bytes]:
    async with asyncio.timeout(WAIT):
        resp = await pool.fetch(method, path, [("Host", "h")], None, key="k", client_ip="",
                                **kw)
        async with resp:
            return resp.status, resp.headers, await resp.read()


def ok(body: bytes = b"abc", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s%s" % (len(body), body, extra)


async def test_keep_alive_reuses_one_connection(raw):
    origin, pool = await raw(lambda n, _: ok(b"%d" % n))
    assert [(await fetch(pool))[2] for _ in range(5)] == [b"1", b"2", b"3", b"4", b"5"]
    assert origin.connections == 1 and pool.connects == {"raw": 1}
    await pool.stop()


async def test_a_reused_connection_closed_before_the_answer_is_replaced_once(raw):
    """The origin claims keep-alive but closes each connection on its second request, unread:
    an idempotent request is resent once on a new connection (RFC 9112 §9.3.1); a POST is
    not resent and fails."""
    origin, pool = await raw(lambda n, _: ok(b"%d" % n))
    origin.one_answer_per_connection = True
    assert [(await fetch(pool))[2] for _ in range(3)] == [b"1", b"3", b"5"]
    assert origin.connections == 3 and pool.connects == {"raw": 3}
    assert pool.snapshot()[0]["fails"] == 0
    with pytest.raises(UpstreamError, match="ClosedEarly"):
        await fetch(pool, "POST")
    assert origin.connections == 3
    await pool.stop()


async def test_surplus_after_content_length_is_dropped_and_the_connection_closed(raw, caplog):
    origin, pool = await raw(lambda n, _: ok(b"abc", b"SURPLUS" if n == 1 else b""))
    with caplog.at_level(logging.WARNING, "geoedge.edge.upstream"):
        assert await fetch(pool) == (200, [("Content-Length", "3")], b"abc")
    assert any("origin raw sent more than" in r.getMessage() for r in caplog.records)
    assert (await fetch(pool))[2] == b"abc"  # not parsed as a next response: a new connection
    assert origin.connections == 2
    await pool.stop()


async def test_surplus_that_looks_like_a_response_is_not_taken_for_the_next_one(raw, caplog):
    fake = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL"
    origin, pool = await raw(lambda n, _: ok(b"one", fake) if n == 1 else ok(b"two"))
    with caplog.at_level(logging.WARNING, "geoedge.edge.upstream"):
        assert (await fetch(pool))[2] == b"one"
        assert (await fetch(pool))[2] == b"two"
    assert origin.connections == 2
    assert sum("origin raw" in r.getMessage() for r in caplog.records) == 1
    await pool.stop()


async def test_chunked_and_close_delimited_bodies(raw):
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    close = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-close"
    origin, pool = await raw(lambda n, _: chunked if n == 1 else close)
    assert (await fetch(pool))[2] == b"abcde"
    status, _, body = await fetch(pool)
    assert (status, body) == (200, b"until-close")
    assert origin.connections == 1  # the chunked answer left the connection reusable
    await pool.stop()


async def test_head_response_is_complete_after_its_head(raw):
    answers = {1: b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", 2: ok(b"get")}
    origin, pool = await raw(lambda n, _: answers[n])
    status, headers, body = await fetch(pool, "HEAD")
    assert (status, headers, body) == (200, [("Content-Length", "1000")], b"")
    assert (await fetch(pool))[2] == b"get"
    assert origin.connections == 1
    await pool.stop()


async def test_interim_responses_reach_the_callback_only(raw):
    interim = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
               b"HTTP/1.1 102 Processing\r\n\r\n")
    _, pool = await raw(lambda n, _: interim + ok(b"final"))
    seen: list[tuple[int, list[tuple[str, str]]]] = []
    status, headers, body = await fetch(pool, on_informational=lambda s, h: seen.append((s, h)))
    assert seen == [(103, [("Link", "</a>")]), (102, [])]
    assert (status, headers, body) == (200, [("Content-Length", "5")], b"final")
    await pool.stop()


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # cut off
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
    b"NOT HTTP\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Big: " + b"x" * 20000 + b"\r\n\r\n",
], ids=["cut-off", "two-lengths", "length-and-chunked", "101", "garbage", "huge-header"])
async def test_malformed_answers_fail_cleanly(raw, answer):
    origin, pool = await raw(lambda n, _: answer if n == 1 else ok())
    with pytest.raises(UpstreamError):  # cut-off: the origin stays silent, read_timeout ends it
        async with asyncio.timeout(WAIT):
            resp = await pool.fetch("GET", "/", [], None, key="k", client_ip="")
            async with resp:
                await resp.read()
    assert pool.snapshot()[0]["active"] == 0
    assert (await fetch(pool))[2] == b"abc"  # the pool goes on, on a new connection
    assert origin.connections == 2
    await pool.stop()


async def test_data_on_an_idle_connection_closes_it(raw, caplog):
    origin, pool = await raw(lambda n, _: ok(b"%d" % n))
    assert (await fetch(pool))[2] == b"1"
    [conn] = pool.endpoints["raw"].idle
    with caplog.at_level(logging.WARNING, "geoedge.edge.upstream"):
        conn.data_received(b"late surplus")
    assert conn.closed
    assert any("idle connection" in r.getMessage() for r in caplog.records)
    assert (await fetch(pool))[2] == b"2"
    assert origin.connections == 2
    await pool.stop()


# -- end to end through an edge ------------------------------------------------------------

def raw_answer(data: bytes):
    """An aiohttp handler that writes ``data`` on the wire itself, then closes."""

    async def handler(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.write(data)
        request.transport.close()
        return web.Response()

    return handler


async def test_edge_stores_exactly_content_length_bytes(edge_env, caplog):
    env = await edge_env()
    env.origin.route("/long", handler=raw_answer(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nCache-Control: max-age=60\r\n\r\n"
        b"helloSURPLUS BYTES"))
    with caplog.at_level(logging.WARNING, "geoedge.edge.upstream"):
        r = await env.get("/long")
    assert (r.status, r.body) == (200, b"hello")
    assert r.cache_status == member("fwd=uri-miss", "fwd-status=200", "stored")
    assert any(f"origin {env.origin.name} sent more than" in rec.getMessage()
               for rec in caplog.records)
    r = await env.get("/long")
    assert (r.status, r.body, r.cache_status) == (200, b"hello", member("hit", "ttl=60"))
