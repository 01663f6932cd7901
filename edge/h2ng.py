"""The edge's HTTP/2 server on libnghttp2 (the C extension edge/_nghttp2.c).

The same server as edge/h2server.py, whose rules (at the top of that module) hold here too,
with frame parsing, HPACK and the streams' state machines in nghttp2 instead of the
pure-Python ``h2``: each request offered to ``handler.fast()`` first, else to
``handler.handle()`` with an ``H2Writer`` (edge/h2writer.py) on an ``NgStream``. It is what
``edge.h2server.H2Protocol`` is when the extension is built. What differs in how:

- nghttp2 owns flow control: a response's body waits in the stream's buffer in C until the
  peer's windows take it; ``H2Writer.write`` waits while more than ``STREAM_BUFFER`` waits.
  While the transport's buffer is full nothing more is serialised (and reading stops).
- The header block limits: fields over ``hard_header_bytes`` (counted as nghttp2 decodes
  them) or a single field over nghttp2's 64 KiB: GOAWAY ENHANCE_YOUR_CALM. A client opening
  more than MAX_CONCURRENT_STREAMS streams gets RST_STREAM REFUSED_STREAM from nghttp2.
- Flood counts come per received batch from C (RST_STREAM, PING, SETTINGS, PRIORITY,
  WINDOW_UPDATE, empty DATA, unknown frames) and go to the same ``FloodCounter``, before the
  batch's requests are looked at.
- What repeats is computed once: ``read_head`` + ``parse_target`` per distinct header list
  (up to ``CACHE_HEAD_BYTES``) and ``parse_http1`` per distinct hit head, ``CACHE_ENTRIES``
  each (emptied when full). A hit that ``handler.fast()`` answers at once keeps no
  ``NgStream`` (nghttp2 sends it and forgets it); its body goes from the hit's bytes.
- A connection error nghttp2 meets (a bad preface, a frame out of place) ends the
  connection with nghttp2's GOAWAY.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from edge import _nghttp2
from edge.connlimit import ConnectionLimiter, Verdict
from edge.h2writer import STREAM_BUFFER, Fields, H2Writer, parse_http1
from edge.httpserver import Handler, Limits, Request, reason
from edge.policy.h2flood import FloodCounter
from edge.policy.h2head import H2Head, read_head
from edge.policy.target import BadTarget, Target, parse_target

if TYPE_CHECKING:
    from edge.h2server import H2Limits

__all__ = ["NgH2Protocol", "NgStream"]

log = logging.getLogger("geoedge.edge.h2")

NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, REFUSED_STREAM, CALM = 0x0, 0x1, 0x2, 0x7, 0xB
FLOOD_KINDS = ("resets", "pings", "settings", "priority", "window_updates", "empty")
REQUEST, DATA, END, CLOSE = _nghttp2.REQUEST, _nghttp2.DATA, _nghttp2.END, _nghttp2.CLOSE
GOAWAY, FLOOD, BOMB = _nghttp2.GOAWAY, _nghttp2.FLOOD, _nghttp2.CALM


# Parsed request heads and response heads, shared by connections: h2load-like clients (and
# browsers) send the same header lists again and again, and a hit's head is the same for all
# requests of one second. Bounded in entries and in the size of what is kept.
CACHE_ENTRIES = 1024
CACHE_HEAD_BYTES = 2048
_CONTEXTS: dict[tuple[str, frozenset[bytes], Limits], int] = {}
_REQUESTS: dict[tuple[int, tuple[tuple[bytes, bytes], ...]],
                tuple[H2Head, Target | BadTarget | None]] = {}
_NUMBERS = itertools.count(1)
_RESPONSES: dict[bytes, tuple[int, Fields]] = {}


def _context(scheme: str, flags: frozenset[bytes], limits: Limits) -> int:
    """A small number for what read_head and parse_target depend on besides the fields."""
    key = (scheme, flags, limits)
    ctx = _CONTEXTS.get(key)
    if ctx is None:
        if len(_CONTEXTS) >= 64:
            _CONTEXTS.clear()
            _REQUESTS.clear()
        ctx = _CONTEXTS[key] = next(_NUMBERS)
    return ctx


def _request_of(ctx: int, headers: list[tuple[bytes, bytes]], scheme: str,
                flags: frozenset[bytes], lim: Limits) -> tuple[H2Head, Target | BadTarget | None]:
    """read_head and parse_target of a header list (remembered for small ones)."""
    key = (ctx, tuple(headers))
    hit = _REQUESTS.get(key)
    if hit is not None:
        return hit
    head = read_head(headers, flags, lim.max_header_bytes, lim.max_header_count,
                     lim.max_url_bytes, lim.max_body_bytes)
    parsed: Target | BadTarget | None = None
    if not head.malformed:
        host = head.authority if head.authority is not None else next(
            (v for n, v in head.fields if n == "host"), None)
        parsed = parse_target(head.method, head.path, host, scheme)
    if sum(len(n) + len(v) for n, v in headers) <= CACHE_HEAD_BYTES:
        if len(_REQUESTS) >= CACHE_ENTRIES:
            _REQUESTS.clear()
        _REQUESTS[key] = (head, parsed)
    return head, parsed


def _split_http1(raw: bytes) -> tuple[int, Fields, int]:
    """parse_http1's status and fields of a pre-serialised response, and where its body
    starts (remembered per head)."""
    end = raw.find(b"\r\n\r\n") + 4
    head = raw[:end]
    hit = _RESPONSES.get(head)
    if hit is None:
        status, fields, _ = parse_http1(head)
        if len(_RESPONSES) >= CACHE_ENTRIES:
            _RESPONSES.clear()
        if len(head) <= 4 * CACHE_HEAD_BYTES:
            _RESPONSES[head] = (status, fields)
        return status, fields, end
    return hit[0], hit[1], end


class NgStream:
    """One client stream: its request, and the response side H2Writer drives."""

    __slots__ = ("_waiter", "body", "body_bytes", "closed", "complete", "opened", "proto",
                 "request", "sid", "status", "submitted", "task")

    def __init__(self, proto: NgH2Protocol, sid: int, opened: float) -> None:
        self.proto = proto
        self.sid = sid
        self.opened = opened
        self.request: Request | None = None
        self.status = 0
        self.body: list[bytes] = []
        self.body_bytes = 0
        self.complete = False  # the request has arrived whole (or was answered with an error)
        self.closed = False  # reset, gone, or the response has been sent whole
        self.submitted = False  # HEADERS submitted
        self.task: asyncio.Task[None] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def headers(self, status: int, fields: Fields, end: bool, stop: bool = False) -> None:
        if self.closed or self.submitted:
            return
        self.submitted = True
        if not self.proto.sess.submit(self.sid, status, fields, None, end, stop):
            self.gone()

    def data(self, chunk: bytes, end: bool = False) -> None:
        if self.closed:
            return
        self.proto.sess.write(self.sid, chunk, end)

    def respond(self, status: int, fields: Fields, body: bytes, end: bool,
                stop: bool = False) -> None:
        if self.closed or self.submitted:
            return
        self.submitted = True
        if not self.proto.sess.submit(self.sid, status, fields, body or None, end, stop):
            self.gone()

    def reset(self, code: int) -> None:
        if not self.closed:
            self.proto.sess.reset(self.sid, code)
        self.gone()

    async def room(self) -> None:
        """Wait while this stream holds more than STREAM_BUFFER unsent bytes."""
        sess = self.proto.sess
        while not self.closed and sess.pending(self.sid) > STREAM_BUFFER:
            self._waiter = self.proto.loop.create_future()
            self.proto.waiting.add(self)
            await self._waiter

    def wake(self, exc: Exception | None = None) -> None:
        w = self._waiter
        if w is not None and not w.done():
            self._waiter = None
            w.set_exception(exc) if exc is not None else w.set_result(None)

    def gone(self) -> None:
        """Reset by either side, or the connection closed: a waiting writer learns it."""
        if self.closed:
            return
        self.closed = True
        self.wake(ConnectionResetError("stream reset"))
        self.proto._forget(self)

    def done(self) -> None:
        """The response has been sent whole."""
        self.closed = True
        self.wake()
        self.proto._forget(self)


class NgH2Protocol(asyncio.Protocol):
    def __init__(self, handler: Handler, limits: Limits,
                 on_close: Callable[[NgH2Protocol], None] | None = None,
                 limiter: ConnectionLimiter | None = None,
                 h2_limits: H2Limits | None = None) -> None:
        from edge.h2server import H2Limits

        self.handler = handler
        self.limits = limits
        self.on_close = on_close
        self.limiter = limiter
        self.h2_limits = h2_limits or H2Limits()
        self.scheme = "https"  # set to "http" for h2c on a plain socket
        self.client_ip = "0.0.0.0"
        self.transport: asyncio.Transport | None = None
        self.closing = False
        self._counted = False
        self._paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self.streams: dict[int, NgStream] = {}
        self.waiting: set[NgStream] = set()  # writers waiting for their stream to drain
        self.running = 0
        self._flood = FloodCounter(self.h2_limits.floods)
        self._body_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
        self._served = False
        self._goaway_sent = False
        self._flags: frozenset[bytes] | None = None
        self._ctx = 0
        lim = self.h2_limits
        self.sess = _nghttp2.Session(lim.max_streams, limits.max_header_bytes,
                                     lim.initial_window, lim.hard_header_bytes)

    # -- connection ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.loop = asyncio.get_running_loop()
        peer = transport.get_extra_info("peername")
        if peer:
            self.client_ip = peer[0]
        if self.limiter is not None:
            verdict = self.limiter.admit(self.client_ip, self.loop.time())
            if verdict is not Verdict.ADMIT and verdict is not Verdict.EXEMPT:
                self._close_with(CALM)
                return
            self._counted = verdict is Verdict.ADMIT
        self._flush()
        self._idle_since = self.loop.time()
        self._arm()

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
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()
        self._wake_drain(None)
        self._flush()

    def _wake_drain(self, exc: Exception | None) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for w in waiters:
            if not w.done():
                w.set_exception(exc) if exc is not None else w.set_result(None)

    async def drain(self) -> None:
        if self.transport is None:
            raise ConnectionResetError("client went away")
        if self._paused:
            waiter = self.loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

    def _flush(self, force: bool = False) -> None:
        """Serialise what nghttp2 has to send (not while the transport is full)."""
        transport = self.transport
        if transport is None or (self._paused and not force):
            return
        try:
            data, events = self.sess.send()
        except RuntimeError as exc:  # nghttp2 cannot go on (out of memory): end it
            log.warning("h2 %s: %s", self.client_ip, exc)
            self.closing = True
            transport.close()
            return
        if data and not transport.is_closing():
            transport.write(data)
        if events:
            streams = self.streams
            for event in events:
                if event[0] == CLOSE and (stream := streams.pop(event[1], None)) is not None:
                    stream.closed = True  # what done() and gone() do, inline: one per request
                    if stream._waiter is not None:
                        stream.wake(None if event[3] else ConnectionResetError("stream reset"))
                    if stream.body_bytes:
                        self._release_body(stream)
            if not streams:
                self._idle_since = self.loop.time()
                self._maybe_done()
        if self.waiting:
            waiting, self.waiting = self.waiting, set()
            for stream in waiting:
                if stream.closed or self.sess.pending(stream.sid) <= STREAM_BUFFER:
                    stream.wake()
                else:
                    self.waiting.add(stream)
        if not self.sess.want_io() and self.transport is not None:
            self.closing = True
            self.transport.close()

    def _close_with(self, code: int, message: str | None = None) -> None:
        if message:
            log.info("h2 %s: GOAWAY %s (%s)", self.client_ip, code, message)
        if self.transport is None:
            return
        self.closing = True
        if not self._goaway_sent:
            self._goaway_sent = True
            self.sess.terminate(code)
            self._flush(force=True)
        if self.transport is not None:
            self.transport.close()

    def goaway(self) -> None:
        """Shutdown: no new streams; the open ones finish, then the connection closes."""
        if self.transport is None or self._goaway_sent:
            return
        self._goaway_sent = True
        self.sess.goaway(NO_ERROR)
        self._flush(force=True)
        self._maybe_done()

    def _maybe_done(self) -> None:
        """After GOAWAY: once nghttp2 has no stream left (hits answered at once included) and
        nothing to send, ``_flush`` closes the connection."""
        if self._goaway_sent and not self.streams and self.transport is not None:
            self._flush(force=True)

    # -- timers -------------------------------------------------------------------------------
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

    # -- frames -------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        events, error = self.sess.recv(data)
        now = self.loop.time()
        for event in events:
            kind = event[0]
            if kind == REQUEST:
                flood = self._open(event[1], event[2], event[3], now)
            elif kind == DATA:
                self._body(event[1], event[2])
                continue
            elif kind == END:
                stream = self.streams.get(event[1])
                if stream is not None and not stream.complete:
                    self._dispatch(stream)
                continue
            elif kind == CLOSE:
                self._closed(event[1], event[3])
                continue
            elif kind == FLOOD:
                flood = self._floods(event, now)
            elif kind == BOMB:
                self._close_with(CALM, event[1])
                return
            elif kind == GOAWAY:
                self._close_with(NO_ERROR)
                return
            else:
                continue
            if flood is not None:
                self._close_with(CALM, f"{flood} flood")
                return
            if self.transport is None:
                return
        if error is not None:
            self._close_with(PROTOCOL_ERROR, error)
            return
        self._flush()

    def _floods(self, counts: tuple[int, ...], now: float) -> str | None:
        note = self._flood.note
        for kind, n in zip(FLOOD_KINDS, counts[1:], strict=True):
            if n and (flood := note(kind, now, n)) is not None:
                return flood
        return None

    # -- requests -----------------------------------------------------------------------------
    def _open(self, sid: int, headers: list[tuple[bytes, bytes]], end: bool,
              now: float) -> str | None:
        if self._goaway_sent:
            self.sess.reset(sid, REFUSED_STREAM)
            return None
        self._served = True
        if self.running >= self.h2_limits.max_streams:
            self.streams[sid] = NgStream(self, sid, now)
            self.streams[sid].reset(REFUSED_STREAM)
            return self._flood.note("resets", now)
        flags = self.handler.flag_headers
        if flags is not self._flags:
            self._flags = flags
            self._ctx = _context(self.scheme, flags, self.limits)
        head, parsed = _request_of(self._ctx, headers, self.scheme, flags, self.limits)
        if head.malformed:
            log.info("h2 %s stream %d: malformed request (%s)", self.client_ip, sid,
                     head.malformed)
            self.sess.reset(sid, PROTOCOL_ERROR)
            return None
        request = None
        status = head.status
        if isinstance(parsed, BadTarget):
            status = status or parsed.status
        elif parsed is not None and not status:
            request = Request(head.method, parsed.path_query, "2", list(head.fields),
                              self.client_ip, True, b"", parsed.authority, head.flagged,
                              parsed.key, parsed.scheme)
            if end:  # a hit answered at once: no stream kept for it (no CLOSE comes back)
                raw = self.handler.fast(request)
                if raw is not None:
                    code, fields, start = _split_http1(raw)
                    self.sess.submit(sid, code, fields, raw, True, False, start, True)
                    if not self.streams:
                        self._idle_since = now
                    return None
        stream = self.streams[sid] = NgStream(self, sid, now)
        stream.request = request
        stream.status = status
        if status:
            self._reject(stream, status)
        elif end:
            self._dispatch(stream, fast=False)
        return None

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

    def _reject(self, stream: NgStream, status: int) -> None:
        """An error answered by the server layer on this stream only; a client still sending
        gets RST_STREAM NO_ERROR after it (RFC 9113 §8.1)."""
        stream.complete = True
        self._release_body(stream)
        body = f"{status} {reason(status)}\n".encode()
        stream.respond(status, [(b"content-type", b"text/plain"),
                                (b"content-length", b"%d" % len(body))], body, True, stop=True)

    def _release_body(self, stream: NgStream) -> None:
        self._body_bytes -= stream.body_bytes
        stream.body_bytes = 0

    def _dispatch(self, stream: NgStream, fast: bool = True) -> None:
        stream.complete = True
        request = stream.request
        if request is None:
            return
        if stream.body:
            request.body = b"".join(stream.body)
            stream.body.clear()
            self._release_body(stream)
        raw = self.handler.fast(request) if fast else None
        if raw is not None:
            status, headers, start = _split_http1(raw)
            if not stream.closed:
                stream.submitted = True
                if not self.sess.submit(stream.sid, status, headers, raw, True, False, start):
                    stream.gone()
            return
        self.running += 1
        stream.task = self.loop.create_task(self._slow(stream, request))

    async def _slow(self, stream: NgStream, request: Request) -> None:
        writer = H2Writer(stream, request)  # type: ignore[arg-type]
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

    # -- stream ends --------------------------------------------------------------------------
    def _closed(self, sid: int, complete: bool) -> None:
        stream = self.streams.get(sid)
        if stream is None:
            return
        if complete:
            stream.done()
        else:
            stream.gone()

    def _forget(self, stream: NgStream) -> None:
        if self.streams.pop(stream.sid, None) is None:
            return
        self._release_body(stream)
        if not self.streams:
            self._idle_since = self.loop.time()
        self._maybe_done()
