"""What to do with a request that found (or did not find) a stored response.

Rules (``on_hit``; first matching step wins, each returns a ``HitDecision`` value):

 1. request no-cache (or Pragma: no-cache, see cachecontrol.py) -> validate
    ("request-no-cache", RFC 9111 §5.2.1.4)
 2. response no-cache, unqualified -> validate ("no-cache", §5.2.2.4). The qualified form needs
    nothing here: those fields were never stored (hopbyhop.py).
 3. request max-age=N and current_age > N -> validate ("request-max-age", §5.2.1.1)
 4. fresh (freshness_lifetime > current_age, §4.2): FRESH, unless request min-fresh=N and
    lifetime < age + N -> validate ("request-min-fresh", §5.2.1.3)
 5. stale and serving stale is forbidden (§4.2.4): must-revalidate (§5.2.2.2),
    proxy-revalidate (§5.2.2.8), s-maxage (§5.2.2.10 implies proxy-revalidate in a shared
    cache; ``config.stale_with_s_maxage`` lifts this) -> validate with that directive as reason
 6. stale and the client asked for min-fresh -> validate ("request-min-fresh")
 7. request max-stale (no value = any) covers the staleness -> STALE ("request-max-stale",
    §5.2.1.2)
 8. response stale-while-revalidate=N covers it (staleness <= N) -> STALE_WHILE_REVALIDATE
    (serve, refresh in the background; RFC 5861 §3)
 9. otherwise validate ("stale", §4.3.1)
 "validate" is MUST_VALIDATE, or GATEWAY_TIMEOUT when the request has only-if-cached
 (§5.2.1.7: a stored response consistent with the other constraints, or 504).
 ``on_miss``: MISS, or GATEWAY_TIMEOUT for only-if-cached.

``can_serve_stale_on_error`` (RFC 5861 §4, for 500/502/503/504 or unreachable origin):
  response no-cache -> False (it is never usable unvalidated); fresh -> True; stale and
  forbidden as in step 5 -> False. The window is the
  request's stale-if-error if present (the client's own upper limit), else the request's
  max-stale, else -- unless the request said no-cache -- the response's stale-if-error;
  staleness <= window.

``post_store_uri`` (RFC 9111 §3, RFC 9110 §9.3.3: a POST response may be reused for a later
  GET or HEAD of its URI): only when POST is in ``config.cacheable_methods`` (off by default),
  the status is 200 or 203, the response is storable with *explicit* freshness (max-age,
  s-maxage, Expires or a targeted field: never heuristics, never ``public`` alone), has no
  Vary (the POST's header set is not what a GET would be matched by), and its
  Content-Location, resolved against the target, is the target itself. Returns the URI to
  store under (the target's normalised form), else None. The POST itself is always forwarded.

``conditional_headers`` (§4.3.1): If-None-Match with the stored ETag and If-Modified-Since with
  the stored Last-Modified (only if it is a valid HTTP-date); both when both exist (a server
  evaluates If-None-Match first, RFC 9110 §13.2.2).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from urllib.parse import urljoin

from edge.policy.cachecontrol import Directives, request_directives
from edge.policy.config import DEFAULT_CONFIG, PolicyConfig
from edge.policy.freshness import StoredMeta, current_age, storable, stored_lifetime
from edge.policy.headers import Headers, get_first, has
from edge.policy.invalidation import normalise_uri
from geoconfig.httpdate import parse_http_date

__all__ = [
    "HitDecision",
    "Lookup",
    "can_serve_stale_on_error",
    "conditional_headers",
    "on_hit",
    "on_miss",
    "post_store_uri",
    "stale_forbidden",
]


class Lookup(enum.Enum):
    FRESH = "fresh"
    STALE = "stale"
    STALE_WHILE_REVALIDATE = "stale-while-revalidate"
    MUST_VALIDATE = "must-validate"
    GATEWAY_TIMEOUT = "gateway-timeout"
    MISS = "miss"


@dataclass(frozen=True)
class HitDecision:
    action: Lookup
    reason: str  # sf-token, usable as Cache-Status ``detail``
    age: float = 0.0
    lifetime: float = 0.0

    @property
    def staleness(self) -> float:
        return max(0.0, self.age - self.lifetime)

    @property
    def ttl(self) -> float:
        """Remaining freshness (negative when stale), as in Cache-Status ``ttl``."""
        return self.lifetime - self.age


def stale_forbidden(d: Directives, config: PolicyConfig = DEFAULT_CONFIG) -> str | None:
    """The directive forbidding a stale response to be served (RFC 9111 §4.2.4), if any."""
    if d.must_revalidate:
        return "must-revalidate"
    if d.proxy_revalidate:
        return "proxy-revalidate"
    if d.s_maxage is not None and not config.stale_with_s_maxage:
        return "s-maxage"
    return None


def on_miss(request_headers: Headers, config: PolicyConfig = DEFAULT_CONFIG) -> HitDecision:
    if request_directives(request_headers, config).only_if_cached:
        return HitDecision(Lookup.GATEWAY_TIMEOUT, "only-if-cached")
    return HitDecision(Lookup.MISS, "miss")


def on_hit(
    request_headers: Headers,
    stored: StoredMeta,
    now: float,
    config: PolicyConfig = DEFAULT_CONFIG,
) -> HitDecision:
    """Serve, serve stale, or validate (RFC 9111 §4, RFC 5861 §3)."""
    req = request_directives(request_headers, config)
    d = stored.directives(config)
    age = current_age(stored, now)
    lifetime = stored_lifetime(stored, config)

    def decide(action: Lookup, reason: str) -> HitDecision:
        if action is Lookup.MUST_VALIDATE and req.only_if_cached:
            action = Lookup.GATEWAY_TIMEOUT
        return HitDecision(action, reason, age, lifetime)

    if req.no_cache:
        return decide(Lookup.MUST_VALIDATE, "request-no-cache")
    if d.no_cache:
        return decide(Lookup.MUST_VALIDATE, "no-cache")
    if req.max_age is not None and age > req.max_age:
        return decide(Lookup.MUST_VALIDATE, "request-max-age")
    if lifetime > age:
        if req.min_fresh is not None and lifetime < age + req.min_fresh:
            return decide(Lookup.MUST_VALIDATE, "request-min-fresh")
        return decide(Lookup.FRESH, "fresh")
    staleness = age - lifetime
    forbidden = stale_forbidden(d, config)
    if forbidden:
        return decide(Lookup.MUST_VALIDATE, forbidden)
    if req.min_fresh is not None:
        return decide(Lookup.MUST_VALIDATE, "request-min-fresh")
    if req.max_stale is not None and staleness <= req.max_stale:
        return decide(Lookup.STALE, "request-max-stale")
    if d.stale_while_revalidate is not None and staleness <= d.stale_while_revalidate:
        return decide(Lookup.STALE_WHILE_REVALIDATE, "stale-while-revalidate")
    return decide(Lookup.MUST_VALIDATE, "stale")


def can_serve_stale_on_error(
    stored: StoredMeta,
    request_headers: Headers,
    now: float,
    config: PolicyConfig = DEFAULT_CONFIG,
) -> bool:
    """May ``stored`` answer a request whose forward/validation failed (RFC 5861 §4)?"""
    d = stored.directives(config)
    req = request_directives(request_headers, config)
    if d.no_cache:  # never usable without successful validation (§5.2.2.4)
        return False
    staleness = current_age(stored, now) - stored_lifetime(stored, config)
    if staleness < 0:
        return True
    if stale_forbidden(d, config):
        return False
    window: float | None
    if req.stale_if_error is not None:
        window = req.stale_if_error
    elif req.max_stale is not None:
        window = req.max_stale
    elif req.no_cache:
        return False
    else:
        window = d.stale_if_error
    return window is not None and staleness <= window


def conditional_headers(stored: StoredMeta) -> Headers:
    """Validator request fields for revalidating ``stored`` (RFC 9111 §4.3.1)."""
    out: list[tuple[str, str]] = []
    etag = get_first(stored.headers, "ETag")
    if etag is not None and etag.strip():
        out.append(("If-None-Match", etag.strip()))
    last_modified = get_first(stored.headers, "Last-Modified")
    if last_modified is not None and parse_http_date(last_modified) is not None:
        out.append(("If-Modified-Since", last_modified.strip()))
    return tuple(out)


def post_store_uri(target_uri: str, status: int, request_headers: Headers,
                   response_headers: Headers, config: PolicyConfig = DEFAULT_CONFIG) -> str | None:
    """Where a POST response may be stored for later GETs (see the module rules), or None."""
    if "POST" not in config.cacheable_methods or status not in (200, 203):
        return None
    decision = storable("POST", request_headers, status, response_headers, config)
    if not decision.store or decision.reason != "explicit" or has(response_headers, "Vary"):
        return None
    location = get_first(response_headers, "Content-Location")
    if location is None or not location.strip():
        return None
    target = normalise_uri(target_uri)
    try:
        resolved = normalise_uri(urljoin(target, location.strip()))
    except ValueError:
        return None
    return target if resolved == target else None
