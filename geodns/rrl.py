"""Response Rate Limiting (RRL) for UDP answers, as in BIND 9 and Knot DNS.

A spoofed-source flood turns an authoritative server into an amplifier; RRL bounds the
responses any one network receives. Rules (pure: the clock is passed in as ``now``, seconds
on a monotonic clock; the C fast path, geodns/_rrl.h, implements the same rules and the tests
run one table against both):

- Only UDP responses are limited. TCP is never (a spoofed source cannot finish a handshake,
  and a truncated answer sends a real client there).
- Responses are accounted per client prefix: the UDP source address masked to
  ``ipv4_prefix`` (24) or ``ipv6_prefix`` (56) bits. Addresses inside an ``exempt`` prefix are
  never limited and never accounted. The ECS address is not used (it is not who receives the
  answer).
- Each prefix has a balance, starting at ``rate`` (responses per second). Before each
  response: ``balance = min(rate, balance + (now - last) * rate) - 1``, never below
  ``-window * rate`` (a time going backwards counts as none elapsed). A balance >= 0 sends the
  response; otherwise it is limited: the prefix's count of limited responses goes up by one, and
  when ``slip`` is not 0 and that count is a multiple of ``slip``, the response goes out
  truncated (TC=1, no records: see :func:`truncated`) instead of being dropped. So ``slip``
  1 truncates every limited response, 2 every second one (BIND's default), 0 drops them all. A
  flood that goes on keeps the balance at its floor; when it stops, answers resume after at most
  ``window`` seconds.
- The table holds at most ``table_size`` prefixes. When it is full, the prefixes whose balance
  has refilled completely are forgotten (the same as never seen); if none has, the one seen
  least recently is. The C table is a hash table with a bounded probe and evicts the least
  recently seen of its probe window, so the two differ only when the table is full.
- ``dropped`` and ``slipped`` count the limited responses dropped and sent truncated.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from geoconfig.topology import RrlSettings

SEND, DROP, SLIP = 0, 1, 2


@dataclass(slots=True)
class _Bucket:
    balance: float
    last: float
    limited: int = 0


def _mask(packed: bytes, bits: int) -> bytes:
    full, rest = divmod(bits, 8)
    out = packed[:full]
    if rest:
        out += bytes((packed[full] & (0xFF << (8 - rest)) & 0xFF,))
    return out + bytes(len(packed) - len(out))


def parse_exempt(networks: tuple[str, ...]) -> tuple[tuple[int, bytes, int], ...]:
    """(family 4 or 6, packed network address, prefix length) for each ``exempt`` network;
    ValueError for one that is not a network."""
    out = []
    for text in networks:
        addr, _, plen_text = text.partition("/")
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        packed = socket.inet_pton(family, addr)  # OSError (a ValueError's sibling) if bad
        width = len(packed) * 8
        plen = int(plen_text) if plen_text else width
        if not 0 <= plen <= width:
            raise ValueError(f"prefix length {plen} out of range in {text!r}")
        out.append((4 if width == 32 else 6, _mask(packed, plen), plen))
    return tuple(out)


@dataclass
class RateLimiter:
    """The Python path's limiter (one per server, shared by its UDP threads)."""

    settings: RrlSettings
    dropped: int = 0
    slipped: int = 0
    table: dict[bytes, _Bucket] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._exempt = parse_exempt(self.settings.exempt)

    def _key(self, ip: str) -> bytes | None:
        v6 = ":" in ip
        packed = socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, ip)
        family = 6 if v6 else 4
        for fam, net, plen in self._exempt:
            if fam == family and _mask(packed, plen) == net:
                return None
        s = self.settings
        return bytes((family,)) + _mask(packed, s.ipv6_prefix if v6 else s.ipv4_prefix)

    def check(self, ip: str, now: float) -> int:
        """SEND, DROP or SLIP for one response to ``ip`` at ``now``."""
        key = self._key(ip)
        if key is None:
            return SEND
        s = self.settings
        rate = s.responses_per_second
        bucket = self.table.get(key)
        if bucket is None:
            if len(self.table) >= s.table_size:
                self._evict(now)
            bucket = self.table[key] = _Bucket(rate, now)
        elapsed = now - bucket.last
        if elapsed < 0:
            elapsed = 0.0
        balance = min(rate, bucket.balance + elapsed * rate) - 1.0
        floor = -s.window * rate
        bucket.balance = balance if balance > floor else floor
        bucket.last = now
        if balance >= 0:
            return SEND
        bucket.limited += 1
        if s.slip and bucket.limited % s.slip == 0:
            self.slipped += 1
            return SLIP
        self.dropped += 1
        return DROP

    def _evict(self, now: float) -> None:
        rate = self.settings.responses_per_second
        full = [k for k, b in self.table.items() if b.balance + (now - b.last) * rate >= rate]
        for k in full:
            del self.table[k]
        if len(self.table) >= self.settings.table_size:
            del self.table[min(self.table, key=lambda k: self.table[k].last)]


def truncated(response: bytes) -> bytes:
    """The slipped form of a response: its ID, flags with TC set, its question when it has
    exactly one that is a plain name (else none), and no records. Same bytes as the C path."""
    if len(response) < 12:
        return response
    head = response[:1024]  # as far as the C path reads
    flags = int.from_bytes(head[2:4], "big") | 0x0200
    qd = int.from_bytes(head[4:6], "big")
    question = b""
    if qd == 1:
        pos = 12
        while pos < len(head) and 0 < head[pos] <= 63:
            pos += head[pos] + 1
        if pos < len(head) and head[pos] == 0 and pos + 5 <= len(head):
            question = head[12 : pos + 5]
    out = response[:2] + flags.to_bytes(2, "big") + (b"\x00\x01" if question else b"\x00\x00")
    return out + bytes(6) + question


__all__ = ["DROP", "SEND", "SLIP", "RateLimiter", "RrlSettings", "parse_exempt", "truncated"]
