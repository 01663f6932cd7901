"""What the edge's two HTTP/2 connection layers share: edge/h2server.py (the ``h2`` library)
and edge/h2ng.py (libnghttp2). The framing differs; these rules are one:

- Timers: one per connection, every quarter of the shortest of ``header_timeout``,
  ``keepalive_timeout`` and ``request_timeout``. With no stream open the connection closes
  (GOAWAY NO_ERROR) after ``keepalive_timeout`` (``header_timeout`` before its first request);
  a request still arriving after ``request_timeout`` gets 408 on its stream.
- Request bodies count per stream and per connection: over ``max_body_bytes`` either way, 413
  on the stream.
- Back-pressure: while the transport's buffer is full the connection stops reading and
  ``drain()`` waits; a lost connection fails every waiter and every stream.
- A handler runs per stream (``_slow``): an error before the response started is a 500 on the
  stream, after it a reset (INTERNAL_ERROR); a handler that sent nothing gets a 500.

A layer provides ``_close_with``, ``_reject``, ``_flush`` and ``_maybe_done``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edge.connlimit import ConnectionLimiter
from edge.h2writer import H2Writer
from edge.httpserver import Handler, Limits, Request
from edge.policy.h2flood import FloodCounter, FloodLimits

log = logging.getLogger("geoedge.edge.h2")

NO_ERROR, INTERNAL_ERROR = 0x0, 0x2  # RFC 9113 §7 error codes


@dataclass(frozen=True, slots=True)
class H2Limits:
    max_streams: int = 100  # SETTINGS_MAX_CONCURRENT_STREAMS, and running handlers
    hard_header_bytes: int = 256 * 1024  # a larger header block ends the connection
    initial_window: int = 65535  # our receive window per stream (request bodies)
    floods: FloodLimits = field(default_factory=FloodLimits)


class H2Connection(asyncio.Protocol):
    """The connection state and the rules above; a layer subclasses it."""

    def __init__(self, handler: Handler, limits: Limits,
                 on_close: Callable[[Any], None] | None = None,
                 limiter: ConnectionLimiter | None = None,
                 h2_limits: H2Limits | None = None) -> None:
        self.handler = handler
        self.limits = limits
        self.on_close = on_close
        self.limiter = limiter
        self.h2_limits = h2_limits or H2Limits()
        self.scheme = "https"  # set to "http" for h2c on a plain socket
        self.client_ip = "0.0.0.0"
        self.transport: asyncio.Transport | None = None
        self.loop: asyncio.AbstractEventLoop
        self.closing = False
        self._counted = False
        self._paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self.streams: dict[int, Any] = {}  # the layer's stream objects by id
        self.running = 0  # handler tasks not yet finished (reset streams included)
        self._flood = FloodCounter(self.h2_limits.floods)
        self._body_bytes = 0  # request body bytes buffered on the connection
        self._timer: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
        self._served = False  # a request arrived (the preface deadline is over)
        self._goaway_sent = False

    # -- what a layer provides ----------------------------------------------------------------
    def _close_with(self, code: int, message: str | None = None) -> None:
        raise NotImplementedError

    def _reject(self, stream: Any, status: int) -> None:
        raise NotImplementedError

    def _flush(self) -> None:
        raise NotImplementedError

    def _maybe_done(self) -> None:
        raise NotImplementedError

    # -- connection ---------------------------------------------------------------------------
    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self._counted and self.limiter is not None:
            self._counted = False
            self.limiter.release(self.client_ip)
        if self._timer is not None:
            self._timer.cancel()
        for stream in list(self.streams.values()):
            stream.gone()
        self._wake_drain(ConnectionResetError("client went away"))
        self.transport = None
        if self.on_close:
            self.on_close(self)

    def pause_writing(self) -> None:
        self._paused = True
        if self.transport is not None:
            self.transport.pause_reading()  # no more frames (and their answers) until it drains

    async def drain(self) -> None:
        if self.transport is None:
            raise ConnectionResetError("client went away")
        if self._paused:
            waiter = self.loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

    def _wake_drain(self, exc: Exception | None) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for w in waiters:
            if not w.done():
                w.set_exception(exc) if exc is not None else w.set_result(None)

    # -- time ---------------------------------------------------------------------------------
    def _arm(self) -> None:
        lim = self.limits
        step = min(lim.header_timeout, lim.keepalive_timeout, lim.request_timeout)
        self._timer = self.loop.call_later(max(step / 4, 0.05), self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self.transport is None:
            return
        now = self.loop.time()
        if not self.streams:
            limit = self.limits.keepalive_timeout if self._served else self.limits.header_timeout
            if now - self._idle_since >= limit:
                self._close_with(NO_ERROR)
                return
        for stream in list(self.streams.values()):
            if not stream.complete and now - stream.opened >= self.limits.request_timeout:
                self._reject(stream, 408)
        self._flush()
        if self.transport is not None:
            self._arm()

    # -- requests -----------------------------------------------------------------------------
    def _body(self, sid: int, data: bytes) -> None:
        stream = self.streams.get(sid)
        if stream is None or stream.complete or not data:
            return
        stream.body_bytes += len(data)
        self._body_bytes += len(data)
        if stream.body_bytes > self.limits.max_body_bytes or (
                self._body_bytes > self.limits.max_body_bytes):
            self._reject(stream, 413)
            return
        stream.body.append(data)

    def _release_body(self, stream: Any) -> None:
        self._body_bytes -= stream.body_bytes
        stream.body_bytes = 0

    async def _slow(self, stream: Any, request: Request) -> None:
        writer = H2Writer(stream, request)
        try:
            await self.handler.handle(request, writer)
            await writer.finish()
        except ConnectionError:
            stream.gone()
        except Exception:  # last-resort guard, logged: one bad request never hangs a client
            log.exception("%s %s failed", request.method, request.target)
            if not writer.started:
                writer.started = True
                stream.respond(500, [(b"content-type", b"text/plain")], b"500\n", True)
            else:
                stream.reset(INTERNAL_ERROR)
        finally:
            self.running -= 1
        if not writer.started and not stream.closed:
            stream.respond(500, [(b"content-type", b"text/plain")], b"500\n", True)
        self._flush()
        self._maybe_done()
