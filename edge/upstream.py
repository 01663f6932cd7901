"""I/O side of load balancing: the origin connection pool, retries and active health probes.

Rules:

* Policy lives in edge/balancer.py; this module only does I/O and feeds it. The clock is
  injected (``clock``, default ``time.monotonic``) and read here, never in the balancer.
* The wire is the edge's own HTTP/1.1 client (edge/originclient.py: keep-alive pool per
  origin, TLS per edge/origintls.py). The pool forwards, it does not rewrite: no
  decompression (Content-Encoding stays encoded), no cookie jar (an origin's Set-Cookie is
  never replayed for another client), no redirects, the path and query are sent byte for
  byte, and nothing is added (no Accept, Accept-Encoding, User-Agent, Content-Type). The
  client's Host is forwarded; the origin's host:port is sent only when the caller has none.
  Repeated fields keep their order; a repeat spelled in another case (``X-A`` then ``x-a``)
  takes the first spelling.
* Interim responses: ``fetch(..., on_informational=)`` gets each 1xx but 100 (103 Early
  Hints) before the final response; they never become part of it.
* A body longer than Content-Length: exactly Content-Length bytes are the body, the
  connection is closed and a warning names the origin (edge/originclient.py).
* Retries (nginx ``proxy_next_upstream error`` semantics, limited by RFC 9110 §9.2.2): a
  *connection failure* -- refused/unreachable, connect timeout, reset or closed before the
  response headers -- is retried on another origin (the tried ones excluded), at most
  ``settings.retries`` times, and only for idempotent methods. A read timeout while waiting
  for the headers is not retried (the origin has the request and may be working on it;
  retrying multiplies the latency and the load of an overloaded origin). A 5xx response is
  returned as is but is a passive failure. Every failed attempt is a passive failure.
  An idempotent request sent on a *reused* keep-alive connection that closes before any byte
  of the response is resent once to the same origin on a new connection (RFC 9112 §9.3.1:
  the origin closed an idle connection as we reused it); that is not a failed attempt.
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
  ``connect_timeout``; ``probe_once()`` runs one round on demand. ``fetch`` works without
  ``start()`` (no probes then); ``stop()`` closes the idle connections and the probes.
* Timeouts: ``connect_timeout`` bounds the TCP connect and the TLS handshake;
  ``read_timeout`` bounds every wait for data (the response head, each body chunk).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Self

from edge.balancer import Balancer
from edge.endpoint import Endpoint
from edge.originclient import (
    ClientError,
    ClosedEarly,
    ConnectFailed,
    Exchange,
    InfoCallback,
    ReadTimeout,
    request_head,
)
from edge.origintls import client_context, server_name
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
_RETRYABLE = (ConnectFailed, ClosedEarly)  # nothing of the response arrived

Headers = list[tuple[str, str]] | tuple[tuple[str, str], ...]
Clock = Callable[[], float]


def _fold(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Repeated names take their first spelling."""
    spelling: dict[str, str] = {}
    return [(spelling.setdefault(k.lower(), k), v) for k, v in headers]


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
    timed_out = isinstance(exc, TimeoutError) or getattr(exc, "timed_out", False)
    kind = UpstreamTimeout if timed_out else UpstreamError
    return kind(f"{type(exc).__name__}: {exc}".rstrip(": "), list(tried))


class UpstreamResponse:
    def __init__(self, exchange: Exchange, origin: str, balancer: Balancer, clock: Clock,
                 latency: float, read_timeout: float,
                 on_done: Callable[[], None] = lambda: None) -> None:
        self._ex = exchange
        self._on_done = on_done
        self._balancer = balancer
        self._clock = clock
        self._latency = latency
        self._read_timeout = read_timeout
        self._done = False
        self.origin = origin
        self.status = exchange.status
        self.headers = exchange.headers
        self.content_length = _content_length(exchange.headers)
        self._verdict = exchange.status < 500

    @property
    def finished(self) -> bool:
        return self._done

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.iter_chunks(1 << 30)])

    async def iter_chunks(self, size: int = 64 * 1024) -> AsyncIterator[bytes]:
        ex = self._ex
        while True:
            try:
                chunk = await ex.next_chunk(self._read_timeout)
            except ClientError as exc:
                raise self._failed(exc) from exc
            if chunk is None:
                break
            for i in range(0, len(chunk), size):
                yield chunk[i:i + size]
        self.release()

    def release(self) -> None:
        """Idempotent. An unread body closes the connection instead of returning it."""
        self._finish(self._verdict)
        conn = self._ex.conn
        if conn is not None:
            conn.abandon(self._ex)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()

    def _failed(self, exc: BaseException) -> UpstreamError:
        self._finish(False)
        self.release()
        return _error(exc, [self.origin])

    def _finish(self, ok: bool) -> None:
        if not self._done:
            self._done = True
            try:
                self._balancer.on_finish(self.origin, self._clock(), self._latency, ok)
            finally:
                self._on_done()


def _authority(origin: OriginServer) -> str:
    """Host for requests that have none (probes): the TLS name when set, port unless default."""
    host = origin.tls_server_name or origin.host
    host = f"[{host}]" if ":" in host else host
    default = 443 if origin.scheme == "https" else 80
    return host if origin.port == default else f"{host}:{origin.port}"


def _content_length(headers: list[tuple[str, str]]) -> int | None:
    for name, value in headers:
        if name.lower() == "content-length":
            value = value.strip()
            return int(value) if value.isdigit() else None
    return None


class OriginPool:
    def __init__(self, origins: Iterable[OriginServer], settings: EdgeSettings,
                 clock: Clock = time.monotonic) -> None:
        self.origins = tuple(origins)
        self.settings = settings
        self.balancer = Balancer.from_settings(self.origins, settings)
        self._clock = clock
        self._probes: list[asyncio.Task[None]] = []
        self.endpoints = {
            o.name: Endpoint(o.name, o.host, o.port, connect_timeout=settings.connect_timeout,
                             max_header_bytes=settings.max_header_bytes,
                             keepalive=POOL_KEEPALIVE,
                             tls=client_context(o, f"origins[{o.name}]"),
                             server_name=server_name(o) if o.scheme == "https" else None)
            for o in self.origins}
        self._host = {o.name: _authority(o) for o in self.origins}
        cap = settings.origin_max_conns
        self._slots = {o.name: asyncio.Semaphore(cap) for o in self.origins} if cap else {}
        self.queued = {o.name: 0 for o in self.origins}  # requests waiting for a slot

    @property
    def connects(self) -> dict[str, int]:
        """Connection attempts per origin so far."""
        return {name: ep.connects for name, ep in self.endpoints.items()}

    async def start(self) -> None:
        if not self._probes:
            self._probes = [asyncio.create_task(self._probe_loop(o), name=f"probe {o.name}")
                            for o in self.origins]

    async def stop(self) -> None:
        probes, self._probes = self._probes, []
        for task in probes:
            task.cancel()
        await asyncio.gather(*probes, return_exceptions=True)
        for endpoint in self.endpoints.values():
            endpoint.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def fetch(self, method: str, path_qs: str, headers: Headers, body: bytes | None, *,
                    key: str, client_ip: str,
                    on_informational: InfoCallback | None = None) -> UpstreamResponse:
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
                return await self._attempt(origin, method, path_qs, headers, body,
                                           on_informational)
            except ClientError as exc:
                last = _error(exc, tried)
                if not isinstance(exc, _RETRYABLE):
                    raise last from exc
        if last is None:
            raise UpstreamError("no origin available", tried)
        raise last

    async def _attempt(self, origin: OriginServer, method: str, path_qs: str, headers: Headers,
                       body: bytes | None,
                       on_informational: InfoCallback | None) -> UpstreamResponse:
        slot = self._slots.get(origin.name)
        if slot is not None:
            await self._acquire(slot, origin.name)
        release = slot.release if slot is not None else (lambda: None)
        self.balancer.on_start(origin.name)
        started = self._clock()
        exchange: Exchange | None = None
        verdict: bool | None = None  # stays None when cancelled or on a caller error
        try:
            head = request_head(method, path_qs, _fold(headers), self._host[origin.name], body)
            exchange = await self._exchange(origin.name, method, head, body, on_informational)
        except ClientError:
            verdict = False
            raise
        finally:
            if exchange is None:
                now = self._clock()
                try:
                    self.balancer.on_finish(origin.name, now, now - started, verdict)
                finally:
                    release()
        return UpstreamResponse(exchange, origin.name, self.balancer, self._clock,
                                self._clock() - started, self.settings.read_timeout, release)

    async def _exchange(self, name: str, method: str, head: bytes, body: bytes | None,
                        on_informational: InfoCallback | None,
                        timeout: float | None = None) -> Exchange:
        """Send one request and wait for its final head; a reused connection that closes
        before answering an idempotent request is replaced once (RFC 9112 §9.3.1)."""
        endpoint = self.endpoints[name]
        timeout = self.settings.read_timeout if timeout is None else timeout
        conn, reused = await endpoint.connection()
        while True:
            ex = conn.send(head, body, method == "HEAD", on_informational)
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(ex.head)
                return ex
            except TimeoutError:
                conn.close()
                raise ReadTimeout(f"no response within {timeout:g} s") from None
            except ClosedEarly:
                if not reused or method not in IDEMPOTENT_METHODS:
                    raise
                conn, reused = await endpoint.connect(), False
            except BaseException:
                conn.close()
                raise

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
        head = request_head("GET", self.settings.origin_health_path,
                            [("Host", self._host[origin.name]),
                             ("User-Agent", "geoedge-healthcheck")], "", None)
        limit = self.settings.connect_timeout
        ex: Exchange | None = None
        try:
            async with asyncio.timeout(limit):
                ex = await self._exchange(origin.name, "GET", head, None, None, limit)
                while await ex.next_chunk(limit) is not None:
                    pass
            return 200 <= ex.status < 300
        except (ClientError, TimeoutError):
            return False
        finally:
            if ex is not None and ex.conn is not None:
                ex.conn.abandon(ex)

    def snapshot(self) -> list[dict[str, Any]]:
        rows = self.balancer.snapshot(self._clock())
        for row, origin in zip(rows, self.origins, strict=True):
            row["url"] = origin.base_url
        return rows
