"""Building what the edge sends: stored entries, client headers, Cache-Status, Via.

Rules:

- A stored entry keeps its head pre-serialised (status line, stored headers minus hop-by-hop,
  Surrogate-Control, Age and Content-Length, plus our Via and Content-Length); serving it
  appends only Age and our Cache-Status member, then the body (none for HEAD). The stored
  Date is the origin's (or the time of receipt when the origin sent none): it is never
  regenerated on hits.
- Every response carries ``Cache-Status`` with this edge's member after any upstream member
  (RFC 9211 §2), and ``Via: 1.1 <edge>`` (RFC 9110 §7.6.3).
- ``Date`` is formatted once per second of the ``now`` passed in.
"""

from __future__ import annotations

from edge.httpserver import reason
from edge.policy.headers import Headers, remove
from edge.policy.hopbyhop import headers_for_client
from geoconfig.httpdate import format_http_date

PER_RESPONSE = ("age", "date", "content-length", "connection", "keep-alive",
                "transfer-encoding")
STORED_PER_RESPONSE = tuple(n for n in PER_RESPONSE if n != "date")


class DateCache:
    """``Date`` header values, formatted at most once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def value(self, now: float) -> bytes:
        second = int(now)
        if second != self._second:
            self._second = second
            self._value = format_http_date(second).encode("latin-1")
        return self._value


def client_headers(headers: Headers, via: str) -> list[tuple[str, str]]:
    """Response headers to forward: no hop-by-hop, Surrogate-Control or per-response fields."""
    out = list(remove(headers_for_client(headers), PER_RESPONSE))
    out.append(("Via", via))
    return out


def with_date(headers: Headers, received: float) -> Headers:
    """The headers with the origin's Date, or -- when it sent none -- the time it was
    received (RFC 9110 §6.6.1: a recipient with a clock adds one)."""
    if any(n.lower() == "date" for n, _ in headers):
        return headers
    return (*headers, ("Date", format_http_date(received)))


def serialize_stored_head(status: int, headers: Headers, via: str, body_length: int) -> bytes:
    """The pre-serialised part of a stored response (ends without the blank line). It keeps
    the stored Date: a hit says how old it is with Age (RFC 9110 §6.6.1, RFC 9111 §5.1)."""
    lines = [f"HTTP/1.1 {status} {reason(status)}\r\n"]
    kept = list(remove(headers_for_client(headers), STORED_PER_RESPONSE))
    kept.append(("Via", via))
    lines += [f"{n}: {v}\r\n" for n, v in kept]
    if status not in (204, 304):
        lines.append(f"Content-Length: {body_length}\r\n")
    return "".join(lines).encode("latin-1")


def hit_bytes(head: bytes, age: int, cache_status: bytes, body: bytes,
              with_body: bool) -> bytes:
    parts = [head, b"Age: %d\r\nCache-Status: " % age, cache_status, b"\r\n\r\n"]
    if with_body:
        parts.append(body)
    return b"".join(parts)
