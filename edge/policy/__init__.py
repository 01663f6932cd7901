"""Pure HTTP caching policy for a shared cache (RFC 9111, 5861, 9211, 9213).

No sockets, no aiohttp, no clock reads: the time (``now``, float seconds since the epoch) is
always passed in, and every step returns a decision as a value (hishel ``_core/_spec.py`` /
Varnish ``builtin.vcl`` style) for the one I/O loop in the proxy to act on. Headers are
``Headers``: a tuple of ``(name, value)`` str pairs (see headers.py).
"""

from edge.policy.cachecontrol import (
    Directives,
    parse_cache_control,
    request_directives,
    response_directives,
)
from edge.policy.cachestatus import add_cache_status, append_cache_status, cache_status
from edge.policy.config import DEFAULT_CONFIG, PolicyConfig
from edge.policy.freshness import (
    StoreDecision,
    StoredMeta,
    age_header_value,
    current_age,
    freshness_lifetime,
    storable,
    stored_lifetime,
)
from edge.policy.headers import Headers, make_headers
from edge.policy.hopbyhop import headers_for_client, headers_to_store, strip_hop_by_hop
from edge.policy.invalidation import invalidation_targets
from edge.policy.request import (
    HitDecision,
    Lookup,
    can_serve_stale_on_error,
    conditional_headers,
    on_hit,
    on_miss,
)
from edge.policy.validation import (
    etag_strong_match,
    etag_weak_match,
    format_http_date,
    freshen_on_304,
    parse_http_date,
)
from edge.policy.vary import vary_key

__all__ = [
    "DEFAULT_CONFIG",
    "Directives",
    "Headers",
    "HitDecision",
    "Lookup",
    "PolicyConfig",
    "StoreDecision",
    "StoredMeta",
    "add_cache_status",
    "age_header_value",
    "append_cache_status",
    "cache_status",
    "can_serve_stale_on_error",
    "conditional_headers",
    "current_age",
    "etag_strong_match",
    "etag_weak_match",
    "format_http_date",
    "freshen_on_304",
    "freshness_lifetime",
    "headers_for_client",
    "headers_to_store",
    "invalidation_targets",
    "make_headers",
    "on_hit",
    "on_miss",
    "parse_cache_control",
    "parse_http_date",
    "request_directives",
    "response_directives",
    "storable",
    "stored_lifetime",
    "strip_hop_by_hop",
    "vary_key",
]
