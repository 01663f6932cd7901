"""What to do with the origin's answer to a cache fill, and with a fill that failed.

The lookup side (request.py) decides whether a stored response may be used; this is the other
half, as values the proxy acts on (Varnish's vcl_backend_response / vcl_backend_error).

``on_response`` rules, first match wins (RFC 9111 §3, §4.2.4, §4.3.4; RFC 5861 §4):

 1. status outside 200-599 (1xx are interim and never reach here; 600-999 are not HTTP) ->
    BAD_GATEWAY "invalid-status". The status is never echoed in Cache-Status fwd-status.
 2. 304:
    - to our own conditional request (``validating``): the stored response it was built from
      is the one candidate, so a 304 selects it even without validators (§4.3.4 selects by
      validator only when there are several candidates) -> FRESHEN with the updated metadata;
      if its validator names another representation -> REFETCH unconditionally;
    - to an unconditional request -> BAD_GATEWAY "unexpected-304" (nothing to freshen, and
      a 304 has no body to give the client).
 3. 5xx while a stored response exists that stale-if-error allows (request.py's
    ``can_serve_stale_on_error``) -> STALE "stale-if-error".
 4. storable (freshness.storable over the request headers as forwarded):
    - with a Content-Length over ``max_object_bytes`` -> PASS "too-large", marked;
    - otherwise -> STORE (the body is read up to the limit; one that grows past it is passed
      as "too-large" and marked by the proxy).
 5. not storable -> PASS with storable's reason; marked hit-for-miss unless the reason is the
    request's own (Authorization, request no-store, the method): a marker is for answers the
    origin would give every request of that variant, so one client never makes the next one
    skip the cache.

``on_error`` (the origin could not be reached, or failed mid-way; RFC 9111 §4.2.4
"disconnected", §5.2.2.2, §5.2.2.4): a stored response is served (fresh, or stale) unless it
must be validated before any use -- no-cache (also from CDN-Cache-Control), must-revalidate,
proxy-revalidate, s-maxage -- or it is a hit-for-miss marker; otherwise 504 after a timeout,
502 for everything else.

``retention``: how long a stored response is kept past its freshness -- the longest of its
stale-while-revalidate and stale-if-error windows and ``keep`` (for revalidation and for
serving while disconnected).

``after_soft_purge``: a soft-purged entry is never used without validation.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from edge.policy.cachecontrol import Directives
from edge.policy.config import DEFAULT_CONFIG, PolicyConfig
from edge.policy.freshness import StoredMeta, storable
from edge.policy.headers import Headers
from edge.policy.request import Lookup, can_serve_stale_on_error, stale_forbidden
from edge.policy.validation import freshen_on_304

__all__ = [
    "REQUEST_REASONS",
    "Action",
    "ErrorDecision",
    "ResponseDecision",
    "after_soft_purge",
    "on_error",
    "on_response",
    "retention",
]

# storable() reasons that come from the request, not the response: no hit-for-miss marker
REQUEST_REASONS = frozenset({"method", "request-no-store", "authorization", "cookie"})


class Action(enum.Enum):
    STORE = "store"
    FRESHEN = "freshen"
    REFETCH = "refetch"
    STALE = "stale"
    PASS = "pass"
    BAD_GATEWAY = "bad-gateway"


@dataclass(frozen=True, slots=True)
class ResponseDecision:
    action: Action
    reason: str  # sf-token, usable as Cache-Status ``detail``
    mark: bool = False  # PASS: leave a hit-for-miss marker for this variant
    meta: StoredMeta | None = None  # FRESHEN: the stored response as the 304 updated it

    @property
    def valid_status(self) -> bool:
        return self.reason != "invalid-status"


def on_response(
    status: int,
    response_headers: Headers,
    request_headers: Headers,
    client_headers: Headers,
    stored: StoredMeta | None,
    validating: bool,
    content_length: int | None,
    max_object_bytes: int,
    request_time: float,
    response_time: float,
    config: PolicyConfig = DEFAULT_CONFIG,
) -> ResponseDecision:
    """The decision for a fill's response (see the module rules).

    ``request_headers``: as forwarded to the origin (they decide storing); ``client_headers``:
    the client's own (their stale-if-error / max-stale bound serving stale); ``stored``: the
    stored response this fill would replace or validate; ``validating``: the request carried
    conditionals built from ``stored``."""
    if not 200 <= status <= 599:
        return ResponseDecision(Action.BAD_GATEWAY, "invalid-status")
    if status == 304:
        if not validating or stored is None:
            return ResponseDecision(Action.BAD_GATEWAY, "unexpected-304")
        meta = freshen_on_304(stored, response_headers, request_time, response_time, config,
                              single_candidate=True)
        if meta is None:
            return ResponseDecision(Action.REFETCH, "validator-mismatch")
        return ResponseDecision(Action.FRESHEN, "revalidated", meta=meta)
    if status >= 500 and stored is not None and can_serve_stale_on_error(
            stored, client_headers, response_time, config):
        return ResponseDecision(Action.STALE, "stale-if-error")
    decision = storable("GET", request_headers, status, response_headers, config)
    if decision:
        if content_length is not None and content_length > max_object_bytes:
            return ResponseDecision(Action.PASS, "too-large", mark=True)
        return ResponseDecision(Action.STORE, decision.reason)
    return ResponseDecision(Action.PASS, decision.reason,
                            mark=decision.reason not in REQUEST_REASONS)


@dataclass(frozen=True, slots=True)
class ErrorDecision:
    serve_stored: bool
    status: int  # 502 or 504 when not serving the stored response
    reason: str


def on_error(stored: StoredMeta | None, usable: bool, timed_out: bool,
             config: PolicyConfig = DEFAULT_CONFIG) -> ErrorDecision:
    """A fill that failed: serve what is stored, or 502/504 (see the module rules).
    ``usable``: ``stored`` is a real response (not a hit-for-miss marker)."""
    if stored is not None and usable:
        d = stored.directives(config)
        if not d.no_cache and stale_forbidden(d, config) is None:
            return ErrorDecision(True, 200, "origin-unreachable")
    return ErrorDecision(False, 504 if timed_out else 502, "origin-unreachable")


def retention(directives: Directives, fresh_until: float, keep: float) -> float:
    """Epoch seconds until which a stored response is kept (see the module rules)."""
    windows = max(directives.stale_while_revalidate or 0, directives.stale_if_error or 0)
    return fresh_until + max(windows, keep)


def after_soft_purge(action: Lookup, soft_purged: bool) -> Lookup:
    """A soft-purged entry that would be used as it is must be validated first."""
    if soft_purged and action in (Lookup.FRESH, Lookup.STALE_WHILE_REVALIDATE):
        return Lookup.MUST_VALIDATE
    return action
