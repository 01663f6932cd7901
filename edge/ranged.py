"""Delivering a Range request from a stored complete response: 206, multipart, 416 bytes.

The rules are ``edge.policy.ranges.decide``'s; this module builds what the proxy sends when
the decision is not FULL (FULL: the proxy sends the stored response as usual, 200).

- The header fields are those of the full response the client would otherwise get: the
  stored fields (``client_headers`` of ``entry.meta.headers``), or, for the client whose
  request filled the entry, the fields of its own head (``Outcome.head``: the response as the
  origin sent it, Set-Cookie included). Then, as on every hit: Age, Date, Cache-Status (and
  ``Connection: close`` when the connection ends).
- One range: ``206 Partial Content`` with ``Content-Range: bytes first-last/length`` and the
  part's Content-Length (RFC 9110 §14.4, §15.3.7.1).
- Several: ``206`` with ``Content-Type: multipart/byteranges; boundary=...``; each part has
  the stored Content-Type (when there is one) and its Content-Range (§14.6, §15.3.7.2). The
  boundary is random, so no body can forge a part.
- Unsatisfiable: ``416`` with ``Content-Range: bytes */length`` (§15.5.17), a short text body
  and none of the stored response's fields (it is not that representation, and its
  Cache-Control would let a downstream cache keep the 416 for the URL).
- ``range_pass_wanted``: a fill's answer announced larger than ``max_object_bytes`` is not
  stored, so a GET with Range is better passed to the origin with its Range (the origin then
  sends only the range) than answered with the whole object.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from edge.httpserver import Request, serialize_head
from edge.policy.headers import Headers, get_first, remove
from edge.policy.ranges import ByteRange, RangeKind, decide
from edge.respond import client_headers

__all__ = ["Ranged", "head_fields", "range_pass_wanted", "ranged_response"]

CONTENT_FIELDS = ("content-type", "content-length", "content-range")
TEXT_416 = b"416 Range Not Satisfiable\n"


@dataclass(frozen=True, slots=True)
class Ranged:
    status: int  # 206 or 416
    data: bytes  # the whole response: head and body
    body_bytes: int  # content bytes sent (for the bytes_sent metric)


def head_fields(head: bytes) -> list[tuple[str, str]]:
    """The header fields of a pre-serialised stored head (edge/respond.py) minus
    Content-Length: the status line is dropped, each other line is ``Name: value``."""
    fields = []
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, sep, value = line.partition(": ")
        if sep and name.lower() != "content-length":
            fields.append((name, value))
    return fields


def ranged_response(request: Request, status: int, stored: Headers, body: bytes,
                    own_head: bytes | None, via: str, per_response: list[tuple[str, str]],
                    ) -> Ranged | None:
    """The 206/416 for this request from a stored response, or None to send it whole.
    ``per_response``: Age, Date, Cache-Status (and Connection) as the full response has."""
    if request.method != "GET":  # cheap exit: only GET has ranges
        return None
    decision = decide(request.method, tuple(request.headers), status, stored, len(body))
    if decision.kind is RangeKind.FULL:
        return None
    if decision.kind is RangeKind.UNSATISFIABLE:
        headers = [("Content-Type", "text/plain; charset=utf-8"),
                   ("Content-Range", f"bytes */{len(body)}"),
                   ("Content-Length", str(len(TEXT_416))), ("Via", via), *per_response]
        return Ranged(416, serialize_head(416, headers) + TEXT_416, 0)
    fields = head_fields(own_head) if own_head is not None else client_headers(stored, via)
    content_type = get_first(tuple(fields), "content-type")
    if len(decision.ranges) == 1:
        part = decision.ranges[0]
        payload = body[part.first:part.last + 1]
        headers = [*remove(tuple(fields), ("content-length", "content-range")),
                   ("Content-Range", part.content_range(len(body))),
                   ("Content-Length", str(len(payload))), *per_response]
        return Ranged(206, serialize_head(206, headers) + payload, len(payload))
    boundary = secrets.token_hex(12)
    payload = multipart(body, decision.ranges, content_type, boundary)
    headers = [*remove(tuple(fields), CONTENT_FIELDS),
               ("Content-Type", f"multipart/byteranges; boundary={boundary}"),
               ("Content-Length", str(len(payload))), *per_response]
    return Ranged(206, serialize_head(206, headers) + payload,
                  sum(r.length for r in decision.ranges))


def multipart(body: bytes, ranges: tuple[ByteRange, ...], content_type: str | None,
              boundary: str) -> bytes:
    """A ``multipart/byteranges`` body (RFC 9110 §14.6, RFC 2046 §5.1.1)."""
    parts: list[bytes] = []
    for r in ranges:
        head = f"--{boundary}\r\n"
        if content_type is not None:
            head += f"Content-Type: {content_type}\r\n"
        head += f"Content-Range: {r.content_range(len(body))}\r\n\r\n"
        parts += [head.encode("latin-1"), body[r.first:r.last + 1], b"\r\n"]
    parts.append(f"--{boundary}--\r\n".encode("latin-1"))
    return b"".join(parts)


def range_pass_wanted(request: Request, status: int, content_length: int | None,
                      max_object_bytes: int) -> bool:
    """A GET with Range whose fill answered a 200 announced over the store's limit."""
    return (request.method == "GET" and request.header("range") is not None and status == 200
            and content_length is not None and content_length > max_object_bytes)
