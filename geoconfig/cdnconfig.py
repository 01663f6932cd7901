"""The CDN part of the topology file: edge settings, the origin pool and origin content rules.

Shape::

    [edge]          settings every edge node shares (cache size, limits, timeouts, purge token,
                    load balancing); all keys optional, see EdgeSettings for defaults
    [[origins]]     name, host, port, weight = 1: the origin pool the edges fetch from;
                    scheme = "https" with tls_server_name, tls_ca_file, tls_cert_file,
                    tls_key_file, tls_verify = true: TLS to that origin
    [origin]        root (directory served by `geoedge origin`, relative to the topology
                    file), rules = [{ path, cache_control, cdn_cache_control, surrogate_key }]
    [[regions]] redis = { url | cluster, prefix, timeout, max_object_bytes }
                    the region's shared cache tier (optional; parsed by ``parse_redis``)
    [[sites]]       more websites, each with its hosts, origins, knobs, TLS (geoconfig/sites.py);
                    [edge] tls_* keys: the HTTPS listener
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoconfig.compressconfig import CompressionSettings, parse_compression
from geoconfig.sites import EDGE_TLS_KEYS, EdgeTls, Site, edge_tls, parse_sites
from geoconfig.validate import (
    ConfigError,
    check_keys,
    get,
    host_port,
    join,
    number_in,
    str_list,
)

LB_ALGORITHMS = ("round_robin", "least_conn", "ewma", "ip_hash", "consistent_hash")


@dataclass(frozen=True, slots=True)
class EdgeSettings:
    cache_max_bytes: int = 256 * 1024 * 1024
    max_object_bytes: int = 16 * 1024 * 1024
    purge_token: str | None = None  # None: purging is disabled
    admin_path: str = "/.geoedge"
    lb: str = "round_robin"
    connect_timeout: float = 2.0
    read_timeout: float = 30.0
    client_header_timeout: float = 10.0
    keepalive_timeout: float = 30.0
    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 10 * 1024 * 1024
    coalesce_timeout: float = 30.0
    coalesce_max_waiters: int = 10_000
    hit_for_miss_ttl: float = 10.0
    targeted_cache_control: tuple[str, ...] = ("CDN-Cache-Control",)
    origin_health_path: str = "/healthz"
    origin_health_interval: float = 2.0
    max_fails: int = 3
    fail_window: float = 10.0
    fail_timeout: float = 10.0
    retries: int = 1
    drain_timeout: float = 5.0  # SIGTERM/SIGINT: seconds in-flight requests get to finish
    # "ignore" (most CDNs; nginx and Varnish by default) or "honour" (RFC 9111 §5.2.1) the
    # client's request no-cache / no-store / max-age / min-fresh / Pragma
    request_cache_control: str = "ignore"
    # forwarding headers (X-Forwarded-Host, Forwarded, ...) passed to the origin and made part
    # of the cache key; every other one of them is removed before forwarding
    trusted_forwarding_headers: tuple[str, ...] = ()
    max_variants: int = 64  # Vary variants kept per URL; storing one more evicts the oldest
    # answers to requests with cookies are stored only when public, s-maxage, targeted or
    # Vary: Cookie, unless cache_cookie_requests; ignored_cookies do not count as cookies
    cache_cookie_requests: bool = False
    ignored_cookies: tuple[str, ...] = ()
    # freshness for answers without explicit freshness: default_ttl seconds (0: none), else
    # heuristic_fraction of (Date - Last-Modified) up to heuristic_max seconds (RFC 9111 §4.2.2)
    default_ttl: float = 0.0
    heuristic_fraction: float = 0.1
    heuristic_max: float = 86400.0
    store_set_cookie: bool = False  # true: store Set-Cookie answers (never replayed to others)
    # methods whose answers may be stored: GET and HEAD always; "POST" adds POST answers with
    # explicit freshness and Content-Location = the target, reused for later GETs (RFC 9111 §3)
    cacheable_methods: tuple[str, ...] = ("GET", "HEAD")
    # -- client and origin limits (README: every default and why); checked by _limits() --
    client_body_timeout: float = 60.0  # longest pause between two reads of a request body
    client_body_min_rate: float = 500.0  # bytes/s a body must average after that; 0: none
    client_request_timeout: float = 120.0  # the whole request, headers and body
    keepalive_requests: int = 1000  # requests per client connection, then Connection: close
    max_header_count: int = 100  # header fields per request (431 above)
    max_url_bytes: int = 8192  # request target (414 above)
    max_buffered_bytes: int = 1024 * 1024  # pipelined requests queued on one connection
    max_connections: int = 10_000  # client connections per edge (closed at once above)
    max_connections_per_address: int = 256  # per client address (503 and close above)
    connection_limit_exempt: tuple[str, ...] = ()  # networks never refused (GeoDNS prober)
    origin_max_conns: int = 256  # concurrent connections per origin; 0: unlimited
    origin_queue_timeout: float = 10.0  # seconds a request waits for a slot (502 after)
    admin_listen: tuple[str, int] | None = None  # where /metrics and stats are served
    # -- the disk store (edge/disk/): "" keeps the cache in memory only; checked by _disk() --
    disk_path: str = ""  # directory of the on-disk cache; survives restarts
    disk_max_bytes: int = 1024 * 1024 * 1024  # bytes of files kept there (LRU beyond)
    workers: int = 1  # processes serving the edge's port (edge/workers.py); 0: "auto"
    # [edge.compression]: gzip/Brotli variants made at fill time (geoconfig/compressconfig.py)
    compression: CompressionSettings = field(default_factory=CompressionSettings)
    access_log: str = ""  # access log file ("" = none); "{edge}" is replaced by the edge name
    access_log_format: str = "combined"  # "combined" (then key=value fields) or "json" lines


@dataclass(frozen=True, slots=True)
class OriginServer:
    name: str
    host: str
    port: int
    weight: int = 1
    scheme: str = "http"  # "https": TLS to the origin (edge/origintls.py)
    tls_server_name: str | None = None  # SNI and the name verified; default: host
    tls_ca_file: str | None = None  # trust only this CA bundle; default: the system store
    tls_cert_file: str | None = None  # client certificate (PEM), for origins that ask
    tls_key_file: str | None = None  # its key, when not in tls_cert_file
    tls_verify: bool = True  # false: no verification (a warning at start)

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ContentRule:
    path: str  # a glob over the URL path, e.g. "/static/*"
    cache_control: str | None = None
    cdn_cache_control: str | None = None
    surrogate_key: str | None = None


@dataclass(frozen=True, slots=True)
class OriginSettings:
    root: Path | None = None
    rules: tuple[ContentRule, ...] = ()


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """A region's shared tier: one ``redis://`` URL, or the nodes of a Redis Cluster."""

    url: str | None = None
    cluster: tuple[str, ...] = ()
    prefix: str = "geoedge:"
    timeout: float = 0.05
    max_object_bytes: int = 1 << 20


def parse_redis(table: Any, path: str, region: str) -> RedisConfig:
    t = check_keys(table, path, {"url", "cluster", "prefix", "timeout", "max_object_bytes"})
    url = get(t, path, "url", str, None)
    cluster = str_list(t, path, "cluster")
    if bool(url) == bool(cluster):
        raise ConfigError(path, "give exactly one of url (standalone) or cluster (node list)")
    if url is not None and not url.startswith(("redis://", "rediss://")):
        raise ConfigError(join(path, "url"), f"must be a redis:// URL, got {url!r}")
    for i, node in enumerate(cluster):
        host, _, port = node.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(join(join(path, "cluster"), i), f"must be HOST:PORT, got {node!r}")
    prefix = get(t, path, "prefix", str, f"geoedge:{region}:")
    if not prefix or any(c in prefix for c in "{}*?[]\\ "):
        raise ConfigError(join(path, "prefix"), "must be non-empty, without braces, spaces or "
                                                "glob characters")
    defaults = RedisConfig()
    timeout = get(t, path, "timeout", float, defaults.timeout)
    if not math.isfinite(timeout) or not 0 < timeout <= 10:
        raise ConfigError(join(path, "timeout"), f"must be between 0 and 10 s, got {timeout!r}")
    max_obj = int(number_in(get(t, path, "max_object_bytes", int, defaults.max_object_bytes),
                            join(path, "max_object_bytes"), 1, 512 * 1024 * 1024))
    return RedisConfig(url, tuple(cluster), prefix, timeout, max_obj)


@dataclass(frozen=True, slots=True)
class CdnSettings:
    edge: EdgeSettings = field(default_factory=EdgeSettings)
    origins: tuple[OriginServer, ...] = ()
    origin: OriginSettings = field(default_factory=OriginSettings)
    sites: tuple[Site, ...] = ()  # [[sites]]; the top-level origins are the default site
    tls: EdgeTls = field(default_factory=EdgeTls)


_FLOATS = {"connect_timeout", "read_timeout", "client_header_timeout", "keepalive_timeout",
           "coalesce_timeout", "hit_for_miss_ttl", "origin_health_interval", "fail_window",
           "fail_timeout"}
_INTS = {"cache_max_bytes": (1024, 2**48), "max_object_bytes": (1, 2**40),
         "max_header_bytes": (1024, 1024 * 1024), "max_body_bytes": (0, 2**40),
         "coalesce_max_waiters": (1, 10_000_000), "max_fails": (1, 1000), "retries": (0, 10),
         "max_variants": (1, 100_000)}
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")


def parse_cdn(top: dict[str, Any], source: str,
              regions: list[str] | None = None) -> CdnSettings:
    edge = _edge(top.get("edge", {}))
    origins = _origins(top.get("origins", []), "origins", Path(source).parent)
    origin = _origin(top.get("origin", {}), Path(source).parent)
    base = Path(source).parent
    sites = parse_sites(top, top.get("edge", {}), base, regions, _edge,
                        lambda items, at: _origins(items, at, base))
    return CdnSettings(edge, origins, origin, sites, edge_tls(top.get("edge", {}), base))


def _edge(table: Any, p: str = "edge") -> EdgeSettings:
    if isinstance(table, dict) and "drain_seconds" in table:
        raise ConfigError(join(p, "drain_seconds"),
                          "removed: SIGTERM stops accepting at once and gives requests in "
                          "progress edge.drain_timeout seconds; to move clients away first, "
                          "POST <admin_path>/drain and wait for GeoDNS (docs/deploy.md)")
    allowed = set(EdgeSettings.__dataclass_fields__) | EDGE_TLS_KEYS
    t = check_keys(table, p, allowed)
    d = EdgeSettings()
    values: dict[str, Any] = {}
    for key in _FLOATS:
        value = get(t, p, key, float, getattr(d, key))
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(join(p, key), f"must be a finite number above 0, got {value!r}")
        values[key] = value
    for key, (low, high) in _INTS.items():
        values[key] = int(number_in(get(t, p, key, int, getattr(d, key)), join(p, key), low, high))
    token = get(t, p, "purge_token", str, None)
    if token is not None and len(token) < 8:
        raise ConfigError(join(p, "purge_token"), "must be at least 8 characters")
    values["purge_token"] = token
    for key in ("admin_path", "origin_health_path"):
        path = get(t, p, key, str, getattr(d, key))
        if not path.startswith("/"):
            raise ConfigError(join(p, key), f"must start with '/', got {path!r}")
        values[key] = path
    lb = get(t, p, "lb", str, d.lb)
    if lb not in LB_ALGORITHMS:
        raise ConfigError(join(p, "lb"), f"unknown algorithm {lb!r} (one of {LB_ALGORITHMS})")
    values["lb"] = lb
    targeted = str_list(t, p, "targeted_cache_control") if "targeted_cache_control" in t else (
        d.targeted_cache_control)
    values["targeted_cache_control"] = tuple(targeted)
    mode = get(t, p, "request_cache_control", str, d.request_cache_control)
    if mode not in ("ignore", "honour"):
        raise ConfigError(join(p, "request_cache_control"),
                          f'must be "ignore" or "honour", got {mode!r}')
    values["request_cache_control"] = mode
    trusted = str_list(t, p, "trusted_forwarding_headers") if (
        "trusted_forwarding_headers" in t) else []
    for i, name in enumerate(trusted):
        if not name or not set(name.lower()) <= _TOKEN:
            raise ConfigError(join(join(p, "trusted_forwarding_headers"), i),
                              f"not a header field name: {name!r}")
    values["trusted_forwarding_headers"] = tuple(dict.fromkeys(n.lower() for n in trusted))
    values["cache_cookie_requests"] = get(t, p, "cache_cookie_requests", bool,
                                          d.cache_cookie_requests)
    ignored = str_list(t, p, "ignored_cookies") if "ignored_cookies" in t else []
    for i, name in enumerate(ignored):
        if not name or any(c in name for c in " \t;=,"):
            raise ConfigError(join(join(p, "ignored_cookies"), i),
                              f"not a cookie name: {name!r}")
    values["ignored_cookies"] = tuple(ignored)
    values["store_set_cookie"] = get(t, p, "store_set_cookie", bool, d.store_set_cookie)
    methods = str_list(t, p, "cacheable_methods") if "cacheable_methods" in t else list(
        d.cacheable_methods)
    if not {"GET", "HEAD"} <= set(methods) or not set(methods) <= {"GET", "HEAD", "POST"}:
        raise ConfigError(join(p, "cacheable_methods"),
                          f'must list "GET" and "HEAD", and may add "POST"; got {methods!r}')
    values["cacheable_methods"] = tuple(dict.fromkeys(methods))
    for key, high in (("default_ttl", 10 * 365 * 86400.0), ("heuristic_fraction", 1.0),
                      ("heuristic_max", 10 * 365 * 86400.0)):
        value = get(t, p, key, float, getattr(d, key))
        if not math.isfinite(value) or not 0 <= value <= high:
            raise ConfigError(join(p, key), f"must be between 0 and {high:g}, got {value!r}")
        values[key] = value
    values.update(_limits(t, p))
    values.update(_disk(t, p))
    values["compression"] = parse_compression(t.get("compression", {}), join(p, "compression"))
    values.update(_access_log(t, p))
    room = max(values["cache_max_bytes"], values["disk_max_bytes"] if values["disk_path"] else 0)
    if values["max_object_bytes"] > room:
        raise ConfigError(join(p, "max_object_bytes"),
                          "must not exceed edge.cache_max_bytes (or edge.disk_max_bytes)")
    return EdgeSettings(**values)


_LIMIT_FLOATS = {"client_body_timeout": (0.001, 86400.0), "client_body_min_rate": (0.0, 2**40),
                 "client_request_timeout": (0.001, 86400.0),
                 "origin_queue_timeout": (0.001, 3600.0), "drain_timeout": (0.0, 3600.0)}
_LIMIT_INTS = {"keepalive_requests": (1, 10_000_000), "max_header_count": (1, 10_000),
               "max_url_bytes": (16, 1024 * 1024), "max_buffered_bytes": (0, 2**40),
               "max_connections": (1, 10_000_000),
               "max_connections_per_address": (1, 10_000_000),
               "origin_max_conns": (0, 1_000_000)}


def _disk(t: dict[str, Any], p: str) -> dict[str, Any]:
    """``disk_path`` and ``disk_max_bytes`` of ``[edge]``."""
    d = EdgeSettings()
    path = get(t, p, "disk_path", str, d.disk_path)
    if "\0" in path:
        raise ConfigError(join(p, "disk_path"), "must not contain NUL")
    size = int(number_in(get(t, p, "disk_max_bytes", int, d.disk_max_bytes),
                         join(p, "disk_max_bytes"), 1024 * 1024, 2**50))
    workers = t.get("workers", d.workers)
    if workers == "auto":
        workers = 0
    elif type(workers) is not int or not 1 <= workers <= 1024:
        raise ConfigError(join(p, "workers"), f'must be "auto" or 1 to 1024, got {workers!r}')
    return {"disk_path": path, "disk_max_bytes": size, "workers": workers}


def _limits(t: dict[str, Any], p: str) -> dict[str, Any]:
    """The client and origin limits of ``[edge]``, validated (each error names its key)."""
    d = EdgeSettings()
    values: dict[str, Any] = {}
    for key, (low, high) in _LIMIT_FLOATS.items():
        value = get(t, p, key, float, getattr(d, key))
        if not math.isfinite(value):
            raise ConfigError(join(p, key), f"must be a finite number, got {value!r}")
        values[key] = number_in(value, join(p, key), low, high)
    for key, (low, high) in _LIMIT_INTS.items():
        values[key] = int(number_in(get(t, p, key, int, getattr(d, key)), join(p, key), low, high))
    exempt = str_list(t, p, "connection_limit_exempt") if "connection_limit_exempt" in t else ()
    for i, net in enumerate(exempt):
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError(join(join(p, "connection_limit_exempt"), i),
                              f"not an address or network: {net!r}") from None
    values["connection_limit_exempt"] = tuple(exempt)
    admin = get(t, p, "admin_listen", str, "")
    values["admin_listen"] = host_port(admin, join(p, "admin_listen")) if admin else None
    return values


def _access_log(t: dict[str, Any], p: str) -> dict[str, Any]:
    """``access_log`` and ``access_log_format`` (edge/accesslog.py)."""
    path = get(t, p, "access_log", str, "")
    if "\0" in path:
        raise ConfigError(join(p, "access_log"), "must not contain NUL")
    fmt = get(t, p, "access_log_format", str, "combined")
    if fmt not in ("combined", "json"):
        raise ConfigError(join(p, "access_log_format"),
                          f'must be "combined" or "json", got {fmt!r}')
    return {"access_log": path, "access_log_format": fmt}


def _origins(items: Any, at: str = "origins", base: Path = Path()) -> tuple[OriginServer, ...]:
    if not isinstance(items, list):
        raise ConfigError(at, f"must be an array of tables, got {type(items).__name__}")
    out: list[OriginServer] = []
    names: set[str] = set()
    for i, item in enumerate(items):
        p = join(at, i)
        t = check_keys(item, p, {"name", "host", "port", "weight", *_ORIGIN_TLS_KEYS},
                       {"name", "host", "port"})
        name = get(t, p, "name", str)
        if not name or name in names:
            raise ConfigError(join(p, "name"), f"empty or duplicate origin name {name!r}")
        names.add(name)
        host = get(t, p, "host", str)
        if not host or any(c.isspace() for c in host):
            raise ConfigError(join(p, "host"), f"not a host name or address: {host!r}")
        port = int(number_in(get(t, p, "port", int), join(p, "port"), 1, 65535))
        weight = int(number_in(get(t, p, "weight", int, 1), join(p, "weight"), 1, 1000))
        out.append(OriginServer(name, host, port, weight, **_origin_tls(t, p, base)))
    return tuple(out)


_ORIGIN_TLS_KEYS = ("scheme", "tls_server_name", "tls_ca_file", "tls_cert_file",
                    "tls_key_file", "tls_verify")


def _origin_tls(t: dict[str, Any], p: str, base: Path) -> dict[str, Any]:
    """An origin's scheme and TLS keys; file paths are relative to the topology file."""
    scheme = get(t, p, "scheme", str, "http")
    if scheme not in ("http", "https"):
        raise ConfigError(join(p, "scheme"), f'must be "http" or "https", got {scheme!r}')
    values: dict[str, Any] = {"scheme": scheme,
                              "tls_verify": get(t, p, "tls_verify", bool, True)}
    name = get(t, p, "tls_server_name", str, None)
    if name is not None and (not name or any(c.isspace() for c in name)):
        raise ConfigError(join(p, "tls_server_name"), f"not a host name: {name!r}")
    values["tls_server_name"] = name
    for key in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
        text = get(t, p, key, str, None)
        if text is not None:
            path = base / text
            if not path.is_file():
                raise ConfigError(join(p, key), f"no such file: {path}")
            text = str(path)
        values[key] = text
    if values["tls_key_file"] is not None and values["tls_cert_file"] is None:
        raise ConfigError(join(p, "tls_key_file"), "needs tls_cert_file")
    if scheme == "http":
        for key in _ORIGIN_TLS_KEYS[1:]:
            if key in t:
                raise ConfigError(join(p, key), 'only for scheme = "https"')
    return values


def _origin(table: Any, base: Path) -> OriginSettings:
    p = "origin"
    t = check_keys(table, p, {"root", "rules"})
    root_text = get(t, p, "root", str, "")
    root = (base / root_text) if root_text else None
    rules = []
    for i, item in enumerate(get(t, p, "rules", list, [])):
        rp = join(join(p, "rules"), i)
        r = check_keys(item, rp, {"path", "cache_control", "cdn_cache_control", "surrogate_key"},
                       {"path"})
        path = get(r, rp, "path", str)
        if not path.startswith("/"):
            raise ConfigError(join(rp, "path"), f"must start with '/', got {path!r}")
        rules.append(ContentRule(
            path,
            get(r, rp, "cache_control", str, None),
            get(r, rp, "cdn_cache_control", str, None),
            get(r, rp, "surrogate_key", str, None),
        ))
    return OriginSettings(root, tuple(rules))
