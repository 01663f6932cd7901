"""Readiness probes for the demo's processes: is it answering yet?

Rules:

- ``ready(probe, timeout)`` is True only for a real answer: Redis replies ``+PONG`` to
  ``PING``; an HTTP server answers ``GET path`` with status 200; a DNS server answers a SOA
  query for the zone with NOERROR. Anything else (refused, timeout, wrong reply) is False,
  never an exception: the caller polls until its own deadline.
- Every probe is bounded by ``timeout`` and closes what it opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket

import dnslib

from geoedge.demo.services import Probe


async def ready(probe: Probe, timeout: float = 1.0) -> bool:
    try:
        async with asyncio.timeout(timeout):
            if probe.kind == "redis":
                return await _redis(probe)
            if probe.kind == "http":
                return await _http(probe)
            return await _dns(probe)
    except (OSError, TimeoutError, EOFError, ValueError, dnslib.DNSError):
        return False


async def _exchange(probe: Probe, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(probe.host, probe.port)
    try:
        writer.write(request)
        await writer.drain()
        return await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _redis(probe: Probe) -> bool:
    return await _exchange(probe, b"PING\r\n") == b"+PONG\r\n"


async def _http(probe: Probe) -> bool:
    host = f"[{probe.host}]" if ":" in probe.host else probe.host
    request = (f"GET {probe.path} HTTP/1.1\r\nHost: {host}:{probe.port}\r\n"
               "Connection: close\r\n\r\n").encode()
    status = (await _exchange(probe, request)).split(b" ", 2)
    return len(status) >= 2 and status[1] == b"200"


async def _dns(probe: Probe) -> bool:
    query = dnslib.DNSRecord.question(probe.path, "SOA")
    query.header.id = random.randrange(1 << 16)
    family = socket.AF_INET6 if ":" in probe.host else socket.AF_INET
    loop = asyncio.get_running_loop()
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, (probe.host, probe.port))
        await loop.sock_sendall(sock, query.pack())
        reply = dnslib.DNSRecord.parse(await loop.sock_recv(sock, 65535))
    return reply.header.id == query.header.id and reply.header.rcode == dnslib.RCODE.NOERROR
