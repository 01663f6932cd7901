"""An HTTP/2 request's header list, checked and turned into what the HTTP/1.1 path sees.

Rules (RFC 9113 §8.2, §8.3; the checks h2's own validation makes, in one pass):

- Malformed (a stream error PROTOCOL_ERROR, §8.1.1): a field name that is empty, not
  lower-case or not a token; a value with NUL, CR or LF, or with leading or trailing
  whitespace; a pseudo-header after a regular field, repeated, unknown, or ``:status``;
  a connection-specific field (Connection, Keep-Alive, Proxy-Connection,
  Transfer-Encoding, Upgrade); TE other than ``trailers``; ``:method`` missing, or
  ``:path`` missing or empty (or, for CONNECT, ``:path``/``:scheme`` present).
- Limits, answered on the stream: more than ``max_header_bytes`` (names, values and 32 bytes
  per field, §6.5.2) or ``max_header_count`` fields: 431; ``:path`` longer than
  ``max_url_bytes``: 414; a Content-Length over ``max_body_bytes``: 413.
- Cookie fields are joined with ``"; "`` into one (§8.2.3); the other fields keep their
  order, decoded as latin-1; ``flagged`` says one of the handler's ``flags`` is present.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["H2Head", "read_head"]

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+\Z").match
_BAD_VALUE = re.compile(rb"[\x00\r\n]|\A[ \t]|[ \t]\Z").search
_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path"})
_CONNECTION = frozenset({b"connection", b"keep-alive", b"proxy-connection",
                         b"transfer-encoding", b"upgrade"})


@dataclass(slots=True)
class H2Head:
    method: str = ""
    path: str = ""
    authority: str | None = None
    fields: list[tuple[str, str]] = field(default_factory=list)
    flagged: bool = False
    status: int = 0  # 0, or the error status answered instead (413, 414, 431)
    malformed: str = ""  # why the stream is reset with PROTOCOL_ERROR; "" when it is not


def read_head(headers: list[tuple[bytes, bytes]], flags: frozenset[bytes],
              max_header_bytes: int, max_header_count: int, max_url_bytes: int,
              max_body_bytes: int) -> H2Head:
    head = H2Head()
    pseudo: dict[bytes, bytes] = {}
    cookies: list[str] = []
    size = count = 0
    fields = head.fields
    for name, value in headers:
        size += len(name) + len(value) + 32
        if value and _BAD_VALUE(value):
            head.malformed = f"bad value for {name!r}"
            return head
        if name[:1] == b":":
            if count or name not in _PSEUDO or name in pseudo:
                head.malformed = f"misplaced, repeated or unknown {name!r}"
                return head
            pseudo[name] = value
            continue
        count += 1
        if not _TOKEN(name):
            head.malformed = f"bad field name {name!r}"
            return head
        if name in _CONNECTION or (name == b"te" and value != b"trailers"):
            head.malformed = f"connection-specific {name!r}"
            return head
        if name == b"cookie":
            cookies.append(value.decode("latin-1"))
            continue
        if name in flags:
            head.flagged = True
        if name == b"content-length" and value.isdigit() and int(value) > max_body_bytes:
            head.status = 413
        fields.append((name.decode("latin-1"), value.decode("latin-1")))
    if cookies:
        fields.append(("cookie", "; ".join(cookies)))
    method = pseudo.get(b":method")
    path = pseudo.get(b":path")
    if method is None or (method == b"CONNECT") != (path is None) or path == b"" or (
            method == b"CONNECT" and b":scheme" in pseudo):
        head.malformed = "missing or empty pseudo-header"
        return head
    head.method = method.decode("ascii", "replace")
    head.path = (path or b"").decode("latin-1")
    authority = pseudo.get(b":authority")
    head.authority = authority.decode("latin-1") if authority is not None else None
    if size > max_header_bytes or count > max_header_count:
        head.status = 431
    elif len(head.path) > max_url_bytes:
        head.status = 414
    return head
