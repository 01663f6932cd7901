"""The edge's own HTTP/1.1 client for origins: asyncio protocols around llhttp (httptools).

Rules (RFC 9112; what nginx's upstream module does):

* One request at a time per connection; idle connections are kept per origin (LIFO) for
  ``keepalive`` seconds and reused (edge/endpoint.py, which also connects, with TLS). A
  connection is reused only when the response ended cleanly by its own framing and both
  sides allow keep-alive; an idle connection that receives anything (data or EOF) is closed
  and forgotten.
* The request is sent as given: method, target byte for byte, header fields in order and
  spelling, Host as the caller sent it (the origin's host:port only when there is none). The
  body gets a Content-Length (0 for POST/PUT/PATCH without one); nothing else is added.
* The response is not rewritten: no decompression, no cookie handling, no redirects. Its
  status line and header fields may take ``max_header_bytes`` together (nginx's whole
  ``proxy_buffer_size`` is 4-8 KiB); more is a ProtocolError.
* Interim responses: ``100 Continue`` is dropped (the edge does not forward Expect);
  every other 1xx but 101 goes to ``on_informational(status, headers)`` and never becomes
  part of the final response; 101 (a switch nobody asked for) is a protocol error.
* A body longer than its Content-Length (RFC 9112 §6.3: the surplus is not part of the
  message): exactly Content-Length bytes are delivered, the connection is closed, never
  reused, and a warning names the origin. Data arriving on an idle connection is the same.
* A response to HEAD is complete after its header section, whatever Content-Length says;
  its connection is reused only when nothing followed that section in the same read.
* Errors: ``ConnectFailed`` (refused, unreachable, TLS handshake or certificate, connect
  timeout -- ``timed_out`` says which) and ``ClosedEarly`` (the connection ended before any
  byte of the response) are safe to retry; ``ReadTimeout`` (a TimeoutError: no byte for
  ``read_timeout`` seconds) and ``ProtocolError`` (malformed, oversized or cut-off
  responses) are not.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

import httptools

log = logging.getLogger("geoedge.edge.upstream")

__all__ = [
    "ClientError",
    "ClosedEarly",
    "ConnectFailed",
    "Exchange",
    "OriginConnection",
    "ProtocolError",
    "ReadTimeout",
    "request_head",
]

HIGH_WATER = 256 * 1024  # buffered body bytes above which reading from the origin pauses
InfoCallback = Callable[[int, list[tuple[str, str]]], None]
_DEFAULT_CL = frozenset({"POST", "PUT", "PATCH"})


class ClientError(Exception):
    pass


class ConnectFailed(ClientError):
    def __init__(self, message: str, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class ClosedEarly(ClientError):
    """The connection ended before the first byte of a response."""


class ProtocolError(ClientError):
    pass


class ReadTimeout(ClientError, TimeoutError):
    pass


class _Stop(Exception):
    """Raised inside a parser callback to stop parsing this connection's data."""


class Exchange:
    """One request's response: its final head (a future) and its body (buffered chunks)."""

    def __init__(self, conn: OriginConnection, head_only: bool,
                 on_informational: InfoCallback | None) -> None:
        self.conn: OriginConnection | None = conn
        self.head_only = head_only
        self.on_informational = on_informational
        loop = asyncio.get_running_loop()
        self.head: asyncio.Future[tuple[int, list[tuple[str, str]]]] = loop.create_future()
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.keep_alive = False
        self.close_delimited = False
        self.final = False  # the final response's headers are in
        self.done = False  # the whole final response is in
        self.received = False  # any byte of a response arrived
        self.error: ClientError | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self._waiter: asyncio.Future[None] | None = None

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def fail(self, error: ClientError) -> None:
        if self.done or self.error is not None:
            return
        self.error = error
        if not self.head.done():
            self.head.set_exception(error)
            self.head.exception()  # retrieved: a caller that gave up must not warn
        self._wake()

    def finish(self) -> None:
        self.done = True
        self._wake()

    def add(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.buffered += len(chunk)
        if self.buffered > HIGH_WATER and self.conn is not None:
            self.conn.pause()
        self._wake()

    async def next_chunk(self, timeout: float) -> bytes | None:
        """The next body chunk, or None at the end; raises the exchange's error."""
        while not self.chunks:
            if self.error is not None:
                raise self.error
            if self.done:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._waiter
            except TimeoutError:
                self.fail(ReadTimeout(f"no data for {timeout:g} s"))
                if self.conn is not None:
                    self.conn.close()
                raise self.error from None  # type: ignore[misc]
        chunk = self.chunks.popleft()
        self.buffered -= len(chunk)
        if self.buffered <= HIGH_WATER // 2 and self.conn is not None:
            self.conn.resume()
        return chunk


class OriginConnection(asyncio.Protocol):
    def __init__(self, origin: str, max_header_bytes: int,
                 on_idle: Callable[[OriginConnection], None]) -> None:
        self.origin = origin
        self.max_header_bytes = max_header_bytes
        self.on_idle = on_idle  # called when a response ended and the connection is reusable
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.uses = 0
        self.idle_handle: asyncio.TimerHandle | None = None
        self._exchange: Exchange | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._header_bytes = 0
        self._paused = False

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        ex = self._exchange
        if ex is None or self._parser is None:
            log.warning("origin %s sent %d bytes on an idle connection: closed", self.origin,
                        len(data))
            self.close()
            return
        ex.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Stop) and ex.head_only:  # the head is all a HEAD gets
                if not data.endswith(b"\r\n\r\n"):
                    ex.keep_alive = False  # something followed it: do not guess what
            elif isinstance(cause, _Stop):
                self._surplus()
                return
            elif isinstance(cause, ClientError):
                self._fail(cause)
                return
            else:
                self._fail(ProtocolError(f"bad response: {cause!r}"))
                return
        except httptools.HttpParserUpgrade:
            self._fail(ProtocolError("unrequested protocol switch (101 or Upgrade)"))
            return
        except httptools.HttpParserError as exc:
            if not ex.done:
                self._fail(ProtocolError(f"malformed response: {exc}"))
                return
            self._surplus()
            return
        if ex.done:
            self._release(ex)

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.idle_handle is not None:
            self.idle_handle.cancel()
        ex = self._exchange
        self._exchange = None
        if ex is None or ex.done:
            return
        if ex.final and ex.close_delimited:
            ex.finish()  # the body was delimited by the close (RFC 9112 §6.3 item 8)
        elif not ex.received:
            ex.fail(ClosedEarly(f"connection closed before the response ({exc or 'EOF'})"))
        elif not ex.final:
            ex.fail(ProtocolError("connection closed in the response headers"))
        else:
            ex.fail(ProtocolError("connection closed before the end of the body"))

    # -- llhttp callbacks ----------------------------------------------------------------------
    def on_message_begin(self) -> None:
        ex = self._exchange
        assert ex is not None
        if ex.done:
            raise _Stop  # a byte after the end of the final response: surplus
        self._header_bytes = 0
        ex.headers = []

    def on_status(self, status: bytes) -> None:
        self._count(len(status) + 16)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        ex = self._exchange
        assert ex is not None
        ex.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def _count(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > self.max_header_bytes:
            raise ProtocolError(f"response header section over {self.max_header_bytes} bytes")

    def on_headers_complete(self) -> None:
        ex, parser = self._exchange, self._parser
        assert ex is not None and parser is not None
        status = parser.get_status_code()
        if status < 200:
            if status != 100 and ex.on_informational is not None:
                ex.on_informational(status, ex.headers)
            return
        ex.status, ex.final = status, True
        ex.keep_alive = parser.should_keep_alive()
        names = {n.lower() for n, _ in ex.headers}
        ex.close_delimited = (not ex.head_only and status not in (204, 304)
                              and "content-length" not in names
                              and "transfer-encoding" not in names)
        if ex.close_delimited:
            ex.keep_alive = False
        ex.head.set_result((status, ex.headers))
        if ex.head_only:
            ex.finish()
            raise _Stop

    def on_body(self, body: bytes) -> None:
        ex = self._exchange
        assert ex is not None
        ex.add(body)

    def on_message_complete(self) -> None:
        ex = self._exchange
        assert ex is not None
        if ex.final:
            ex.finish()

    # -- driving -------------------------------------------------------------------------------
    def send(self, head: bytes, body: bytes | None, head_only: bool,
             on_informational: InfoCallback | None) -> Exchange:
        assert self.transport is not None and self._exchange is None
        if self.idle_handle is not None:
            self.idle_handle.cancel()
            self.idle_handle = None
        self.uses += 1
        ex = self._exchange = Exchange(self, head_only, on_informational)
        self._parser = httptools.HttpResponseParser(self)
        self.transport.write(head + body if body else head)
        return ex

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def abandon(self, ex: Exchange) -> None:
        """The caller stops reading ``ex`` early: an unread body closes the connection."""
        ex.conn = None
        if self._exchange is ex:
            self.close()

    def _fail(self, error: ClientError) -> None:
        ex = self._exchange
        if ex is not None:
            ex.fail(error)
        self.close()

    def _surplus(self) -> None:
        log.warning("origin %s sent more than the response's Content-Length: the surplus is "
                    "dropped and the connection closed", self.origin)
        ex = self._exchange
        if ex is not None:
            ex.keep_alive = False
            self._release(ex)

    def _release(self, ex: Exchange) -> None:
        """The final response is complete: detach it, then reuse or close the connection."""
        self._exchange = None
        self._parser = None
        ex.conn = None
        self.resume()
        if ex.keep_alive and not self.closed:
            self.on_idle(self)
        else:
            self.close()


def request_head(method: str, target: str, headers: list[tuple[str, str]], default_host: str,
                 body: bytes | None) -> bytes:
    """The request line and header section, as given (ValueError on CR/LF in a field)."""
    lines = [f"{method} {target} HTTP/1.1\r\n"]
    names = set()
    for name, value in headers:
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
            raise ValueError(f"CR or LF in header field {name!r}")
        names.add(name.lower())
        lines.append(f"{name}: {value}\r\n")
    if "host" not in names:
        lines.insert(1, f"Host: {default_host}\r\n")
    if "content-length" not in names and (body is not None or method in _DEFAULT_CL):
        lines.append(f"Content-Length: {len(body or b'')}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")
