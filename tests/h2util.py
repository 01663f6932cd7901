"""HTTP/2 test helpers: TLS listeners (a trustme CA) in front of a test edge's app, for both
protocols, an h2c listener, httpx clients, and a raw h2 client for bad-input tests.

``await tls_edge(env)`` starts, for the app of an ``edge_env`` edge, an HTTPS listener with
ALPN ``h2`` (H2Protocol), one with ALPN ``http/1.1`` (HttpProtocol, scheme https) and a plain
h2c listener (prior knowledge), all on 127.0.0.1 port 0. ``impl`` picks the HTTP/2 layer:
"h2lib" (edge.h2server.H2LibProtocol, the ``h2`` library) or "nghttp2" (edge.h2ng, the C
extension); tests run on both (``IMPLS``, ``h2_class``). Without the extension the nghttp2
cases are skipped, except under CI (``CI`` set), where they fail: CI must build it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import httpx
import pytest
import trustme
from hyperframe.frame import DataFrame, Frame, HeadersFrame

from edge.h2server import NGHTTP2, H2LibProtocol, H2Limits, H2Protocol
from edge.httpserver import HttpProtocol
from edge.main import limits_of

WAIT = 5.0
IMPLS = ["h2lib", "nghttp2"]


def h2_class(impl: str) -> type[H2Protocol]:
    """The HTTP/2 protocol class of ``impl`` (skipped, or failed under CI, when missing)."""
    if impl == "h2lib":
        return H2LibProtocol
    if not NGHTTP2:
        if os.environ.get("CI"):
            pytest.fail("CI must build the C extension edge._nghttp2 (libnghttp2-dev, see "
                        ".ci/run): the nghttp2 HTTP/2 layer went untested")
        pytest.skip("edge._nghttp2 not built (no libnghttp2 headers)")
    from edge.h2ng import NgH2Protocol

    return NgH2Protocol
_CA = trustme.CA()


@dataclass
class TlsEdge:
    env: Any  # the EdgeEnv
    ca: trustme.CA
    h2_port: int
    h1_port: int
    h2c_port: int
    servers: list[asyncio.Server]
    h2_conns: set[H2Protocol] = field(default_factory=set)
    ca_file: str = ""

    def url(self, proto: str, path: str) -> str:
        port = self.h2_port if proto == "h2" else self.h1_port
        return f"https://localhost:{port}{path}"

    def client(self, proto: str) -> httpx.AsyncClient:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return httpx.AsyncClient(http2=proto == "h2", http1=proto != "h2", verify=ctx,
                                 timeout=WAIT)

    def client_context(self, alpn: str = "h2") -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        ctx.set_alpn_protocols([alpn])
        return ctx

    async def close(self) -> None:
        for s in self.servers:
            s.close()
        for proto in list(self.h2_conns):
            if proto.transport is not None:
                proto.transport.close()
        for s in self.servers:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(s.wait_closed(), WAIT)


async def tls_edge(env: Any, tmp_path: Any, h2_limits: H2Limits | None = None,
                   impl: str = "h2lib") -> TlsEdge:
    cls = h2_class(impl)
    cert = _CA.issue_cert("localhost", "127.0.0.1")
    loop = asyncio.get_running_loop()
    app = env.app
    limits = limits_of(app.settings)
    conns: set[H2Protocol] = set()

    def server_ctx(alpn: str) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        ctx.set_alpn_protocols([alpn])
        return ctx

    def h2_factory(scheme: str) -> Callable[[], H2Protocol]:
        def make() -> H2Protocol:
            proto = cls(app, limits, on_close=conns.discard, h2_limits=h2_limits)
            proto.scheme = scheme
            conns.add(proto)
            return proto
        return make

    def h1_factory() -> HttpProtocol:
        proto = HttpProtocol(app, limits)
        proto.scheme = "https"
        return proto

    s2 = await loop.create_server(h2_factory("https"), "127.0.0.1", 0, ssl=server_ctx("h2"))
    s1 = await loop.create_server(h1_factory, "127.0.0.1", 0, ssl=server_ctx("http/1.1"))
    sc = await loop.create_server(h2_factory("http"), "127.0.0.1", 0)
    ca_file = tmp_path / "ca.pem"
    _CA.cert_pem.write_to_path(str(ca_file))
    return TlsEdge(env, _CA, s2.sockets[0].getsockname()[1], s1.sockets[0].getsockname()[1],
                   sc.sockets[0].getsockname()[1], [s2, s1, sc], conns, str(ca_file))


class RawH2:
    """A bare h2 client over TLS (or plain, ``ctx=None``) for frames no polite client sends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False,
            normalize_outbound_headers=False, validate_inbound_headers=False))
        self.events: list[Any] = []
        self.eof = False
        self._after: bytes = b""  # frames after a GOAWAY, parsed here (h2 stops there)

    @classmethod
    async def open(cls, port: int, ctx: ssl.SSLContext | None) -> RawH2:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="localhost" if ctx else None)
        raw = cls(reader, writer)
        raw.conn.initiate_connection()
        raw.flush()
        return raw

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.writer.write(data)

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def until(self, done: Callable[[list[Any]], bool], timeout: float = WAIT) -> None:
        """Read and feed frames until ``done(events)`` or the server closes (bounded)."""
        async with asyncio.timeout(timeout):
            while not done(self.events) and not self.eof:
                try:
                    data = await self.reader.read(65536)
                except (ConnectionError, ssl.SSLError):
                    data = b""
                if not data:
                    self.eof = True
                    break
                if self.terminated() is not None:
                    self._feed_after(data)
                    continue
                with contextlib.suppress(h2.exceptions.ProtocolError):  # bad frames: read on
                    self.events += self.conn.receive_data(data)
                with contextlib.suppress(ConnectionError, RuntimeError):
                    self.flush()
                    await self.writer.drain()

    def _feed_after(self, data: bytes) -> None:
        """What a real client does after a graceful GOAWAY: read the streams it covers."""
        self._after += data
        while len(self._after) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self._after[:9]))
            if len(self._after) < 9 + length:
                return
            frame.parse_body(memoryview(self._after[9:9 + length]))
            self._after = self._after[9 + length:]
            if isinstance(frame, HeadersFrame):
                headers = self.conn.decoder.decode(frame.data, raw=True)
                self.events.append(_Event(h2.events.ResponseReceived, frame.stream_id,
                                          headers=headers))
            elif isinstance(frame, DataFrame):
                self.events.append(_Event(h2.events.DataReceived, frame.stream_id,
                                          data=frame.data))
            if "END_STREAM" in frame.flags:
                self.events.append(_Event(h2.events.StreamEnded, frame.stream_id))

    def terminated(self) -> h2.events.ConnectionTerminated | None:
        return next((e for e in self.events if isinstance(e, h2.events.ConnectionTerminated)),
                    None)

    def response(self, sid: int) -> tuple[int | None, bytes, bool]:
        """Status, body and whether the stream ended, from the events so far."""
        status, body, ended = None, b"", False
        for e in self.events:
            if getattr(e, "stream_id", None) != sid:
                continue
            kind = e.kind if isinstance(e, _Event) else type(e)
            if kind is h2.events.ResponseReceived:
                status = int(dict(e.headers)[b":status"])
            elif kind is h2.events.DataReceived:
                body += e.data
                if not isinstance(e, _Event):
                    with contextlib.suppress(h2.exceptions.ProtocolError):
                        self.conn.acknowledge_received_data(e.flow_controlled_length, sid)
            elif kind in (h2.events.StreamEnded, h2.events.StreamReset):
                ended = True
        return status, body, ended

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError, asyncio.TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), 1)


@dataclass
class _Event:
    """A frame read after GOAWAY, shaped like the h2 event it would have been."""

    kind: type
    stream_id: int
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    data: bytes = b""


def get_headers(path: str, extra: list[tuple[bytes, bytes]] | None = None,
                authority: bytes = b"localhost") -> list[tuple[bytes, bytes]]:
    return [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", authority),
            (b":path", path.encode()), *(extra or [])]
