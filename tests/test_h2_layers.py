"""The two HTTP/2 layers (edge.h2server.H2LibProtocol on ``h2``, edge.h2ng.NgH2Protocol on
libnghttp2) give the same answers: for each request of a table, the status, the header list
(names, values, order; Date aside) and the body, or the stream's reset code, are equal.

Both layers serve one edge (one cache, a frozen clock): the table is first sent once to warm
the cache, then to each layer, and the answers compared.
"""

from __future__ import annotations

import os

import h2.events
import pytest
from edgeutil import edge_env
from h2util import RawH2, get_headers, h2_class, tls_edge

__all__ = ["edge_env"]

PAGE = b"<html>" + b"the same on both layers " * 200 + b"</html>"
CACHED = [("Content-Type", "text/html"), ("Cache-Control", "max-age=60"), ("ETag", '"e1"')]
Fields = list[tuple[bytes, bytes]]

# (name, extra fields, method, path, body, end the stream with the headers)
TABLE: list[tuple[str, Fields, bytes, str, bytes, bool]] = [
    ("hit identity", [(b"accept-encoding", b"identity")], b"GET", "/p", b"", True),
    ("hit brotli", [(b"accept-encoding", b"br")], b"GET", "/p", b"", True),
    ("head", [], b"HEAD", "/p", b"", True),
    ("304", [(b"if-none-match", b'"e1"')], b"GET", "/p", b"", True),
    ("range", [(b"range", b"bytes=0-9")], b"GET", "/p", b"", True),
    ("multipart range", [(b"range", b"bytes=0-0,-1")], b"GET", "/p", b"", True),
    ("416", [(b"range", b"bytes=999999-")], b"GET", "/p", b"", True),
    ("404 miss", [], b"GET", "/missing", b"", True),
    ("set-cookie passed", [], b"GET", "/c", b"", True),
    ("405", [], b"TRACE", "/p", b"", True),
    ("post passed", [(b"content-type", b"text/plain"), (b"cookie", b"a=1"),
                     (b"cookie", b"b=2")], b"POST", "/echo", b"hello", False),
    ("431", [(b"x-big", b"a" * 20_000)], b"GET", "/p", b"", True),
    ("414", [], b"GET", "/" + "a" * 9000, b"", True),
    ("413 by length", [(b"content-length", b"%d" % (50 * 1024 * 1024))], b"POST", "/echo",
     b"", False),
    ("malformed name", [(b"X-Upper", b"1")], b"GET", "/p", b"", True),
    ("connection-specific", [(b"connection", b"close")], b"GET", "/p", b"", True),
    ("bad target", [], b"GET", "no-slash", b"", True),
]


async def answer(port: int, ctx, extra: Fields, method: bytes, path: str, body: bytes,
                 end: bool) -> tuple:
    raw = await RawH2.open(port, ctx)
    try:
        fields = [(b":method", method), *get_headers(path, extra)[1:]]
        raw.conn.send_headers(1, fields, end_stream=end)
        if body:
            raw.conn.send_data(1, body, end_stream=True)
        raw.flush()
        await raw.until(lambda ev: raw.response(1)[2] or raw.terminated() is not None)
        status, data, _ = raw.response(1)
        headers = next((e.headers for e in raw.events
                        if isinstance(e, h2.events.ResponseReceived)), [])
        reset = next((e.error_code for e in raw.events
                      if isinstance(e, h2.events.StreamReset)), None)
        if status is not None:  # a reset after a complete answer (413, 431) is not compared
            reset = None
        headers = [(n, v) for n, v in headers if n != b"date"]
        kind = dict(headers).get(b"content-type", b"")
        if kind.startswith(b"multipart/byteranges; boundary="):  # random per response
            boundary = kind.partition(b"=")[2]
            headers = [(n, v.replace(boundary, b"B")) for n, v in headers]
            data = data.replace(boundary, b"B")
        return status, headers, data, reset
    finally:
        await raw.close()


@pytest.fixture
async def layers(edge_env, tmp_path):
    h2_class("nghttp2")  # skipped (failed under CI) without the extension
    env = await edge_env(max_object_bytes=4 * 1024 * 1024)
    env.origin.route("/p", headers=CACHED, body=PAGE)
    env.origin.route("/echo", echo=True)
    env.origin.route("/c", headers=[("Content-Type", "text/plain"), ("Set-Cookie", "a=1")],
                     body=b"cookie")
    lib = await tls_edge(env, tmp_path, impl="h2lib")
    ng = await tls_edge(env, tmp_path, impl="nghttp2")
    yield env, lib, ng
    await lib.close()
    await ng.close()


async def test_both_layers_answer_the_same(layers):
    env, lib, ng = layers
    for _, *req in TABLE:  # warm the cache: both layers then see the same hits
        await answer(lib.h2_port, lib.client_context(), *req)
    diffs = []
    for name, *req in TABLE:
        a = await answer(lib.h2_port, lib.client_context(), *req)
        b = await answer(ng.h2_port, ng.client_context(), *req)
        assert a[0] is not None or a[3] is not None, name  # an answer or a reset
        if a != b:
            diffs.append((name, a, b))
    assert not diffs, diffs
    assert env.origin.count("/p") == 1  # the hits came from the one cache


def test_the_nghttp2_layer_is_chosen_when_built():
    import edge.h2server

    if os.environ.get("CI"):  # CI must build and test it (libnghttp2-dev, .ci/run)
        assert edge.h2server.NGHTTP2, "edge._nghttp2 was not built"
    if edge.h2server.NGHTTP2:
        assert edge.h2server.H2Protocol is h2_class("nghttp2")
    else:
        assert edge.h2server.H2Protocol is edge.h2server.H2LibProtocol
