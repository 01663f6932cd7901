"""HTTP/2 (edge/h2server.py, edge/h2ng.py): the same caching behaviour as HTTP/1.1, over real
TLS (a trustme CA) with httpx, plus curl --http2 and h2load, and bad input from a raw h2
client; every test on both HTTP/2 layers (the ``h2`` library and libnghttp2)."""

from __future__ import annotations

import asyncio
import gzip
import shutil

import brotli
import h2.errors
import h2.events
import pytest
from edgeutil import edge_env, member
from h2util import IMPLS, RawH2, get_headers, tls_edge

__all__ = ["edge_env"]

PROTOS = ["h1", "h2"]
PAGE = b"<html>" + b"multiplexed and cached " * 300 + b"</html>"
CACHED = [("Content-Type", "text/html"), ("Cache-Control", "max-age=60"), ("ETag", '"e1"')]


@pytest.fixture(params=IMPLS)
async def tls(edge_env, tmp_path, request):
    env = await edge_env(max_object_bytes=4 * 1024 * 1024)
    t = await tls_edge(env, tmp_path, impl=request.param)
    yield t
    await t.close()


def version(proto: str) -> str:
    return "HTTP/2" if proto == "h2" else "HTTP/1.1"


@pytest.mark.parametrize("proto", PROTOS)
async def test_miss_then_hit_head_and_304(tls, proto):
    origin = tls.env.origin
    origin.route("/p", headers=CACHED, body=PAGE)
    async with tls.client(proto) as c:
        r = await c.get(tls.url(proto, "/p"), headers={"accept-encoding": "identity"})
        assert r.http_version == version(proto)
        assert r.status_code == 200 and r.content == PAGE
        assert "fwd=uri-miss" in r.headers["cache-status"]
        r = await c.get(tls.url(proto, "/p"), headers={"accept-encoding": "identity"})
        assert r.headers["cache-status"].startswith(member("hit"))
        assert r.content == PAGE and r.headers["age"] == "0"
        r = await c.head(tls.url(proto, "/p"), headers={"accept-encoding": "identity"})
        assert r.status_code == 200 and r.content == b""
        assert r.headers["content-length"] == str(len(PAGE))
        r = await c.get(tls.url(proto, "/p"), headers={"if-none-match": '"e1"',
                                                       "accept-encoding": "identity"})
        assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == '"e1"'
    assert origin.count("/p") == 1
    # the origin was asked with the scheme's key and the normalised Host
    assert origin.last("/p").header("Host") == f"localhost:{tls.h2_port if proto == 'h2' else tls.h1_port}"  # noqa: E501


@pytest.mark.parametrize("proto", PROTOS)
async def test_vary_and_compression(tls, proto):
    origin = tls.env.origin
    origin.route("/v", headers=[*CACHED, ("Vary", "Accept-Language")], body=PAGE)
    async with tls.client(proto) as c:
        for lang in ("en", "fr", "en", "fr"):
            r = await c.get(tls.url(proto, "/v"), headers={"accept-language": lang,
                                                           "accept-encoding": "br"})
            assert r.headers["content-encoding"] == "br"
            assert r.content == PAGE  # httpx decodes
        r = await c.get(tls.url(proto, "/v"), headers={"accept-language": "en",
                                                       "accept-encoding": "gzip"})
        assert r.headers["content-encoding"] == "gzip" and r.content == PAGE
        assert r.headers["cache-status"].startswith(member("hit"))
    assert origin.count("/v") == 2
    assert brotli and gzip  # decoders used by httpx


@pytest.mark.parametrize("proto", PROTOS)
async def test_range_and_large_bodies(tls, proto):
    origin = tls.env.origin
    big = bytes(range(256)) * 4096  # 1 MiB: far beyond the 64 KiB initial windows
    origin.route("/big", headers=[("Content-Type", "application/octet-stream"),
                                  ("Cache-Control", "max-age=60")], body=big)
    origin.route("/huge", headers=[("Content-Type", "application/octet-stream"),
                                   ("Cache-Control", "max-age=60")], body=big * 5)
    async with tls.client(proto) as c:
        for _ in range(2):
            r = await c.get(tls.url(proto, "/big"))
            assert r.status_code == 200 and r.content == big
        r = await c.get(tls.url(proto, "/big"), headers={"range": "bytes=100-199"})
        assert r.status_code == 206 and r.content == big[100:200]
        assert r.headers["content-range"] == f"bytes 100-199/{len(big)}"
        r = await c.get(tls.url(proto, "/big"), headers={"range": "bytes=0-0,-1"})
        assert r.status_code == 206
        assert r.headers["content-type"].startswith("multipart/byteranges")
        r = await c.get(tls.url(proto, "/big"), headers={"range": f"bytes={len(big)}-"})
        assert r.status_code == 416
        r = await c.get(tls.url(proto, "/huge"))  # over max_object_bytes: streamed through
        assert r.status_code == 200 and r.content == big * 5
    assert origin.count("/big") == 1


@pytest.mark.parametrize("proto", PROTOS)
async def test_pass_post_and_errors(tls, proto):
    origin = tls.env.origin
    origin.route("/echo", echo=True)
    async with tls.client(proto) as c:
        r = await c.post(tls.url(proto, "/echo"), content=b"x" * 100_000)
        assert r.status_code == 200 and r.json()["body"] == "x" * 100_000
        r = await c.get(tls.url(proto, "/missing"))
        assert r.status_code == 404
        r = await c.request("TRACE", tls.url(proto, "/echo"))
        assert r.status_code == 405


async def test_h2_multiplexes_many_streams(tls):
    origin = tls.env.origin
    for i in range(20):
        origin.route(f"/m{i}", headers=CACHED, body=PAGE + b"%d" % i)
    async with tls.client("h2") as c:
        rs = await asyncio.gather(*(c.get(tls.url("h2", f"/m{i % 20}")) for i in range(200)))
    assert all(r.status_code == 200 for r in rs)
    assert all(r.content == PAGE + b"%d" % (i % 20) for i, r in enumerate(rs))
    assert len(tls.h2_conns) == 1  # one connection carried them all
    assert origin.count() == 20  # coalesced or cached: one fill per URL


async def test_h2_oversized_headers(tls):
    tls.env.origin.route("/p", headers=CACHED, body=PAGE)
    raw = await RawH2.open(tls.h2_port, tls.client_context())
    # over max_header_bytes: 431 on that stream, and the connection goes on
    raw.conn.send_headers(1, get_headers("/p", [(b"x-big", b"a" * 20_000)]), end_stream=True)
    raw.conn.send_headers(3, get_headers("/p"), end_stream=True)
    raw.flush()
    await raw.until(lambda ev: raw.response(1)[2] and raw.response(3)[2])
    assert raw.response(1)[0] == 431
    assert raw.response(3)[0] == 200 and raw.response(3)[1] == PAGE
    # an HPACK bomb beyond the hard limit: GOAWAY ENHANCE_YOUR_CALM
    raw.conn.send_headers(5, get_headers("/p", [(b"x-big", b"a" * 300_000)]), end_stream=True)
    raw.flush()
    await raw.until(lambda ev: raw.terminated() is not None)
    assert raw.terminated().error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    await raw.close()
    async with tls.client("h2") as c:  # others are served
        assert (await c.get(tls.url("h2", "/p"))).status_code == 200


async def test_h2_rapid_reset_is_stopped(tls):
    gate = asyncio.Event()  # the origin never answers during the attack
    tls.env.origin.route("/slow", headers=CACHED, body=PAGE, gate=gate)
    tls.env.origin.route("/p", headers=CACHED, body=PAGE)
    raw = await RawH2.open(tls.h2_port, tls.client_context())
    sid = 1
    for _ in range(1000):  # open and cancel at once, in a loop (CVE-2023-44487)
        raw.conn.send_headers(sid, get_headers(f"/slow?{sid}"), end_stream=True)
        raw.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        sid += 2
    raw.flush()
    await raw.until(lambda ev: raw.terminated() is not None)
    term = raw.terminated()
    assert term is not None and term.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    await raw.close()
    # the handlers of the reset streams are bounded: at most max_streams reached the origin
    assert tls.env.origin.count() <= 100
    async with tls.client("h2") as c:
        r = await c.get(tls.url("h2", "/p"))
        assert r.status_code == 200 and r.content == PAGE
    gate.set()
    await tls.env.settle()


async def test_h2_ping_and_settings_floods(tls):
    tls.env.origin.route("/p", headers=CACHED, body=PAGE)
    for flood in ("ping", "settings"):
        raw = await RawH2.open(tls.h2_port, tls.client_context())
        for i in range(500):
            if flood == "ping":
                raw.conn.ping(b"%08d" % i)
            else:
                raw.conn.update_settings({h2.settings.SettingCodes.MAX_FRAME_SIZE: 16384 + i})
        raw.flush()
        await raw.until(lambda ev, raw=raw: raw.terminated() is not None)
        assert raw.terminated().error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, flood
        await raw.close()
    async with tls.client("h2") as c:
        assert (await c.get(tls.url("h2", "/p"))).status_code == 200


async def test_h2_garbage_and_idle(tls):
    raw = await RawH2.open(tls.h2_port, tls.client_context())
    raw.send_raw(b"\x00\x00\x08\x07\x00\x00\x00\x00\x01garbage!" * 4 + b"\xff" * 64)
    await raw.until(lambda ev: raw.terminated() is not None)
    assert raw.terminated() is not None or raw.eof
    await raw.close()
    # not an h2 preface at all, on the plain h2c port
    reader, writer = await asyncio.open_connection("127.0.0.1", tls.h2c_port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    async with asyncio.timeout(5):
        rest = await reader.read(-1)  # a GOAWAY, then the close
    assert rest == b"" or rest[3] in (0x4, 0x7)
    writer.close()
    tls.env.origin.route("/p", headers=CACHED, body=PAGE)
    async with tls.client("h2") as c:
        assert (await c.get(tls.url("h2", "/p"))).status_code == 200


async def test_h2_goaway_on_shutdown_lets_open_streams_finish(tls):
    gate = asyncio.Event()
    tls.env.origin.route("/slow", headers=CACHED, body=PAGE, gate=gate)
    raw = await RawH2.open(tls.h2_port, tls.client_context())
    raw.conn.send_headers(1, get_headers("/slow"), end_stream=True)
    raw.flush()
    await tls.env.origin.wait_count("/slow", 1)
    for proto in list(tls.h2_conns):
        proto.goaway()
    await raw.until(lambda ev: raw.terminated() is not None)
    assert raw.terminated().error_code == h2.errors.ErrorCodes.NO_ERROR
    assert raw.terminated().last_stream_id == 1
    gate.set()
    await raw.until(lambda ev: raw.response(1)[2])
    assert raw.response(1)[:2] == (200, PAGE)
    await raw.until(lambda ev: False)  # then the edge closes the connection
    assert raw.eof
    await raw.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
async def test_curl_http2_tls_and_prior_knowledge(tls):
    tls.env.origin.route("/p", headers=CACHED, body=PAGE)
    for args in (["--http2", "--cacert", tls.ca_file, tls.url("h2", "/p")],
                 ["--http2-prior-knowledge", f"http://127.0.0.1:{tls.h2c_port}/p"]):
        proc = await asyncio.create_subprocess_exec(
            "curl", "-sS", "--compressed", "-o", "-", "-w", "\n%{http_version}", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 10)
        assert proc.returncode == 0, err
        body, _, ver = out.rpartition(b"\n")
        assert ver == b"2" and body == PAGE


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (nghttp2-client) missing")
async def test_h2load_all_succeed(tls):
    tls.env.origin.route("/p", headers=CACHED, body=PAGE)
    for url in (tls.url("h2", "/p"), f"http://127.0.0.1:{tls.h2c_port}/p"):
        proc = await asyncio.create_subprocess_exec(
            "h2load", "-n", "2000", "-c", "4", "-m", "100", url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        text = out.decode()
        assert proc.returncode == 0, text + err.decode()
        assert "2000 succeeded, 0 failed, 0 errored" in text, text
        assert "status codes: 2000 2xx" in text, text
    assert h2.events  # the raw client's events module is the one the edge sees
