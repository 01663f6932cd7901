"""HEAD end to end (#12 item 8): a miss that may be stored fills with GET, a known uncacheable
URL sends HEAD as HEAD, a hit answers from the stored headers; never a body."""

from __future__ import annotations

import asyncio
import contextlib

from edgeutil import WAIT, edge_env, member, read_response

__all__ = ["edge_env"]

BODY = b"x" * 300
MAX60 = ("Cache-Control", "max-age=60")


async def pipelined(env, *requests: str) -> list[tuple[int, dict[str, str], bytes]]:
    """Send the requests on one connection; a HEAD answered with a body would corrupt the
    next response. Returns (status, headers, body) of each."""
    reader, writer = await asyncio.open_connection("127.0.0.1", env.edge.port)
    try:
        writer.write("".join(f"{r} HTTP/1.1\r\nHost: {env.host}\r\n\r\n"
                             for r in requests).encode())
        out = []
        async with asyncio.timeout(WAIT):
            for r in requests:
                if r.startswith("HEAD "):  # read_response would wait for Content-Length bytes
                    head = await reader.readuntil(b"\r\n\r\n")
                    lines = head.decode("latin-1").split("\r\n")
                    fields = dict(line.split(": ", 1) for line in lines[1:] if line)
                    out.append((int(lines[0].split()[1]), fields, b""))
                else:
                    status, headers, body = await read_response(reader)
                    out.append((status, dict(headers), body))
        return out
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_head_miss_fills_with_get_and_sends_no_body(edge_env):
    env = await edge_env()
    env.origin.route("/h", headers=[MAX60, ("ETag", '"v1"')], body=BODY)
    (s1, h1, _), (s2, h2, b2) = await pipelined(env, "HEAD /h", "GET /h")
    assert [s.method for s in env.origin.requests("/h")] == ["GET"]
    assert (s1, h1["Content-Length"], h1["ETag"]) == (200, "300", '"v1"')
    assert h1["Cache-Status"] == member("fwd=uri-miss", "fwd-status=200", "stored")
    assert (s2, b2, h2["Cache-Status"]) == (200, BODY, member("hit", "ttl=60"))


async def test_head_hit_answers_from_the_stored_headers(edge_env):
    env = await edge_env()
    env.origin.route("/h", headers=[MAX60, ("ETag", '"v1"'), ("X-Thing", "1")], body=BODY)
    await env.get("/h")
    (_, get, _), (status, head, _), (_, again, _) = await pipelined(env, "GET /h", "HEAD /h",
                                                                    "HEAD /h")
    assert status == 200 and head == get == again  # same fields, Content-Length included
    assert head["Content-Length"] == "300" and head["X-Thing"] == "1"
    assert env.origin.count("/h") == 1
    # the full path too (a request directive makes it skip the fast path)
    r = await env.request("HEAD", "/h", [("Cache-Control", "max-stale=5")])
    assert (r.status, r.body, r.headers["Content-Length"]) == (200, b"", "300")
    assert env.origin.count("/h") == 1


async def test_head_on_a_known_uncacheable_url_is_sent_as_head(edge_env):
    env = await edge_env()
    env.origin.route("/u", headers=[("Cache-Control", "no-store")], body=BODY)
    r = await env.request("HEAD", "/u")  # nothing known yet: a GET that could have filled
    assert (r.status, r.body, r.headers["Content-Length"]) == (200, b"", "300")
    r = await env.request("HEAD", "/u")  # hit-for-miss: HEAD as HEAD
    assert (r.status, r.body, r.headers["Content-Length"]) == (200, b"", "300")
    assert r.cache_status == member("fwd=uri-miss", "fwd-status=200", "detail=hit-for-miss")
    assert [s.method for s in env.origin.requests("/u")] == ["GET", "HEAD"]
    r = await env.get("/u")  # GET still fetches with GET
    assert (r.status, r.body) == (200, BODY)
    assert env.origin.last("/u").method == "GET"


async def test_head_of_an_object_too_large_to_store(edge_env):
    env = await edge_env(max_object_bytes=100)
    env.origin.route("/big", headers=[MAX60], body=BODY)
    (s1, h1, _), (s2, h2, _), (s3, _, b3) = await pipelined(env, "HEAD /big", "HEAD /big",
                                                            "GET /big")
    assert (s1, h1["Content-Length"]) == (200, "300")
    assert h1["Cache-Status"] == member("fwd=uri-miss", "fwd-status=200", "detail=too-large")
    assert (s2, h2["Content-Length"]) == (200, "300")
    assert (s3, b3) == (200, BODY)
    assert [s.method for s in env.origin.requests("/big")] == ["GET", "HEAD", "GET"]


async def test_head_passes_conditionals_when_sent_as_head(edge_env):
    env = await edge_env()
    env.origin.route("/u", headers=[("Cache-Control", "no-store"), ("ETag", '"u"')], body=BODY)
    await env.get("/u")
    r = await env.request("HEAD", "/u", [("If-None-Match", '"u"')])
    assert r.status == 304
    assert env.origin.last("/u").header("If-None-Match") == '"u"'
