"""Header-list helpers shared by the policy modules.

Rules (RFC 9110):

* A header section is modelled as ``Headers``: a tuple of ``(name, value)`` str pairs. Order is
  preserved and a name may repeat (one pair per field line). Nothing here mutates; every helper
  returns a new tuple.
* Field names are case-insensitive (RFC 9110 §5.1): lookups compare ``name.lower()``.
* Several field lines with the same name are equivalent to one line whose value is the lines'
  values joined by ", " in order (RFC 9110 §5.3) -- ``get_combined`` does exactly that. This is
  NOT valid for Set-Cookie (RFC 9110 §5.3 note), which callers read with ``get_all``.
* ``split_list`` splits a ``#element`` list (RFC 9110 §5.6.1) on commas outside quoted-strings,
  drops empty elements and surrounding whitespace, and never raises.
* ``weighted_members`` reads a list of ``token;q=qvalue`` members (Accept-Encoding,
  Accept-Language: RFC 9110 §12.4.2): the names lower-cased, q = 1 when absent, and a q that is
  not a qvalue (``0``, ``0.5``, ``1.000``...; not ``1.5``, ``.5``, ``1e0`` or ``nan``) counts
  as 0, so a malformed preference never selects anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

Headers = tuple[tuple[str, str], ...]

__all__ = [
    "Headers",
    "get_all",
    "get_combined",
    "get_first",
    "has",
    "make_headers",
    "remove",
    "set_header",
    "split_list",
    "weighted_members",
]


def make_headers(items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> Headers:
    """Normalise a mapping or an iterable of pairs into ``Headers``."""
    pairs = items.items() if isinstance(items, Mapping) else items
    return tuple((str(name), str(value)) for name, value in pairs)


def get_all(headers: Headers, name: str) -> tuple[str, ...]:
    """Every field-line value for ``name``, in order."""
    key = name.lower()
    return tuple(v for n, v in headers if n.lower() == key)


def get_first(headers: Headers, name: str) -> str | None:
    """The first field-line value for ``name`` or None."""
    key = name.lower()
    for n, v in headers:
        if n.lower() == key:
            return v
    return None


def get_combined(headers: Headers, name: str) -> str | None:
    """All field lines for ``name`` joined with ", " (RFC 9110 §5.3), or None if absent."""
    values = get_all(headers, name)
    if not values:
        return None
    return ", ".join(v.strip() for v in values)


def has(headers: Headers, name: str) -> bool:
    return get_first(headers, name) is not None


def remove(headers: Headers, names: Iterable[str]) -> Headers:
    """Drop every field line whose name is in ``names`` (case-insensitive)."""
    drop = {n.lower() for n in names}
    if not drop:
        return headers
    return tuple((n, v) for n, v in headers if n.lower() not in drop)


def set_header(headers: Headers, name: str, value: str) -> Headers:
    """Replace all lines for ``name`` with one line; keeps the first line's position."""
    key = name.lower()
    out: list[tuple[str, str]] = []
    placed = False
    for n, v in headers:
        if n.lower() == key:
            if not placed:
                out.append((name, value))
                placed = True
            continue
        out.append((n, v))
    if not placed:
        out.append((name, value))
    return tuple(out)


def split_list(value: str | None) -> list[str]:
    """Split a comma-separated list (RFC 9110 §5.6.1) respecting quoted-strings."""
    if not value:
        return []
    items: list[str] = []
    buf: list[str] = []
    quoted = escaped = False
    for ch in value:
        if escaped:
            buf.append(ch)
            escaped = False
        elif quoted and ch == "\\":
            buf.append(ch)
            escaped = True
        elif ch == '"':
            buf.append(ch)
            quoted = not quoted
        elif ch == "," and not quoted:
            items.append("".join(buf).strip(" \t"))
            buf = []
        else:
            buf.append(ch)
    items.append("".join(buf).strip(" \t"))
    return [item for item in items if item]


_QVALUE = re.compile(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?")


def weighted_members(value: str) -> list[tuple[str, float]]:
    """``name;q=x`` members of a list, in order: (lower-case name, q); a bad q is 0."""
    out = []
    for member in split_list(value):
        name, *params = (p.strip() for p in member.split(";"))
        q = 1.0
        for param in params:
            key, _, raw = param.partition("=")
            if key.strip().lower() == "q":
                raw = raw.strip()
                q = float(raw) if _QVALUE.fullmatch(raw) else 0.0
        if name:
            out.append((name.lower(), q))
    return out
