"""Invalidation after unsafe requests (RFC 9111 §4.4).

Rules:

* Safe methods are GET, HEAD, OPTIONS and TRACE (RFC 9110 §9.2.1). Every other method --
  including unknown ones, whose safety is unknown -- is unsafe (§4.4). Method names are
  case-sensitive (RFC 9110 §9.1), so ``get`` is an unknown, unsafe method.
* Only a non-error status invalidates: 2xx or 3xx (§4.4 "non-error status code").
* The target URI is always invalidated (MUST). Location and Content-Location (MAY; we do)
  are resolved against the target URI (RFC 9110 §10.2.2, §8.7 allow relative references;
  ``urllib.parse.urljoin``) and invalidated only when their origin -- scheme, host,
  port (RFC 9110 §4.3.1) -- equals the target's (§4.4 MUST NOT otherwise: prevents a response
  from purging another site's entries). Scheme and host compare case-insensitively and a
  default port (80 for http, 443 for https) equals an omitted one.
* Results are normalised with ``normalise_uri`` (RFC 3986 §6.2.2.1 / §6.2.3: scheme and host
  lowercased, default port and fragment dropped, empty path -> "/"; path and query untouched),
  unique, and in order: target first, then Location, then Content-Location. The proxy should
  build its primary cache keys with the same function.
"""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit, urlunsplit

from edge.policy.headers import Headers, get_first
from edge.policy.target import url_key

__all__ = ["SAFE_METHODS", "invalidation_targets", "is_unsafe", "normalise_uri", "same_origin"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def is_unsafe(method: str) -> bool:
    return method not in SAFE_METHODS


def _origin(uri: str) -> tuple[str, str, int | None] | None:
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if not scheme or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS.get(scheme)


def normalise_uri(uri: str) -> str:
    """Syntax-normalised absolute URI (see module rules); unparseable input is returned as is.
    A valid http(s) URI gets exactly the form of the edge's cache keys (``target.url_key``)."""
    key = url_key(uri)
    if key is not None:
        return key
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return uri
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port in (None, _DEFAULT_PORTS.get(scheme)) else f"{host}:{port}"
    if parts.username is not None:
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{netloc}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def same_origin(a: str, b: str) -> bool:
    oa = _origin(a)
    return oa is not None and oa == _origin(b)


def invalidation_targets(
    method: str, request_url: str, status: int, response_headers: Headers
) -> list[str]:
    """Absolute URIs whose stored responses must be invalidated (RFC 9111 §4.4)."""
    if not is_unsafe(method) or not 200 <= status < 400:
        return []
    target = normalise_uri(request_url)
    out = [target]
    for name in ("Location", "Content-Location"):
        value = get_first(response_headers, name)
        if value is None or not value.strip():
            continue
        try:
            resolved = normalise_uri(urljoin(target, value.strip()))
        except ValueError:
            continue
        if same_origin(resolved, target) and resolved not in out:
            out.append(resolved)
    return out
