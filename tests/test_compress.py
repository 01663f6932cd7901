"""Compression end to end: a real origin, the edge, aiohttp (no auto-decompression) and curl."""

from __future__ import annotations

import asyncio
import gzip
import os
import shutil

import brotli
import pytest
from edgeutil import edge_env, member

__all__ = ["edge_env"]

pytestmark = pytest.mark.asyncio

PAGE = b"<html><body>" + b"hello compressible world " * 200 + b"</body></html>"
HTML = [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "max-age=60"),
        ("ETag", '"v1"')]


def decode(coding: str | None, body: bytes) -> bytes:
    if coding == "br":
        return brotli.decompress(body)
    if coding == "gzip":
        return gzip.decompress(body)
    assert coding is None
    return body


async def test_variants_chosen_by_accept_encoding(edge_env):
    env = await edge_env()
    env.origin.route("/p", headers=HTML, body=PAGE)
    first = await env.get("/p", [("Accept-Encoding", "gzip, deflate, br")])
    assert first.status == 200
    assert first.headers["Content-Encoding"] == "br"
    assert first.headers["ETag"] == '"v1-br"'
    assert first.headers["Vary"] == "Accept-Encoding"
    assert int(first.headers["Content-Length"]) == len(first.body) < len(PAGE)
    assert decode("br", first.body) == PAGE
    # the origin saw the edge's forwarded Accept-Encoding and answered identity once
    assert env.origin.count("/p") == 1
    for accept, coding in [("gzip", "gzip"), ("br;q=0.2, gzip;q=0.8", "gzip"),
                           ("br, gzip", "br"), (None, None), ("identity", None),
                           ("deflate", None), ("*", "br")]:
        r = await env.get("/p", [("Accept-Encoding", accept)] if accept else [])
        assert r.status == 200
        assert r.headers.get("Content-Encoding") == coding, accept
        assert r.headers["Vary"] == "Accept-Encoding"
        assert r.headers["ETag"] == ('"v1"' if coding is None else f'"v1-{coding}"')
        assert r.cache_status.startswith(member("hit"))
        assert decode(coding, r.body) == PAGE
    assert env.origin.count("/p") == 1  # every variant from the one fill
    # the compressed bodies are stored once: the same bytes on every hit
    again = await env.get("/p", [("Accept-Encoding", "br")])
    assert again.body == first.body


async def test_never_twice_and_no_transform(edge_env):
    env = await edge_env()
    packed = gzip.compress(PAGE)
    env.origin.route("/gz", headers=[*HTML, ("Content-Encoding", "gzip"),
                                     ("Vary", "Accept-Encoding")], body=packed)
    env.origin.route("/nt", headers=[*HTML, ("Cache-Control", "max-age=60, no-transform")],
                     body=PAGE)
    env.origin.route("/png", headers=[("Content-Type", "image/png"), *HTML[1:]], body=PAGE)
    env.origin.route("/small", headers=HTML, body=b"<p>tiny</p>")
    for _ in range(2):  # the miss and the hit
        r = await env.get("/gz", [("Accept-Encoding", "br, gzip")])
        assert r.headers["Content-Encoding"] == "gzip" and r.body == packed
        assert r.headers["ETag"] == '"v1"'
        for path in ("/nt", "/png", "/small"):
            r = await env.get(path, [("Accept-Encoding", "br, gzip")])
            assert "Content-Encoding" not in r.headers and "Vary" not in r.headers, path
            assert r.headers["ETag"] == '"v1"'
    # a request that says no-transform gets identity from the compressed entry
    env.origin.route("/p", headers=HTML, body=PAGE)
    await env.get("/p", [("Accept-Encoding", "br")])
    r = await env.get("/p", [("Accept-Encoding", "br"), ("Cache-Control", "no-transform")])
    assert "Content-Encoding" not in r.headers and r.body == PAGE
    assert r.headers["Vary"] == "Accept-Encoding"


async def test_conditional_and_range_on_compressed_variants(edge_env):
    env = await edge_env()
    env.origin.route("/p", headers=HTML, body=PAGE)
    full = await env.get("/p", [("Accept-Encoding", "br")])
    size = len(full.body)
    # 304 for the variant's own ETag, with the variant's ETag and Vary
    r = await env.get("/p", [("Accept-Encoding", "br"), ("If-None-Match", '"v1-br"')])
    assert r.status == 304 and r.body == b""
    assert r.headers["ETag"] == '"v1-br"' and r.headers["Vary"] == "Accept-Encoding"
    # the identity ETag does not validate the br variant, and the other way round
    r = await env.get("/p", [("Accept-Encoding", "br"), ("If-None-Match", '"v1"')])
    assert r.status == 200 and r.headers["Content-Encoding"] == "br"
    r = await env.get("/p", [("If-None-Match", '"v1-br"')])
    assert r.status == 200 and "Content-Encoding" not in r.headers
    r = await env.get("/p", [("If-None-Match", '"v1"')])
    assert r.status == 304 and r.headers["ETag"] == '"v1"'
    # Range over the compressed bytes, If-Range with the variant's strong ETag
    r = await env.get("/p", [("Accept-Encoding", "br"), ("Range", "bytes=0-9")])
    assert r.status == 206 and r.body == full.body[:10]
    assert r.headers["Content-Range"] == f"bytes 0-9/{size}"
    assert r.headers["Content-Encoding"] == "br" and r.headers["ETag"] == '"v1-br"'
    r = await env.get("/p", [("Accept-Encoding", "br"), ("Range", "bytes=10-"),
                             ("If-Range", '"v1-br"')])
    assert r.status == 206 and r.body == full.body[10:]
    r = await env.get("/p", [("Accept-Encoding", "br"), ("Range", "bytes=10-"),
                             ("If-Range", '"v1"')])
    assert r.status == 200 and r.body == full.body
    r = await env.get("/p", [("Accept-Encoding", "gzip"), ("Range", f"bytes={len(PAGE)}-")])
    assert r.status == 416
    # HEAD: the variant's length, no body
    r = await env.request("HEAD", "/p", [("Accept-Encoding", "gzip")])
    gz = await env.get("/p", [("Accept-Encoding", "gzip")])
    assert r.status == 200 and r.body == b""
    assert r.headers["Content-Length"] == str(len(gz.body))
    assert r.headers["Content-Encoding"] == "gzip"
    assert env.origin.count("/p") == 1


async def test_revalidated_entry_keeps_its_variants(edge_env):
    env = await edge_env()
    env.origin.route("/p", headers=[*HTML[:1], ("Cache-Control", "max-age=10"),
                                    ("ETag", '"v1"')], body=PAGE)
    first = await env.get("/p", [("Accept-Encoding", "gzip")])
    env.clock.advance(20)
    r = await env.get("/p", [("Accept-Encoding", "gzip")])
    assert env.origin.count("/p") == 2
    assert env.origin.last("/p").header("If-None-Match") == '"v1"'  # the identity validator
    assert r.status == 200 and r.headers["Content-Encoding"] == "gzip"
    assert r.body == first.body and "fwd-status=304" in r.cache_status


async def test_disabled_by_config(edge_env):
    env = await edge_env(compression={"enabled": False})
    env.origin.route("/p", headers=HTML, body=PAGE)
    for _ in range(2):
        r = await env.get("/p", [("Accept-Encoding", "br, gzip")])
        assert "Content-Encoding" not in r.headers and r.body == PAGE


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
async def test_curl_compressed(edge_env):
    env = await edge_env()
    env.origin.route("/p", headers=HTML, body=PAGE)
    for _ in range(2):  # miss, then hit
        proc = await asyncio.create_subprocess_exec(
            "curl", "-sS", "--compressed", "-D", "-", env.url("/p"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 10)
        assert proc.returncode == 0, err
        head, _, body = out.partition(b"\r\n\r\n")
        assert body == PAGE
        assert b"content-encoding: br" in head.lower() or b"content-encoding: gzip" in (
            head.lower())
    assert env.origin.count("/p") == 1


async def test_incompressible_body_is_stored_as_is_and_sizes_count_variants(edge_env):
    env = await edge_env()
    noise = os.urandom(4096)  # random bytes: no coding makes them smaller
    env.origin.route("/noise", headers=[("Content-Type", "text/plain"), *HTML[1:]], body=noise)
    env.origin.route("/p", headers=HTML, body=PAGE)
    r = await env.get("/noise", [("Accept-Encoding", "br, gzip")])
    assert "Content-Encoding" not in r.headers and r.body == noise
    await env.get("/p", [("Accept-Encoding", "gzip")])
    store = env.app.store
    noise_entry = store.get(env.key("/noise"), (), env.clock())
    page = store.get(env.key("/p"), (), env.clock())
    assert noise_entry.encoded is None
    assert set(page.encoded) == {"br", "gzip", "identity"}
    # the variants are counted (their bodies, heads and fields; the identity body once)
    extra = sum(len(v.body) for c, v in page.encoded.items() if c != "identity")
    assert page.size > len(PAGE) + extra
    assert page.encoded["identity"].body is page.body
