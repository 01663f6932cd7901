"""``[[sites]]``: many websites on one edge, and the edge's TLS listener settings.

Shape::

    [edge]                       # process-wide TLS listener (all optional)
    tls_listen = ":8443"         # "" (default): no HTTPS listener; ":PORT" on the edge's own
                                 # address, or "HOST:PORT"
    tls_cert = "certs/default.pem"   # the certificate for clients without SNI (or unknown
    tls_key = "certs/default.key"    # names); defaults to the first site's
    tls_session_tickets = true   # OpenSSL's session tickets (TLS 1.2 and 1.3)
    tls_ticket_rotate = 3600     # seconds: the TLS contexts, so their ticket keys, are rebuilt
    unknown_host_status = 421    # answer to a Host that matches no site (421 or 404)

    [[sites]]
    name = "www"                 # unique; the zone name GeoDNS routes for it
    hosts = ["www.example.com", "*.example.com"]   # exact names and one-label wildcards
    regions = ["eu"]             # regions whose edges serve it (default: all)
    default_ttl = 60             # any [edge] knob of the origin and caching path
    purge_token = "..."          # (see SITE_KNOBS), overriding [edge] for this site
    [[sites.origins]]            # its own pool, as [[origins]]
    name = "o1"  host = "10.0.0.1"  port = 8080  weight = 1
    [sites.tls]
    cert = "certs/www.pem"  key = "certs/www.key"   # PEM chain and key (RSA or ECDSA)
    alt_cert = ""  alt_key = ""  # optional second pair of the other key type: OpenSSL
                                 # gives ECDSA to clients that take it, RSA to the others
    redirect_http = false        # plain-HTTP requests get 308 to https://
    hsts = ""                    # Strict-Transport-Security value on HTTPS answers ("": none)
    [sites.cache_key]
    query = "all"                # "all" | "none" | "keep" (only query_params) | "ignore"
    query_params = []            # the names kept or ignored
    sort_query = false           # sort the parameters (a=1&b=2 and b=2&a=1 share an entry)
    headers = []                 # request headers whose values are part of the key
    cookies = []                 # cookies whose values are part of the key

The top-level ``[[origins]]`` with ``[edge]`` is the default site: requests whose Host matches
no ``[[sites]]`` go there. Without top-level origins such requests get ``unknown_host_status``.
Paths are relative to the topology file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoconfig.validate import (
    ConfigError,
    check_keys,
    get,
    host_port,
    join,
    number_in,
    str_list,
)

# [edge] keys a site may not override: they belong to the process or its listeners
PROCESS_WIDE = frozenset({
    "cache_max_bytes", "max_variants", "admin_path", "admin_listen", "client_header_timeout",
    "keepalive_timeout", "max_header_bytes", "max_body_bytes", "coalesce_timeout",
    "coalesce_max_waiters", "drain_timeout", "client_body_timeout", "client_body_min_rate",
    "client_request_timeout", "keepalive_requests", "max_header_count", "max_url_bytes",
    "max_buffered_bytes", "max_connections", "max_connections_per_address",
    "connection_limit_exempt", "tls_listen", "tls_cert", "tls_key", "tls_session_tickets",
    "tls_ticket_rotate", "unknown_host_status", "max_object_bytes", "disk_path",
    "disk_max_bytes", "workers"})
EDGE_TLS_KEYS = frozenset({"tls_listen", "tls_cert", "tls_key", "tls_session_tickets",
                           "tls_ticket_rotate", "unknown_host_status"})
SITE_KEYS = frozenset({"name", "hosts", "regions", "origins", "tls", "cache_key"})
QUERY_MODES = ("all", "none", "keep", "ignore")


@dataclass(frozen=True, slots=True)
class SiteTls:
    cert: Path | None = None
    key: Path | None = None
    alt_cert: Path | None = None
    alt_key: Path | None = None
    redirect_http: bool = False
    hsts: str = ""


@dataclass(frozen=True, slots=True)
class CacheKeyRules:
    query: str = "all"
    query_params: tuple[str, ...] = ()
    sort_query: bool = False
    headers: tuple[str, ...] = ()  # lower-case
    cookies: tuple[str, ...] = ()

    @property
    def default(self) -> bool:
        return self == CacheKeyRules()


@dataclass(frozen=True, slots=True)
class Site:
    name: str
    hosts: tuple[str, ...]  # lower-case; "*.example.com" wildcards
    origins: tuple[Any, ...]  # OriginServer
    edge: Any  # EdgeSettings: [edge] with this site's overrides
    tls: SiteTls = field(default_factory=SiteTls)
    cache_key: CacheKeyRules = field(default_factory=CacheKeyRules)
    regions: tuple[str, ...] = ()  # () : every region


@dataclass(frozen=True, slots=True)
class EdgeTls:
    listen: tuple[str, int] | None = None  # host "" : the edge's own address
    cert: Path | None = None
    key: Path | None = None
    session_tickets: bool = True
    ticket_rotate: float = 3600.0
    unknown_host_status: int = 421


def edge_tls(table: Any, base: Path) -> EdgeTls:
    """The TLS listener keys of ``[edge]`` (the rest of ``[edge]`` is cdnconfig's)."""
    p = "edge"
    t = table if isinstance(table, dict) else {}
    d = EdgeTls()
    text = get(t, p, "tls_listen", str, "")
    listen = None
    if text:
        if text.startswith(":") and text[1:].isdigit():
            port = int(number_in(int(text[1:]), join(p, "tls_listen"), 1, 65535))
            listen = ("", port)
        else:
            listen = host_port(text, join(p, "tls_listen"))
    cert, key = _pair(t, p, "tls_cert", "tls_key", base)
    tickets = get(t, p, "tls_session_tickets", bool, d.session_tickets)
    rotate = float(number_in(get(t, p, "tls_ticket_rotate", float, d.ticket_rotate),
                             join(p, "tls_ticket_rotate"), 60, 7 * 86400))
    status = get(t, p, "unknown_host_status", int, d.unknown_host_status)
    if status not in (421, 404):
        raise ConfigError(join(p, "unknown_host_status"), f"must be 421 or 404, got {status!r}")
    return EdgeTls(listen, cert, key, tickets, rotate, status)


def _pair(t: dict[str, Any], p: str, cert_key: str, key_key: str,
          base: Path) -> tuple[Path | None, Path | None]:
    cert = get(t, p, cert_key, str, "")
    key = get(t, p, key_key, str, "")
    if bool(cert) != bool(key):
        missing = key_key if cert else cert_key
        raise ConfigError(join(p, missing), f"{cert_key} and {key_key} go together")
    if not cert:
        return None, None
    return base / cert, base / key


def check_host(name: str, path: str) -> str:
    """A host pattern: a DNS name, or ``*.`` and a name of at least two labels."""
    host = name.lower().rstrip(".")
    plain = host[2:] if host.startswith("*.") else host
    labels = plain.split(".")
    ok = bool(plain) and all(
        label and len(label) <= 63 and all(c.isalnum() or c == "-" for c in label)
        and not label.startswith("-") and not label.endswith("-") for label in labels)
    if not ok or "*" in plain or (host.startswith("*.") and len(labels) < 2):
        raise ConfigError(path, f"not a host name or *.wildcard: {name!r}")
    return host


def parse_sites(top: dict[str, Any], edge_table: Any, base: Path,
                regions: Sequence[str] | None,
                parse_edge: Any, parse_origins: Any) -> tuple[Site, ...]:
    """``[[sites]]``; ``parse_edge(table, path)`` and ``parse_origins(items, path)`` are
    cdnconfig's parsers (a site's knobs are ``[edge]`` with its own values on top)."""
    items = top.get("sites", [])
    if not isinstance(items, list):
        raise ConfigError("sites", f"must be an array of tables, got {type(items).__name__}")
    base_edge = dict(edge_table) if isinstance(edge_table, dict) else {}
    sites: list[Site] = []
    names: set[str] = set()
    owners: dict[str, str] = {}
    for i, item in enumerate(items):
        p = join("sites", i)
        if not isinstance(item, dict):
            raise ConfigError(p, f"must be a table, got {type(item).__name__}")
        knobs = {k: v for k, v in item.items() if k not in SITE_KEYS}
        for key in knobs:
            if key in PROCESS_WIDE:
                raise ConfigError(join(p, key), "is process-wide: set it in [edge]")
        t = check_keys({k: v for k, v in item.items() if k in SITE_KEYS}, p, set(SITE_KEYS),
                       {"name", "hosts", "origins"})
        name = get(t, p, "name", str)
        if not name or name in names:
            raise ConfigError(join(p, "name"), f"empty or duplicate site name {name!r}")
        names.add(name)
        hosts = tuple(check_host(h, join(join(p, "hosts"), j))
                      for j, h in enumerate(str_list(t, p, "hosts")))
        if not hosts:
            raise ConfigError(join(p, "hosts"), "must list at least one host")
        for j, h in enumerate(hosts):
            if h in owners:
                raise ConfigError(join(join(p, "hosts"), j),
                                  f"{h!r} is already a host of site {owners[h]!r}")
            owners[h] = name
        site_regions = str_list(t, p, "regions")
        for j, r in enumerate(site_regions):
            if regions is not None and r not in regions:
                raise ConfigError(join(join(p, "regions"), j),
                                  f"{r!r} is not one of the regions {list(regions)}")
        origins = parse_origins(get(t, p, "origins", list), join(p, "origins"))
        if not origins:
            raise ConfigError(join(p, "origins"), "must list at least one origin")
        edge = parse_edge({**base_edge, **knobs}, p)
        sites.append(Site(name, hosts, origins, edge, _site_tls(t.get("tls", {}), p, base),
                          _cache_key(t.get("cache_key", {}), join(p, "cache_key")),
                          tuple(site_regions)))
    return tuple(sites)


def _site_tls(table: Any, p: str, base: Path) -> SiteTls:
    p = join(p, "tls")
    t = check_keys(table, p, {"cert", "key", "alt_cert", "alt_key", "redirect_http", "hsts"})
    cert, key = _pair(t, p, "cert", "key", base)
    alt_cert, alt_key = _pair(t, p, "alt_cert", "alt_key", base)
    if alt_cert is not None and cert is None:
        raise ConfigError(join(p, "cert"), "alt_cert needs cert and key too")
    hsts = get(t, p, "hsts", str, "")
    if hsts and ("max-age=" not in hsts.lower() or any(c in hsts for c in "\r\n")):
        raise ConfigError(join(p, "hsts"), f'must be a header value with max-age=, got {hsts!r}')
    return SiteTls(cert, key, alt_cert, alt_key, get(t, p, "redirect_http", bool, False), hsts)


def _cache_key(table: Any, p: str) -> CacheKeyRules:
    t = check_keys(table, p, {"query", "query_params", "sort_query", "headers", "cookies"})
    mode = get(t, p, "query", str, "all")
    if mode not in QUERY_MODES:
        raise ConfigError(join(p, "query"), f"must be one of {QUERY_MODES}, got {mode!r}")
    params = str_list(t, p, "query_params")
    if params and mode not in ("keep", "ignore"):
        raise ConfigError(join(p, "query_params"), 'needs query = "keep" or "ignore"')
    headers = str_list(t, p, "headers")
    for j, h in enumerate(headers):
        if not h or any(c in h for c in " \t:;,()\"") or not h.isascii():
            raise ConfigError(join(join(p, "headers"), j), f"not a header field name: {h!r}")
    cookies = str_list(t, p, "cookies")
    for j, c in enumerate(cookies):
        if not c or any(ch in c for ch in " \t;=,"):
            raise ConfigError(join(join(p, "cookies"), j), f"not a cookie name: {c!r}")
    return CacheKeyRules(mode, tuple(params), get(t, p, "sort_query", bool, False),
                         tuple(h.lower() for h in headers), tuple(cookies))


def serve_sites_from_their_regions(zones: Sequence[Any], sites: Sequence[Site]) -> tuple:
    """The zones with every geo name that a site's hosts cover (an exact host, or a name under
    a ``*.`` wildcard host) answered only from that site's ``regions`` (in the name's own
    order). Names served by a ``[[pools]]`` entry keep their pool. ConfigError, naming the
    site's ``regions``, when a name would be left with no region."""
    from dataclasses import replace

    def covers(host: str, name: str) -> bool:  # name: absolute, lower case, trailing dot
        if host.startswith("*."):
            return name.endswith("." + host[2:] + ".")
        return name == host + "."

    out = []
    for zone in zones:
        geo = []
        for g in zone.geo:
            for i, site in enumerate(sites):
                if not site.regions or g.pool or not any(covers(h, g.name) for h in site.hosts):
                    continue
                kept = tuple(r for r in g.regions if r in site.regions)
                if not kept:
                    raise ConfigError(f"sites[{i}].regions",
                                      f"leaves geo name {g.name} no region (it has "
                                      f"{list(g.regions)}, the site {list(site.regions)})")
                g = replace(g, regions=kept)
            geo.append(g)
        out.append(replace(zone, geo=tuple(geo)))
    return tuple(out)
