"""Request smuggling (#11 item 11): every ambiguous framing is 400 and close, over a raw socket,
and the origin sees nothing (or only the valid request before it)."""

from __future__ import annotations

import pytest
from edgeutil import edge_env

__all__ = ["edge_env"]

H = "POST /p HTTP/1.1\r\nHost: edge.test\r\n"
SMUGGLED = "GET /smuggled HTTP/1.1\r\nHost: edge.test\r\n\r\n"

SHAPES = {
    "cl-and-te": H + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "te-and-cl": H + "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "duplicate-cl": H + "Content-Length: 4\r\nContent-Length: 40\r\n\r\nabcd" + SMUGGLED,
    "cl-list": H + "Content-Length: 5, 5\r\n\r\nabcde",
    "cl-plus": H + "Content-Length: +5\r\n\r\nabcde",
    "cl-negative": H + "Content-Length: -1\r\n\r\n",
    "cl-hex": H + "Content-Length: 0x5\r\n\r\nabcde",
    "cl-space-inside": H + "Content-Length: 1 2\r\n\r\n" + "a" * 12,
    "te-obfuscated-space": H + "Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "te-obfuscated-tab": H + "Transfer-Encoding:\tchunked\x0b\r\n\r\n0\r\n\r\n",
    "te-xchunked": H + "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "te-chunked-identity": H + "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "te-identity": H + "Transfer-Encoding: identity\r\n\r\n" + SMUGGLED,
    "te-twice": H + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "0\r\n\r\n" + SMUGGLED,
    "te-in-http10": "POST /p HTTP/1.0\r\nHost: edge.test\r\nTransfer-Encoding: chunked\r\n"
                    "Content-Length: 4\r\n\r\n0\r\n\r\n",
    "bare-lf-headers": "POST /p HTTP/1.1\nHost: edge.test\nContent-Length: 0\n\n" + SMUGGLED,
    "bare-lf-in-chunk": H + "Transfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n" + SMUGGLED,
    "bare-cr": H + "X-A: a\rContent-Length: 4\r\n\r\nabcd",
    "obs-fold": H + "Content-Length: 0\r\nX-Folded: a\r\n b\r\n\r\n" + SMUGGLED,
    "obs-fold-te": H + "Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "space-before-colon": H + "Content-Length : 4\r\n\r\nabcd" + SMUGGLED,
    "chunk-size-invalid": H + "Transfer-Encoding: chunked\r\n\r\n3g\r\nabc\r\n0\r\n\r\n",
    "chunk-size-prefix": H + "Transfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n",
    "chunk-size-negative": H + "Transfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n",
    "chunk-size-huge": H + "Transfer-Encoding: chunked\r\n\r\n" + "f" * 20 + "\r\nabc\r\n",
    "chunk-data-too-long": H + "Transfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n",
    "chunk-ext-bare-lf": H + "Transfer-Encoding: chunked\r\n\r\n3;x=y\nabc\r\n0\r\n\r\n",
    "chunk-ext-ctl": H + "Transfer-Encoding: chunked\r\n\r\n3;x=\x01\r\nabc\r\n0\r\n\r\n",
    "null-in-header": H + "X-A: a\x00b\r\nContent-Length: 0\r\n\r\n",
    "space-in-header-name": H + "X A: b\r\nContent-Length: 0\r\n\r\n",
    "two-hosts": "GET /p HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
    "no-host-11": "GET /p HTTP/1.1\r\n\r\n",
    "request-line-bad-version": "GET /p HTTP/1.2.3\r\nHost: edge.test\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(SHAPES))
async def test_ambiguous_framing_is_400_and_close(edge_env, name):
    env = await edge_env()
    env.origin.route("/p", echo=True)
    env.origin.route("/smuggled", body=b"smuggled")
    raw = await env.raw(SHAPES[name].encode("latin-1"))
    assert raw.startswith(b"HTTP/1.1 400 "), raw[:80]
    assert raw.count(b"HTTP/1.1 ") == 1  # one answer, then the connection closed
    assert b"Connection: close" in raw
    assert env.origin.count() == 0, [s.path for s in env.origin.seen]


async def test_only_the_valid_request_before_the_bad_one_reaches_the_origin(edge_env):
    env = await edge_env()
    env.origin.route("/p", echo=True)
    env.origin.route("/smuggled", body=b"smuggled")
    valid = "POST /p HTTP/1.1\r\nHost: edge.test\r\nContent-Length: 2\r\n\r\nok"
    raw = await env.raw((valid + SHAPES["cl-and-te"]).encode())
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert raw.count(b"HTTP/1.1 ") == 2 and b"HTTP/1.1 400 " in raw
    assert [(s.method, s.path, s.body) for s in env.origin.seen] == [("POST", "/p", b"ok")]


async def test_chunked_body_is_forwarded_with_the_length_that_was_parsed(edge_env):
    """A valid chunked request (with an extension) reaches the origin as the bytes parsed,
    framed by a Content-Length of exactly those bytes, never the client's TE."""
    env = await edge_env()
    env.origin.route("/p", echo=True)
    raw = await env.raw((H + "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                         "3;name=value\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").encode())
    assert raw.startswith(b"HTTP/1.1 200 ")
    seen = env.origin.last("/p")
    assert seen.body == b"abcde"
    assert seen.header("Transfer-Encoding") in (None, "chunked")
    assert seen.header("Content-Length") in (None, "5")


async def test_leading_zeros_in_content_length_are_the_same_number(edge_env):
    """RFC 9110 §8.6 allows 1*DIGIT: "005" is 5, and is forwarded as the length parsed."""
    env = await edge_env()
    env.origin.route("/p", echo=True)
    raw = await env.raw((H + "Content-Length: 005\r\nConnection: close\r\n\r\nabcde").encode())
    assert raw.startswith(b"HTTP/1.1 200 ")
    seen = env.origin.last("/p")
    assert seen.body == b"abcde" and seen.header("Content-Length") == "5"


async def test_absolute_form_wins_over_host(edge_env):
    env = await edge_env()
    env.origin.route("/p", echo=True)
    raw = await env.raw(b"GET http://real.test/p HTTP/1.1\r\nHost: other.test\r\n"
                        b"Connection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert env.origin.last("/p").header("Host") == "real.test"
