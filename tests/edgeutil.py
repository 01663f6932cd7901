"""Helpers for the edge tests: configurable aiohttp origins, a fake clock, and a running edge.

Everything listens on 127.0.0.1 port 0 and talks over real sockets. Time used by the caching
logic comes from ``FakeClock`` (passed to ``start_edge`` and to the origins' ``Date``), so TTLs
are crossed by advancing the clock, never by sleeping. Real waits are only used where the
behaviour under test is itself about wall time (origin delays, client timeouts) and are
bounded by ``WAIT``.

Usage::

    async def test_x(edge_env):
        env = await edge_env(origins=1, max_object_bytes=65536)
        env.origin.route("/a", headers=[("Cache-Control", "max-age=60")], body=b"A")
        r = await env.get("/a")
        env.clock.advance(30)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from edge.main import RunningEdge, start_edge
from geoconfig.httpdate import format_http_date, parse_http_date
from geoconfig.topology import parse_topology

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "demo.toml"
EDGE_NAME = "us-east-1"
CACHE = f"geoedge-{EDGE_NAME}"  # our Cache-Status member name
VIA = f"1.1 geoedge-{EDGE_NAME}"
TOKEN = "test-purge-token"
WAIT = 5.0  # upper bound for anything awaited; nothing normally comes close
T0 = 1_750_000_000.0  # the fake clock's start (a whole second: Date == clock exactly)

Headers = list[tuple[str, str]]


# -- the clock ------------------------------------------------------------------------------------
class FakeClock:
    """A callable returning a time that only moves when the test says so."""

    def __init__(self, start: float = T0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now

    def http_date(self, offset: float = 0.0) -> str:
        return format_http_date(self.now + offset)


# -- the origin -----------------------------------------------------------------------------------
@dataclass
class Route:
    """What an origin path answers. Change the fields at any time; the next request sees them."""

    status: int = 200
    headers: Headers = field(default_factory=list)
    body: bytes = b"ok"
    delay: float = 0.0  # seconds before the answer (real time)
    gate: asyncio.Event | None = None  # wait for this before the answer
    chunks: list[bytes] | None = None  # stream these (chunked unless headers give a length)
    chunk_gate: tuple[int, asyncio.Event] | None = None  # (after chunk i, wait for event)
    conditional: bool = True  # answer a matching If-None-Match / If-Modified-Since with 304
    not_modified: Headers | None = None  # the 304's headers (default: ETag, Cache-Control..)
    echo: bool = False  # answer a JSON document describing the request
    date: bool = True  # Date from the fake clock unless headers has one (False: aiohttp's)
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]] | None = None


@dataclass
class Seen:
    """One request as the origin received it."""

    method: str
    path: str  # raw path and query
    headers: CIMultiDictProxy[str]
    raw_headers: Headers
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


_304_FIELDS = ("cache-control", "content-location", "date", "etag", "expires", "vary",
               "last-modified", "cdn-cache-control", "surrogate-control")


class TestOrigin:
    """An aiohttp origin on 127.0.0.1 port 0 answering what the test configures per path.

    Unknown paths get 404 (no caching headers). ``/healthz`` answers 200 (or 503 when
    ``healthy`` is False) and is not recorded. ``fail_with`` makes every other path answer
    that status. ``stop()`` closes the listener (connections are then refused) and ``start()``
    listens again on the same port.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, name: str, clock: FakeClock) -> None:
        self.name = name
        self.clock = clock
        self.routes: dict[str, Route] = {}
        self.seen: list[Seen] = []
        self.healthy = True
        self.probes = 0  # health probes received
        self.fail_with: int | None = None
        self.in_flight = 0
        self.max_in_flight = 0
        self.port = 0
        self.arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    # -- configuration --------------------------------------------------------------------------
    def route(self, path: str, **kw: Any) -> Route:
        r = Route(**kw)
        self.routes[path] = r
        return r

    def count(self, path: str | None = None, method: str | None = None) -> int:
        return sum(1 for s in self.seen if (path is None or s.path == path)
                   and (method is None or s.method == method))

    def requests(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    def last(self, path: str) -> Seen:
        return self.requests(path)[-1]

    async def wait_count(self, path: str, n: int, timeout: float = WAIT) -> None:
        """Until the origin has seen ``n`` requests for ``path`` (bounded)."""
        await self.wait_for(lambda: self.count(path) >= n, timeout)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
        """Until ``predicate()`` holds, re-checked whenever a request arrives (bounded)."""
        async with asyncio.timeout(timeout), self.arrived:
            await self.arrived.wait_for(predicate)

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]  # the bound port (0 asks the kernel for one)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # -- serving --------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.raw_path
        if path == "/healthz":
            self.probes += 1
            async with self.arrived:
                self.arrived.notify_all()
            return web.Response(status=200 if self.healthy else 503, text="ok")
        body = await request.read()
        raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]
        self.seen.append(Seen(request.method, path, CIMultiDictProxy(CIMultiDict(raw)), raw,
                              body))
        async with self.arrived:
            self.arrived.notify_all()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request, path, body, raw)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request, path: str, body: bytes,
                      raw: Headers) -> web.StreamResponse:
        if self.fail_with is not None:
            return web.Response(status=self.fail_with, body=b"origin failure\n",
                                headers=self._headers([], True))
        route = self.routes.get(path) or self.routes.get(path.split("?", 1)[0])
        if route is None:
            return web.Response(status=404, body=b"no such route\n",
                                headers=self._headers([], True))
        if route.delay:
            await asyncio.sleep(route.delay)
        if route.gate is not None:
            await route.gate.wait()
        if route.handler is not None:
            return await route.handler(request)
        headers = self._headers(route.headers, route.date)
        if route.echo:
            doc = {"method": request.method, "path": path, "headers": raw,
                   "body": body.decode("latin-1")}
            headers.setdefault("Content-Type", "application/json")
            return web.Response(status=route.status, body=json.dumps(doc).encode(),
                                headers=headers)
        if route.conditional and 200 <= route.status < 300 and _matches(request, headers):
            if route.not_modified is not None:
                h304 = self._headers(route.not_modified, route.date)
            else:
                h304 = CIMultiDict((k, v) for k, v in headers.items()
                                   if k.lower() in _304_FIELDS)
            return web.Response(status=304, headers=h304)
        if route.chunks is not None:
            resp = web.StreamResponse(status=route.status, headers=headers)
            if "Content-Length" not in headers:
                resp.enable_chunked_encoding()
            await resp.prepare(request)
            for i, chunk in enumerate(route.chunks):
                await resp.write(chunk)
                if route.chunk_gate is not None and route.chunk_gate[0] == i:
                    await route.chunk_gate[1].wait()
            await resp.write_eof()
            return resp
        return web.Response(status=route.status, body=route.body, headers=headers)

    def _headers(self, headers: Headers, date: bool) -> CIMultiDict[str]:
        out: CIMultiDict[str] = CIMultiDict(headers)
        if date and "Date" not in out:
            out["Date"] = self.clock.http_date()
        return out


def _matches(request: web.Request, headers: CIMultiDict[str]) -> bool:
    etag = headers.get("ETag")
    inm = request.headers.get("If-None-Match")
    if inm is not None:
        tags = [t.strip().removeprefix("W/") for t in inm.split(",")]
        return etag is not None and etag.removeprefix("W/") in tags
    ims = parse_http_date(request.headers.get("If-Modified-Since"))
    last = parse_http_date(headers.get("Last-Modified"))
    return ims is not None and last is not None and last <= ims


# -- the edge -------------------------------------------------------------------------------------
@dataclass
class Resp:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def cache_status(self) -> str | None:
        return self.headers.get("Cache-Status")

    @property
    def age(self) -> int | None:
        value = self.headers.get("Age")
        return None if value is None else int(value)

    def json(self) -> Any:
        return json.loads(self.body)


def topology_dict(origins: list[TestOrigin], edge: dict[str, Any],
                  weights: list[int] | None = None) -> dict[str, Any]:
    """examples/demo.toml with these origins and these [edge] settings merged in; no Redis
    (the demo's per-region servers are the demo's; shared-tier tests add their own)."""
    with DEMO.open("rb") as f:
        data = tomllib.load(f)
    for region in data["regions"]:
        region.pop("redis", None)
    weights = weights or [1] * len(origins)
    data["origins"] = [{"name": o.name, "host": "127.0.0.1", "port": o.port, "weight": w}
                       for o, w in zip(origins, weights, strict=True)]
    merged = {**data["edge"], **edge}
    data["edge"] = {k: v for k, v in merged.items() if v is not None}  # None: leave it unset
    return data


DEFAULT_EDGE = {
    "purge_token": TOKEN,
    "origin_health_interval": 3600.0,  # the pool probes once at start, then only on demand
    "connect_timeout": 1.0,
    "read_timeout": 5.0,
    "coalesce_timeout": 5.0,
    # the RFC behaviour, which most tests exercise; the default ("ignore") has its own tests
    "request_cache_control": "honour",
    "admin_listen": "127.0.0.1:0",  # /metrics and stats: see EdgeEnv.private
}


@dataclass
class EdgeEnv:
    edge: RunningEdge
    origins: list[TestOrigin]
    clock: FakeClock
    client: aiohttp.ClientSession

    @property
    def origin(self) -> TestOrigin:
        return self.origins[0]

    @property
    def app(self) -> Any:
        return self.edge.app

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.edge.port}"

    def url(self, path: str) -> str:
        return self.edge.url + path

    def key(self, path: str) -> str:
        """The edge's primary cache key for a request to ``path`` from ``client``."""
        return f"http://{self.host}{path}"

    async def request(self, method: str, path: str, headers: Headers | None = None,
                      data: bytes | None = None) -> Resp:
        async with asyncio.timeout(WAIT), self.client.request(
                method, self.url(path), headers=CIMultiDict(headers or []), data=data,
                allow_redirects=False, skip_auto_headers=("Accept-Encoding", "User-Agent",
                                                          "Accept")) as r:
            body = await r.read()
            return Resp(r.status, r.headers, body)

    async def get(self, path: str, headers: Headers | None = None) -> Resp:
        return await self.request("GET", path, headers)

    async def private(self, path: str) -> Resp:
        """GET ``path`` (``/metrics``, ``/.geoedge/stats``) on the edge's admin listener."""
        host, port = self.edge.admin_address or ("127.0.0.1", 0)
        async with asyncio.timeout(WAIT), self.client.get(f"http://{host}:{port}{path}") as r:
            return Resp(r.status, r.headers, await r.read())

    async def purge(self, path: str, token: str | None = TOKEN,
                    headers: Headers | None = None) -> Resp:
        auth = [("Authorization", f"Bearer {token}")] if token else []
        return await self.request("PURGE", path, auth + list(headers or []))

    async def admin(self, action: str, doc: Any = None, token: str | None = TOKEN) -> Resp:
        auth = [("Authorization", f"Bearer {token}")] if token else []
        data = None if doc is None else json.dumps(doc).encode()
        return await self.request("POST", f"/.geoedge/{action}",
                                  [*auth, ("Content-Type", "application/json")], data)

    async def raw(self, data: bytes, timeout: float = WAIT) -> bytes:
        """Send raw bytes on a new connection and read until the edge closes it."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.edge.port)
        try:
            writer.write(data)
            await writer.drain()
            async with asyncio.timeout(timeout):
                return await reader.read(-1)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def settle(self) -> None:
        """Wait (bounded) for the edge's background refreshes to finish."""
        tasks = [t for t in self.app.background if not t.done()
                 and "housekeeping" not in getattr(t.get_coro(), "__qualname__", "")]
        if tasks:
            async with asyncio.timeout(WAIT):
                await asyncio.gather(*tasks, return_exceptions=True)


def member(*params: str) -> str:
    """Our Cache-Status member with these parameters: member("hit", "ttl=60")."""
    return "; ".join([CACHE, *params])


@pytest.fixture
async def edge_env() -> AsyncIterator[Callable[..., Awaitable[EdgeEnv]]]:
    """A factory: ``await edge_env(origins=N, **edge_settings)`` -> a started EdgeEnv."""
    started: list[EdgeEnv] = []
    loose: list[TestOrigin] = []

    async def make(origins: int = 1, clock: FakeClock | None = None,
                   weights: list[int] | None = None, **edge: Any) -> EdgeEnv:
        clock = clock or FakeClock()
        servers = [TestOrigin(f"origin-{i + 1}", clock) for i in range(origins)]
        for o in servers:
            loose.append(o)
            await o.start()
        topology = parse_topology(topology_dict(servers, {**DEFAULT_EDGE, **edge}, weights))
        running = await start_edge(topology, EDGE_NAME, listen=("127.0.0.1", 0), clock=clock)
        # The pool probes every origin once at start, in the background: let that round land
        # first, so a test that stops an origin is not overtaken by a late "up" or "down".
        for o in servers:
            await o.wait_for(lambda o=o: o.probes >= 1)
        await running.pool.probe_once()
        client = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                       auto_decompress=False)
        env = EdgeEnv(running, servers, clock, client)
        started.append(env)
        return env

    yield make
    for env in started:
        await env.client.close()
        await env.edge.stop()
    for o in loose:
        await o.stop()


async def until(pred: Callable[[], Any], within: float = WAIT, step: float = 0.01) -> bool:
    """Poll ``pred`` (plain or async) until it is true; False after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        got = pred()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step)


# -- raw HTTP/1.1 parsing for socket-level tests --------------------------------------------------
async def read_response(reader: asyncio.StreamReader) -> tuple[int, CIMultiDict[str], bytes]:
    """One response from a raw connection (Content-Length, chunked, or until close)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.add(name.strip(), value.strip())
    if status in (204, 304) or 100 <= status < 200:
        return status, headers, b""
    if "Content-Length" in headers:
        body = await reader.readexactly(int(headers["Content-Length"]))
    elif headers.get("Transfer-Encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(parts)
    else:
        body = await reader.read(-1)
    return status, headers, body
