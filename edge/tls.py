"""TLS termination: certificates chosen by SNI, ALPN, and the HTTPS listener's accept path.

Rules:

- Protocols TLS 1.2 and 1.3 only; TLS 1.2 ciphers are Mozilla's "intermediate" list (ECDHE
  with AES-GCM or ChaCha20-Poly1305; the DHE ones are left out: no DH parameters), TLS 1.3
  uses OpenSSL's suites. The client's cipher order is honoured (Mozilla's advice when every
  offered cipher is strong).
- Certificates: one pair (PEM chain, key; RSA or ECDSA) per site, chosen by the SNI name with
  the sites' host rules (edge.policy.site); no SNI, or a name no site has: ``[edge] tls_cert``,
  else the first site's pair. A pair that cannot be read, or whose key does not match the
  certificate, is a ``CertError`` naming the file; on a reload the old contexts stay.
- ALPN: ``h2`` (only when edge/h2server.py is present) and ``http/1.1``; the connection is
  handed to ``H2Protocol`` when the client chose h2, else to ``HttpProtocol`` (scheme https).
- Session tickets: OpenSSL's own (RFC 5077 / TLS 1.3 PSK tickets). Python cannot set ticket
  keys, so they are rotated by building fresh contexts every ``tls_ticket_rotate`` seconds
  (each context draws new random keys): tickets older than that fall back to a full
  handshake, and ticket keys never leave the process or reach the disk.
- Accept: the listener accepts sockets itself and gives each to the loop's TLS
  (``loop.connect_accepted_socket``) with the contexts current at that moment, so a reload
  or a rotation applies to the next connection and never touches established ones. The
  handshake must finish within ``client_header_timeout``. At most ``max_connections``
  handshakes run at once (more are closed at once); a garbage or stalled handshake is closed
  and holds no client slot (the limiter admits a connection once its handshake is done).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from edge.policy.site import SiteTable

log = logging.getLogger("geoedge.edge.tls")

INTERMEDIATE = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")


def h2_protocol() -> type | None:
    """edge.h2server.H2Protocol when that module exists (it is optional)."""
    try:
        from edge.h2server import H2Protocol  # type: ignore[import-not-found]
    except ImportError:
        return None
    return H2Protocol


class CertError(ValueError):
    """A certificate/key pair that cannot be used; the message names the file."""


class TlsListenError(Exception):
    """The HTTPS listener's address cannot be bound; the message names it and why."""


def server_context(alpn: Iterable[str], tickets: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(INTERMEDIATE)
    ctx.set_alpn_protocols(list(alpn))
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_SINGLE_ECDH_USE
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    if not tickets:
        ctx.options |= ssl.OP_NO_TICKET
        ctx.num_tickets = 0
    return ctx


def load_pair(cert: Path, key: Path, alpn: Iterable[str], tickets: bool) -> ssl.SSLContext:
    """A server context holding one certificate chain and its key, or a CertError."""
    return load_pairs(((cert, key),), alpn, tickets)


def load_pairs(pairs: Iterable[tuple[Path, Path]], alpn: Iterable[str],
               tickets: bool) -> ssl.SSLContext:
    """A server context with these chains and keys (an RSA and an ECDSA one: OpenSSL picks
    by what the client supports), or a CertError naming the file."""
    ctx = server_context(alpn, tickets)
    for cert, key in pairs:
        for path in (cert, key):
            try:
                with open(path, "rb") as f:
                    f.read(1)
            except OSError as exc:
                raise CertError(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            ctx.load_cert_chain(cert, key)
        except ssl.SSLError as exc:
            text = str(exc)
            if "KEY_VALUES_MISMATCH" in text or "key values mismatch" in text:
                raise CertError(f"the key {key} does not match the certificate {cert}") from None
            raise CertError(f"{cert} / {key}: not a PEM certificate chain and private key "
                            f"({exc.reason or text})") from None
    return ctx


@dataclass(frozen=True, slots=True)
class CertSpec:
    """What to load: the default pairs and, per host pattern list, its pairs (one, or an RSA
    and an ECDSA one)."""

    default: tuple[tuple[Path, Path], ...]
    sites: tuple[tuple[tuple[str, ...], tuple[tuple[Path, Path], ...]], ...] = ()

    @property
    def files(self) -> tuple[Path, ...]:
        pairs = (*self.default, *(p for _, ps in self.sites for p in ps))
        return tuple(f for pair in pairs for f in pair)


class Contexts:
    """The SSL contexts for one configuration: ``listener`` picks the others by SNI."""

    def __init__(self, spec: CertSpec, alpn: tuple[str, ...], tickets: bool) -> None:
        self.spec = spec
        loaded: dict[tuple[tuple[Path, Path], ...], ssl.SSLContext] = {}

        def get(pairs: tuple[tuple[Path, Path], ...]) -> ssl.SSLContext:
            if pairs not in loaded:
                loaded[pairs] = load_pairs(pairs, alpn, tickets)
            return loaded[pairs]

        self.default = get(spec.default)
        self.table: SiteTable[ssl.SSLContext] = SiteTable.build(
            ((hosts, get(pair)) for hosts, pair in spec.sites), default=self.default)
        self.listener = self.default
        self.default.sni_callback = self._sni

    def _sni(self, obj: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        if name:
            chosen = self.table.select(name)
            if chosen is not None and chosen is not ctx:
                obj.context = chosen


class TlsAcceptor:
    """The HTTPS listener: accepts sockets itself and hands each to the loop's TLS
    (``connect_accepted_socket``) with the contexts current at that moment."""

    def __init__(self, contexts: Contexts, make: Callable[[str | None], asyncio.Protocol],
                 handshake_timeout: float, max_handshakes: int) -> None:
        self.contexts = contexts
        self.make = make  # ALPN protocol name (or None) -> the HTTP protocol to hand over to
        self.handshake_timeout = handshake_timeout
        self.max_handshakes = max_handshakes
        self.handshaking = 0
        self.failed = 0  # handshakes that failed or timed out
        self.refused = 0  # connections closed at once: max_handshakes were under way
        self.tasks: set[asyncio.Task[None]] = set()
        self.sockets: list[socket.socket] = []
        self._accepting: asyncio.Task[None] | None = None

    async def listen(self, host: str, port: int, backlog: int = 1024,
                     reuse_port: bool = False) -> None:
        try:
            sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host
                                        else socket.AF_INET, backlog=backlog,
                                        reuse_port=reuse_port)
        except OSError as exc:
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            reason = f"[Errno {exc.errno}] {os.strerror(exc.errno)}" if exc.errno else str(exc)
            raise TlsListenError(f"cannot listen for HTTPS on {where}: {reason}") from None
        sock.setblocking(False)
        self.sockets = [sock]
        self._accepting = asyncio.get_running_loop().create_task(self._accept(sock))

    def close(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
        for sock in self.sockets:
            sock.close()

    async def wait_closed(self) -> None:
        if self._accepting is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        for task in list(self.tasks):
            task.cancel()

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError as exc:  # EMFILE and the like: back off a little, keep serving
                log.warning("HTTPS accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            self._start(conn)
            for _ in range(63):  # then what else is queued, without a loop round each
                try:
                    conn, _ = listener.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    log.warning("HTTPS accept failed: %s", exc)
                    break
                conn.setblocking(False)
                self._start(conn)

    def _start(self, conn: socket.socket) -> None:
        if len(self.tasks) >= self.max_handshakes:  # that many under way: refused at once
            self.refused += 1
            conn.close()
            return
        task = asyncio.get_running_loop().create_task(self._handshake(conn))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _handshake(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self.handshaking += 1
        try:
            await loop.connect_accepted_socket(
                lambda: _Dispatch(self.make), conn, ssl=self.contexts.listener,
                ssl_handshake_timeout=self.handshake_timeout)
        except (OSError, ssl.SSLError, TimeoutError, EOFError) as exc:
            self.failed += 1
            log.debug("TLS handshake failed: %r", exc)
            conn.close()  # the loop closed it already (a no-op then)
        finally:
            self.handshaking -= 1


class _Dispatch(asyncio.Protocol):
    """Called once the handshake is done: hands the connection to the HTTP protocol ALPN
    chose, before any application data is read."""

    def __init__(self, make: Callable[[str | None], asyncio.Protocol]) -> None:
        self.make = make

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        obj = transport.get_extra_info("ssl_object")
        proto = self.make(obj.selected_alpn_protocol() if obj is not None else None)
        transport.set_protocol(proto)
        proto.connection_made(transport)

    def data_received(self, data: bytes) -> None:  # not called: set_protocol came first
        pass
