"""Storability, freshness lifetime and age for a shared cache (RFC 9111 §3, §4.2).

Rules (each check returns a value; the first failing one wins, Varnish builtin.vcl style):

``storable`` (RFC 9111 §3, shared cache):
  1. method understood and cacheable: ``config.cacheable_methods`` (GET, HEAD) -> else "method"
  2. status final (RFC 9110 §15: >= 200) and < 600 -> else "status-not-final"
  3. 304 is never stored, only used to freshen (§4.3.4) -> "not-modified"
  4. 206 needs range support this core lacks (§3.3, §3.4) -> "partial-content" unless
     ``config.cache_partial_content``
  5. request no-store (§5.2.1.5) -> "request-no-store"
  6. must-understand (§5.2.2.3): status not understood -> "must-understand"; understood ->
     no-store is ignored. Otherwise response no-store (§5.2.2.5) -> "no-store"
  7. unqualified private, we are shared (§5.2.2.7) -> "private" (qualified private: the fields
     are stripped, hopbyhop.headers_to_store)
  8. Authorization in the request requires must-revalidate, public or s-maxage (§3.5)
     -> "authorization"
  9. ``Vary: *`` can never match a later request (§4.1) -> "vary-star"; a qualified
     private/no-cache naming a field the policy itself is read from (Cache-Control, Expires,
     Vary, Date, Age, Surrogate-Control, targeted fields) -> "qualified-policy-field" (the
     fields must not be stored, and storing without them would change what a hit means)
 10. Set-Cookie safety default (config.store_set_cookie=False): needs public, s-maxage or a
     targeted/surrogate field, unless Set-Cookie is named by qualified no-cache/private
     -> "set-cookie"
 11. needs explicit freshness (max-age, s-maxage, Expires) -> "explicit", or public -> "public",
     or a heuristically cacheable status (§4.2.2, RFC 9110 §15.1) -> "heuristic";
     else "no-freshness"
  "Directives" are those governing this cache (cachecontrol.response_directives).

``freshness_lifetime`` (§4.2.1, first match): s-maxage > max-age > Expires - Date (only when
  Cache-Control governs; RFC 9213 §2.2) > heuristic (§4.2.2): ``heuristic_fraction`` x
  (Date - Last-Modified) capped at ``heuristic_max``, only for heuristically cacheable statuses
  or ``public``. Invalid Expires (e.g. "0") or conflicting Expires lines -> 0 (§5.3, §4.2.1).
  A missing or invalid Date is replaced by response_time (RFC 9110 §6.6.1).

``current_age`` (§4.2.3), exactly:
  apparent_age = max(0, response_time - date_value); response_delay = response_time -
  request_time; corrected_age_value = age_value + response_delay; corrected_initial_age =
  max(apparent_age, corrected_age_value); resident_time = now - response_time;
  current_age = corrected_initial_age + resident_time. age_value is the Age field (§5.1;
  0 if absent/invalid, capped at 2^31). Not clamped: see ``age_header_value``.

``StoredMeta`` holds only primitives (derived values are recomputed from the headers, with an
LRU over directive parsing), so ``to_json``/``from_json`` round-trip through JSON (no pickle).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from edge.policy.cachecontrol import DELTA_MAX, Directives, request_directives, response_directives
from edge.policy.config import DEFAULT_CONFIG, HEURISTIC_STATUSES, UNDERSTOOD_STATUSES, PolicyConfig
from edge.policy.headers import Headers, get_all, get_combined, get_first, has, split_list
from geoconfig.httpdate import parse_http_date

__all__ = [
    "StoreDecision",
    "StoredMeta",
    "age_header_value",
    "age_value",
    "current_age",
    "date_value",
    "freshness_lifetime",
    "storable",
    "stored_lifetime",
]

_JSON_VERSION = 1
_POLICY_FIELDS = frozenset({"cache-control", "expires", "vary", "date", "age", "surrogate-control"})


@dataclass(frozen=True)
class StoreDecision:
    store: bool
    reason: str  # an sf-token, usable as Cache-Status ``detail``

    def __bool__(self) -> bool:
        return self.store


@dataclass(frozen=True)
class StoredMeta:
    """Everything the policy needs about a stored response (the body lives elsewhere)."""

    status: int
    headers: Headers
    request_time: float
    response_time: float
    request_method: str = "GET"
    vary_key: str = ""

    def directives(self, config: PolicyConfig = DEFAULT_CONFIG) -> Directives:
        return response_directives(self.headers, config)

    def to_json(self) -> dict[str, Any]:
        return {
            "v": _JSON_VERSION,
            "status": self.status,
            "headers": [[n, v] for n, v in self.headers],
            "request_time": self.request_time,
            "response_time": self.response_time,
            "request_method": self.request_method,
            "vary_key": self.vary_key,
        }

    @classmethod
    def from_json(cls, data: Any) -> StoredMeta:
        """Inverse of ``to_json``; raises ValueError on anything malformed."""
        if not isinstance(data, dict) or data.get("v") != _JSON_VERSION:
            raise ValueError("not a StoredMeta document")
        try:
            headers = tuple((str(n), str(v)) for n, v in data["headers"])
            status, method, vary = data["status"], data["request_method"], data["vary_key"]
            times = float(data["request_time"]), float(data["response_time"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed StoredMeta: {exc}") from exc
        if type(status) is not int or not isinstance(method, str) or not isinstance(vary, str):
            raise ValueError("malformed StoredMeta field types")
        if not all(math.isfinite(t) for t in times):
            raise ValueError("non-finite time")
        return cls(status, headers, times[0], times[1], method, vary)


def _has_explicit_freshness(headers: Headers, d: Directives) -> bool:
    return (
        d.max_age is not None
        or d.s_maxage is not None
        or (d.expires_applies and has(headers, "Expires"))
    )


def storable(
    request_method: str,
    request_headers: Headers,
    status: int,
    response_headers: Headers,
    config: PolicyConfig = DEFAULT_CONFIG,
) -> StoreDecision:
    """May a shared cache store this response (RFC 9111 §3)?"""
    if request_method not in config.cacheable_methods:
        return StoreDecision(False, "method")
    if not 200 <= status < 600:
        return StoreDecision(False, "status-not-final")
    if status == 304:
        return StoreDecision(False, "not-modified")
    if status == 206 and not config.cache_partial_content:
        return StoreDecision(False, "partial-content")
    if request_directives(request_headers, config).no_store:
        return StoreDecision(False, "request-no-store")
    d = response_directives(response_headers, config)
    if d.must_understand:
        understood = UNDERSTOOD_STATUSES | ({206} if config.cache_partial_content else set())
        if status not in understood:
            return StoreDecision(False, "must-understand")
    elif d.no_store:
        return StoreDecision(False, "no-store")
    if d.private:
        return StoreDecision(False, "private")
    if has(request_headers, "Authorization") and not (
        d.public or d.must_revalidate or d.s_maxage is not None
    ):
        return StoreDecision(False, "authorization")
    vary = get_combined(response_headers, "Vary")
    if any(member.strip() == "*" for member in split_list(vary)):
        return StoreDecision(False, "vary-star")
    if (
        not config.store_cookie_requests
        and carries_cookies(request_headers, config.ignored_cookies)
        and not (d.public or d.s_maxage is not None or d.source not in ("", "cache-control"))
        and "cookie" not in {m.strip().lower() for m in split_list(vary)}
    ):
        return StoreDecision(False, "cookie")
    policy_fields = _POLICY_FIELDS | {name.lower() for name in config.targeted_fields}
    if policy_fields & (d.no_cache_fields | d.private_fields):
        return StoreDecision(False, "qualified-policy-field")
    if (
        not config.store_set_cookie
        and has(response_headers, "Set-Cookie")
        and "set-cookie" not in (d.no_cache_fields | d.private_fields)
        and not (d.public or d.s_maxage is not None or d.source not in ("", "cache-control"))
    ):
        return StoreDecision(False, "set-cookie")
    if _has_explicit_freshness(response_headers, d):
        return StoreDecision(True, "explicit")
    if d.public:
        return StoreDecision(True, "public")
    if status in HEURISTIC_STATUSES:
        return StoreDecision(True, "heuristic")
    return StoreDecision(False, "no-freshness")


def carries_cookies(request_headers: Headers, ignored: frozenset[str] = frozenset()) -> bool:
    """Does the request send a cookie that is not in ``ignored`` (names, case-sensitive)?"""
    for value in get_all(request_headers, "Cookie"):
        for pair in value.split(";"):
            name = pair.split("=", 1)[0].strip()
            if name and name not in ignored:
                return True
    return False


def date_value(headers: Headers, response_time: float) -> float:
    """The Date field, or response_time when missing/invalid (RFC 9110 §6.6.1)."""
    parsed = parse_http_date(get_first(headers, "Date"), now=response_time)
    return response_time if parsed is None else parsed


def age_value(headers: Headers) -> int:
    """The Age field as delta-seconds (RFC 9111 §5.1); 0 if absent or invalid."""
    members = split_list(get_first(headers, "Age"))
    if not members or not members[0].isascii() or not members[0].isdigit():
        return 0
    return min(int(members[0]), DELTA_MAX)


def freshness_lifetime(
    response_headers: Headers,
    directives: Directives,
    response_time: float,
    config: PolicyConfig = DEFAULT_CONFIG,
    *,
    status: int,
) -> float:
    """Freshness lifetime in seconds (RFC 9111 §4.2.1); 0.0 means already stale."""
    if directives.s_maxage is not None:
        return float(directives.s_maxage)
    if directives.max_age is not None:
        return float(directives.max_age)
    date = date_value(response_headers, response_time)
    expires = get_all(response_headers, "Expires") if directives.expires_applies else ()
    if expires:
        if len({v.strip() for v in expires}) > 1:
            return 0.0
        parsed = parse_http_date(expires[0], now=response_time)
        return 0.0 if parsed is None else max(0.0, parsed - date)
    if not (status in HEURISTIC_STATUSES or directives.public):
        return 0.0
    if config.default_ttl > 0:  # the operator's TTL for answers without explicit freshness
        return config.default_ttl
    if not config.heuristic_enabled:
        return 0.0
    last_modified = parse_http_date(get_first(response_headers, "Last-Modified"), now=response_time)
    if last_modified is None or last_modified > date:
        return 0.0
    return min(config.heuristic_max, config.heuristic_fraction * (date - last_modified))


def stored_lifetime(stored: StoredMeta, config: PolicyConfig = DEFAULT_CONFIG) -> float:
    return freshness_lifetime(
        stored.headers,
        stored.directives(config),
        stored.response_time,
        config,
        status=stored.status,
    )


def current_age(stored: StoredMeta, now: float) -> float:
    """RFC 9111 §4.2.3 current_age, term for term."""
    apparent_age = max(0.0, stored.response_time - date_value(stored.headers, stored.response_time))
    response_delay = stored.response_time - stored.request_time
    corrected_age_value = age_value(stored.headers) + response_delay
    corrected_initial_age = max(apparent_age, corrected_age_value)
    resident_time = now - stored.response_time
    return corrected_initial_age + resident_time


def age_header_value(age: float) -> str:
    """Age field value to send: whole seconds, floored, within [0, 2^31] (RFC 9111 §5.1)."""
    return str(int(min(max(age, 0.0), DELTA_MAX)))
