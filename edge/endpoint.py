"""One origin's address, TLS settings and idle keep-alive connections (edge/originclient.py).

Rules:

* ``connection()`` hands out the most recently idle connection that is still open (LIFO:
  the warmest), else connects. Idle connections close after ``keepalive`` seconds.
* ``connect()`` bounds the TCP connect and the TLS handshake by ``connect_timeout``; every
  failure is a ``ConnectFailed`` (retryable). A TLS certificate that fails verification, or
  a failed handshake, is logged as an error naming the origin, its address, the name checked
  and OpenSSL's reason -- at most once per ``LOG_EVERY`` seconds per origin, with the
  number of failures since, so an origin with a bad certificate does not flood the log.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time

from edge.originclient import ConnectFailed, OriginConnection

log = logging.getLogger("geoedge.edge.upstream")

__all__ = ["Endpoint"]

LOG_EVERY = 10.0  # seconds between two TLS error lines for one origin


class Endpoint:
    """Where one origin is and how to reach it: address, TLS context and SNI, idle pool."""

    def __init__(self, name: str, host: str, port: int, *, connect_timeout: float,
                 max_header_bytes: int, keepalive: float,
                 tls: ssl.SSLContext | None = None, server_name: str | None = None) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.max_header_bytes = max_header_bytes
        self.keepalive = keepalive
        self.tls = tls
        self.server_name = server_name
        self.idle: list[OriginConnection] = []
        self.connects = 0  # connection attempts (tests, stats)
        self._logged_at = -LOG_EVERY  # monotonic time of the last TLS error line
        self._unlogged = 0  # TLS failures since then

    async def connection(self) -> tuple[OriginConnection, bool]:
        """An idle connection (reused=True) or a new one."""
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                return conn, True
        return await self.connect(), False

    async def connect(self) -> OriginConnection:
        loop = asyncio.get_running_loop()
        self.connects += 1
        extra: dict[str, object] = {}
        if self.tls is not None:
            extra = {"ssl": self.tls, "server_hostname": self.server_name or "",
                     "ssl_handshake_timeout": self.connect_timeout}
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, proto = await loop.create_connection(
                    lambda: OriginConnection(self.name, self.max_header_bytes, self._put_back),
                    self.host, self.port, **extra)  # type: ignore[arg-type]
        except TimeoutError:
            raise ConnectFailed(f"connect timeout after {self.connect_timeout:g} s",
                                timed_out=True) from None
        except ssl.SSLCertVerificationError as exc:
            message = (f"TLS certificate of origin {self.name} ({self.host}:{self.port}, "
                       f"name {self.server_name or self.host!r}) rejected: "
                       f"{exc.verify_message or exc.reason}")
            self._log_tls(message)
            raise ConnectFailed(message) from exc
        except ssl.SSLError as exc:
            message = (f"TLS handshake with origin {self.name} ({self.host}:{self.port}) "
                       f"failed: {exc.reason or exc}")
            self._log_tls(message)
            raise ConnectFailed(message) from exc
        except OSError as exc:
            raise ConnectFailed(f"{type(exc).__name__}: {exc}") from exc
        return proto

    def _log_tls(self, message: str) -> None:
        now = time.monotonic()
        if now - self._logged_at < LOG_EVERY:
            self._unlogged += 1
            return
        more = f" ({self._unlogged} more since the last report)" if self._unlogged else ""
        self._logged_at, self._unlogged = now, 0
        log.error("%s%s", message, more)

    def _put_back(self, conn: OriginConnection) -> None:
        self.idle.append(conn)
        conn.idle_handle = asyncio.get_running_loop().call_later(self.keepalive, conn.close)

    def close(self) -> None:
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()
