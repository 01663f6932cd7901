"""DNS transports: UDP and TCP listeners that hand bytes to the current :class:`Engine`.

- UDP: one thread per socket doing blocking receives and sends (no socket timeout: that
  would add a poll() per packet; ``stop()`` wakes the thread with ``shutdown(SHUT_RD)``, which
  also works with SO_REUSEPORT, where a datagram to our own port may reach another worker).
  The answer path is plain CPU work on cached bytes; a thread avoids the event loop's
  per-datagram overhead, and the GIL is released while the thread waits for packets.
- UDP fast path (``udp_fast_path``, on by default): when the C extension ``geodns._fastudp`` is
  built, the thread runs its loop instead: batches of datagrams per system call
  (recvmmsg/sendmmsg), queries found in the engine's ``wire_udp`` cache answered in C, every
  other datagram handed to the same ``_answer`` as the pure-Python loop, so both loops send the
  same bytes. Uncached usual queries (a new client subnet, a random name) are answered in C
  from the engine's region map and answer templates (``Engine.fast_state``, geodns/_coldpath.h)
  when the template exists; the first query of each name/type/order goes through Python, which
  stores the template. Without the extension (no C compiler at install time) the Python loop
  is used.
- TCP (RFC 7766): two-byte length framing, several queries per connection, answered in order
  as they arrive (pipelining), at most ``max_tcp_clients`` connections at once (further ones
  are closed at once). Two timeouts (``dns.tcp_idle_timeout``, ``dns.tcp_query_timeout``): a
  connection is closed after ``idle_timeout`` seconds without the first byte of a query, or
  ``query_timeout`` seconds after a query's first byte without the rest of it; an answer the
  client does not read within ``idle_timeout`` also closes it. The idle timeout is what the
  EDNS TCP keepalive option announces (RFC 7828).
- Response Rate Limiting (``[dns.rrl]``, geodns/rrl.py; read at start-up): every UDP answer,
  in either loop, goes through the server's limiter before it is sent; the C loop has its own
  (geodns/_rrl.h, same rules). ``stats()`` sums both: ``rrl_dropped`` and ``rrl_slipped``.
- A packet that makes the engine fail is logged and dropped; the listener keeps serving.
- ``engine`` is read once per query, so a reload that assigns a new engine takes effect for the
  next packet without locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable

from geodns.engine import Engine
from geodns.rrl import DROP, SLIP, RateLimiter, parse_exempt, truncated

log = logging.getLogger("geoedge.dns")
FAST_RETRY = 0.5  # seconds before the C loop is entered again after an internal error
_LEN = struct.Struct("!H")


def fast_udp_serve() -> Callable[..., None] | None:
    """The C loop's ``serve`` (see geodns/_fastudp.c), or None when the extension is not built."""
    try:
        from geodns import _fastudp
    except ImportError:
        return None
    return _fastudp.serve


def obs_note() -> Callable[..., None] | None:
    """The C counters' ``obs_note`` (geodns/_obs.h), or None when the extension is not built."""
    try:
        from geodns import _fastudp
    except ImportError:
        return None
    return _fastudp.obs_note


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bind(host: str, port: int, kind: socket.SocketKind, reuse_port: bool) -> socket.socket:
    sock = socket.socket(_family(host), kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_DGRAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def bind_pair(host: str, port: int, reuse_port: bool) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket on the same address and port (port 0: a free one for both)."""
    for _ in range(20):
        udp = _bind(host, port, socket.SOCK_DGRAM, reuse_port)
        try:
            tcp = _bind(host, udp.getsockname()[1], socket.SOCK_STREAM, reuse_port)
        except OSError:
            udp.close()
            if port:
                raise
            continue
        return udp, tcp
    raise OSError(f"no free port for UDP and TCP on {host}")


class DnsServer:
    def __init__(self, engine: Engine, listen: list[tuple[str, int]], idle_timeout: float = 10.0,
                 reuse_port: bool = False, max_tcp_clients: int = 1000,
                 udp_fast_path: bool = True, query_timeout: float | None = None,
                 obs: object = None) -> None:
        self.engine = engine
        self.obs = obs  # geodns/_obs.h counters and query log (geodns/obsrun.py), or None
        self._note = obs_note() if obs is not None else None
        self.listen = listen
        self.idle_timeout = idle_timeout
        self.query_timeout = idle_timeout if query_timeout is None else query_timeout
        self.reuse_port = reuse_port
        self.max_tcp_clients = max_tcp_clients
        self.udp_fast_path = udp_fast_path
        self.udp_loop = ""  # after start(): "c" or "python", the loop serving UDP
        self.addresses: list[tuple[str, int]] = []
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._udp: list[socket.socket] = []
        self._tcp_servers: list[asyncio.base_events.Server] = []
        self._tcp_clients: set[asyncio.Task[None]] = set()
        self.rrl: RateLimiter | None = None  # the Python loop's limiter ([dns.rrl] enabled)
        self.c_rrl: object | None = None  # the C loop's (geodns._fastudp.Rrl)

    def stats(self) -> dict[str, int]:
        """Counters of this server: rate-limited UDP answers dropped and sent truncated, summed
        over the Python and the C loop."""
        dropped = slipped = 0
        for limiter in (self.rrl, self.c_rrl):
            if limiter is not None:
                dropped += limiter.dropped  # type: ignore[attr-defined]
                slipped += limiter.slipped  # type: ignore[attr-defined]
        return {"rrl_dropped": dropped, "rrl_slipped": slipped}

    def _start_rrl(self, serve: Callable[..., None] | None) -> None:
        settings = self.engine.topology.dns.rrl
        if not settings.enabled:
            return
        self.rrl = RateLimiter(settings)
        if serve is not None:
            from geodns import _fastudp
            self.c_rrl = _fastudp.Rrl(settings.responses_per_second, settings.window,
                                      settings.slip, settings.ipv4_prefix, settings.ipv6_prefix,
                                      parse_exempt(settings.exempt), settings.table_size)

    async def start(self) -> list[tuple[str, int]]:
        serve = fast_udp_serve() if self.udp_fast_path else None
        self._start_rrl(serve)
        self.udp_loop = "python" if serve is None else "c"
        if self.udp_fast_path and serve is None:
            log.info("udp_fast_path: the C extension geodns._fastudp is not built; "
                     "serving UDP with the Python loop")
        for host, port in self.listen:
            udp, tcp = bind_pair(host, port, self.reuse_port)
            self._udp.append(udp)
            tcp.listen(512)
            tcp.setblocking(False)
            server = await asyncio.start_server(self._tcp_client, sock=tcp)
            self._tcp_servers.append(server)
            self.addresses.append((host, udp.getsockname()[1]))
            if serve is None:
                thread = threading.Thread(target=self._udp_loop, args=(udp,), daemon=True,
                                          name=f"dns-udp-{host}")
            else:
                thread = threading.Thread(target=self._udp_fast_loop, args=(udp, serve),
                                          daemon=True, name=f"dns-udp-{host}")
            thread.start()
            self._threads.append(thread)
        return self.addresses

    async def stop(self) -> None:
        self._stopping.set()
        for sock in self._udp:  # wake the blocked receivers (raises ENOTCONN, but wakes them)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)
        for server in self._tcp_servers:
            server.close()
        for task in list(self._tcp_clients):
            task.cancel()
        await asyncio.gather(*self._tcp_clients, return_exceptions=True)
        for server in self._tcp_servers:
            await server.wait_closed()
        await asyncio.to_thread(self._join_udp)
        if self.rrl is not None:
            log.warning("rate limiting: %(rrl_dropped)d answers dropped, %(rrl_slipped)d sent "
                        "truncated", self.stats())

    def _join_udp(self) -> None:
        for thread in self._threads:
            thread.join()
        for sock in self._udp:
            sock.close()

    def _answer(self, data: bytes, client: str, tcp: bool) -> bytes | None:
        try:
            return self.engine.respond(data, client, tcp, self.idle_timeout if tcp else 0.0)
        except Exception:  # last-resort guard, logged: one bad packet never stops a listener
            log.exception("failed to answer a %d-byte query from %s", len(data), client)
            return None

    def _answer_noted(self, data: bytes, client: str, port: int, tcp: bool,
                      local: tuple = ("", 0)) -> bytes | None:
        """``_answer``, counted (and logged) through the C counters: the Python paths.
        ``local``: the server's own address, for the query log."""
        started = time.perf_counter()
        response = self._answer(data, client, tcp)
        assert self._note is not None
        self._note(self.obs, data, response, int(tcp), time.perf_counter() - started, client,
                   port, local[0], local[1])
        return response

    def _udp_loop(self, sock: socket.socket) -> None:
        recv, send, answer = sock.recvfrom, sock.sendto, self._answer
        local = sock.getsockname()[:2]
        stopping, rrl, now = self._stopping.is_set, self.rrl, time.monotonic
        while not stopping():
            try:
                data, addr = recv(65535)
            except OSError as exc:
                if stopping():
                    return
                log.warning("udp receive failed: %s", exc)
                continue
            if addr is None:  # woken by stop()
                continue
            if self._note is None:
                response = answer(data, addr[0], False)
            else:
                response = self._answer_noted(data, addr[0], addr[1], False, local)
            if response is not None and rrl is not None:
                verdict = rrl.check(addr[0], now())
                if verdict == DROP:
                    continue
                if verdict == SLIP:
                    response = truncated(response)
            if response is not None:
                try:
                    send(response, addr)
                except OSError as exc:
                    log.debug("udp send to %s failed: %s", addr[0], exc)

    def _udp_fast_loop(self, sock: socket.socket, serve: Callable[..., None]) -> None:
        """The C loop. ``serve`` returns when woken by ``stop()``; a receive error is logged and
        serving goes on, as in the Python loop. So do the errors only the C side can raise
        (out of memory for a batch or a key; a bad value from a callback, i.e. a bug): logged
        with their traceback, then serving resumes after a pause, so UDP service never ends
        silently while TCP and the health checks go on. Clients' packets cannot cause them:
        ``_answer`` turns every failure to answer one into no answer."""
        stopping = self._stopping.is_set
        while not stopping():
            try:
                serve(sock.fileno(), self._udp_cache, self._answer, self._udp_send_failed,
                      fast_of=self._fast_state, rrl=self.c_rrl, obs=self.obs, watch=self)
            except OSError as exc:
                if stopping():
                    return
                log.warning("udp receive failed: %s", exc)
            except (MemoryError, ValueError, TypeError):
                log.exception("udp fast path failed; serving again in %.1f s", FAST_RETRY)
                self._stopping.wait(FAST_RETRY)

    # Called by the C loop for a batch only when ``self.engine``, its ``wire_udp``,
    # ``templates`` or ``maps.active`` is not the object it was at the last call (``watch``):
    # a reload, a health change, a new cache generation or a map merge is seen at the next batch.
    def _udp_cache(self) -> dict:
        return self.engine.wire_udp

    def _fast_state(self) -> tuple:
        return self.engine.fast_state()

    def _udp_send_failed(self, client: str, errno: int) -> None:
        log.debug("udp send to %s failed: %s", client, os.strerror(errno))

    async def _tcp_client(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._tcp_clients) >= self.max_tcp_clients:
            writer.close()
            return
        self._tcp_clients.add(task)
        peer = writer.get_extra_info("peername")
        client, port = (peer[0], peer[1]) if peer else ("0.0.0.0", 0)
        local = (writer.get_extra_info("sockname") or ("", 0))[:2]
        try:
            while True:
                async with asyncio.timeout(self.idle_timeout):
                    first = await reader.readexactly(1)
                async with asyncio.timeout(self.query_timeout):
                    (length,) = _LEN.unpack(first + await reader.readexactly(1))
                    data = await reader.readexactly(length)
                if self._note is None:
                    response = self._answer(data, client, True)
                else:
                    response = self._answer_noted(data, client, port, True, local)
                if response is None:
                    continue
                writer.write(_LEN.pack(len(response)) + response)
                async with asyncio.timeout(self.idle_timeout):  # a client that never reads
                    await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        except asyncio.CancelledError:  # the server is stopping
            pass
        finally:
            self._tcp_clients.discard(task)
            writer.close()
