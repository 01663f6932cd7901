"""Knobs of the caching policy core (pure data; nothing here reads files or the clock).

Rules:

* ``PolicyConfig`` is frozen and hashable (every field is immutable), so it can key caches
  such as ``cachecontrol.response_directives``'s LRU.
* The cache is always a *shared* cache (RFC 9111 §1, §3): there is deliberately no knob to act
  as a private cache.
* Defaults follow RFC 9111 except where a knob documents a safer CDN convention.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_CONFIG", "HEURISTIC_STATUSES", "UNDERSTOOD_STATUSES", "PolicyConfig"]

# RFC 9110 §15.1: status codes defined as heuristically cacheable (referenced by RFC 9111 §4.2.2).
HEURISTIC_STATUSES = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})

# Final status codes defined by RFC 9110 §15 whose caching-related behaviour is just the generic
# RFC 9111 model, i.e. "understood" in the sense of RFC 9111 §3 (consulted for must-understand,
# §5.2.2.3). 206 and 304 are excluded: see freshness.storable.
UNDERSTOOD_STATUSES = frozenset(
    {200, 201, 202, 203, 204, 205, 300, 301, 302, 303, 305, 307, 308}
    | set(range(400, 418))
    | {421, 422, 426}
    | set(range(500, 506))
)


@dataclass(frozen=True)
class PolicyConfig:
    """Caching policy knobs.

    targeted_fields: RFC 9213 §2.2 target list, most specific first. The first present, valid,
        non-empty field wins and Cache-Control/Expires are then ignored for this cache.
    honour_surrogate_control: apply Surrogate-Control (Edge Architecture 1.0) when no targeted
        field applies; it is always stripped from stored/forwarded responses (hopbyhop.py).
    surrogate_device_token: our device token for ``Surrogate-Control: max-age=60;edge1``
        targeting; None means only untargeted Surrogate-Control directives apply.
    heuristic_enabled / heuristic_fraction / heuristic_max: RFC 9111 §4.2.2 heuristic freshness
        = fraction * (Date - Last-Modified), capped at heuristic_max seconds.
    default_ttl: seconds of freshness for a heuristically cacheable response (RFC 9110 §15.1
        statuses, or public) without explicit freshness; it replaces the heuristic (nginx's
        proxy_cache_valid). 0: RFC heuristics only.
    cacheable_methods: request methods whose responses may be stored (RFC 9111 §3 "understood").
        With "POST", a POST response is stored for later GETs of its URI only under the
        conditions of ``request.post_store_uri`` (explicit freshness, Content-Location = target).
    cache_partial_content: store 206 responses. Off: this core does not combine ranges
        (RFC 9111 §3.3/§3.4), and a cache that does not MUST NOT store 206.
    store_set_cookie: False (default, nginx/Varnish-style safety): a response with Set-Cookie is
        stored only if public, s-maxage or a targeted/surrogate field explicitly allows shared
        caching, and the stored copy never contains Set-Cookie. True: plain RFC 9111 behaviour.
    honour_request_cache_control: obey request no-cache / no-store / max-age / min-fresh /
        Pragma (RFC 9111 §5.2.1 says the client "prefers"; many CDNs ignore these to shield
        origins: each lets any client send every request to the origin).
        max-stale and only-if-cached are always honoured (they never add origin load).
    store_cookie_requests / ignored_cookies: False (default): the answer to a request that
        carries a cookie (other than the ``ignored_cookies`` names, e.g. analytics cookies) is
        stored only when it is public, has s-maxage, a targeted/surrogate field, or
        ``Vary: Cookie`` -- RFC 9111 allows storing it, but an origin that personalises by
        cookie and forgets Vary would leak one visitor's page to the next. True: plain RFC.
    stale_with_s_maxage: RFC 9111 §4.2.4/§5.2.2.10: s-maxage implies proxy-revalidate for a
        shared cache, so by default it forbids serving stale (stale-while-revalidate,
        stale-if-error, max-stale). True lets RFC 5861 directives win over s-maxage, as many
        CDNs do for ``s-maxage=N, stale-while-revalidate=M``.
    """

    targeted_fields: tuple[str, ...] = ("CDN-Cache-Control",)
    honour_surrogate_control: bool = True
    surrogate_device_token: str | None = None
    heuristic_enabled: bool = True
    heuristic_fraction: float = 0.1
    heuristic_max: float = 86400.0
    default_ttl: float = 0.0
    cacheable_methods: frozenset[str] = frozenset({"GET", "HEAD"})
    cache_partial_content: bool = False
    store_set_cookie: bool = False
    honour_request_cache_control: bool = True
    store_cookie_requests: bool = False
    ignored_cookies: frozenset[str] = frozenset()
    stale_with_s_maxage: bool = False

    def __post_init__(self) -> None:
        # keep the instance hashable even if given a list / set
        object.__setattr__(self, "cacheable_methods", frozenset(self.cacheable_methods))
        object.__setattr__(self, "ignored_cookies", frozenset(self.ignored_cookies))
        if not 0.0 <= self.heuristic_fraction <= 1.0:
            raise ValueError("heuristic_fraction must be within [0, 1]")
        if self.heuristic_max < 0:
            raise ValueError("heuristic_max must be >= 0")
        if self.default_ttl < 0:
            raise ValueError("default_ttl must be >= 0")
        if isinstance(self.targeted_fields, str):
            raise TypeError("targeted_fields must be a tuple of field names, not a str")
        object.__setattr__(self, "targeted_fields", tuple(self.targeted_fields))


DEFAULT_CONFIG = PolicyConfig()
