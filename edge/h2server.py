"""The edge's client-facing HTTP/2 server: an asyncio protocol around the ``h2`` library,
or around libnghttp2 (edge/h2ng.py) when the C extension edge/_nghttp2.c is built.

``H2Protocol`` is ``edge.h2ng.NgH2Protocol`` when ``edge._nghttp2`` imports (setup.py builds
it when libnghttp2's headers are there), else ``H2LibProtocol`` below; both keep the rules
that follow, and the tests run on both.

It drives the same ``Handler`` as the HTTP/1.1 server (edge/httpserver.py): each stream
becomes a ``Request`` (the pseudo-headers validated and normalised by
``edge.policy.target`` exactly as for HTTP/1.1), offered first to ``handler.fast()`` (whose
pre-serialised HTTP/1.1 response is translated into HEADERS + DATA), else to
``handler.handle()`` with an ``H2Writer``: the cache path is the proxy's, whatever the
protocol. Used after ALPN selected ``h2`` on TLS, or on a plain socket for clients with
prior knowledge (h2c, RFC 9113 §3.3).

Rules (RFC 9113, and what nginx does):

- Streams are multiplexed; DATA respects the peer's flow-control windows (per stream and per
  connection) and its MAX_FRAME_SIZE; what a window does not allow yet waits in the stream's
  buffer, and ``H2Writer.write`` waits while a stream holds more than ``STREAM_BUFFER``.
  Writes also wait while the transport's buffer is full, and the connection stops reading
  then (a client that sends PINGs but reads nothing cannot grow our buffers).
- SETTINGS: MAX_CONCURRENT_STREAMS ``H2Limits.max_streams`` (a client opening more gets a
  connection error from h2); no server push; MAX_HEADER_LIST_SIZE ``max_header_bytes``.
  A request whose header list is larger than ``max_header_bytes`` (RFC 9113 §6.5.2: names,
  values and 32 bytes per field) or has more than ``max_header_count`` fields gets 431, a
  target longer than ``max_url_bytes`` 414, a body larger than ``max_body_bytes`` 413 (all
  on that stream only); a header block larger than ``H2Limits.hard_header_bytes`` is an HPACK
  bomb: GOAWAY ENHANCE_YOUR_CALM.
- Handlers running on one connection are bounded by ``max_streams`` too, including those of
  streams the client has already reset (their work goes on, e.g. a cache fill others wait
  for, but its output is dropped): a new stream beyond that is refused (RST_STREAM
  REFUSED_STREAM). Resets, refused streams, PING, SETTINGS, PRIORITY, WINDOW_UPDATE and empty
  frames are counted per time window (edge/policy/h2flood.py): over a limit, GOAWAY
  ENHANCE_YOUR_CALM and close (CVE-2023-44487 and the 2019 floods).
- A protocol error gets GOAWAY with h2's error code and the connection closes.
- Time: the connection must send its preface and first request within ``header_timeout``;
  with no stream open it is closed (GOAWAY NO_ERROR) after ``keepalive_timeout``; a request
  still arriving after ``request_timeout`` gets 408 on its stream.
- ``goaway()`` (shutdown): GOAWAY NO_ERROR with the last stream accepted; open streams finish,
  then the connection closes.
- Connections are admitted by the ``ConnectionLimiter`` like HTTP/1.1 ones (refused: GOAWAY
  ENHANCE_YOUR_CALM and close).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import h2.stream
from hyperframe.frame import GoAwayFrame

from edge.connlimit import ConnectionLimiter, Verdict
from edge.h2hpack import StatelessEncoder
from edge.h2writer import H2Writer, Stream, parse_http1
from edge.httpserver import Handler, Limits, Request, reason
from edge.policy.h2flood import FloodCounter, FloodLimits
from edge.policy.h2head import read_head
from edge.policy.target import BadTarget, parse_target

if TYPE_CHECKING:
    from edge.h2ng import NgH2Protocol

log = logging.getLogger("geoedge.edge.h2")

CALM = h2.errors.ErrorCodes.ENHANCE_YOUR_CALM


@dataclass(frozen=True, slots=True)
class H2Limits:
    max_streams: int = 100  # SETTINGS_MAX_CONCURRENT_STREAMS, and running handlers
    hard_header_bytes: int = 256 * 1024  # a larger header block ends the connection
    initial_window: int = 65535  # our receive window per stream (request bodies)
    floods: FloodLimits = field(default_factory=FloodLimits)


class H2LibProtocol(asyncio.Protocol):
    def __init__(self, handler: Handler, limits: Limits,
                 on_close: Callable[[H2LibProtocol], None] | None = None,
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
        self.closing = False
        self._counted = False
        self._paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self.streams: dict[int, Stream] = {}
        self.running = 0  # handler tasks not yet finished (reset streams included)
        self._flood = FloodCounter(self.h2_limits.floods)
        self._body_bytes = 0  # request body bytes buffered on the connection
        self._timer: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
        self._served = False  # a request arrived (the preface deadline is over)
        self._goaway_sent = False
        # fields are checked by edge.policy.h2head and built here (lower-case, without
        # connection-specific ones): h2's own checks, a third of a hit's CPU, are off
        config = h2.config.H2Configuration(client_side=False, header_encoding=None,
                                           validate_inbound_headers=False,
                                           validate_outbound_headers=False,
                                           normalize_outbound_headers=False)
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.encoder = StatelessEncoder()  # type: ignore[assignment]

    # -- connection ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.loop = asyncio.get_running_loop()
        peer = transport.get_extra_info("peername")
        if peer:
            self.client_ip = peer[0]
        s = h2.settings.SettingCodes
        self.conn.local_settings = h2.settings.Settings(client=False, initial_values={
            s.MAX_CONCURRENT_STREAMS: self.h2_limits.max_streams,
            s.MAX_HEADER_LIST_SIZE: self.limits.max_header_bytes,
            s.INITIAL_WINDOW_SIZE: self.h2_limits.initial_window,
            s.ENABLE_PUSH: 0,
        })
        self.conn.initiate_connection()
        self.conn.decoder.max_header_list_size = self.h2_limits.hard_header_bytes
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
        for stream in self.streams.values():
            stream.gone()
        self._wake_drain(ConnectionResetError("client went away"))
        self.transport = None
        if self.on_close:
            self.on_close(self)

    def pause_writing(self) -> None:
        self._paused = True
        if self.transport is not None:
            self.transport.pause_reading()  # no more frames (and their answers) until it drains

    def resume_writing(self) -> None:
        self._paused = False
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()
        self._wake_drain(None)

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

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _close_with(self, code: int, message: str | None = None) -> None:
        if message:
            log.info("h2 %s: GOAWAY %s (%s)", self.client_ip, code, message)
        if self.transport is None:
            return
        self.closing = True
        if not self._goaway_sent:
            self._goaway_sent = True
            self.conn.close_connection(code)
            self._flush()
        self.transport.close()

    def goaway(self) -> None:
        """Shutdown: no new streams; the open ones finish, then the connection closes."""
        if self.transport is None or self._goaway_sent:
            return
        self._goaway_sent = True
        # written by hand: h2's close_connection would also stop the open streams
        frame = GoAwayFrame(0, last_stream_id=self.conn.highest_inbound_stream_id,
                            error_code=h2.errors.ErrorCodes.NO_ERROR)
        self._flush()
        self.transport.write(frame.serialize())
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self._goaway_sent and not self.streams and self.transport is not None:
            self._flush()  # the last stream's frames go before the close
            self.closing = True
            self.transport.close()

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
                self._close_with(h2.errors.ErrorCodes.NO_ERROR)
                return
        for stream in list(self.streams.values()):
            if not stream.complete and now - stream.opened >= self.limits.request_timeout:
                self._reject(stream, 408)
        self._flush()
        self._arm()

    # -- frames -------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.DenialOfServiceError as exc:
            self._close_with(CALM, str(exc))
            return
        except h2.exceptions.ProtocolError as exc:
            self._close_with(getattr(exc, "error_code", h2.errors.ErrorCodes.PROTOCOL_ERROR),
                             str(exc))
            return
        now = self.loop.time()
        try:
            for event in events:
                flood = self._event(event, now)
                if flood is not None:
                    self._close_with(CALM, f"{flood} flood")
                    return
                if self.transport is None:
                    return
        except h2.exceptions.ProtocolError as exc:  # a state we did not expect: end cleanly
            log.warning("h2 %s: %s", self.client_ip, exc)
            self._close_with(h2.errors.ErrorCodes.INTERNAL_ERROR)
            return
        self._flush()

    def _event(self, event: Any, now: float) -> str | None:
        """Handle one h2 event; the name of a flood limit it broke, or None."""
        ev = h2.events
        note = self._flood.note
        if isinstance(event, ev.RequestReceived):
            return self._open(event.stream_id, event.headers, now)
        if isinstance(event, ev.DataReceived):
            self._body(event.stream_id, event.data, event.flow_controlled_length)
            if not event.data and not event.stream_ended:
                return note("empty", now)
        elif isinstance(event, ev.StreamEnded | ev.TrailersReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None and not stream.complete:
                self._dispatch(stream)
        elif isinstance(event, ev.StreamReset):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.gone()
                self._forget(stream)
            return note("resets", now)
        elif isinstance(event, ev.WindowUpdated):
            self._window(event.stream_id)
            return note("window_updates", now)
        elif isinstance(event, ev.RemoteSettingsChanged):
            self._window(0)
            return note("settings", now)
        elif isinstance(event, ev.SettingsAcknowledged):
            self.conn.decoder.max_header_list_size = self.h2_limits.hard_header_bytes
        elif isinstance(event, ev.PingReceived):
            return note("pings", now)
        elif isinstance(event, ev.PriorityUpdated):
            return note("priority", now)
        elif isinstance(event, ev.UnknownFrameReceived):
            return note("empty", now)
        elif isinstance(event, ev.ConnectionTerminated):
            self.closing = True
            if self.transport is not None:
                self.transport.close()
        return None

    # -- requests -----------------------------------------------------------------------------
    def _open(self, sid: int, headers: list[tuple[bytes, bytes]], now: float) -> str | None:
        stream = Stream(self, sid, now)
        if self._goaway_sent:
            stream.reset(h2.errors.ErrorCodes.REFUSED_STREAM)
            return None
        self.streams[sid] = stream
        self._served = True
        if self.running >= self.h2_limits.max_streams:  # handlers of reset streams still run
            stream.reset(h2.errors.ErrorCodes.REFUSED_STREAM)
            return self._flood.note("resets", now)
        lim = self.limits
        head = read_head(headers, self.handler.flag_headers, lim.max_header_bytes,
                         lim.max_header_count, lim.max_url_bytes, lim.max_body_bytes)
        if head.malformed:  # RFC 9113 §8.1.1: a stream error
            log.info("h2 %s stream %d: malformed request (%s)", self.client_ip, sid,
                     head.malformed)
            stream.reset(h2.errors.ErrorCodes.PROTOCOL_ERROR)
            return None
        stream.status = head.status
        host = head.authority if head.authority is not None else next(
            (v for n, v in head.fields if n == "host"), None)
        parsed = parse_target(head.method, head.path, host, self.scheme)
        if isinstance(parsed, BadTarget):
            stream.status = stream.status or parsed.status
        elif not stream.status:
            stream.request = Request(head.method, parsed.path_query, "2", head.fields,
                                     self.client_ip, True, b"", parsed.authority,
                                     head.flagged, parsed.key, parsed.scheme)
        if stream.status:
            self._reject(stream, stream.status)
        return None

    def _body(self, sid: int, data: bytes, flow: int) -> None:
        if flow:
            self.conn.acknowledge_received_data(flow, sid)
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

    def _reject(self, stream: Stream, status: int) -> None:
        """An error answered by the server layer on this stream only."""
        stream.complete = True
        self._release_body(stream)
        state = self.conn.streams.get(stream.sid)
        if state is not None and state.state_machine.state is h2.stream.StreamState.OPEN:
            # the client is still sending: the rest of the request is not wanted (§8.1)
            stream.after_end = h2.errors.ErrorCodes.NO_ERROR
        body = f"{status} {reason(status)}\n".encode()
        stream.respond(status, [(b"content-type", b"text/plain"),
                                (b"content-length", b"%d" % len(body))], body, True)

    def _release_body(self, stream: Stream) -> None:
        self._body_bytes -= stream.body_bytes
        stream.body_bytes = 0

    def _dispatch(self, stream: Stream) -> None:
        stream.complete = True
        request = stream.request
        if request is None:
            return
        request.body = b"".join(stream.body)
        stream.body.clear()
        self._release_body(stream)
        raw = self.handler.fast(request)
        if raw is not None:
            status, headers, body = parse_http1(raw)
            stream.respond(status, headers, body, True)
            return
        self.running += 1
        task = self.loop.create_task(self._slow(stream, request))
        stream.task = task

    async def _slow(self, stream: Stream, request: Request) -> None:
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
                stream.reset(h2.errors.ErrorCodes.INTERNAL_ERROR)
        finally:
            self.running -= 1
        if not writer.started and not stream.closed:
            stream.respond(500, [(b"content-type", b"text/plain")], b"500\n", True)
        self._flush()
        self._maybe_done()

    # -- used by streams -------------------------------------------------------------------------
    def _window(self, sid: int) -> None:
        targets = list(self.streams.values()) if sid == 0 else [
            s for s in (self.streams.get(sid),) if s is not None]
        for stream in targets:
            stream.pump()

    def _forget(self, stream: Stream) -> None:
        self.streams.pop(stream.sid, None)
        self._release_body(stream)
        if not self.streams:
            self._idle_since = self.loop.time()
        self._maybe_done()


H2Protocol: type[H2LibProtocol] | type[NgH2Protocol]
try:
    from edge import _nghttp2  # noqa: F401  (built when libnghttp2's headers were found)
except ImportError:
    NGHTTP2 = False
    H2Protocol = H2LibProtocol
else:
    from edge.h2ng import NgH2Protocol

    NGHTTP2 = True
    H2Protocol = NgH2Protocol

__all__ = ["NGHTTP2", "H2LibProtocol", "H2Limits", "H2Protocol"]
