"""EDNS options other than ECS, as pure functions: NSID, Cookies, TCP keepalive, EDE.

Rules:

- NSID (RFC 5001): a query with the NSID option (empty) gets ``dns.nsid`` back in an NSID
  option; with ``nsid`` off (""), the option is ignored.
- Cookies (RFC 7873, server cookies as RFC 9018 §4): a COOKIE option of 8 octets (client
  cookie) or 16-40 octets (client + server cookie) is answered with the client cookie and a
  fresh server cookie: version 1, 3 reserved zero octets, a 32-bit timestamp and SipHash-2-4
  (RFC 9018 §4.4) of client cookie | version | reserved | timestamp | client IP, keyed with a
  secret derived from ``dns.cookie_secret`` for the timestamp's period of ``cookie_rotation``
  seconds, so every worker (and every server given the same secret) validates the same cookies
  and secrets rotate without coordination. Any other length: FORMERR (RFC 7873 §5.2.2).
  A server cookie is valid when it has that layout, its period is the current or the previous
  one, its timestamp is at most 1 hour old and at most 5 minutes ahead (RFC 9018 §4.3), and
  the hash matches. A query with an invalid server cookie over UDP gets BADCOOKIE (RCODE 23)
  with a fresh cookie, so the client retries with it (RFC 7873 §5.2.3, option 2); over TCP
  (where cookies add nothing) and with only a client cookie the query is answered normally.
- TCP keepalive (RFC 7828): over TCP a query with the option (OPTION-LENGTH 0) gets the
  server's idle timeout in units of 100 ms; a query that carries a TIMEOUT value is FORMERR
  (clients must omit it, §3.2.1). Over UDP the option is ignored and never sent (§3.3.1).
- EDE (RFC 8914): INFO-CODE + EXTRA-TEXT, added to REFUSED/NOTIMP answers that have an OPT.

SipHash-2-4 is implemented here (about 30 lines, checked against the reference vectors and
RFC 9018's own cookie examples in the tests) instead of adding a dependency: it runs only for
queries that carry a cookie, which already take the Python path.
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct
from dataclasses import dataclass

NSID, COOKIE, KEEPALIVE, EDE = 3, 10, 11, 15
BADCOOKIE = 23
_OPT = struct.Struct("!HH")
_MASK = 0xFFFFFFFFFFFFFFFF


def option(code: int, data: bytes) -> bytes:
    return _OPT.pack(code, len(data)) + data


def ede_option(info: int, text: str = "") -> bytes:
    return option(EDE, info.to_bytes(2, "big") + text.encode("utf-8"))


def keepalive_option(idle_timeout: float) -> bytes:
    """The idle timeout in units of 100 ms (at most 65535)."""
    return option(KEEPALIVE, min(65535, int(idle_timeout * 10)).to_bytes(2, "big"))


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _MASK


def siphash24(key: bytes, data: bytes) -> bytes:
    """SipHash-2-4 of ``data`` with a 16-byte key, as the reference implementation's 8 output
    bytes (the 64-bit result little-endian)."""
    k0, k1 = struct.unpack("<QQ", key)
    v0, v1 = k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D
    v2, v3 = k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573

    def rounds(n: int) -> None:
        nonlocal v0, v1, v2, v3
        for _ in range(n):
            v0 = (v0 + v1) & _MASK
            v1 = _rotl(v1, 13) ^ v0
            v0 = _rotl(v0, 32)
            v2 = (v2 + v3) & _MASK
            v3 = _rotl(v3, 16) ^ v2
            v0 = (v0 + v3) & _MASK
            v3 = _rotl(v3, 21) ^ v0
            v2 = (v2 + v1) & _MASK
            v1 = _rotl(v1, 17) ^ v2
            v2 = _rotl(v2, 32)

    tail = len(data) % 8
    for (m,) in struct.iter_unpack("<Q", data[: len(data) - tail]):
        v3 ^= m
        rounds(2)
        v0 ^= m
    last = int.from_bytes(data[len(data) - tail :], "little") | ((len(data) & 0xFF) << 56)
    v3 ^= last
    rounds(2)
    v0 ^= last
    v2 ^= 0xFF
    rounds(4)
    return struct.pack("<Q", v0 ^ v1 ^ v2 ^ v3)


@dataclass(frozen=True, slots=True)
class CookieCheck:
    client: bytes  # the client cookie (8 octets)
    valid: bool  # a server cookie was sent and it is one of ours, still fresh
    sent_server: bool  # the query carried a server cookie


class Cookies:
    """Server cookies (RFC 9018) with secrets derived per rotation period."""

    def __init__(self, secret: bytes, rotation: float) -> None:
        self.base = secret
        self.rotation = int(rotation)
        self._keys: dict[int, bytes] = {}

    def key(self, period: int) -> bytes:
        key = self._keys.get(period)
        if key is None:
            if len(self._keys) > 4:
                self._keys.clear()
            key = self._keys[period] = hashlib.sha256(
                self.base + period.to_bytes(8, "big")).digest()[:16]
        return key

    def server_cookie(self, client: bytes, client_ip: str, now: int) -> bytes:
        head = b"\x01\x00\x00\x00" + (now & 0xFFFFFFFF).to_bytes(4, "big")
        ip = ipaddress.ip_address(client_ip).packed
        return head + siphash24(self.key(now // self.rotation), client + head + ip)

    def check(self, data: bytes, client_ip: str, now: int) -> CookieCheck | None:
        """The query's COOKIE option checked; None when it is malformed (FORMERR)."""
        if len(data) != 8 and not 16 <= len(data) <= 40:
            return None
        client, server = data[:8], data[8:]
        if not server:
            return CookieCheck(client, False, False)
        valid = False
        if len(server) == 16 and server[:4] == b"\x01\x00\x00\x00":
            stamp = int.from_bytes(server[4:8], "big")
            period = stamp // self.rotation
            if now - 3600 <= stamp <= now + 300 and period >= now // self.rotation - 1:
                head = server[:8]
                ip = ipaddress.ip_address(client_ip).packed
                valid = siphash24(self.key(period), client + head + ip) == server[8:]
        return CookieCheck(client, valid, True)
