"""1xx interim responses end to end (#12 item 9).

- ``103 Early Hints`` from the origin: the upstream client (aiohttp) reads and drops interim
  responses without exposing them, so the edge cannot relay them (a documented deviation,
  README). What is tested: a 103 is never stored, its fields never reach the final response,
  and the final answer is right, on the miss and on the hits after it.
- ``100 Continue``: the edge's server layer answers ``Expect: 100-continue`` itself, reads the
  body (up to ``max_body_bytes``) and forwards the request without ``Expect``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from aiohttp import web
from edgeutil import WAIT, edge_env, member, read_response

__all__ = ["edge_env"]

HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\nX-Hint: 1\r\n\r\n"


def early_hints(*interim: bytes, headers: dict[str, str] | None = None):
    """A handler that writes raw interim responses on the wire before its final 200."""

    async def handler(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        for raw in interim:
            request.transport.write(raw)
        return web.Response(body=b"final", headers=headers or {"Cache-Control": "max-age=60"})

    return handler


async def raw_exchange(env, request: bytes, responses: int = 1):
    reader, writer = await asyncio.open_connection("127.0.0.1", env.edge.port)
    try:
        writer.write(request)
        async with asyncio.timeout(WAIT):
            return [await read_response(reader) for _ in range(responses)]
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_103_is_not_stored_or_merged(edge_env):
    env = await edge_env()
    env.origin.route("/e", handler=early_hints(HINTS, HINTS))
    get = f"GET /e HTTP/1.1\r\nHost: {env.host}\r\n\r\n".encode()
    [(status, headers, body)] = await raw_exchange(env, get)
    assert (status, body) == (200, b"final")  # the first response the client reads
    assert "Link" not in headers and "X-Hint" not in headers
    assert headers["Cache-Status"] == member("fwd=uri-miss", "fwd-status=200", "stored")
    [(status, headers, body)] = await raw_exchange(env, get)
    assert (status, body, headers["Cache-Status"]) == (200, b"final", member("hit", "ttl=60"))
    assert "Link" not in headers and "X-Hint" not in headers
    assert env.origin.count("/e") == 1


async def test_final_fields_survive_interim_ones(edge_env):
    env = await edge_env()
    env.origin.route("/e", handler=early_hints(
        HINTS, headers={"Cache-Control": "max-age=60", "Link": "</final.css>; rel=preload"}))
    for expected in (member("fwd=uri-miss", "fwd-status=200", "stored"),
                     member("hit", "ttl=60")):
        r = await env.get("/e")
        assert (r.status, r.body, r.cache_status) == (200, b"final", expected)
        assert r.headers.getall("Link") == ["</final.css>; rel=preload"]


async def test_103_on_a_passed_request(edge_env):
    env = await edge_env()
    env.origin.route("/e", handler=early_hints(HINTS, headers={}))
    r = await env.request("POST", "/e", data=b"x")
    assert (r.status, r.body) == (200, b"final")
    assert "Link" not in r.headers


async def test_100_continue_for_a_passed_upload(edge_env):
    env = await edge_env()
    env.origin.route("/up", echo=True)
    reader, writer = await asyncio.open_connection("127.0.0.1", env.edge.port)
    try:
        writer.write(f"POST /up HTTP/1.1\r\nHost: {env.host}\r\nContent-Length: 5\r\n"
                     "Expect: 100-continue\r\n\r\n".encode())
        async with asyncio.timeout(WAIT):
            status, _, _ = await read_response(reader)  # before any body byte is sent
            assert status == 100
            writer.write(b"hello")
            status, _, body = await read_response(reader)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert (status, json.loads(body)["body"]) == (200, "hello")
    seen = env.origin.last("/up")
    assert (seen.method, seen.body, seen.header("Expect")) == ("POST", b"hello", None)


async def test_no_100_for_an_upload_over_the_limit(edge_env):
    env = await edge_env(max_body_bytes=4)
    env.origin.route("/up", echo=True)
    [(status, _, _)] = await raw_exchange(
        env, f"POST /up HTTP/1.1\r\nHost: {env.host}\r\nContent-Length: 5\r\n"
             "Expect: 100-continue\r\n\r\n".encode())
    assert status == 413
    assert env.origin.count("/up") == 0


async def test_no_100_for_http_1_0(edge_env):
    env = await edge_env()
    env.origin.route("/up", echo=True)
    data = await env.raw(f"POST /up HTTP/1.0\r\nHost: {env.host}\r\nContent-Length: 5\r\n"
                         "Expect: 100-continue\r\n\r\nhello".encode())
    assert data.startswith(b"HTTP/1.1 200 ")
