"""The Cache-Status response field (RFC 9211), serialised per RFC 8941.

Rules:

* The field is an sf-list; each member is the cache's identifier -- an sf-token when the name
  is a valid token, otherwise an sf-string (RFC 9211 §2) -- with parameters, emitted in the
  order of RFC 9211 §2.1-§2.8: hit, fwd, fwd-status, ttl, stored, collapsed, key, detail.
* Boolean parameters (hit, stored, collapsed) are emitted only when true, as bare keys
  (RFC 8941 §4.1.1.2: ``; hit``, never ``; hit=?1``).
* fwd is a token from RFC 9211 §2.2 (bypass, method, uri-miss, vary-miss, miss, request,
  stale, partial); anything else is a ValueError, as are ``hit`` together with ``fwd`` (a
  forwarded request was not satisfied by the cache, §2.1) and fwd-status without fwd (§2.3).
* ttl (§2.4) is an sf-integer: the remaining freshness floored to whole seconds; negative when
  stale. fwd-status is an integer 100-599.
* key (§2.7) is an sf-string; detail (§2.8) a token when it is one, else an sf-string, with
  characters outside printable ASCII replaced by "?" (detail is diagnostic; never fail on it).
* Multiple caches (§2): members are ordered from the origin towards the user, so a cache keeps
  the upstream value and appends its own member at the end (``append_cache_status``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from edge.policy import sf
from edge.policy.headers import Headers, get_all, set_header

__all__ = ["FWD_VALUES", "add_cache_status", "append_cache_status", "cache_status"]

FWD_VALUES = frozenset(
    {"bypass", "method", "uri-miss", "vary-miss", "miss", "request", "stale", "partial"}
)


def _token_or_string(value: str) -> str:
    return value if sf.is_token(value) else sf.serialize_string(value)


def cache_status(
    cache_name: str,
    hit: bool = False,
    fwd: str | None = None,
    fwd_status: int | None = None,
    ttl: float | None = None,
    stored: bool = False,
    collapsed: bool = False,
    detail: str | None = None,
    key: str | None = None,
) -> str:
    """One Cache-Status list member, e.g. ``geoedge-eu-west-1; hit; ttl=120``."""
    if hit and fwd is not None:
        raise ValueError("hit and fwd are mutually exclusive (RFC 9211 §2.1)")
    if fwd is not None and fwd not in FWD_VALUES:
        raise ValueError(f"unknown fwd value {fwd!r}")
    if fwd_status is not None and (fwd is None or not 100 <= fwd_status <= 599):
        raise ValueError("fwd-status needs fwd and a 1xx-5xx status code (RFC 9211 §2.3)")
    parts = [_token_or_string(cache_name)]
    if hit:
        parts.append("hit")
    if fwd is not None:
        parts.append(f"fwd={fwd}")
    if fwd_status is not None:
        parts.append(f"fwd-status={int(fwd_status)}")
    if ttl is not None:
        if math.isnan(ttl):
            raise ValueError("ttl is NaN")
        whole = math.floor(max(-sf.MAX_INTEGER, min(sf.MAX_INTEGER, ttl)))
        parts.append(f"ttl={whole}")
    if stored:
        parts.append("stored")
    if collapsed:
        parts.append("collapsed")
    if key is not None:
        parts.append("key=" + sf.serialize_string(key))
    if detail is not None:
        clean = "".join(c if " " <= c <= "~" else "?" for c in detail)
        parts.append("detail=" + _token_or_string(clean))
    return "; ".join(parts)


def append_cache_status(upstream: str | Iterable[str] | None, member: str) -> str:
    """Our member appended after any upstream Cache-Status value(s) (RFC 9211 §2)."""
    values = [upstream] if isinstance(upstream, str) else list(upstream or ())
    kept = [v.strip() for v in values if v and v.strip()]
    return ", ".join([*kept, member])


def add_cache_status(headers: Headers, member: str) -> Headers:
    """``headers`` with one combined Cache-Status line ending in ``member``."""
    combined = append_cache_status(get_all(headers, "Cache-Status"), member)
    return set_header(headers, "Cache-Status", combined)
