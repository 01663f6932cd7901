"""OriginPool (the edge's own origin client) against real aiohttp origins on port 0; the
balancer clock is injected."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import socket
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from edge.upstream import OriginPool, UpstreamError, UpstreamTimeout
from geoconfig.cdnconfig import EdgeSettings, OriginServer

BIG = hashlib.sha256(b"seed").digest() * (5 * 1024 * 1024 // 32)  # 5 MiB
GZ = gzip.compress(b"hello " * 1000)
WAIT = 5.0  # upper bound for any awaited event; nothing normally waits this long


def settings(**kw) -> EdgeSettings:
    base = {"connect_timeout": 1.0, "read_timeout": 5.0, "origin_health_interval": 3600.0,
            "max_fails": 3, "fail_window": 10.0, "fail_timeout": 10.0, "retries": 1}
    return replace(EdgeSettings(), **(base | kw))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Origin:
    """An origin app: X-Origin on every response, counters, and a few behaviours by path."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.hits: Counter[str] = Counter()
        self.healthy = True
        self.health_hits: asyncio.Queue[bool] = asyncio.Queue()
        self.entered: asyncio.Queue[str] = asyncio.Queue()
        self.gate = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.server = TestServer(app, host="127.0.0.1", port=0)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.raw_path
        hdrs = {"X-Origin": self.name}
        if path == "/healthz":
            self.health_hits.put_nowait(self.healthy)
            return web.Response(status=200 if self.healthy else 503, headers=hdrs)
        self.hits[path.split("?")[0]] += 1
        if path.startswith("/echo"):
            body = await request.read()
            raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]
            doc = {"method": request.method, "path": path, "headers": raw, "body": body.hex()}
            resp = web.Response(text=json.dumps(doc), headers=hdrs)
            resp.headers.add("Set-Cookie", "a=1")
            resp.headers.add("Set-Cookie", "b=2")
            return resp
        if path == "/hang":
            self.entered.put_nowait(path)
            await self.gate.wait()
        if path == "/stream-slow":
            resp = web.StreamResponse(headers=hdrs)
            await resp.prepare(request)
            self.entered.put_nowait(path)
            await self.gate.wait()
            await resp.write(b"done")
            return resp
        if path == "/big":
            return web.Response(body=BIG, headers=hdrs)
        if path == "/gzip":
            return web.Response(body=GZ, headers=hdrs | {"Content-Encoding": "gzip"})
        if path.startswith("/status/"):
            return web.Response(status=int(path[8:]), headers=hdrs)
        return web.Response(text=self.name, headers=hdrs)

    def server_config(self, weight: int = 1) -> OriginServer:
        return OriginServer(self.name, "127.0.0.1", self.server.port, weight)


@pytest.fixture
async def origins() -> AsyncIterator[list[Origin]]:
    started = [Origin(name) for name in ("a", "b", "c")]
    for o in started:
        await o.server.start_server()
    yield started
    for o in started:
        o.gate.set()
        await o.server.close()


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A bound socket that is not listening: connections are refused, the port stays ours."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.fixture
def blackhole_port() -> Iterator[int]:
    """A listener whose accept queue is full: SYNs are dropped, so connects time out."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(0)
        port = s.getsockname()[1]
        fillers = []
        for _ in range(3):
            c = socket.socket()
            c.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                c.connect(("127.0.0.1", port))
            fillers.append(c)
        yield port
        for c in fillers:
            c.close()


async def get(pool: OriginPool, path: str = "/", *, key: str = "k", method: str = "GET",
              client_ip: str = "192.0.2.1") -> tuple[str, int, bytes]:
    async with await pool.fetch(method, path, [("Host", "cdn.example")], None, key=key,
                                client_ip=client_ip) as resp:
        return resp.origin, resp.status, await resp.read()


def active(pool: OriginPool) -> dict[str, int]:
    return {row["name"]: row["active"] for row in pool.snapshot()}


# -- distribution ----------------------------------------------------------------------------

async def test_round_robin_exact_counts_for_weights(origins):
    servers = [o.server_config(w) for o, w in zip(origins, (3, 2, 1), strict=True)]
    async with OriginPool(servers, settings(lb="round_robin")) as pool:
        seen = [(await get(pool))[0] for _ in range(60)]
    assert "".join(seen[:6]) == "abacba"  # smooth WRR for 3,2,1
    assert Counter(seen) == {"a": 30, "b": 20, "c": 10}
    assert [o.hits["/"] for o in origins] == [30, 20, 10]


async def test_consistent_hash_is_sticky_per_key(origins):
    servers = [o.server_config() for o in origins]
    async with OriginPool(servers, settings(lb="consistent_hash")) as pool:
        owner = {}
        for key in (f"key-{i}" for i in range(30)):
            seen = {(await get(pool, key=key))[0] for _ in range(3)}
            assert len(seen) == 1
            owner[key] = seen.pop()
    assert set(owner.values()) == {"a", "b", "c"}


async def test_least_conn_counts_streaming_requests_until_released(origins):
    servers = [o.server_config() for o in origins]
    async with OriginPool(servers, settings(lb="least_conn")) as pool:
        slow = [await pool.fetch("GET", "/stream-slow", [], None, key="k", client_ip="")
                for _ in range(2)]
        assert [r.origin for r in slow] == ["a", "b"]  # headers are in, bodies are not
        assert active(pool) == {"a": 1, "b": 1, "c": 0}
        assert [(await get(pool))[0] for _ in range(4)] == ["c"] * 4
        for o in origins:
            o.gate.set()
        assert [await r.read() for r in slow] == [b"done", b"done"]
        assert active(pool) == {"a": 0, "b": 0, "c": 0}
        assert {(await get(pool))[0] for _ in range(6)} == {"a", "b", "c"}


# -- retries and passive failures ------------------------------------------------------------

async def test_dead_origin_is_retried_on_another_for_get(origins, dead_port):
    servers = [OriginServer("dead", "127.0.0.1", dead_port), origins[0].server_config()]
    pool = OriginPool(servers, settings())  # no start(): no probes
    assert await get(pool) == ("a", 200, b"a")  # round robin tried "dead" first
    assert pool.connects["dead"] == 1
    assert {r["name"]: r["fails"] for r in pool.snapshot()} == {"dead": 1, "a": 0}
    assert active(pool) == {"dead": 0, "a": 0}


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_non_idempotent_request_is_not_retried(origins, dead_port, method):
    servers = [OriginServer("dead", "127.0.0.1", dead_port), origins[0].server_config()]
    pool = OriginPool(servers, settings(retries=3))
    with pytest.raises(UpstreamError) as info:
        await pool.fetch(method, "/echo", [], b"x", key="k", client_ip="")
    assert type(info.value) is UpstreamError
    assert info.value.tried == ["dead"]
    assert "dead" in str(info.value)
    assert origins[0].hits["/echo"] == 0
    assert pool.connects["dead"] == 1
    assert (await get(pool, "/echo", method=method))[0] == "a"  # next pick moves on


@pytest.mark.parametrize(("retries", "tried"), [(0, ["d1"]), (1, ["d1", "d2"]), (5, ["d1", "d2"])])
async def test_all_attempts_fail(dead_port, retries, tried):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        servers = [OriginServer("d1", "127.0.0.1", dead_port),
                   OriginServer("d2", "127.0.0.1", other.getsockname()[1])]
        pool = OriginPool(servers, settings(retries=retries))
        with pytest.raises(UpstreamError) as info:
            await get(pool)
    assert info.value.tried == tried
    assert not isinstance(info.value, UpstreamTimeout)


async def test_dead_origin_is_ejected_after_max_fails_and_retried_after_timeout(
        origins, dead_port):
    clock = FakeClock()
    servers = [OriginServer("dead", "127.0.0.1", dead_port)] + [o.server_config() for o in origins]
    pool = OriginPool(servers, settings(max_fails=2, fail_timeout=30.0), clock=clock)
    attempts = pool.endpoints["dead"]
    for _ in range(20):
        clock.now += 0.1
        assert (await get(pool))[1] == 200
    assert attempts.connects == 2
    assert {r["name"]: r["ejected"] for r in pool.snapshot()}["dead"] is True
    clock.now += 30.0  # fail_timeout over: the next round-robin turn tries it again
    n = 0
    while attempts.connects < 3 and n < 8:
        n += 1
        assert (await get(pool))[1] == 200
    assert attempts.connects == 3
    assert sum(o.hits["/"] for o in origins) == 20 + n


async def test_reset_before_headers_is_retried(origins):
    connections = 0

    async def slam(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readline()
        writer.close()

    server = await asyncio.start_server(slam, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    servers = [OriginServer("rst", "127.0.0.1", port), origins[0].server_config()]
    pool = OriginPool(servers, settings())
    alone = OriginPool(servers[:1], settings(retries=3))
    try:
        assert await get(pool) == ("a", 200, b"a")
        with pytest.raises(UpstreamError) as info:
            await alone.fetch("POST", "/", [], b"", key="k", client_ip="")
        assert info.value.tried == ["rst"]
    finally:
        server.close()
        await server.wait_closed()
    assert connections == 2  # GET: once, then the next origin; POST: once, never again


async def test_5xx_is_returned_not_retried_and_counts_as_failure(origins):
    servers = [o.server_config() for o in origins[:2]]
    async with OriginPool(servers, settings()) as pool:
        assert await get(pool, "/status/503") == ("a", 503, b"")
        assert origins[1].hits["/status/503"] == 0
        assert {r["name"]: r["fails"] for r in pool.snapshot()} == {"a": 1, "b": 0}
        assert await get(pool, "/status/404") == ("b", 404, b"")
        assert {r["name"]: r["fails"] for r in pool.snapshot()} == {"a": 1, "b": 0}


# -- timeouts --------------------------------------------------------------------------------

async def test_read_timeout_raises_upstream_timeout_without_retry(origins):
    servers = [o.server_config() for o in origins[:2]]
    async with OriginPool(servers, settings(read_timeout=0.2)) as pool:
        with pytest.raises(UpstreamTimeout) as info:
            await get(pool, "/hang")
    assert info.value.tried == ["a"]
    assert (origins[0].hits["/hang"], origins[1].hits["/hang"]) == (1, 0)


async def test_read_timeout_mid_body_raises_and_counts_as_failure(origins):
    async with OriginPool([origins[0].server_config()], settings(read_timeout=0.2)) as pool:
        resp = await pool.fetch("GET", "/stream-slow", [], None, key="k", client_ip="")
        assert resp.status == 200
        with pytest.raises(UpstreamTimeout) as info:
            async for _ in resp.iter_chunks():
                pass
        assert info.value.tried == ["a"]
        assert resp.finished
        assert [(r["active"], r["fails"]) for r in pool.snapshot()] == [(0, 1)]
        resp.release()
        assert [(r["active"], r["fails"]) for r in pool.snapshot()] == [(0, 1)]


async def test_connect_timeout_is_retried_then_raises_upstream_timeout(
        origins, blackhole_port):
    hole = OriginServer("hole", "127.0.0.1", blackhole_port)
    fast = settings(connect_timeout=0.2)
    pool = OriginPool([hole, origins[0].server_config()], fast)
    assert (await get(pool))[0] == "a"
    assert pool.connects["hole"] == 1
    with pytest.raises(UpstreamTimeout) as info:
        await get(OriginPool([hole], fast))
    assert info.value.tried == ["hole"]


async def test_cancelled_fetch_frees_the_slot_without_a_verdict(origins):
    async with OriginPool([origins[0].server_config()], settings()) as pool:
        task = asyncio.create_task(get(pool, "/hang"))
        await asyncio.wait_for(origins[0].entered.get(), WAIT)
        assert active(pool) == {"a": 1}
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.snapshot()[0]["active"] == 0
        assert pool.snapshot()[0]["fails"] == 0


# -- active health probes --------------------------------------------------------------------

async def test_probe_once_marks_down_and_up(origins):
    servers = [o.server_config() for o in origins]
    async with OriginPool(servers, settings()) as pool:
        origins[1].healthy = False
        assert await pool.probe_once() == {"a": True, "b": False, "c": True}
        assert {(await get(pool))[0] for _ in range(6)} == {"a", "c"}
        origins[1].healthy = True
        assert await pool.probe_once() == {"a": True, "b": True, "c": True}
        assert {(await get(pool))[0] for _ in range(6)} == {"a", "b", "c"}


async def test_probe_loop_follows_healthz(origins):
    async def applied(origin: Origin) -> None:
        """Two probes after the change: the first one's result has been applied."""
        while not origin.health_hits.empty():
            origin.health_hits.get_nowait()
        for _ in range(2):
            await asyncio.wait_for(origin.health_hits.get(), WAIT)

    servers = [o.server_config() for o in origins]
    async with OriginPool(servers, settings(origin_health_interval=0.02)) as pool:
        origins[2].healthy = False
        await applied(origins[2])
        assert [r["up"] for r in pool.snapshot()] == [True, True, False]
        origins[2].healthy = True
        await applied(origins[2])
        assert [r["up"] for r in pool.snapshot()] == [True, True, True]


async def test_probe_of_dead_origin_marks_it_down(origins, dead_port):
    servers = [OriginServer("dead", "127.0.0.1", dead_port), origins[0].server_config()]
    async with OriginPool(servers, settings()) as pool:
        assert await pool.probe_once() == {"dead": False, "a": True}
        assert [(await get(pool))[0] for _ in range(3)] == ["a"] * 3


# -- forwarding ------------------------------------------------------------------------------

async def test_headers_and_body_forwarded_exactly(origins):
    sent = [("Host", "cdn.example"), ("X-Dup", "1"), ("Accept-Language", "fr"), ("x-dup", "2"),
            ("Cookie", "sid=1"), ("Content-Length", "256")]
    body = bytes(range(256))
    path = "/echo/a%2Fb/../c?x=%20&y=+&z"
    async with OriginPool([origins[0].server_config()], settings()) as pool:
        async with await pool.fetch("PUT", path, sent, body, key="k", client_ip="") as resp:
            doc = json.loads(await resp.read())
            assert resp.status == 200
            assert ("Set-Cookie", "a=1") in resp.headers
            cookies = [h for h in resp.headers if h[0] == "Set-Cookie"]
            assert cookies == [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]
            assert ("X-Origin", "a") in resp.headers
        assert doc["method"] == "PUT"
        assert doc["path"] == path
        # nothing added (no Accept, User-Agent, Content-Type); a repeat takes the first spelling
        expected = [("X-Dup", v) if k == "x-dup" else (k, v) for k, v in sent]
        assert [tuple(h) for h in doc["headers"]] == expected
        assert bytes.fromhex(doc["body"]) == body
        again = await pool.fetch("GET", "/echo", [("Host", "h")], None, key="k", client_ip="")
        doc = json.loads(await again.read())
        assert doc["headers"] == [["Host", "h"]]  # no cookie replayed from the Set-Cookie


async def test_content_encoding_is_not_decoded(origins):
    async with OriginPool([origins[0].server_config()], settings()) as pool:
        hdrs = [("Host", "x"), ("Accept-Encoding", "gzip")]
        async with await pool.fetch("GET", "/gzip", hdrs, None, key="k", client_ip="") as resp:
            assert ("Content-Encoding", "gzip") in resp.headers
            assert resp.content_length == len(GZ)
            assert await resp.read() == GZ


async def test_streaming_a_large_body_in_chunks(origins):
    async with OriginPool([origins[0].server_config()], settings(lb="least_conn")) as pool:
        resp = await pool.fetch("GET", "/big", [("Host", "x")], None, key="k", client_ip="")
        assert resp.content_length == len(BIG)
        chunks = []
        async for chunk in resp.iter_chunks(64 * 1024):
            assert active(pool) == {"a": 1}  # still in flight while streaming
            chunks.append(chunk)
        assert resp.finished and active(pool) == {"a": 0}
        assert max(map(len, chunks)) <= 64 * 1024 and len(chunks) >= 80
        assert b"".join(chunks) == BIG
        resp.release()  # idempotent: on_finish ran exactly once
        assert active(pool) == {"a": 0}


async def test_early_release_finishes_once(origins):
    async with OriginPool([origins[0].server_config()], settings()) as pool:
        resp = await pool.fetch("GET", "/big", [], None, key="k", client_ip="")
        async for _ in resp.iter_chunks(1024):
            break
        resp.release()
        resp.release()
        assert active(pool) == {"a": 0}
        assert pool.snapshot()[0]["fails"] == 0
        assert (await get(pool))[1] == 200  # the pool still works (connection was closed)


async def test_bad_path():
    pool = OriginPool([OriginServer("a", "127.0.0.1", 1)], settings())
    with pytest.raises(ValueError):
        await pool.fetch("GET", "no-slash", [], None, key="k", client_ip="")
    assert pool.snapshot()[0]["active"] == 0
