"""The edge's client-facing HTTP/1.1 server: an asyncio protocol around llhttp (httptools).

Rules (RFC 9112, and what nginx does):

- Requests are parsed by llhttp; a parse error gets 400 and the connection is closed. Between
  messages, the plain GET/HEAD heads that make up cache hits are first offered to the optional
  C parser (edge/_fasthttp.c, one call per head): it takes only heads that llhttp and the rules
  below would take as they are, and leaves anything else, and any incomplete head, to llhttp
  (and stops for good after a request that ends the connection). Hits answered from one read
  are written at once, head and body side by side (``fast_parts``: one writev, no copy). The
  target and Host are validated and normalised by ``edge.policy.target`` (400, or 501 for
  CONNECT, and close); the handler sees only the normalised form and the key built from it.
- Sizes: a target longer than ``max_url_bytes`` gets 414; request line plus headers larger
  than ``max_header_bytes``, or more than ``max_header_count`` header fields, get 431; a body
  larger than ``max_body_bytes`` gets 413 (each then closes). ``Expect: 100-continue`` gets an
  interim 100.
- Time (slowloris, slow POST): the request line and headers must arrive within
  ``header_timeout`` seconds of the connection opening or of the first byte of a request; the
  body may pause at most ``body_timeout`` seconds between reads and, after ``body_timeout``,
  must average ``body_min_rate`` bytes/s (Apache's mod_reqtimeout ``MinRate``); the whole
  request (headers and body) must arrive within ``request_timeout``. Otherwise 408 and close.
  An idle keep-alive connection is closed (silently) after ``keepalive_timeout`` seconds, and
  after ``keepalive_requests`` requests the response says ``Connection: close``. One timer per
  connection checks a deadline that requests only move (no timer churn per request).
- Pipelined requests are answered in order. A request is first offered to ``handler.fast()``
  (synchronous: cache hits return the complete response bytes at once); otherwise
  ``handler.handle()`` runs as one task per connection while later requests wait their turn.
  What waits is bounded: more than 32 requests, or ``max_buffered_bytes`` of queued requests
  (and of a body arriving behind them), stop reading from the connection until the queue has
  drained (``pause_reading``), so one connection holds at most about ``max_buffered_bytes``
  plus one request of ``max_body_bytes``.
- Connections are admitted by a ``ConnectionLimiter`` (edge/connlimit.py): over the per-edge
  cap a new connection is closed at once, over the per-address cap it is answered 503 and
  closed.
- Responses to HTTP/1.0 clients, and to requests that asked for it, close the connection;
  streaming without a known length uses chunked coding for HTTP/1.1 and close for HTTP/1.0.
- Writes respect transport flow control (``drain`` waits while the kernel buffer is full).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import MISSING, dataclass, field, fields, replace
from http import HTTPStatus
from typing import Protocol

import httptools

from edge.connlimit import ConnectionLimiter, Verdict
from edge.policy.target import BadTarget, parse_target

try:  # the optional C parser for plain GET/HEAD heads (edge/_fasthttp.c, built by setup.py)
    from edge import _fasthttp
except ImportError:  # no compiler at install time: every request goes through llhttp
    _fasthttp = None

log = logging.getLogger("geoedge.edge.http")


@dataclass(slots=True)
class Request:
    method: str
    target: str  # normalised origin-form path and query (edge.policy.target), or "*"
    version: str
    headers: list[tuple[str, str]]
    client_ip: str
    keep_alive: bool = True
    body: bytes = b""
    host: str = ""  # normalised authority: Host, or the absolute-form target's
    flagged: bool = False  # carries one of the handler's ``flag_headers``
    key: str = ""  # the primary cache key: scheme://host/path?query, normalised
    scheme: str = "http"
    origin_view: tuple[tuple[str, str], ...] | None = None  # set by the handler: see proxy
    wire_bytes: int = 0  # request line, headers and body as received (the pipelining bound)
    # set by the handler: relays an origin's 1xx (103 Early Hints) to this client
    interim: Callable[[int, list[tuple[str, str]]], None] | None = None
    cache_status: str = ""  # set by the handler: its Cache-Status members (the access log)
    origin: str = ""  # set by the handler: the origin that answered, if one did
    _lower: dict[str, str] | None = field(default=None, repr=False)

    def header(self, name: str, default: str | None = None) -> str | None:
        """The (comma-joined) value of a header, by lower-case name."""
        lower = self._lower
        if lower is None:
            lower = {}
            for n, v in self.headers:
                k = n.lower()
                lower[k] = f"{lower[k]}, {v}" if k in lower else v
            self._lower = lower
        return lower.get(name, default)

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


def _c_parser() -> Callable[..., tuple[int, Request] | None] | None:
    """edge._fasthttp.parse_request, told how to make a Request (None: no extension)."""
    if _fasthttp is None:
        return None
    defaults = {}
    for f in fields(Request):
        if f.default_factory is not MISSING:  # a default to copy per request: not in C
            return None
        defaults[f.name] = None if f.default is MISSING else f.default
    try:
        _fasthttp.configure(Request, defaults)
    except (TypeError, ValueError):  # a Request the C side cannot fill (not plain slots)
        log.warning("edge._fasthttp cannot make this Request: llhttp parses every request")
        return None
    return _fasthttp.parse_request  # type: ignore[no-any-return]


fast_parse = _c_parser()  # HttpProtocol reads it when made (tests set it to None)


class Handler(Protocol):
    flag_headers: frozenset[bytes]  # lower-case header names that set Request.flagged

    def fast(self, request: Request) -> bytes | None: ...

    def handle(self, request: Request, writer: ResponseWriter) -> Awaitable[None]: ...


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def serialize_head(status: int, headers: list[tuple[str, str]], version: str = "1.1") -> bytes:
    lines = [f"HTTP/{version} {status} {reason(status)}\r\n"]
    lines += [f"{n}: {v}\r\n" for n, v in headers]
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


@dataclass(frozen=True, slots=True)
class Limits:
    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 10 * 1024 * 1024
    header_timeout: float = 10.0
    keepalive_timeout: float = 30.0
    body_timeout: float = 60.0
    body_min_rate: float = 500.0  # bytes/s after body_timeout; 0: no minimum
    request_timeout: float = 120.0
    keepalive_requests: int = 1000
    max_header_count: int = 100
    max_url_bytes: int = 8192
    max_buffered_bytes: int = 1024 * 1024


class ResponseWriter:
    """Writes one response; ``close`` is set when the connection must end after it."""

    def __init__(self, proto: HttpProtocol, request: Request) -> None:
        self._proto = proto
        self.request = request
        self.close = not request.keep_alive
        self.started = False
        self.status = 0
        self._chunked = False
        self._finished = False
        self.bytes_sent = 0  # head and body bytes written (the access log)
        self.first_byte = 0.0  # time.perf_counter() of the first write

    def _write(self, data: bytes) -> None:
        if not self.first_byte:
            self.first_byte = time.perf_counter()
        self.bytes_sent += len(data)
        self._proto.write(data)

    async def send(self, status: int, headers: list[tuple[str, str]], body: bytes = b"") -> None:
        """A complete response with a body of known length (omitted for HEAD/204/304)."""
        await self.start(status, headers, len(body))
        await self.write(body)
        await self.finish()

    async def start(self, status: int, headers: list[tuple[str, str]],
                    content_length: int | None) -> None:
        assert not self.started
        self.started, self.status = True, status
        headers = list(headers)
        no_body = self.request.method == "HEAD" or status in (204, 304) or status < 200
        if content_length is not None:
            if status not in (204, 304):
                headers.append(("Content-Length", str(content_length)))
        elif not no_body:
            if self.request.version == "1.1":
                self._chunked = True
                headers.append(("Transfer-Encoding", "chunked"))
            else:
                self.close = True
        if self.close:
            headers.append(("Connection", "close"))
        elif self.request.version == "1.0":
            headers.append(("Connection", "keep-alive"))
        self._no_body = no_body
        self._write(serialize_head(status, headers))

    async def write(self, chunk: bytes) -> None:
        if not chunk or self._no_body:
            return
        if self._chunked:
            self._write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        else:
            self._write(chunk)
        await self._proto.drain()

    async def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        if self._chunked and not self._no_body:
            self._write(b"0\r\n\r\n")
        await self._proto.drain()

    def interim(self, status: int, headers: list[tuple[str, str]]) -> None:
        """A 1xx ahead of the response; never to HTTP/1.0 (RFC 9110 §15.2), never after it."""
        if not self.started and self.request.version == "1.1" and 100 < status < 200:
            self._write(serialize_head(status, headers))

    def send_raw(self, data: bytes) -> None:
        """A complete pre-serialised response."""
        assert not self.started
        self.started = self._finished = True
        self._write(data)

    def abort(self) -> None:
        """Stop mid-response (e.g. the origin failed while streaming): close the connection."""
        self.close = True
        self._finished = True
        self._proto.abort()


class HttpProtocol(asyncio.Protocol):
    def __init__(self, handler: Handler, limits: Limits,
                 on_close: Callable[[HttpProtocol], None] | None = None,
                 limiter: ConnectionLimiter | None = None) -> None:
        self.handler = handler
        self.limits = limits
        self.on_close = on_close
        self.limiter = limiter
        self._counted = False  # admitted and counted by the limiter
        self._requests = 0  # requests parsed on this connection
        self._queued_bytes = 0  # wire size of the requests in ``queue``
        self._started = 0.0  # loop time of the current request's first byte
        self._body_start = 0.0  # loop time its body started (or reading resumed)
        self._body_base = 0  # body bytes already read then
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.client_ip = "0.0.0.0"
        self.queue: deque[Request] = deque()
        self.busy = False
        self.closing = False
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._flags = handler.flag_headers
        self._error_status = 0
        self._deferred = 0  # a parse error's status, answered once the queue has drained
        self._drain_waiter: asyncio.Future[None] | None = None
        self._paused = False
        self.scheme = "http"
        self._writer: ResponseWriter | None = None  # the response in progress
        self._parse = fast_parse  # None: llhttp only (the module's, read when made)
        self._flag_names = tuple(self._flags)
        self._parts = hasattr(handler, "fast_parts")  # fast() as (head, body): see _plain
        self._reset_message()

    # -- connection ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.loop = asyncio.get_running_loop()
        peer = transport.get_extra_info("peername")
        if peer:
            self.client_ip = peer[0]
        if self.limiter is not None:
            verdict = self.limiter.admit(self.client_ip, self.loop.time())
            if verdict is Verdict.EDGE_FULL:
                self.closing = True
                self.transport.close()
                return
            if verdict is Verdict.ADDRESS_FULL:
                self._fail(503)
                return
            self._counted = verdict is Verdict.ADMIT
        self._arm(self.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self._counted and self.limiter is not None:
            self._counted = False
            self.limiter.release(self.client_ip)
        if self._timer:
            self._timer.cancel()
        if self._drain_waiter and not self._drain_waiter.done():
            self._drain_waiter.set_exception(ConnectionResetError("client went away"))
        self.transport = None
        if self.on_close:
            self.on_close(self)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drain_waiter and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    async def drain(self) -> None:
        if self.transport is None:
            raise ConnectionResetError("client went away")
        if self._paused:
            self._drain_waiter = self.loop.create_future()
            await self._drain_waiter

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def shut_down(self) -> None:
        """Graceful stop: no further requests are read; an idle connection closes now, a
        busy one after the response in progress (which says Connection: close unless its
        head is already out). Requests pipelined behind it are not answered."""
        self.closing = True
        self.queue.clear()
        if self.transport is None:
            return
        if not self.busy:
            self.transport.close()
        elif self._writer is not None:
            self._writer.close = True

    def _arm(self, seconds: float) -> None:
        self._arm_at(self.loop.time() + seconds)

    def _arm_at(self, deadline: float) -> None:
        """Move the deadline; the one timer re-arms itself when it fires early, and is
        rescheduled only when the deadline moves before it."""
        self._deadline = deadline
        if self._timer is not None and deadline < self._timer.when():
            self._timer.cancel()
            self._timer = None
        if self._timer is None:
            self._timer = self.loop.call_at(self._deadline, self._timeout)

    def _timeout(self) -> None:
        self._timer = None
        if self.transport is None:
            return
        remaining = self._deadline - self.loop.time()
        if remaining > 0 or self.busy or self.queue:
            self._timer = self.loop.call_later(max(remaining, 0.5), self._timeout)
            return
        if self._header_bytes:
            self._fail(408)
        else:
            self.transport.close()

    def _fail(self, status: int) -> None:
        """An error answered directly by the server layer; the connection then closes."""
        if self.transport is None or self.closing:
            return
        self.closing = True
        if self.busy or self.queue:  # answered in order, after the requests before it
            self._deferred = status
            self.transport.pause_reading()
            return
        self._write_fail(status)

    def _write_fail(self, status: int) -> None:
        assert self.transport is not None
        body = f"{status} {reason(status)}\n".encode()
        head = serialize_head(status, [("Content-Type", "text/plain"),
                                       ("Content-Length", str(len(body))),
                                       ("Connection", "close")])
        self.transport.write(head + body)
        self.transport.close()

    # -- parsing ------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self._parse is not None and not self._header_bytes:  # llhttp between messages
            offset = self._plain(data, self._parse)
            if offset >= len(data):
                return
            data = data[offset:]  # from the first request the C parser left to llhttp
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # the request is answered as plain HTTP/1.1 (an Upgrade may be ignored, RFC 9110
            # §7.8): llhttp stops after it, so parsing goes on with a fresh parser
            offset = exc.args[0] if exc.args and isinstance(exc.args[0], int) else len(data)
            self.parser = httptools.HttpRequestParser(self)
            if offset < len(data):
                self.data_received(data[offset:])
        except httptools.HttpParserError:  # also wraps exceptions raised in our callbacks
            self._fail(self._error_status or 400)

    def _send(self, transport: asyncio.Transport, out: list[bytes]) -> None:
        """The answers of one read at once: over plain TCP one writev of their pieces; over
        TLS joined first, since each piece written to the TLS transport would be a TLS record
        (and an encryption call) of its own."""
        if len(out) == 1:
            transport.write(out[0])
        elif self.scheme == "https":
            transport.write(b"".join(out))
        else:
            transport.writelines(out)

    def _plain(self, data: bytes, parse: Callable[..., tuple[int, Request] | None]) -> int:
        """Parse and dispatch the plain GET/HEAD requests at the start of ``data`` with the C
        parser (edge/_fasthttp.c), which accepts only heads that llhttp and the Python path
        would take as they are and leaves the rest to them; the offset where it stopped
        (``len(data)``: all of it, or the connection is done). What each request then goes
        through is what ``on_message_complete`` and ``_run_queue`` do."""
        lim = self.limits
        size = len(data)
        offset = 0
        handled = False
        out: list[bytes] = []  # the hits answered in this read, written at once
        while offset < size:
            got = parse(data, offset, self.scheme, self._flag_names, lim.max_url_bytes,
                        lim.max_header_bytes, lim.max_header_count, self.client_ip)
            if got is None:
                break
            offset, request = got
            wire = request.wire_bytes
            handled = True
            self._requests += 1
            if self._requests >= lim.keepalive_requests:
                request.keep_alive = False
            transport = self.transport
            if self.busy or self.queue or transport is None:  # behind others: in order
                self.queue.append(request)
                self._queued_bytes += wire
                if transport is not None and (len(self.queue) > 32 or (
                        self._queued_bytes > lim.max_buffered_bytes)):
                    transport.pause_reading()
                continue
            if self._parts:  # head and body apart: written together (writev), not joined
                parts = self.handler.fast_parts(request)  # type: ignore[attr-defined]
                if parts is not None:
                    out.append(parts[0])
                    if parts[1]:
                        out.append(parts[1])
            else:
                raw = self.handler.fast(request)
                parts = None if raw is None else (raw, b"")
                if raw is not None:
                    out.append(raw)
            if parts is not None:
                if request.keep_alive:
                    continue
                self._send(transport, out)
                transport.close()
                return size
            if out:
                self._send(transport, out)
                out = []
            if wire > lim.max_buffered_bytes:
                transport.pause_reading()
            self.busy = True
            self.loop.create_task(self._slow(request))
        transport = self.transport
        if out and transport is not None:
            self._send(transport, out)
        if handled and not self.busy and transport is not None:
            if self.queue or self._deferred or not transport.is_reading():
                self._run_queue()
            else:  # all answered: the connection is idle (_run_queue's end, inline)
                self._arm_at(self.loop.time() + lim.keepalive_timeout)
        return offset

    def _reset_message(self) -> None:
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._host = ""
        self._hosts = 0
        self._flagged = False
        self._expect = False
        self._header_count = 0
        self._in_body = False

    def on_message_begin(self) -> None:
        self._reset_message()
        self._header_bytes = 1
        self._started = self.loop.time()
        self._arm_at(self._started + min(self.limits.header_timeout,
                                         self.limits.request_timeout))

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.limits.max_url_bytes:
            self._reject(414)
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        self._header_count += 1
        if self._header_bytes > self.limits.max_header_bytes or (
                self._header_count > self.limits.max_header_count):
            self._reject(431)
        lower = name.lower()
        if lower == b"host":
            self._host = value.decode("latin-1")
            self._hosts += 1
        elif lower in self._flags:
            self._flagged = True
        elif lower == b"expect":
            self._expect = value.lower() == b"100-continue"
        elif lower == b"content-length" and value.isdigit() and (
                int(value) > self.limits.max_body_bytes):
            self._reject(413)
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def _count(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > self.limits.max_header_bytes:
            self._reject(431)

    def _reject(self, status: int) -> None:
        """Stop parsing; llhttp wraps the exception, ``data_received`` answers ``status``."""
        self._error_status = status
        raise _TooLarge(status)

    def on_headers_complete(self) -> None:
        if self._hosts > 1 or (self._hosts == 0 and self.parser.get_http_version() == "1.1"):
            self._reject(400)  # RFC 9112 §3.2: exactly one Host in HTTP/1.1
        if (self._expect and not self.busy and not self.queue
                and self.parser.get_http_version() == "1.1"):  # never a 1xx to HTTP/1.0
            # only when nothing else is being written; otherwise the client sends the body
            # after its own short wait (RFC 9110 §10.1.1)
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._in_body = True
        self._body_start, self._body_base = self.loop.time(), 0
        self._arm_body()

    def _arm_body(self) -> None:
        """The body's deadline: no pause longer than body_timeout, the minimum average rate
        after that, and the whole request within request_timeout."""
        lim = self.limits
        now = self.loop.time()
        deadline = min(now + lim.body_timeout, self._started + lim.request_timeout)
        if lim.body_min_rate > 0:
            earned = (self._body_bytes - self._body_base) / lim.body_min_rate
            deadline = min(deadline, self._body_start + lim.body_timeout + earned)
        self._arm_at(deadline)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self.limits.max_body_bytes:
            self._reject(413)
        self._body.append(body)
        self._arm_body()
        if (self.busy or self.queue) and self.transport is not None and (
                self._queued_bytes + self._body_bytes > self.limits.max_buffered_bytes):
            self.transport.pause_reading()  # behind other requests: wait until they are done

    def on_message_complete(self) -> None:
        p = self.parser
        wire = self._header_bytes + self._body_bytes
        self._header_bytes = 0
        method = p.get_method().decode("ascii", "replace")
        parsed = parse_target(method, self._url.decode("latin-1"),
                              self._host if self._hosts else None, self.scheme)
        if isinstance(parsed, BadTarget):
            self._reject(parsed.status)
        if parsed.scheme != self.scheme:  # absolute-form https:// over plain HTTP (or the
            # reverse): the connection's scheme is the request's, as nginx's $scheme, so the
            # key, X-Forwarded-Proto and redirects never claim TLS that was not there
            parsed = replace(parsed, scheme=self.scheme)
        request = Request(method, parsed.path_query, p.get_http_version(), self._headers,
                          self.client_ip, p.should_keep_alive(), b"".join(self._body),
                          parsed.authority, self._flagged, parsed.key, parsed.scheme,
                          wire_bytes=wire)
        self._reset_message()
        if not request.keep_alive:  # llhttp takes nothing after it: nor does the C parser
            self._parse = None
        self._requests += 1
        if self._requests >= self.limits.keepalive_requests:
            request.keep_alive = False
        self.queue.append(request)
        self._queued_bytes += wire
        if self.transport is not None and (
                len(self.queue) > 32 or self._queued_bytes > self.limits.max_buffered_bytes):
            self.transport.pause_reading()  # a client pipelining too far ahead waits
        if not self.busy:
            self._run_queue()

    # -- dispatch -----------------------------------------------------------------------------
    def _run_queue(self) -> None:
        while self.queue and not self.busy and self.transport is not None:
            request = self.queue.popleft()
            self._queued_bytes -= request.wire_bytes
            raw = self.handler.fast(request)
            if raw is not None:
                self.transport.write(raw)
                if not request.keep_alive:
                    self.transport.close()
                    return
                continue
            self.busy = True
            self.loop.create_task(self._slow(request))
            return
        if self._deferred and not self.busy and not self.queue and self.transport is not None:
            self._write_fail(self._deferred)
            return
        if not self.busy and self.transport is not None:
            if not self.transport.is_reading():
                self.transport.resume_reading()
                # a request we stopped reading is timed from now: the pause was ours
                now = self.loop.time()
                self._started = self._body_start = now
                self._body_base = self._body_bytes
                if self._in_body:
                    self._arm_body()
                elif self._header_bytes:
                    self._arm(self.limits.header_timeout)
            if not self._header_bytes:
                self._arm(self.limits.keepalive_timeout)

    async def _slow(self, request: Request) -> None:
        writer = self._writer = ResponseWriter(self, request)
        try:
            await self.handler.handle(request, writer)
            await writer.finish()
        except ConnectionError:
            writer.close = True
        except Exception:  # last-resort guard, logged: one bad request never hangs a client
            log.exception("%s %s failed", request.method, request.target)
            writer.close = True
        finally:
            self.busy = False
            self._writer = None
        if writer.close or not writer.started:
            if self.transport is not None:
                if not writer.started:
                    self._write_fail(500)
                self.transport.close()
            return
        self._run_queue()


class _TooLarge(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status

