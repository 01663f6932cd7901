"""I/O side of load balancing: the origin connection pool, retries and active health probes.

Rules:

* Policy lives in edge/balancer.py; this module only does I/O and feeds it. The clock is
  injected (``clock``, default ``time.monotonic``) and read here, never in the balancer.
* The pool forwards, it does not rewrite: ``auto_decompress=False`` (Content-Encoding stays
  encoded), no cookie jar (an origin's Set-Cookie must never be replayed for another client:
  a supplied session must use ``aiohttp.DummyCookieJar``), ``allow_redirects=False``, the
  path and query are sent byte for byte (``yarl.URL(..., encoded=True)``) and aiohttp's
  automatic Accept, Accept-Encoding, User-Agent and Content-Type are suppressed. The client's
  Host is forwarded; aiohttp supplies the origin's host:port only when the caller has none.
  Repeated fields keep their order, but a repeat spelled in another case (``X-A`` then
  ``x-a``) takes the first spelling: aiohttp's ``_prepare_headers`` would otherwise let the
  later one replace the earlier (it de-duplicates names case-sensitively).
* Retries (nginx ``proxy_next_upstream error`` semantics, limited by RFC 9110 §9.2.2): a
  *connection failure* -- refused/unreachable, connect timeout, reset or closed before the
  response headers -- is retried on another origin (the tried ones excluded), at most
  ``settings.retries`` times, and only for idempotent methods. A read timeout while waiting
  for the headers is not retried (the origin has the request and may be working on it;
  retrying multiplies the latency and the load of an overloaded origin). A 5xx response is
  returned as is but is a passive failure. Every failed attempt is a passive failure.
  aiohttp itself resends an idempotent request once to the same origin when the connection
  drops before the response (RFC 9112 §9.3.1: covers stale keep-alive connections); only
  when that fails too does the error reach this module.
* Failures raise ``UpstreamError(reason, tried)``; ``UpstreamTimeout`` (a subclass) when the
  last attempt timed out, so the proxy can answer 504 instead of 502.
* ``UpstreamResponse`` owns one balancer slot: ``Balancer.on_finish`` runs exactly once, when
  the body has been read to the end, fails, or the response is released. Callers must
  ``release()`` (or use ``async with``) on every path. The latency sample is the time to the
  response headers, so a large body does not make an origin look slow.
* At most ``settings.origin_max_conns`` requests per origin are in flight at once (nginx
  ``server ... max_conns``; 0: unlimited); a slot is held from before the request is sent
  until its ``UpstreamResponse`` finishes (body read, failed or released). A request that
  finds every slot taken waits in a FIFO queue (nginx ``queue ... timeout``) for at most
  ``settings.origin_queue_timeout`` seconds, then fails with ``OriginBusy``: an
  ``UpstreamError`` (the proxy answers 502, as nginx does when its queue times out), neither
  retried nor counted as a failure of the origin, which is up but busy. Probes bypass it.
* Active probes: one task per origin, GET ``origin_health_path`` every
  ``origin_health_interval`` seconds, 2xx = up, the whole probe bounded by
  ``connect_timeout``; ``probe_once()`` runs one round on demand. With a supplied session,
  ``fetch`` works without ``start()`` (no probes then); ``stop()`` closes only a session the
  pool created itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Self

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from edge.balancer import Balancer
from geoconfig.cdnconfig import EdgeSettings, OriginServer

__all__ = [
    "IDEMPOTENT_METHODS",
    "OriginBusy",
    "OriginPool",
    "UpstreamError",
    "UpstreamResponse",
    "UpstreamTimeout",
]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
POOL_KEEPALIVE = 15.0  # idle origin connections close before the origin's own idle timeout
_SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
_CONNECT_FAILURES = (  # nothing of the response arrived: safe to retry an idempotent request
    aiohttp.ClientOSError,  # refused, unreachable, reset (ClientConnectorError is one)
    aiohttp.ConnectionTimeoutError,
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientConnectionResetError,
)
_IO_ERRORS = (aiohttp.ClientError, TimeoutError)

Headers = list[tuple[str, str]] | CIMultiDict[str] | CIMultiDictProxy[str]
Clock = Callable[[], float]


def _fold(headers: Headers) -> list[tuple[str, str]]:
    """Repeated names take their first spelling, so aiohttp keeps every occurrence."""
    items = headers.items() if isinstance(headers, CIMultiDict | CIMultiDictProxy) else headers
    spelling: dict[str, str] = {}
    return [(spelling.setdefault(k.lower(), k), v) for k, v in items]


class UpstreamError(Exception):
    def __init__(self, reason: str, tried: list[str]) -> None:
        super().__init__(f"{reason} (tried: {', '.join(tried) or 'none'})")
        self.reason = reason
        self.tried = tried


class UpstreamTimeout(UpstreamError):
    pass


class OriginBusy(UpstreamError):
    """Every connection slot of the origin stayed taken for ``origin_queue_timeout``."""


def _error(exc: BaseException, tried: list[str]) -> UpstreamError:
    kind = UpstreamTimeout if isinstance(exc, TimeoutError) else UpstreamError
    return kind(f"{type(exc).__name__}: {exc}".rstrip(": "), list(tried))


class UpstreamResponse:
    def __init__(self, resp: aiohttp.ClientResponse, origin: str, balancer: Balancer,
                 clock: Clock, latency: float,
                 on_done: Callable[[], None] = lambda: None) -> None:
        self._resp = resp
        self._on_done = on_done
        self._balancer = balancer
        self._clock = clock
        self._latency = latency
        self._done = False
        self.origin = origin
        self.status = resp.status
        self.headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.raw_headers]
        self.content_length = resp.content_length
        self._verdict = resp.status < 500

    @property
    def finished(self) -> bool:
        return self._done

    async def read(self) -> bytes:
        try:
            body = await self._resp.read()
        except _IO_ERRORS as exc:
            raise self._failed(exc) from exc
        self.release()
        return body

    async def iter_chunks(self, size: int = 64 * 1024) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_chunked(size):
                yield chunk
        except _IO_ERRORS as exc:
            raise self._failed(exc) from exc
        self.release()

    def release(self) -> None:
        """Idempotent. An unread body closes the connection instead of returning it."""
        self._finish(self._verdict)
        self._resp.release()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()

    def _failed(self, exc: BaseException) -> UpstreamError:
        self._finish(False)
        self._resp.release()
        return _error(exc, [self.origin])

    def _finish(self, ok: bool) -> None:
        if not self._done:
            self._done = True
            try:
                self._balancer.on_finish(self.origin, self._clock(), self._latency, ok)
            finally:
                self._on_done()


class OriginPool:
    def __init__(self, origins: Iterable[OriginServer], settings: EdgeSettings,
                 session: aiohttp.ClientSession | None = None,
                 clock: Clock = time.monotonic) -> None:
        if session is not None and not isinstance(session.cookie_jar, aiohttp.DummyCookieJar):
            raise ValueError("a shared session must use aiohttp.DummyCookieJar")
        self.origins = tuple(origins)
        self.settings = settings
        self.balancer = Balancer.from_settings(self.origins, settings)
        self._session = session
        self._owns_session = session is None
        self._clock = clock
        self._probes: list[asyncio.Task[None]] = []
        cap = settings.origin_max_conns
        self._slots = {o.name: asyncio.Semaphore(cap) for o in self.origins} if cap else {}
        self.queued = {o.name: 0 for o in self.origins}  # requests waiting for a slot
        self._timeout = aiohttp.ClientTimeout(total=None, connect=None,
                                              sock_connect=settings.connect_timeout,
                                              sock_read=settings.read_timeout)

    async def start(self) -> None:
        if self._session is None:
            limit = self.settings.max_header_bytes
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=POOL_KEEPALIVE),
                auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
                max_line_size=limit, max_field_size=limit,
            )
        if not self._probes:
            self._probes = [asyncio.create_task(self._probe_loop(o), name=f"probe {o.name}")
                            for o in self.origins]

    async def stop(self) -> None:
        probes, self._probes = self._probes, []
        for task in probes:
            task.cancel()
        await asyncio.gather(*probes, return_exceptions=True)
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def fetch(self, method: str, path_qs: str, headers: Headers, body: bytes | None, *,
                    key: str, client_ip: str) -> UpstreamResponse:
        if not path_qs.startswith("/"):
            raise ValueError(f"path_qs must start with '/', got {path_qs!r}")
        attempts = 1 + (self.settings.retries if method in IDEMPOTENT_METHODS else 0)
        tried: list[str] = []
        last: UpstreamError | None = None
        for _ in range(attempts):
            origin = self.balancer.pick(self._clock(), key=key, client_ip=client_ip,
                                        exclude=frozenset(tried))
            if origin is None:
                break
            tried.append(origin.name)
            try:
                return await self._attempt(origin, method, path_qs, headers, body)
            except _IO_ERRORS as exc:
                last = _error(exc, tried)
                if not isinstance(exc, _CONNECT_FAILURES):
                    raise last from exc
        if last is None:
            raise UpstreamError("no origin available", tried)
        raise last

    async def _attempt(self, origin: OriginServer, method: str, path_qs: str, headers: Headers,
                       body: bytes | None) -> UpstreamResponse:
        session = self._require_session()
        slot = self._slots.get(origin.name)
        if slot is not None:
            await self._acquire(slot, origin.name)
        release = slot.release if slot is not None else (lambda: None)
        self.balancer.on_start(origin.name)
        started = self._clock()
        resp: aiohttp.ClientResponse | None = None
        verdict: bool | None = None  # stays None when cancelled or on a caller error
        try:
            resp = await session.request(
                method, URL(origin.base_url + path_qs, encoded=True), headers=_fold(headers),
                data=body, allow_redirects=False, timeout=self._timeout,
                skip_auto_headers=_SKIP_AUTO_HEADERS, auto_decompress=False,
            )
        except _IO_ERRORS:
            verdict = False
            raise
        finally:
            if resp is None:
                now = self._clock()
                try:
                    self.balancer.on_finish(origin.name, now, now - started, verdict)
                finally:
                    release()
        return UpstreamResponse(resp, origin.name, self.balancer, self._clock,
                                self._clock() - started, release)

    async def _acquire(self, slot: asyncio.Semaphore, name: str) -> None:
        """Wait (FIFO, bounded) for one of the origin's connection slots."""
        if not slot.locked():
            await slot.acquire()  # free: returns without suspending
            return
        timeout = self.settings.origin_queue_timeout
        self.queued[name] += 1
        try:
            async with asyncio.timeout(timeout):
                await slot.acquire()
        except TimeoutError:
            raise OriginBusy(f"origin {name} busy: {self.settings.origin_max_conns} "
                             f"connections in use for {timeout:g} s", [name]) from None
        finally:
            self.queued[name] -= 1

    async def probe_once(self) -> dict[str, bool]:
        """Probe every origin once, concurrently; feed and return the results."""
        results = await asyncio.gather(*(self._probe(o) for o in self.origins))
        for origin, up in zip(self.origins, results, strict=True):
            self.balancer.set_health(origin.name, up)
        return {o.name: up for o, up in zip(self.origins, results, strict=True)}

    async def _probe_loop(self, origin: OriginServer) -> None:
        while True:
            self.balancer.set_health(origin.name, await self._probe(origin))
            await asyncio.sleep(self.settings.origin_health_interval)

    async def _probe(self, origin: OriginServer) -> bool:
        session = self._require_session()
        url = URL(origin.base_url + self.settings.origin_health_path, encoded=True)
        timeout = aiohttp.ClientTimeout(total=self.settings.connect_timeout)
        try:
            async with session.get(url, allow_redirects=False, timeout=timeout,
                                   headers={"User-Agent": "geoedge-healthcheck"}) as resp:
                await resp.read()
                return 200 <= resp.status < 300
        except _IO_ERRORS:
            return False

    def snapshot(self) -> list[dict[str, Any]]:
        rows = self.balancer.snapshot(self._clock())
        for row, origin in zip(rows, self.origins, strict=True):
            row["url"] = origin.base_url
        return rows

    def _require_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("OriginPool.start() has not been called")
        return self._session
