"""Cache directives: Cache-Control, targeted fields (CDN-Cache-Control) and Surrogate-Control.

Rules:

* Syntax (RFC 9111 §5.2): ``#( token [ "=" ( token / quoted-string ) ] )``; names compare
  case-insensitively; recipients accept both the token and the quoted-string form of an argument
  (§5.2), so ``max-age="5"`` means 5. Elements that are not of that shape are skipped; the
  parser never raises. Unknown directives are kept in ``Directives.items`` (§5.2.3).
* delta-seconds (§1.2.2): 1*DIGIT; a value larger than 2^31 is taken as 2^31. A delta-seconds
  directive with a missing, non-digit or negative argument is *invalid*; the same directive
  repeated with different values *conflicts* (§4.2.1). Both are handled per directive:
  max-age / s-maxage -> 0 (§4.2.1: such a response "should be considered stale"; for a request
  max-age, 0 forces validation); min-fresh, max-stale=N, stale-while-revalidate,
  stale-if-error -> ignored (the most restrictive reading: no stale permission is granted).
  ``max-stale`` with no argument means any staleness (§5.2.1.2) -> ``math.inf``.
* no-cache / private (§5.2.2.4, §5.2.2.7): unqualified -> the boolean is True; a qualified
  form (``no-cache="Set-Cookie"`` or token form) -> lowercased names in ``*_fields``. An empty
  qualifier (``no-cache=""``) is treated as unqualified (most restrictive).
* Which field governs the cache's storability/freshness (``response_directives``):
  1. the first field of ``config.targeted_fields`` that is present, valid and non-empty
     (RFC 9213 §2.2); it is an RFC 8941 Dictionary (§2.1) and any parse error makes it absent;
  2. else Surrogate-Control (W3C Edge Architecture Specification 1.0 §3), if it carries an
     applicable max-age, no-store or no-store-remote;
  3. else Cache-Control (and Expires, see ``Directives.expires_applies``).
  The winner applies wholesale: RFC 9213 §2.2 says the cache "MUST ignore the Cache-Control and
  Expires header fields" when a targeted field is usable. Precedence justification: the targeted
  field is the standards-track (IETF) mechanism, explicitly designed to override Cache-Control,
  with defined error handling and an operator-configured target list, so an origin sending it
  has the most specific and most recent intent; Surrogate-Control is a 2001 W3C Note with
  vendor-divergent parsing, yet still addressed to surrogates only, so it outranks the generic
  Cache-Control. Surrogate-Control is therefore honoured only as a fallback, and only max-age
  (the "+extension" is ignored) and no-store / no-store-remote (we are a remote surrogate).
  Directives suffixed ``;token`` apply only if the token is ``config.surrogate_device_token``.
* Request directives (§5.2.1): ``request_directives`` parses request Cache-Control; without one,
  ``Pragma: no-cache`` is read as ``no-cache`` (RFC 7234 §5.4 compatibility; RFC 9111 §5.4
  deprecates Pragma). ``config.honour_request_cache_control=False`` drops request no-cache,
  no-store, max-age and min-fresh (each would let any client send requests to the origin).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

from edge.policy import sf
from edge.policy.config import DEFAULT_CONFIG, PolicyConfig
from edge.policy.headers import Headers, get_all, get_combined, split_list

__all__ = [
    "DELTA_MAX",
    "Directives",
    "parse_cache_control",
    "parse_surrogate_control",
    "parse_targeted",
    "request_directives",
    "response_directives",
]

DELTA_MAX = 2**31  # RFC 9111 §1.2.2
Item = tuple[str, str | None]
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")


def _delta(values: list[str | None]) -> tuple[bool, int | None]:
    """(ok, value) for a delta-seconds directive; ok=False means invalid or conflicting."""
    if not values:
        return True, None
    parsed: set[int] = set()
    for v in values:
        if v is None or not v.isascii() or not v.isdigit():
            return False, None
        parsed.add(min(int(v), DELTA_MAX))
    return (True, parsed.pop()) if len(parsed) == 1 else (False, None)


def _fields(values: list[str | None]) -> tuple[bool, frozenset[str]]:
    """(unqualified, qualified field names) for no-cache / private."""
    names: set[str] = set()
    for v in values:
        listed = [n.strip().lower() for n in split_list(v)] if v is not None else []
        if not listed:
            return True, frozenset()
        names.update(listed)
    return False, frozenset(names)


@dataclass(frozen=True)
class Directives:
    """Immutable, interpreted view of one cache-directive field. Build with ``from_items``."""

    items: tuple[Item, ...] = ()
    source: str = ""  # "" (none), "cache-control", a targeted field name, "surrogate-control"
    expires_applies: bool = True
    no_store: bool = False
    no_cache: bool = False
    no_cache_fields: frozenset[str] = field(default_factory=frozenset)
    private: bool = False
    private_fields: frozenset[str] = field(default_factory=frozenset)
    public: bool = False
    must_revalidate: bool = False
    proxy_revalidate: bool = False
    must_understand: bool = False
    no_transform: bool = False
    immutable: bool = False
    only_if_cached: bool = False
    max_age: int | None = None
    s_maxage: int | None = None
    min_fresh: int | None = None
    max_stale: float | None = None
    stale_while_revalidate: int | None = None
    stale_if_error: int | None = None

    @classmethod
    def from_items(
        cls, items: tuple[Item, ...], source: str = "cache-control", expires_applies: bool = True
    ) -> Directives:
        by: dict[str, list[str | None]] = {}
        for name, value in items:
            by.setdefault(name, []).append(value)

        def rest(name: str) -> int | None:  # restrictive default: invalid -> 0
            ok, v = _delta(by.get(name, []))
            return v if ok else 0

        def grant(name: str) -> int | None:  # permissive directive: invalid -> ignored
            return _delta(by.get(name, []))[1]

        max_stale: float | None = None
        if "max-stale" in by:
            max_stale = math.inf if by["max-stale"] == [None] else grant("max-stale")
        no_cache, no_cache_fields = _fields(by["no-cache"]) if "no-cache" in by else (False, ())
        private, private_fields = _fields(by["private"]) if "private" in by else (False, ())
        return cls(
            items=items,
            source=source if items else "",
            expires_applies=expires_applies,
            no_store="no-store" in by,
            no_cache=no_cache,
            no_cache_fields=frozenset(no_cache_fields),
            private=private,
            private_fields=frozenset(private_fields),
            public="public" in by,
            must_revalidate="must-revalidate" in by,
            proxy_revalidate="proxy-revalidate" in by,
            must_understand="must-understand" in by,
            no_transform="no-transform" in by,
            immutable="immutable" in by,
            only_if_cached="only-if-cached" in by,
            max_age=rest("max-age"),
            s_maxage=rest("s-maxage"),
            min_fresh=grant("min-fresh"),
            max_stale=max_stale,
            stale_while_revalidate=grant("stale-while-revalidate"),
            stale_if_error=grant("stale-if-error"),
        )

    def has(self, name: str) -> bool:
        key = name.lower()
        return any(n == key for n, _ in self.items)

    def value(self, name: str) -> str | None:
        """The argument of the first occurrence of ``name`` (None if absent or bare)."""
        key = name.lower()
        return next((v for n, v in self.items if n == key), None)


def _unquote(raw: str) -> str:
    if not raw.startswith('"'):
        return raw
    out: list[str] = []
    i = 1
    while i < len(raw):
        c = raw[i]
        if c == "\\" and i + 1 < len(raw):
            out.append(raw[i + 1])
            i += 2
            continue
        if c == '"':
            return "".join(out) if i == len(raw) - 1 else raw  # trailing junk: keep raw
        out.append(c)
        i += 1
    return "".join(out)  # unterminated quote: be lenient


def _cc_items(text: str | None) -> tuple[Item, ...]:
    items: list[Item] = []
    for element in split_list(text):
        name, eq, raw = element.partition("=")
        name = name.strip(" \t").lower()
        if not name or any(c not in _TCHAR for c in name):
            continue
        items.append((name, _unquote(raw.strip(" \t")) if eq else None))
    return tuple(items)


def parse_cache_control(value: str | None) -> Directives:
    """Parse a (combined) Cache-Control field value; never raises."""
    return Directives.from_items(_cc_items(value))


# RFC 9213 §2.1: the types inferred from RFC 9111's syntax; a member of another type is
# ignored ("implementations SHOULD NOT consume values that violate these constraints")
_TARGETED_TYPES = {
    **dict.fromkeys(("max-age", "s-maxage", "stale-while-revalidate", "stale-if-error"),
                    "integer"),
    **dict.fromkeys(("no-store", "public", "must-revalidate", "proxy-revalidate",
                     "must-understand", "no-transform", "immutable"), "boolean"),
    **dict.fromkeys(("no-cache", "private"), "boolean-or-string"),
}


def parse_targeted(value: str, name: str = "cdn-cache-control") -> Directives | None:
    """Parse a targeted field as an RFC 8941 Dictionary; None if invalid or empty (§2.1).
    A member whose value has the wrong type for its directive is ignored; a field left with
    no usable member counts as empty (so Cache-Control applies: a deliberate choice)."""
    try:
        members = sf.parse_dictionary(value)
    except ValueError:
        return None
    items: list[Item] = []
    for key, (val, _params) in members.items():  # parameters are ignored (RFC 9213 §2.1)
        kind = _TARGETED_TYPES.get(key)
        if val is False:
            continue
        if kind == "integer":  # delta-seconds: a non-negative sf-integer, nothing else
            if isinstance(val, int) and not isinstance(val, bool) and val >= 0:
                items.append((key, str(val)))
        elif kind == "boolean":
            if val is True:
                items.append((key, None))
        elif kind == "boolean-or-string":  # no-cache / private, bare or with a field list
            if val is True:
                items.append((key, None))
            elif isinstance(val, str):
                items.append((key, val))
        elif val is True:  # an extension directive: kept as the RFC 9111 parser would
            items.append((key, None))
        elif isinstance(val, int | float | str) and not isinstance(val, bool):
            items.append((key, str(val)))
        # any other value has the wrong type for its directive: ignored (§2.1)
    if not items:
        return None
    return Directives.from_items(tuple(items), source=name.lower(), expires_applies=False)


def parse_surrogate_control(value: str, device_token: str | None = None) -> Directives | None:
    """Parse Surrogate-Control; None unless it has an applicable max-age/no-store directive."""
    items: list[Item] = []
    for element in split_list(value):
        directive, _, target = element.partition(";")
        if target.strip() and target.strip() != device_token:
            continue
        name, eq, raw = directive.partition("=")
        name = name.strip().lower()
        if name == "max-age" and eq:
            items.append(("max-age", _unquote(raw.strip()).partition("+")[0].strip()))
        elif name in ("no-store", "no-store-remote"):
            items.append(("no-store", None))
    if not items:
        return None
    return Directives.from_items(tuple(items), "surrogate-control", expires_applies=False)


@lru_cache(maxsize=4096)
def _response_directives(headers: Headers, config: PolicyConfig) -> Directives:
    for name in config.targeted_fields:
        values = get_all(headers, name)
        if values:
            parsed = parse_targeted(", ".join(values), name)
            if parsed is not None:
                return parsed
    if config.honour_surrogate_control:
        sc = get_combined(headers, "Surrogate-Control")
        if sc:
            parsed = parse_surrogate_control(sc, config.surrogate_device_token)
            if parsed is not None:
                return parsed
    return parse_cache_control(get_combined(headers, "Cache-Control"))


def response_directives(headers: Headers, config: PolicyConfig = DEFAULT_CONFIG) -> Directives:
    """The directives governing THIS cache for a response (targeted > Surrogate > CC)."""
    return _response_directives(tuple((n, v) for n, v in headers), config)


def request_directives(headers: Headers, config: PolicyConfig = DEFAULT_CONFIG) -> Directives:
    """Request Cache-Control (§5.2.1), with the Pragma fallback and the honour knob."""
    cc = get_combined(headers, "Cache-Control")
    if cc is not None:
        items = _cc_items(cc)
    elif any(e.strip().lower() == "no-cache" for e in split_list(get_combined(headers, "Pragma"))):
        items = (("no-cache", None),)
    else:
        items = ()
    if not config.honour_request_cache_control:
        items = tuple(i for i in items
                      if i[0] not in ("no-cache", "no-store", "max-age", "min-fresh"))
    return Directives.from_items(items)
