"""Validators and freshening a stored response with a 304 (RFC 9111 §4.3, RFC 9110 §8.8).

Rules:

* Entity-tag comparison (RFC 9110 §8.8.3.2): strong -- neither tag is weak and the opaque-tags
  are identical; weak -- the opaque-tags are identical, W/ ignored. ``W/`` is case-sensitive
  (§8.8.3). An unquoted tag (invalid, but common) is compared as a strong opaque string.
* Selecting the stored response a 304 may update (RFC 9111 §4.3.4; one stored response per
  cache key here), first match:
  1. the 304 has an ETag: strong tag -> strong match required; weak tag -> weak match;
  2. else it has a Last-Modified: the stored Last-Modified must denote the same instant;
  3. else it has no validator: only a stored response without validators is selected --
     unless the 304 answers a conditional request built from one stored response
     (``single_candidate``, the proxy's revalidation): then that response is selected, as
     nginx and Varnish do (a deliberate difference from the letter of §4.3.4).
  No selection -> ``freshen_on_304`` returns None: the cache "MUST NOT use the new response to
  update any stored responses" and the proxy should refetch unconditionally.
* Updating (RFC 9111 §3.2): every field of the 304 replaces the stored field of the same name
  (in place; new names appended), except
  - fields excepted from storage (§3.1): hop-by-hop and Connection-listed fields, qualified
    private / no-cache fields and (by default) Set-Cookie -- via hopbyhop.headers_to_store;
  - Content-Length (§3.2 MUST NOT);
  - Content-Encoding and Content-Range: §3.2 allows omitting fields "necessary to assure
    integrity of the stored response"; the stored body bytes are encoded/ranged as the
    original response said, so relabelling them would corrupt it.
  Age is message-specific (RFC 9111 §5.1: time since the response was generated or
  validated): a 304 without Age removes the stored one. A 304 without Date gets one from
  response_time (RFC 9110 §6.6.1), otherwise the old Date would make the freshened response
  look old. request_time/response_time become those of the validation exchange (§4.2.3).
* ``parse_http_date``/``format_http_date`` live in dates.py (RFC 9110 §5.6.7).
"""

from __future__ import annotations

from dataclasses import replace

from edge.policy.cachecontrol import response_directives
from edge.policy.config import DEFAULT_CONFIG, PolicyConfig
from edge.policy.freshness import StoredMeta
from edge.policy.headers import Headers, get_first, remove, set_header
from edge.policy.hopbyhop import headers_to_store, strip_hop_by_hop
from geoconfig.httpdate import format_http_date, parse_http_date

__all__ = [
    "NOT_UPDATED",
    "etag_strong_match",
    "etag_weak_match",
    "format_http_date",
    "freshen_on_304",
    "parse_etag",
    "parse_http_date",
    "select_for_update",
]

NOT_UPDATED = frozenset({"content-length", "content-encoding", "content-range"})


def parse_etag(value: str | None) -> tuple[bool, str] | None:
    """(weak, opaque-tag) for an entity-tag, or None if empty."""
    if value is None:
        return None
    text = value.strip()
    weak = text.startswith("W/")
    if weak:
        text = text[2:]
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    elif not text or '"' in text:
        return None
    return weak, text


def etag_strong_match(a: str | None, b: str | None) -> bool:
    pa, pb = parse_etag(a), parse_etag(b)
    return pa is not None and pb is not None and not pa[0] and not pb[0] and pa[1] == pb[1]


def etag_weak_match(a: str | None, b: str | None) -> bool:
    pa, pb = parse_etag(a), parse_etag(b)
    return pa is not None and pb is not None and pa[1] == pb[1]


def select_for_update(stored_headers: Headers, response_304_headers: Headers,
                      single_candidate: bool = False) -> bool:
    """Does the 304 identify this stored response for update (RFC 9111 §4.3.4)?
    ``single_candidate``: the 304 answers a conditional request built from this one stored
    response, so a 304 without validators selects it (as nginx and Varnish do)."""
    new_tag = parse_etag(get_first(response_304_headers, "ETag"))
    old_tag = get_first(stored_headers, "ETag")
    if new_tag is not None:
        new_raw = get_first(response_304_headers, "ETag")
        return (etag_weak_match if new_tag[0] else etag_strong_match)(new_raw, old_tag)
    new_lm = get_first(response_304_headers, "Last-Modified")
    old_lm = get_first(stored_headers, "Last-Modified")
    if new_lm is not None:
        new_ts = parse_http_date(new_lm)
        return new_ts is not None and new_ts == parse_http_date(old_lm)
    return single_candidate or (old_tag is None and old_lm is None)


def _merge(stored: Headers, updates: Headers) -> Headers:
    by_name: dict[str, list[tuple[str, str]]] = {}
    for name, value in updates:
        by_name.setdefault(name.lower(), []).append((name, value))
    out: list[tuple[str, str]] = []
    placed: set[str] = set()
    for name, value in stored:
        key = name.lower()
        if key not in by_name:
            out.append((name, value))
        elif key not in placed:
            out.extend(by_name[key])
            placed.add(key)
    for key, lines in by_name.items():
        if key not in placed:
            out.extend(lines)
    return tuple(out)


def freshen_on_304(
    stored: StoredMeta,
    response_304_headers: Headers,
    request_time: float,
    response_time: float,
    config: PolicyConfig = DEFAULT_CONFIG,
    single_candidate: bool = False,
) -> StoredMeta | None:
    """The stored response updated by a 304 (RFC 9111 §4.3.4, §3.2), or None if not selected."""
    if not select_for_update(stored.headers, response_304_headers, single_candidate):
        return None
    updates = remove(strip_hop_by_hop(tuple(response_304_headers)), NOT_UPDATED)
    merged = _merge(stored.headers, updates)
    update_names = {name.lower() for name, _ in updates}
    if "age" not in update_names:
        merged = remove(merged, ("age",))
    if "date" not in update_names:
        merged = set_header(merged, "Date", format_http_date(response_time))
    merged = headers_to_store(merged, response_directives(merged, config), config)
    return replace(stored, headers=merged, request_time=request_time, response_time=response_time)
