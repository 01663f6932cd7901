"""Hop-by-hop stripping and the choice of header fields a shared cache stores.

Rules:

* ``HOP_BY_HOP``: Connection, Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding,
  Upgrade (RFC 9110 §7.6.1, RFC 9112 §9.6/§6.1) plus the proxy-specific fields a cache MUST NOT
  store (RFC 9111 §3.1): Proxy-Authenticate, Proxy-Authentication-Info, Proxy-Authorization.
* ``strip_hop_by_hop`` also removes every field named in any Connection field (RFC 9110 §7.6.1:
  "a proxy or gateway MUST ... remove any header or trailer field(s) listed in Connection").
  Connection options are case-insensitive tokens.
* ``headers_to_store`` additionally drops (RFC 9111 §3.1 "exceptions"):
  - fields named by a qualified private (§5.2.2.7: a shared cache "MUST NOT store" them) and by
    a qualified no-cache (§5.2.2.4: they "MUST NOT be sent ... without successful
    revalidation"). Choice: never storing them satisfies that rule without per-field
    revalidation bookkeeping; the client that triggered the fetch still receives them.
  - Set-Cookie, unless ``config.store_set_cookie`` and the response is explicitly ``public``
    (see config.py / freshness.storable): a cookie is per client and is never replayed to
    others from the cache unless the origin said the whole response is for everyone.
* Surrogate-Control is KEPT in storage and removed on the way out by ``headers_for_client``
  (Edge Architecture 1.0 §3: surrogates remove it before forwarding). Choice: the policy is
  re-derived from the stored headers on every hit (cachecontrol.response_directives), so
  dropping it at store time would silently switch a stored response from its
  Surrogate-Control policy to its Cache-Control policy.
* Targeted fields (CDN-Cache-Control) are stored and forwarded (RFC 9213 §3: CDN caches
  "will typically forward" it).
"""

from __future__ import annotations

from edge.policy.cachecontrol import Directives
from edge.policy.config import DEFAULT_CONFIG, PolicyConfig
from edge.policy.headers import Headers, get_all, remove, split_list

__all__ = [
    "HOP_BY_HOP",
    "connection_listed",
    "headers_for_client",
    "headers_to_store",
    "strip_hop_by_hop",
]

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authentication-info",
        "proxy-authorization",
    }
)


def connection_listed(headers: Headers) -> frozenset[str]:
    """Lowercased field names listed as Connection options (RFC 9110 §7.6.1)."""
    names: set[str] = set()
    for value in get_all(headers, "Connection"):
        names.update(option.strip().lower() for option in split_list(value))
    return frozenset(names)


def strip_hop_by_hop(headers: Headers) -> Headers:
    """Remove hop-by-hop fields and the fields the Connection field nominates."""
    return remove(headers, HOP_BY_HOP | connection_listed(headers))


def headers_to_store(
    headers: Headers, directives: Directives, config: PolicyConfig = DEFAULT_CONFIG
) -> Headers:
    """The response header fields a shared cache keeps (RFC 9111 §3.1).

    ``directives`` are the governing ones: ``response_directives(headers, config)``.
    """
    drop = set(directives.private_fields | directives.no_cache_fields)
    if not (config.store_set_cookie and directives.public):
        drop.add("set-cookie")
    return remove(strip_hop_by_hop(headers), drop)


def headers_for_client(headers: Headers) -> Headers:
    """Fields to forward downstream (hit or miss): no hop-by-hop, no Surrogate-Control."""
    return remove(strip_hop_by_hop(headers), ("surrogate-control",))
