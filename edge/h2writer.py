"""One HTTP/2 stream's response side, and the ResponseWriter the proxy writes it through.

- ``Stream``: what one client stream asked (its Request, body) and what waits to be sent on it.
  DATA goes out as the peer's windows and MAX_FRAME_SIZE allow (``pump``, called again on
  every WINDOW_UPDATE and SETTINGS); END_STREAM follows the last byte. A stream the client
  reset, or whose connection went away, drops what it holds and wakes a waiting writer with
  ``ConnectionResetError`` (the proxy's delivery path releases what it holds on that).
- ``H2Writer``: the HTTP/1.1 ``ResponseWriter`` interface (send, start, write, finish,
  send_raw, abort) on a stream, so the proxy's cache path is the same for both protocols.
  ``send_raw`` takes the pre-serialised HTTP/1.1 responses of the cache path (hits, ranges)
  and sends their status, fields and body. Connection-specific fields (Connection,
  Keep-Alive, Transfer-Encoding, Upgrade, Proxy-Connection) are never sent (RFC 9113
  §8.2.2); field names go lower-case. ``abort`` resets the stream, not the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING

import h2.errors
import h2.exceptions

from edge.httpserver import Request, ResponseWriter

if TYPE_CHECKING:
    from edge.h2server import H2LibProtocol

__all__ = ["STREAM_BUFFER", "Fields", "H2Writer", "Stream", "parse_http1"]

STREAM_BUFFER = 256 * 1024  # bytes a stream may hold unsent before ``write`` waits
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection",
                        b"transfer-encoding", b"upgrade"})
Fields = list[tuple[bytes, bytes]]


def parse_http1(raw: bytes) -> tuple[int, Fields, bytes]:
    """Status, fields (lower-case names, connection-specific ones dropped) and body of a
    pre-serialised HTTP/1.1 response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0][9:12])
    fields: Fields = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name and name not in HOP_BY_HOP:
            fields.append((name, value.strip()))
    return status, fields, body


class Stream:
    def __init__(self, proto: H2LibProtocol, sid: int, opened: float) -> None:
        self.proto = proto
        self.sid = sid
        self.opened = opened
        self.request: Request | None = None
        self.status = 0  # an error status the server layer answers instead of the handler
        self.body: list[bytes] = []
        self.body_bytes = 0
        self.complete = False  # the request has arrived whole (or was answered with an error)
        self.closed = False  # reset, gone, or the response has been sent
        self.after_end: int | None = None  # RST_STREAM code once the response has ended
        self.task: asyncio.Task[None] | None = None
        self._out: deque[memoryview] = deque()
        self.out_bytes = 0
        self._end = False  # END_STREAM after what ``_out`` holds
        self._waiter: asyncio.Future[None] | None = None

    # -- what the writer calls ------------------------------------------------------------------
    def headers(self, status: int, fields: Fields, end: bool) -> None:
        if self.closed:
            return
        block = [(b":status", b"%d" % status), *((n, v) for n, v in fields
                                                if n not in HOP_BY_HOP)]
        try:
            self.proto.conn.send_headers(self.sid, block, end_stream=end)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self.gone()
            return
        if end:
            self._done()

    def data(self, chunk: bytes, end: bool = False) -> None:
        if self.closed:
            return
        if chunk:
            self._out.append(memoryview(chunk))
            self.out_bytes += len(chunk)
        self._end = self._end or end
        self.pump()

    def respond(self, status: int, fields: Fields, body: bytes, end: bool) -> None:
        self.headers(status, fields, end and not body)
        if body:
            self.data(body, end)

    def reset(self, code: int) -> None:
        if not self.closed:
            with contextlib.suppress(h2.exceptions.ProtocolError):  # already closed
                self.proto.conn.reset_stream(self.sid, code)
        self.gone()

    async def room(self) -> None:
        """Wait while this stream holds more than STREAM_BUFFER unsent bytes."""
        while self.out_bytes > STREAM_BUFFER and not self.closed:
            self._waiter = self.proto.loop.create_future()
            await self._waiter
        if self.closed and self._out:
            raise ConnectionResetError("stream reset")

    # -- sending --------------------------------------------------------------------------------
    def pump(self) -> None:
        """Send what the flow-control windows allow now."""
        conn = self.proto.conn
        try:
            while self._out:
                window = conn.local_flow_control_window(self.sid)
                if window <= 0:
                    break
                first = self._out[0]
                n = min(window, conn.max_outbound_frame_size, len(first))
                last = n == len(first) and len(self._out) == 1 and self._end
                conn.send_data(self.sid, bytes(first[:n]), end_stream=last)
                self.out_bytes -= n
                if n == len(first):
                    self._out.popleft()
                else:
                    self._out[0] = first[n:]
                if last:
                    self._done()
                    return
            if self._end and not self._out:
                conn.end_stream(self.sid)
                self._done()
                return
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self.gone()
            return
        self._wake()

    def _done(self) -> None:
        """The response has been sent whole."""
        if self.after_end is not None:
            with contextlib.suppress(h2.exceptions.ProtocolError):  # already closed
                self.proto.conn.reset_stream(self.sid, self.after_end)
        self.closed = True
        self._wake()
        self.proto._forget(self)

    def gone(self) -> None:
        """Reset by the client, or the connection closed: drop what waits."""
        if self.closed and not self._out:
            self._wake()
            return
        self.closed = True
        self._out.clear()
        self.out_bytes = 0
        self._wake(ConnectionResetError("stream reset"))
        self.proto._forget(self)

    def _wake(self, exc: Exception | None = None) -> None:
        w = self._waiter
        if w is not None and not w.done() and (exc is not None or self.closed
                                               or self.out_bytes <= STREAM_BUFFER):
            self._waiter = None
            if exc is not None:
                w.set_exception(exc)
            else:
                w.set_result(None)


class H2Writer(ResponseWriter):
    """The proxy's ResponseWriter on one HTTP/2 stream."""

    def __init__(self, stream: Stream, request: Request) -> None:
        self.stream = stream
        self.request = request
        self.close = False  # a stream never asks to close the connection
        self.started = False
        self.status = 0
        self._finished = False
        self._no_body = False

    def _flush(self) -> None:
        self.stream.proto._flush()

    async def start(self, status: int, headers: list[tuple[str, str]],
                    content_length: int | None) -> None:
        assert not self.started
        self.started, self.status = True, status
        no_body = self.request.method == "HEAD" or status in (204, 304) or status < 200
        fields = [(n.lower().encode("latin-1"), v.strip().encode("latin-1"))
                  for n, v in headers]
        if content_length is not None and status not in (204, 304):
            fields.append((b"content-length", b"%d" % content_length))
        self._no_body = no_body
        self.stream.headers(status, fields, no_body)
        if no_body:
            self._finished = True
        self._flush()

    async def write(self, chunk: bytes) -> None:
        if not chunk or self._no_body:
            return
        if self.stream.closed:
            raise ConnectionResetError("stream reset")
        self.stream.data(chunk)
        self._flush()
        await self.stream.room()
        await self.stream.proto.drain()

    async def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        self.stream.data(b"", end=True)
        self._flush()

    def send_raw(self, data: bytes) -> None:
        assert not self.started
        self.started = self._finished = True
        status, fields, body = parse_http1(data)
        self.status = self.status or status
        self.stream.respond(status, fields, body, True)
        self._flush()

    def abort(self) -> None:
        self._finished = True
        self.stream.reset(h2.errors.ErrorCodes.INTERNAL_ERROR)
        self._flush()
