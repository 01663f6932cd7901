"""Range requests end to end (#12 item 7): 206, multipart, 416 and If-Range from the cache,
fills for ranged misses, and the Range passed to the origin for objects too large to store."""

from __future__ import annotations

import asyncio
import contextlib
import re

from aiohttp import web
from edgeutil import WAIT, edge_env, member, read_response

__all__ = ["edge_env"]

BODY = bytes(range(256)) * 4  # 1024 bytes, every offset recognisable
MAX60 = ("Cache-Control", "max-age=60")
MISS = member("fwd=uri-miss", "fwd-status=200", "stored")
HIT = member("hit", "ttl=60")


async def stored(env, path="/r", headers=(MAX60, ("ETag", '"v1"'))):
    env.origin.route(path, headers=[("Content-Type", "application/octet-stream"), *headers],
                     body=BODY)
    r = await env.get(path)
    assert (r.status, r.cache_status) == (200, MISS)
    return r


def parts(r) -> list[tuple[str, str, bytes]]:
    """(Content-Type, Content-Range, bytes) of each part of a multipart/byteranges body."""
    m = re.fullmatch(r"multipart/byteranges; boundary=(\S+)", r.headers["Content-Type"])
    assert m is not None
    boundary = m.group(1).encode()
    body = r.body
    assert body.startswith(b"--" + boundary + b"\r\n")
    assert body.endswith(b"\r\n--" + boundary + b"--\r\n")
    out = []
    for chunk in body[:-len(boundary) - 6].split(b"--" + boundary + b"\r\n")[1:]:
        head, _, data = chunk.partition(b"\r\n\r\n")
        fields = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        out.append((fields.get("Content-Type"), fields["Content-Range"],
                    data.removesuffix(b"\r\n")))
    return out


async def test_single_range_from_a_hit(edge_env):
    env = await edge_env()
    await stored(env)
    r = await env.get("/r", [("Range", "bytes=10-19")])
    assert (r.status, r.body) == (206, BODY[10:20])
    assert r.headers["Content-Range"] == "bytes 10-19/1024"
    assert r.headers["Content-Length"] == "10"
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.headers["ETag"] == '"v1"'
    assert r.cache_status == HIT
    assert r.age == 0 and "Date" in r.headers and "Via" in r.headers
    env.clock.advance(5)
    r = await env.get("/r", [("Range", "bytes=-4")])
    assert (r.status, r.body, r.age) == (206, BODY[-4:], 5)
    assert r.headers["Content-Range"] == "bytes 1020-1023/1024"
    r = await env.get("/r", [("Range", "bytes=1000-")])
    assert (r.status, r.body) == (206, BODY[1000:])
    assert env.origin.count("/r") == 1


async def test_miss_fills_the_whole_object_and_answers_the_range(edge_env):
    env = await edge_env()
    env.origin.route("/r", headers=[MAX60], body=BODY)
    r = await env.get("/r", [("Range", "bytes=0-99"), ("If-Range", '"x"')])
    # If-Range names no validator of the fill's response: the whole object
    assert (r.status, r.body, r.cache_status) == (200, BODY, MISS)
    assert env.origin.last("/r").header("Range") is None
    assert env.origin.last("/r").header("If-Range") is None
    await env.purge("/r")
    r = await env.get("/r", [("Range", "bytes=0-99")])
    assert (r.status, r.body, r.cache_status) == (206, BODY[:100], MISS)
    r = await env.get("/r", [("Range", "bytes=100-199")])
    assert (r.status, r.body, r.cache_status) == (206, BODY[100:200], HIT)
    assert env.origin.count("/r") == 2


async def test_the_filling_client_keeps_its_own_fields(edge_env):
    env = await edge_env()
    env.origin.route("/c", headers=[("Cache-Control", "public, max-age=60"),
                                    ("Set-Cookie", "s=1")], body=BODY)
    r = await env.get("/c", [("Range", "bytes=0-9")])
    assert (r.status, r.body, r.headers.get("Set-Cookie")) == (206, BODY[:10], "s=1")
    r = await env.get("/c", [("Range", "bytes=0-9")])
    assert (r.status, r.cache_status, r.headers.get("Set-Cookie")) == (206, HIT, None)


async def test_multiple_ranges_are_multipart(edge_env):
    env = await edge_env()
    await stored(env)
    r = await env.get("/r", [("Range", "bytes=0-9, 100-109, -5")])
    assert r.status == 206 and "Content-Range" not in r.headers
    assert int(r.headers["Content-Length"]) == len(r.body)
    ct = "application/octet-stream"
    assert parts(r) == [(ct, "bytes 0-9/1024", BODY[:10]), (ct, "bytes 100-109/1024",
                                                            BODY[100:110]),
                        (ct, "bytes 1019-1023/1024", BODY[-5:])]
    r2 = await env.get("/r", [("Range", "bytes=0-9, 100-109")])
    assert r.headers["Content-Type"] != r2.headers["Content-Type"]  # a new boundary each time


async def test_overlapping_ranges_are_coalesced_or_refused(edge_env):
    env = await edge_env()
    await stored(env)
    r = await env.get("/r", [("Range", "bytes=0-99,50-149")])
    assert (r.status, r.headers["Content-Range"], r.body) == (206, "bytes 0-149/1024",
                                                             BODY[:150])
    r = await env.get("/r", [("Range", "bytes=0-,0-,0-")])  # amplification: all of it, 200
    assert (r.status, r.body) == (200, BODY)
    many = ",".join(f"{i}-{i}" for i in range(0, 34, 2))  # 17 ranges
    r = await env.get("/r", [("Range", f"bytes={many}")])
    assert (r.status, r.body) == (200, BODY)


async def test_unsatisfiable_is_416(edge_env):
    env = await edge_env()
    await stored(env)
    r = await env.get("/r", [("Range", "bytes=1024-")])
    assert r.status == 416
    assert r.headers["Content-Range"] == "bytes */1024"
    assert r.cache_status == HIT
    assert "ETag" not in r.headers and "Cache-Control" not in r.headers
    r = await env.get("/r")  # the stored response is untouched
    assert (r.status, r.body) == (200, BODY)


async def test_invalid_range_is_ignored(edge_env):
    env = await edge_env()
    await stored(env)
    for value in ("bytes=9-0", "lines=0-9", "bytes 0-9", "bytes=a-"):
        r = await env.get("/r", [("Range", value)])
        assert (r.status, r.body) == (200, BODY), value


async def test_if_range(edge_env):
    env = await edge_env()
    lm = env.clock.http_date(-3600)
    await stored(env, headers=(MAX60, ("ETag", '"v1"'), ("Last-Modified", lm)))
    for if_range, status in (('"v1"', 206), ('"v2"', 200), ('W/"v1"', 200), (lm, 206),
                             (env.clock.http_date(-3599), 200)):
        r = await env.get("/r", [("Range", "bytes=0-9"), ("If-Range", if_range)])
        assert r.status == status, if_range
        assert r.body == (BODY[:10] if status == 206 else BODY)


async def test_if_range_date_needs_a_strong_last_modified(edge_env):
    env = await edge_env()
    lm = env.clock.http_date()  # Last-Modified == Date: a weak validator (RFC 9110 §8.8.2.2)
    await stored(env, headers=(MAX60, ("Last-Modified", lm)))
    r = await env.get("/r", [("Range", "bytes=0-9"), ("If-Range", lm)])
    assert (r.status, r.body) == (200, BODY)
    r = await env.get("/r", [("Range", "bytes=0-9")])
    assert r.status == 206


async def test_304_takes_precedence_over_range(edge_env):
    env = await edge_env()
    await stored(env)
    r = await env.get("/r", [("Range", "bytes=0-9"), ("If-None-Match", '"v1"')])
    assert (r.status, r.body) == (304, b"")
    r = await env.get("/r", [("Range", "bytes=0-9"), ("If-None-Match", '"v0"')])
    assert (r.status, r.body) == (206, BODY[:10])


async def test_head_ignores_range(edge_env):
    env = await edge_env()
    await stored(env)
    r = await env.request("HEAD", "/r", [("Range", "bytes=0-9")])
    assert (r.status, r.body, r.headers["Content-Length"]) == (200, b"", "1024")
    assert "Content-Range" not in r.headers


async def test_range_and_connection_close_on_a_raw_socket(edge_env):
    env = await edge_env()
    await stored(env)
    data = await env.raw(f"GET /r HTTP/1.1\r\nHost: {env.host}\r\nRange: bytes=0-3\r\n"
                         "Connection: close\r\n\r\n".encode())
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 206 Partial Content\r\n")
    assert b"\r\nConnection: close" in head and b"\r\nContent-Length: 4" in head
    assert body == BODY[:4]


async def test_pipelined_range_requests(edge_env):
    env = await edge_env()
    await stored(env)
    reader, writer = await asyncio.open_connection("127.0.0.1", env.edge.port)
    try:
        one = f"GET /r HTTP/1.1\r\nHost: {env.host}\r\nRange: bytes=0-1,4-5\r\n\r\n"
        two = f"GET /r HTTP/1.1\r\nHost: {env.host}\r\nRange: bytes=2000-\r\n\r\n"
        three = f"GET /r HTTP/1.1\r\nHost: {env.host}\r\n\r\n"
        writer.write((one + two + three).encode())
        async with asyncio.timeout(WAIT):
            statuses = [(await read_response(reader))[0] for _ in range(3)]
        assert statuses == [206, 416, 200]
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


# -- objects too large to store: the Range goes to the origin ------------------------------------
def ranged_origin(body: bytes):
    """A handler that answers Range itself (one range), like most origins."""

    async def handler(request: web.Request) -> web.StreamResponse:
        value = request.headers.get("Range")
        headers = {"Cache-Control": "max-age=60", "ETag": '"big"'}
        if value is None:
            return web.Response(body=body, headers=headers)
        first, _, last = value.removeprefix("bytes=").partition("-")
        start, end = int(first), int(last or len(body) - 1)
        headers["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
        return web.Response(status=206, body=body[start:end + 1], headers=headers)

    return handler


async def test_too_large_object_passes_the_range(edge_env):
    env = await edge_env(max_object_bytes=512)
    env.origin.route("/big", handler=ranged_origin(BODY))
    r = await env.get("/big", [("Range", "bytes=100-199")])
    assert (r.status, r.body) == (206, BODY[100:200])
    assert r.headers["Content-Range"] == "bytes 100-199/1024"
    assert r.cache_status == member("fwd=miss", "fwd-status=206", "detail=too-large")
    # the fill asked for everything, learned the size, then the range was passed
    assert [s.header("Range") for s in env.origin.requests("/big")] == [None, "bytes=100-199"]
    # now known to be too large (hit-for-miss): straight to the origin with the Range
    r = await env.get("/big", [("Range", "bytes=0-9"), ("If-Range", '"big"')])
    assert (r.status, r.body) == (206, BODY[:10])
    assert r.cache_status == member("fwd=uri-miss", "fwd-status=206", "detail=hit-for-miss")
    seen = env.origin.last("/big")
    assert (seen.header("Range"), seen.header("If-Range")) == ("bytes=0-9", '"big"')
    assert env.origin.count("/big") == 3
    r = await env.get("/big")  # without Range: the whole object, streamed, not stored
    assert (r.status, r.body) == (200, BODY)
    assert env.origin.last("/big").header("Range") is None


async def test_uncacheable_object_passes_the_range_once_known(edge_env):
    env = await edge_env()
    env.origin.route("/p", headers=[("Cache-Control", "private")], body=BODY)
    r = await env.get("/p", [("Range", "bytes=0-9")])
    assert (r.status, r.body) == (200, BODY)  # the fill's answer, not storable: sent whole
    await env.get("/p", [("Range", "bytes=0-9")])
    assert env.origin.last("/p").header("Range") == "bytes=0-9"  # the marker: passed
