"""1xx interim responses end to end (#12 item 9).

- ``103 Early Hints`` from the origin (a real aiohttp origin writing them on the wire before
  its final answer): relayed to HTTP/1.1 clients on a miss and on a passed request, in
  order, minus hop-by-hop fields; never to HTTP/1.0 clients; never stored (a hit has none);
  never mixed into the final response. Other 1xx (102) are dropped.
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

HINTS = (b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\nX-Hint: 1\r\n"
         b"Keep-Alive: timeout=5\r\n\r\n")
PROCESSING = b"HTTP/1.1 102 Processing\r\n\r\n"


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


async def test_103_relayed_on_the_miss_never_stored_or_merged(edge_env):
    env = await edge_env()
    env.origin.route("/e", handler=early_hints(HINTS, PROCESSING, HINTS))
    get = f"GET /e HTTP/1.1\r\nHost: {env.host}\r\n\r\n".encode()
    answers = await raw_exchange(env, get, responses=3)
    assert [status for status, _, _ in answers] == [103, 103, 200]  # the 102 is dropped
    for _, headers, _ in answers[:2]:
        assert headers.getall("Link") == ["</s.css>; rel=preload"]
        assert headers["X-Hint"] == "1"
        assert "Keep-Alive" not in headers  # hop-by-hop fields stay on the origin's hop
    status, headers, body = answers[2]
    assert (status, body) == (200, b"final")
    assert "Link" not in headers and "X-Hint" not in headers
    assert headers["Cache-Status"] == member("fwd=uri-miss", "fwd-status=200", "stored")
    [(status, headers, body)] = await raw_exchange(env, get)  # a hit: no 103 stored
    assert (status, body, headers["Cache-Status"]) == (200, b"final", member("hit", "ttl=60"))
    assert "Link" not in headers and "X-Hint" not in headers
    assert env.origin.count("/e") == 1


async def test_no_103_to_http_1_0(edge_env):
    env = await edge_env()
    env.origin.route("/e", handler=early_hints(HINTS))
    data = await env.raw(f"GET /e HTTP/1.0\r\nHost: {env.host}\r\n\r\n".encode())
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b"103" not in data.split(b"\r\n", 1)[0] and b"X-Hint" not in data


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
    answers = await raw_exchange(env, f"POST /e HTTP/1.1\r\nHost: {env.host}\r\n"
                                      "Content-Length: 1\r\n\r\nx".encode(), responses=2)
    assert [(status, body) for status, _, body in answers] == [(103, b""), (200, b"final")]
    assert answers[0][1]["X-Hint"] == "1" and "X-Hint" not in answers[1][1]


async def test_curl_sees_the_early_hints(edge_env):
    """A real client: curl prints every interim response it receives with -i."""
    env = await edge_env()
    env.origin.route("/e", handler=early_hints(HINTS))
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-i", f"http://127.0.0.1:{env.edge.port}/e", "-H", f"Host: {env.host}",
        stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), WAIT)
    assert proc.returncode == 0
    text = out.decode("latin-1")
    assert text.startswith("HTTP/1.1 103 Early Hints\r\n")
    assert "Link: </s.css>; rel=preload" in text.split("\r\n\r\n", 1)[0]
    assert text.endswith("final")


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
