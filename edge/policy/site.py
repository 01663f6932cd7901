"""Which site a request is for, and the site's rules that shape keys and answers (pure).

- Host matching (``SiteTable.select``): the request's normalised authority without its port;
  an exact name wins over a wildcard, and a longer wildcard over a shorter one;
  ``*.example.com`` matches one or more labels before ``example.com`` (as Cloudflare and
  Fastly do; nginx's ``*.example.com`` too), never ``example.com`` itself. No match: the
  default site (the top-level ``[[origins]]``) when there is one, else None (the edge
  answers 421 or 404 and forwards nothing).
- Cache key rules (``site_key``): the query string is kept whole, dropped, reduced to the
  listed parameters or stripped of them, and optionally sorted; listed request headers and
  cookies are appended, so two requests share an entry only when those values agree.
- ``redirect_location``: the 308 target for a plain-HTTP request to a site that wants HTTPS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar
from urllib.parse import quote

from geoconfig.sites import CacheKeyRules

T = TypeVar("T")


def host_only(authority: str) -> str:
    """The host part of a normalised authority (``[v6]:port`` and ``name:port`` forms)."""
    if authority.startswith("["):
        return authority[: authority.find("]") + 1]
    return authority.rpartition(":")[0] if ":" in authority else authority


@dataclass(slots=True)
class SiteTable(Generic[T]):
    """Host patterns to values (a site and what the edge built for it)."""

    exact: dict[str, T] = field(default_factory=dict)
    wildcards: list[tuple[str, T]] = field(default_factory=list)  # (".example.com", value)
    default: T | None = None

    @classmethod
    def build(cls, entries: Iterable[tuple[Iterable[str], T]],
              default: T | None = None) -> SiteTable[T]:
        table: SiteTable[T] = cls(default=default)
        for hosts, value in entries:
            for host in hosts:
                if host.startswith("*."):
                    table.wildcards.append((host[1:], value))
                else:
                    table.exact[host] = value
        table.wildcards.sort(key=lambda w: -len(w[0]))  # the longest suffix first
        return table

    def select(self, authority: str) -> T | None:
        if not self.exact and not self.wildcards:  # no [[sites]]: every host is the default's
            return self.default
        host = host_only(authority.lower())
        hit = self.exact.get(host)
        if hit is not None:
            return hit
        for suffix, value in self.wildcards:
            if host.endswith(suffix) and len(host) > len(suffix):
                return value
        return self.default


def _split_query(query: str) -> list[tuple[str, str]]:
    out = []
    for part in query.split("&"):
        if part:
            name, _, _value = part.partition("=")
            out.append((name, part))
    return out


def site_key(base_key: str, rules: CacheKeyRules,
             header: Callable[[str], str | None]) -> str:
    """The cache key of a request under a site's rules; ``base_key`` is
    ``scheme://authority/path[?query]``, ``header(name)`` the request's header or None."""
    key = base_key
    if rules.query != "all" or rules.sort_query:
        path, _, query = base_key.partition("?")
        if rules.query == "none":
            parts: list[tuple[str, str]] = []
        else:
            parts = _split_query(query)
            listed = set(rules.query_params)
            if rules.query == "keep":
                parts = [p for p in parts if p[0] in listed]
            elif rules.query == "ignore":
                parts = [p for p in parts if p[0] not in listed]
        if rules.sort_query:
            parts.sort()
        key = path + ("?" + "&".join(p[1] for p in parts) if parts else "")
    extra = []
    for name in rules.headers:
        value = header(name)
        extra.append(f"h:{name}={quote(value, safe='') if value is not None else '-'}")
    if rules.cookies:
        jar = cookies_of(header("cookie") or "")
        for name in rules.cookies:
            value = jar.get(name)
            extra.append(f"c:{name}={quote(value, safe='') if value is not None else '-'}")
    if extra:
        key += "#" + "&".join(extra)  # '#' never occurs in a normalised target
    return key


def cookies_of(header: str) -> dict[str, str]:
    """The first value of each cookie in a Cookie header (RFC 6265 §5.4 form)."""
    jar: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name and name not in jar:
            jar[name] = value
    return jar


def redirect_location(authority: str, target: str, https_port: int) -> str:
    """``https://host[:port]/target`` for a 308 from plain HTTP."""
    host = host_only(authority)
    port = "" if https_port == 443 else f":{https_port}"
    return f"https://{host}{port}{target}"


def with_header(response: bytes, line: bytes) -> bytes:
    """A serialised HTTP/1.1 response with one more header line after the status line."""
    end = response.find(b"\r\n")
    if end < 0:
        return response
    return response[: end + 2] + line + response[end + 2:]
