"""The C request-head parser (edge/_fasthttp.c) against the llhttp path it sits in front of.

Whatever the C parser accepts must become exactly the Request that llhttp and the Python path
make of the same bytes; whatever is unusual it must leave to them (None). And an edge answers
byte for byte the same with and without the extension.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import fields
from typing import Any

import pytest
from edgeutil import TOKEN, edge_env
from hypothesis import given
from hypothesis import strategies as st

import edge.httpserver as httpserver
from edge.httpserver import HttpProtocol, Limits, Request
from edge.proxy import SLOW_HEADERS

__all__ = ["edge_env"]

try:
    import edge._fasthttp as fasthttp
except ImportError:  # optional (a machine without a C compiler); CI must have built it
    if os.environ.get("CI"):
        raise
    pytest.skip("edge._fasthttp is not built (needs gcc and python3-dev)",
                allow_module_level=True)
LIMITS = Limits()
FLAGS = tuple(SLOW_HEADERS)


class Transport:
    def __init__(self) -> None:
        self.closed = False

    def write(self, data: bytes) -> None:
        pass

    def writelines(self, data: list[bytes]) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("192.0.2.7", 4242) if name == "peername" else default

    def is_reading(self) -> bool:
        return True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    abort = close


class Recorder:
    """A handler that answers every request on the fast path and keeps it."""

    flag_headers = SLOW_HEADERS

    def __init__(self) -> None:
        self.seen: list[Request] = []

    def fast(self, request: Request) -> bytes:
        self.seen.append(request)
        return b"HTTP/1.1 204 No Content\r\n\r\n"

    async def handle(self, request: Request, writer: Any) -> None:
        raise AssertionError("not reached")


def requests_of(data: bytes | list[bytes], c_parser: bool,
                scheme: str = "http") -> tuple[list[Request], bool]:
    """The requests a connection makes of ``data`` (one read, or a list of reads) and whether
    it closed, with or without the C parser."""
    recorder = Recorder()
    proto = HttpProtocol(recorder, LIMITS)  # type: ignore[arg-type]
    proto.scheme = scheme
    if not c_parser:
        proto._parse = None
    transport = Transport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    for chunk in [data] if isinstance(data, bytes) else data:
        proto.data_received(chunk)
    if proto._timer is not None:
        proto._timer.cancel()
    return recorder.seen, transport.closed or proto.closing


def view(request: Request) -> dict[str, Any]:
    out = {f.name: getattr(request, f.name) for f in fields(request)
           if f.name not in ("_lower", "interim")}
    out["lookups"] = {n.lower(): request.header(n.lower()) for n, _ in request.headers}
    return out


def same(data: bytes | list[bytes], scheme: str = "http") -> list[Request]:
    with_c, closed_c = requests_of(data, True, scheme)
    without, closed = requests_of(data, False, scheme)
    assert [view(r) for r in with_c] == [view(r) for r in without]
    assert closed_c == closed
    return with_c


PLAIN = [
    b"GET /1k.bin HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
    b"HEAD /a?b=c&d=e HTTP/1.1\r\nHost: www.Example.COM.\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: example.com:80\r\nUser-Agent: Mozilla/5.0 (X11)\r\n"
    b"Accept: */*\r\naccept: text/html\r\nAccept-Encoding: gzip, br\r\n"
    b"Connection: Keep-Alive\r\nReferer: https://x.test/?q=1\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: example.com:443\r\nRange: bytes=0-1\r\n\r\n",
    b"GET /a HTTP/1.1\r\nhost: _dmarc.example.com:08080\r\nCache-Control: no-cache\r\n\r\n",
    b"GET /a:b@c/~d!$&'()*+,;= HTTP/1.1\r\nHost: a-b.c\r\nX-Tab:\tv\tw\r\n\r\n",
    b"GET /?? HTTP/1.1\r\nHost: a\r\nX:  two spaces\r\n\r\n",
]

# what the C parser leaves to llhttp (which may accept it, or answer an error)
UNUSUAL = [
    b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    b"GET /a HTTP/1.0\r\nHost: a\r\n\r\n",
    b"GET http://a/b HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /a%41 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /a/../b HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /.well-known/x HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /a|b HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: a..b\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: -a.b\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: a:0\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: a:123456\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET /a HTTP/1.1\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nabcd",
    b"GET /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: a\r\nX : a\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: a\r\nX: trailing \r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: a\r\nX:\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
    b"GET /a HTTP/1.1\nHost: a\n\n",
    b"GET /a HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: a\r\n",  # incomplete
    b"\r\nGET /a HTTP/1.1\r\nHost: a\r\n\r\n",
    b"get /a HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET  /a HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /a HTTP/1.1 \r\nHost: a\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: a\r\n" + b"X-" + b"n" * 70 + b": v\r\n\r\n",
]


@pytest.mark.parametrize("data", PLAIN)
@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_plain_heads_parse_as_llhttp_does(data, scheme):
    assert fasthttp.parse(data, 0, scheme, FLAGS, 8192, 16384, 100) is not None
    assert len(same(data, scheme)) == 1
    assert len(same(data * 3, scheme)) == 3  # pipelined


@pytest.mark.parametrize("data", UNUSUAL)
async def test_unusual_heads_are_left_to_llhttp(data):
    assert fasthttp.parse(data, 0, "http", FLAGS, 8192, 16384, 100) is None
    same(data)
    same(PLAIN[0] + data)  # after a plain request on the same connection
    same(PLAIN[0] + data + PLAIN[1])
    same([PLAIN[0], data, PLAIN[1]])  # in reads of their own


@pytest.mark.parametrize(("limits", "data"), [
    ((8, 16384, 100), b"GET /123456789 HTTP/1.1\r\nHost: a\r\n\r\n"),  # max_url_bytes
    ((8192, 30, 100), b"GET /a HTTP/1.1\r\nHost: a\r\nUser-Agent: 12345678\r\n\r\n"),
    ((8192, 16384, 1), b"GET /a HTTP/1.1\r\nHost: a\r\nAccept: x\r\n\r\n"),
])
async def test_over_a_limit_is_left_to_llhttp(limits, data):
    assert fasthttp.parse(data, 0, "http", FLAGS, *limits) is None
    assert fasthttp.parse(data, 0, "http", FLAGS, 8192, 16384, 100) is not None


async def test_split_head_goes_to_llhttp_then_back():
    recorder = Recorder()
    proto = HttpProtocol(recorder, LIMITS)  # type: ignore[arg-type]
    proto.connection_made(Transport())  # type: ignore[arg-type]
    first, second = PLAIN[2][:30], PLAIN[2][30:]
    proto.data_received(first)
    proto.data_received(second + PLAIN[0])
    proto.data_received(PLAIN[1])
    assert proto._timer is not None
    proto._timer.cancel()
    assert [r.target for r in recorder.seen] == ["/a", "/1k.bin", "/a?b=c&d=e"]


# -- random heads: either left alone or parsed exactly as llhttp does ----------------------------
NAMES = st.sampled_from(["Host", "host", "HOST", "User-Agent", "Accept", "Range", "X-A",
                         "Connection", "Content-Length", "Transfer-Encoding", "Cookie",
                         "If-None-Match", "X A", "X:A", ""])
VALUES = st.text(st.sampled_from("aZ09 -._~:/?=;,\t\"%\\\x00\x7f\xe9[]"), max_size=12)
HOSTS = st.one_of(st.sampled_from(["a", "A.b.", "127.0.0.1:80", "x:443", "a..b", "[::1]",
                                   "a_b:8080", "a-:1", "a:", ":80", "a:65536", "a.b:0080"]),
                  st.text(st.sampled_from("aZ9.-_:[]"), max_size=10))
TARGETS = st.text(st.sampled_from("/aZ9?.%#-_~!$&'()*+,;=:@|{} "), min_size=1, max_size=12)


@given(method=st.sampled_from(["GET", "HEAD", "POST", "GET "]), target=TARGETS,
       host=HOSTS, extra=st.lists(st.tuples(NAMES, VALUES), max_size=4),
       version=st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/1.1 "]))
def test_random_heads(method, target, host, extra, version):
    lines = [f"{method} {target} {version}", f"Host: {host}",
             *(f"{n}: {v}" for n, v in extra)]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def check() -> None:
        if fasthttp.parse(data, 0, "http", FLAGS, 8192, 16384, 100) is not None:
            assert len(same(data)) == 1
        same(data + PLAIN[0])

    asyncio.run(check())


# -- an edge answers the same bytes with and without the extension -------------------------------
async def exchange(env: Any, data: bytes) -> bytes:
    return await env.raw(data)


async def test_same_bytes_with_and_without_the_extension(edge_env, monkeypatch):
    env = await edge_env()
    env.origin.route("/a", headers=[("Cache-Control", "max-age=60"), ("ETag", '"e"'),
                                    ("Vary", "Accept-Encoding")], body=b"A" * 100)
    env.origin.route("/b", headers=[("Cache-Control", "max-age=60")], body=b"B")
    host = env.host.encode()
    reqs = [b"GET /a HTTP/1.1\r\nHost: " + host + b"\r\nAccept-Encoding: gzip\r\n\r\n",
            b"HEAD /a HTTP/1.1\r\nHost: " + host + b"\r\nAccept-Encoding: gzip\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: " + host + b"\r\nIf-None-Match: \"e\"\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: " + host + b"\r\nRange: bytes=1-2\r\n\r\n",
            b"GET /b HTTP/1.1\r\nHost: " + host + b"\r\nUser-Agent: x\r\n\r\n",
            b"GET /b?x HTTP/1.1\r\nHost: " + host.upper() + b"\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nHost: " + host + b"\r\n\r\n",
            b"PURGE /b?x HTTP/1.1\r\nHost: " + host + b"\r\nAuthorization: Bearer "
            + TOKEN.encode() + b"\r\n\r\n"]
    close = b"GET /b HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"
    await exchange(env, b"".join(reqs) + close)  # fill both
    env.clock.advance(5)
    answers = []
    for parser in (httpserver.fast_parse, None):
        monkeypatch.setattr(httpserver, "fast_parse", parser)
        answers.append([await exchange(env, r + close) for r in reqs])
        answers.append(await exchange(env, b"".join(reqs) + close))  # pipelined
    assert answers[0] == answers[2] and answers[1] == answers[3]
    assert b"; hit; ttl=55" in answers[0][0] and b"HTTP/1.1 304" in answers[0][2]


# -- the access log's hit line is record()'s ----------------------------------------------------
@pytest.mark.parametrize("fmt", ["combined", "json"])
@pytest.mark.parametrize("extra", [
    [],
    [("User-Agent", "Mozilla/5.0 (X11)"), ("Referer", "https://r.test/?a=1")],
    [("User-Agent", 'say "hi"\\'), ("Referer", "caf\xe9\x01")],
    [("user-agent", "a"), ("User-Agent", "b")],
])
def test_access_log_hit_line_is_the_record_line(tmp_path, fmt, extra):
    from edge.accesslog import AccessLog

    lines = []
    for way in ("record", "hit"):
        log = AccessLog(str(tmp_path / f"{way}.log"), fmt, "e-1", "r", clock=lambda: 1.5e9)
        log._add = lines.append  # type: ignore[method-assign]
        request = Request("GET", "/a?b", "1.1", [("Host", "h.test"), *extra], "192.0.2.1",
                          host="h.test", key="http://h.test/a?b")
        if way == "record":
            log.record(request, 200, 1234, "geoedge-e-1; hit; ttl=5", "", 0.0000123,
                       0.0000123, "hit")
        else:
            log.hit(request, 200, 1234, "geoedge-e-1; hit; ttl=5", 0.0000123)
        log.close()
    assert lines[0] == lines[1]


async def test_a_connections_last_hit_says_close_as_the_full_path_does(edge_env, monkeypatch):
    env = await edge_env(keepalive_requests=2)
    env.origin.route("/b", headers=[("Cache-Control", "max-age=60")], body=b"B")
    host = env.host.encode()
    get = b"GET /b HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
    close = b"GET /b HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"
    await env.raw(close)  # the fill
    env.clock.advance(5)
    runs = []
    for fast in (True, False):
        if not fast:  # the full path answers everything
            monkeypatch.setattr(env.edge.router, "fast_parts", lambda r: None)
            monkeypatch.setattr(env.edge.router, "fast", lambda r: None)
        before = dict(env.app.metrics.counts)
        answers = [await env.raw(get + get), await env.raw(close)]
        counts = {k: v - before.get(k, 0) for k, v in env.app.metrics.counts.items()}
        runs.append((answers, counts))
    assert runs[0] == runs[1]
    (two, closed), counts = runs[0]
    assert two.count(b"Connection: close\r\n") == 1 and b"Connection: close\r\n" in closed
    assert counts["hits"] == counts["requests"] == 3
