"""The origin's dynamic endpoints through a real server (aiohttp TestServer on a free port)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

import origin.api
from geoconfig.cdnconfig import OriginSettings
from origin.app import create_app


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    app = create_app("origin-api", OriginSettings())
    async with TestClient(TestServer(app), auto_decompress=False) as c:
        yield c


async def stats(client: TestClient) -> dict[str, dict[str, int]]:
    async with client.get("/api/stats") as r:
        assert r.headers["Cache-Control"] == "no-store"
        return await r.json()


def identified(r: object) -> None:
    headers = r.headers  # type: ignore[attr-defined]
    assert headers["X-Origin"] == "origin-api"
    assert headers["Server"] == "geoedge-origin"
    assert "Date" in headers


async def test_time(client: TestClient) -> None:
    before = time.time()
    async with client.get("/api/time") as r:
        body = await r.json()
        assert r.status == 200
        assert r.headers["Cache-Control"] == "public, max-age=2"
        assert r.content_type == "application/json"
        identified(r)
    assert body["origin"] == "origin-api"
    assert before - 1 <= body["time"] <= time.time() + 1
    assert body["iso"].endswith("Z")


async def test_slow_is_delayed_bounded_and_counted(client: TestClient,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    start = time.monotonic()
    async with client.get("/api/slow?ms=150") as r:
        body = await r.json()
        assert r.headers["Cache-Control"] == "public, max-age=60"
        identified(r)
    elapsed = time.monotonic() - start
    assert body["slept_ms"] == 150
    assert 0.15 <= elapsed < 5
    monkeypatch.setattr(origin.api, "SLOW_MAX_MS", 50)
    start = time.monotonic()
    async with client.get("/api/slow?ms=999999") as r:
        assert (await r.json())["slept_ms"] == 50
    assert time.monotonic() - start < 5
    async with client.get("/api/slow?ms=-5") as r:
        assert (await r.json())["slept_ms"] == 0
    counts = await stats(client)
    assert counts["requests"]["/api/slow"] == 3
    assert counts["requests_by_url"]["/api/slow?ms=150"] == 1
    assert "/api/stats" not in counts["requests"]


@pytest.mark.parametrize("query", ["ms=abc", "ms=1.5", "ms=", "ms=--5", "ms=1e3"])
async def test_slow_rejects_non_integers(client: TestClient, query: str) -> None:
    async with client.get(f"/api/slow?{query}") as r:
        assert r.status == 400
        assert r.headers["Cache-Control"] == "no-store"
        identified(r)


async def test_slow_is_counted_while_in_flight(client: TestClient) -> None:
    task = asyncio.create_task(client.get("/api/slow?ms=1000&k=inflight"))
    for _ in range(200):  # each iteration is a real round trip, not a sleep
        if (await stats(client))["requests_by_url"].get("/api/slow?ms=1000&k=inflight") == 1:
            break
    else:
        pytest.fail("the slow request was never counted")
    assert not task.done()
    response = await task
    assert response.status == 200
    response.release()


async def test_stats_count_every_path_and_status(client: TestClient) -> None:
    for path in ("/api/time", "/api/time", "/nope", "/healthz"):
        async with client.get(path):
            pass
    async with client.post("/api/time"):
        pass
    counts = await stats(client)
    assert counts["requests"] == {"/api/time": 3, "/nope": 1, "/healthz": 1}
    assert counts["origin"] == "origin-api"  # type: ignore[comparison-overlap]


async def test_metrics_count_requests_and_are_not_counted(client: TestClient) -> None:
    for path in ("/api/time", "/nope"):
        async with client.get(path):
            pass
    for _ in range(2):
        async with client.get("/metrics") as r:
            assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
            assert r.content_type == "text/plain"
            text = await r.text()
    assert 'geoedge_origin_server_requests_total{origin="origin-api"} 2\n' in text
    assert 'geoedge_origin_server_healthy{origin="origin-api"} 1\n' in text
    assert "/metrics" not in (await stats(client))["requests"]


async def test_private(client: TestClient) -> None:
    sessions = set()
    for _ in range(2):
        async with client.get("/api/private") as r:
            assert r.status == 200
            assert r.headers["Cache-Control"] == "private"
            cookie = r.headers["Set-Cookie"]
            assert cookie.startswith("session=") and "HttpOnly" in cookie and "Path=/" in cookie
            sessions.add(cookie.split(";")[0])
            identified(r)
    assert len(sessions) == 2


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_echo_with_bodies(client: TestClient, method: str) -> None:
    body = hashlib.shake_256(method.encode()).digest(200_000)
    headers = {"X-Trace": "t1", "Authorization": "Bearer hunter2", "Content-Type": "a/b",
               "Accept-Encoding": "identity", "Cookie": "a=1"}
    async with client.request(method, "/api/echo?a=1&a=2&b=", data=body, headers=headers) as r:
        echo = await r.json()
        assert r.status == 200
        assert r.headers["Cache-Control"] == "no-store"
        identified(r)
    assert echo["method"] == method
    assert echo["path"] == "/api/echo"
    assert echo["query"] == {"a": ["1", "2"], "b": [""]}
    assert echo["body_length"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    h = echo["headers"]
    assert h["x-trace"] == "t1" and h["content-type"] == "a/b" and h["cookie"] == "a=1"
    assert h["content-length"] == str(len(body))
    assert h["authorization"] == "[redacted]"
    assert "hunter2" not in str(echo)


async def test_echo_chunked_body_and_repeated_headers(client: TestClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(5):
            yield bytes([i]) * 1000

    headers = [("X-Multi", "a"), ("X-Multi", "b")]
    async with client.post("/api/echo", data=chunks(), headers=headers) as r:
        echo = await r.json()
    assert echo["body_length"] == 5000
    assert echo["headers"]["transfer-encoding"] == "chunked"
    assert echo["headers"]["x-multi"] == "a, b"


async def test_echo_get_and_head(client: TestClient) -> None:
    async with client.get("/api/echo") as r:
        assert (await r.json())["body_length"] == 0
    async with client.head("/api/echo") as r:
        assert r.status == 200 and await r.read() == b""


async def test_echo_rejects_other_methods(client: TestClient) -> None:
    async with client.request("PROPFIND", "/api/echo") as r:
        assert r.status == 405
        assert {"GET", "POST", "PUT", "DELETE", "PATCH"} <= set(r.headers["Allow"].split(","))
        identified(r)


@pytest.mark.parametrize(("query", "status", "cache_control"), [
    ("code=200", 200, None),
    ("code=503", 503, None),
    ("code=500&max_age=30", 500, "public, max-age=30"),
    ("code=404&max_age=0", 404, "public, max-age=0"),
    ("code=200&cc=public,%20max-age%3D1,%20stale-if-error%3D60", 200,
     "public, max-age=1, stale-if-error=60"),
    ("code=599", 599, None),
])
async def test_status(client: TestClient, query: str, status: int,
                      cache_control: str | None) -> None:
    async with client.get(f"/api/status?{query}") as r:
        assert r.status == status
        assert r.headers.get("Cache-Control") == cache_control
        assert (await r.json())["status"] == status
        identified(r)


@pytest.mark.parametrize("code", [204, 304])
async def test_status_without_body(client: TestClient, code: int) -> None:
    async with client.get(f"/api/status?code={code}&max_age=5") as r:
        assert r.status == code
        assert r.headers["Cache-Control"] == "public, max-age=5"
        assert await r.read() == b""
        identified(r)


@pytest.mark.parametrize("query", ["", "code=abc", "code=99", "code=600", "code=200&max_age=-1",
                                   "code=200&max_age=x", "code=200&cc="])
async def test_status_rejects_bad_parameters(client: TestClient, query: str) -> None:
    async with client.get(f"/api/status?{query}") as r:
        assert r.status == 400
        identified(r)


@pytest.mark.parametrize(("accept_language", "language", "greeting"), [
    (None, "en", "hello"),
    ("fr-CA, en;q=0.5", "fr", "bonjour"),
    ("de;q=0.5, es", "es", "hola"),
    ("it", "en", "hello"),
])
async def test_vary(client: TestClient, accept_language: str | None, language: str,
                    greeting: str) -> None:
    headers = {} if accept_language is None else {"Accept-Language": accept_language}
    async with client.get("/api/vary", headers=headers) as r:
        body = await r.json()
        assert r.headers["Vary"] == "Accept-Language"
        assert r.headers["Content-Language"] == language
        assert r.headers["Cache-Control"] == "public, max-age=60"
        identified(r)
    assert (body["language"], body["greeting"]) == (language, greeting)


async def test_gzip_varies_on_accept_encoding(client: TestClient) -> None:
    async with client.get("/api/gzip", headers={"Accept-Encoding": "gzip"}) as r:
        zipped = await r.read()
        assert r.headers["Content-Encoding"] == "gzip"
        assert r.headers["Vary"] == "Accept-Encoding"
    async with client.get("/api/gzip", headers={"Accept-Encoding": "identity"}) as r:
        plain = await r.read()
        assert "Content-Encoding" not in r.headers
        assert r.headers["Vary"] == "Accept-Encoding"
        assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert gzip.decompress(zipped) == plain
    assert len(zipped) < len(plain)


async def test_healthz_toggles(client: TestClient) -> None:
    async def health() -> tuple[int, str]:
        async with client.get("/healthz") as r:
            assert r.headers["Cache-Control"] == "no-store"
            identified(r)
            return r.status, await r.text()

    assert await health() == (200, "ok\n")
    async with client.post("/healthz/down") as r:
        assert (r.status, (await r.json())["healthy"]) == (200, False)
        assert r.headers["Cache-Control"] == "no-store"
    assert await health() == (503, "down\n")
    assert await health() == (503, "down\n")
    async with client.post("/healthz/up") as r:
        assert (await r.json())["healthy"] is True
    assert await health() == (200, "ok\n")
    async with client.get("/healthz/down") as r:
        assert r.status == 405 and r.headers["Allow"] == "POST"
        identified(r)


@pytest.mark.parametrize("path", ["/api/time", "/api/private", "/api/vary", "/api/stats"])
async def test_head_on_api(client: TestClient, path: str) -> None:
    async with client.head(path) as r:
        assert r.status == 200 and await r.read() == b""
        identified(r)


async def test_reserved_paths_are_not_content(tmp_path: Path) -> None:
    root = tmp_path
    (root / "api").mkdir()
    (root / "api" / "file.txt").write_text("shadow\n")
    (root / "healthz").mkdir()
    (root / "healthz" / "x").write_text("shadow\n")
    (root / "apiary.txt").write_text("bees\n")
    async with TestClient(TestServer(create_app("origin-api", OriginSettings(root)))) as c:
        for path in ("/api/file.txt", "/api/nope", "/healthz/x"):
            async with c.get(path) as r:
                assert r.status == 404, path
                assert "shadow" not in await r.text()
                identified(r)
        async with c.get("/apiary.txt") as r:
            assert (r.status, await r.text()) == (200, "bees\n")
        async with c.post("/healthz") as r:
            assert r.status == 405
            identified(r)
