"""Secondary cache keys from Vary (RFC 9111 §4.1).

Rules:

* Vary lists request field names (RFC 9110 §12.5.5), case-insensitive: they are lowercased,
  de-duplicated and sorted, so ``Vary: Accept, accept-encoding`` and two lines
  ``Vary: Accept-Encoding`` / ``Vary: Accept`` give the same key.
* A member ``*`` always fails to match (§4.1) -> ``vary_key`` returns None; the response must
  not be stored (freshness.storable also refuses it).
* No Vary (or only empty members) -> ``""``: no secondary key.
* Request values are normalised only in ways §4.1 allows ("adding or removing whitespace",
  "combining multiple header field lines", "normalizing header field values"):
  - all lines for the field are combined as one comma list (RFC 9110 §5.3) and empty list
    elements dropped (RFC 9110 §5.6.1);
  - outside quoted-strings, whitespace around commas is removed and other runs of SP/HTAB
    collapse to one SP; quoted-strings are kept byte for byte;
  - Accept-Encoding only: each member is lowercased (codings and parameter names are
    case-insensitive, RFC 9110 §8.4.1, §12.5.3), loses its internal whitespace, and the
    members are de-duplicated and sorted. q-values are kept, so "gzip;q=0" stays distinct.
  Every other value is compared exactly (case-sensitively).
* A field absent from the request is distinct from one present with an empty value (§4.1:
  an absent field only matches an absent field).
* Before any of that, the edge rewrites two request fields on cache fills, so that the
  origin sees, and variants are keyed by, a handful of values instead of one per browser
  build (the forwarded value is the keyed value: see edge/forward.py):
  - Accept-Encoding -> the acceptable codings among ``CODINGS`` (q > 0; ``*`` accepts them
    all), in that fixed order, q-values dropped; ``identity`` when the client sent the field
    but accepts none of them (an absent field stays absent).
  - Accept-Language -> lower-case tags without whitespace, q=0 members dropped, ordered by
    q-value (stable), q-values dropped; absent when nothing is left.
* The key is the sha256 hex of a canonical JSON document (``vary_canonical``), so it is stable
  across processes and Python versions and safe as part of a Redis key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from edge.policy.headers import Headers, get_all, split_list, weighted_members

__all__ = [
    "normalise_accept_encoding",
    "normalise_accept_language",
    "normalise_value",
    "vary_canonical",
    "vary_fields",
    "vary_key",
]

CODINGS = ("br", "zstd", "gzip", "deflate")  # the content codings forwarded, in this order
_ALIASES = {"x-gzip": "gzip"}


def vary_fields(vary_header_values: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """Sorted lowercased field names from Vary field values; None if ``*`` is a member."""
    if vary_header_values is None:
        return ()
    values = [vary_header_values] if isinstance(vary_header_values, str) else vary_header_values
    names: set[str] = set()
    for value in values:
        for member in split_list(value):
            if member == "*":
                return None
            names.add(member.lower())
    return tuple(sorted(names))


def _squeeze(member: str) -> str:
    out: list[str] = []
    quoted = escaped = False
    for ch in member:
        if quoted:
            out.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
            out.append(ch)
        elif ch in " \t":
            if out and out[-1] != " ":
                out.append(" ")
        else:
            out.append(ch)
    return "".join(out).strip(" ")


def normalise_value(name: str, values: Iterable[str]) -> str | None:
    """Canonical form of a request field's lines; None when it is absent."""
    lines = list(values)
    if not lines:
        return None
    members = [_squeeze(m) for line in lines for m in split_list(line)]
    if name.lower() == "accept-encoding":
        members = sorted({"".join(m.lower().split()) for m in members})
    return ",".join(members)


def vary_canonical(
    vary_header_values: str | Iterable[str] | None, request_headers: Headers
) -> str | None:
    """Readable canonical selecting-header document (JSON), "" without Vary, None for ``*``."""
    names = vary_fields(vary_header_values)
    if names is None:
        return None
    if not names:
        return ""
    pairs = [[n, normalise_value(n, get_all(request_headers, n))] for n in names]
    return json.dumps(pairs, separators=(",", ":"), ensure_ascii=True)


def vary_key(
    vary_header_values: str | Iterable[str] | None, request_headers: Headers
) -> str | None:
    """Secondary cache key: sha256 hex, "" when nothing varies, None for ``Vary: *``."""
    canonical = vary_canonical(vary_header_values, request_headers)
    if not canonical:
        return canonical
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def normalise_accept_encoding(values: Iterable[str]) -> str | None:
    """The forwarded Accept-Encoding for these request lines; None when absent."""
    lines = list(values)
    if not lines:
        return None
    q: dict[str, float] = {}
    star: float | None = None
    for name, weight in weighted_members(",".join(lines)):
        name = _ALIASES.get(name, name)
        if name == "*":
            star = weight
        elif name in CODINGS:
            q[name] = weight
    accepted = [c for c in CODINGS if q.get(c, star if star is not None else 0.0) > 0]
    return ", ".join(accepted) if accepted else "identity"


def normalise_accept_language(values: Iterable[str]) -> str | None:
    """The forwarded Accept-Language for these request lines; None when nothing is left."""
    members = [(n, w) for n, w in weighted_members(",".join(values)) if w > 0]
    members.sort(key=lambda m: -m[1])
    tags = list(dict.fromkeys(n for n, _ in members))
    return ", ".join(tags) if tags else None
