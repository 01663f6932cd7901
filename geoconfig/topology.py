"""The topology file: one TOML document describing zones, regions, edges and health checks.

``load_topology(path)`` reads and validates it and returns a frozen :class:`Topology`; any
problem raises :class:`ConfigError` naming the key (``regions[1].latitude``) and what is wrong.
Nothing is read at import time; callers decide when to (re)load.

Shape (see ``examples/demo.toml`` for a complete file)::

    default_region = "us-east"
    [dns]      listen, tcp_idle_timeout, tcp_query_timeout, max_udp_payload, answer_cache_size,
               udp_fast_path, nsid, identity, version, cookies, cookie_secret, cookie_rotation,
               metrics_listen, [dns.querylog] (geoconfig/dnsobs.py)
    [dns.rrl]  enabled, responses_per_second, window, slip, ipv4_prefix, ipv6_prefix, exempt,
               table_size
    [geoip]    database ("" = the embedded GeoLite2-City), watch_interval, map_cache_dir
    [health]   path, interval, timeout, rise, fall, host, status, check, port, tls_verify,
               ca_file
    [[regions]] name, latitude, longitude, countries, continents, redis, weight, parent,
                edges = [{ name, ipv4, ipv6, port, check_address, weight }]
    [[pools]]  name, edges = ["EDGE", ...], health = { as [health], defaults from it }
    [[zones]]  origin, ttl, soa = {...}, records = [{ name, type, value, ttl }],
               geo = [{ name, ttl, regions | pool, addresses, fallback }]
    [edge], [[origins]], [origin]   the CDN part: see geoconfig/cdnconfig.py
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from geoconfig.cdnconfig import CdnSettings, RedisConfig, parse_cdn, parse_redis
from geoconfig.dnsobs import KEYS as OBS_KEYS
from geoconfig.dnsobs import ObsSettings, parse_obs
from geoconfig.sites import serve_sites_from_their_regions
from geoconfig.validate import (
    ConfigError,
    check_keys,
    get,
    host_port,
    ip_address,
    join,
    number_in,
    positive,
    str_list,
)
from geoconfig.zoneconfig import Zone, parse_zones
from geodata.regions import Region

CONTINENTS = frozenset({"AF", "AN", "AS", "EU", "NA", "OC", "SA"})
@dataclass(frozen=True, slots=True)
class Edge:
    name: str
    region: str
    ipv4: str | None
    ipv6: str | None
    port: int
    check_address: str  # where health probes go (defaults to ipv4, else ipv6)
    weight: int = 1  # share of the region's answers (geodns/steering.py); 0: never answered

    @property
    def check_url_base(self) -> str:
        host = f"[{self.check_address}]" if ":" in self.check_address else self.check_address
        return f"http://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class RegionConfig:
    region: Region
    edges: tuple[Edge, ...]
    redis: RedisConfig | None = None  # the region's shared cache tier
    weight: int = 1  # 0: drained (answers go to the next region; not a health failure)
    parent: str | None = None  # origin shield: misses go to this region's edges first

    @property
    def name(self) -> str:
        return self.region.name


@dataclass(frozen=True, slots=True)
class RrlSettings:
    """``[dns.rrl]``, Response Rate Limiting (geodns/rrl.py has the rules)."""

    enabled: bool = False
    responses_per_second: float = 20.0  # per client prefix
    window: float = 15.0  # seconds of debt a flooding prefix accumulates at most
    slip: int = 2  # every Nth limited response goes out truncated (TC=1); 0: drop all
    ipv4_prefix: int = 24
    ipv6_prefix: int = 56
    exempt: tuple[str, ...] = ()  # networks never limited ("192.0.2.0/24", "::1/128")
    table_size: int = 100_000  # client prefixes tracked at once


@dataclass(frozen=True, slots=True)
class DnsSettings:
    listen: tuple[tuple[str, int], ...] = (("127.0.0.1", 5353), ("::1", 5353))
    tcp_idle_timeout: float = 10.0
    max_udp_payload: int = 1232
    answer_cache_size: int = 100_000
    udp_fast_path: bool = True  # geodns/_fastudp.c when it is built (read at start-up only)
    tcp_query_timeout: float = 5.0  # seconds to read a query once its first byte arrived
    nsid: str = ""  # RFC 5001 NSID payload (ASCII); "": off
    identity: str = ""  # CHAOS TXT id.server / hostname.bind; "": off (REFUSED)
    version: str = ""  # CHAOS TXT version.bind; "": off (REFUSED)
    cookies: bool = True  # DNS Cookies (RFC 7873/9018)
    cookie_secret: str = ""  # 32 hex digits; "": random at start-up (shared by --workers)
    cookie_rotation: float = 3600.0  # seconds each derived server-cookie secret is used
    rrl: RrlSettings = RrlSettings()
    obs: ObsSettings = field(default_factory=ObsSettings)  # metrics_listen, [dns.querylog]

    @property
    def metrics_listen(self) -> tuple[str, int] | None:
        """``[dns] metrics_listen`` as (host, port), None when off."""
        return self.obs.metrics_listen


@dataclass(frozen=True, slots=True)
class GeoIPSettings:
    database: str | None = None  # None: the embedded GeoLite2-City
    watch_interval: float = 2.0
    map_cache_dir: str = ""  # compiled region maps; "": $XDG_CACHE_HOME/geoedge (~/.cache)


@dataclass(frozen=True, slots=True)
class HealthSettings:
    path: str = "/healthz"
    interval: float = 1.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 2
    host: str = ""  # Host header (and TLS server name); "": the check address
    status: tuple[int, ...] = ()  # statuses that pass; (): any 2xx
    check: str = "http"  # "http", "https" (GET over TLS) or "tcp" (a connect only)
    port: int = 0  # 0: the edge's port
    tls_verify: bool = True  # https: verify the certificate (against ca_file or the system's)
    ca_file: str = ""  # https: CA bundle (PEM); "": the system's


@dataclass(frozen=True, slots=True)
class Pool:
    """``[[pools]]``: a named set of edges (from the regions) that geo names can be served by,
    grouped by the edges' regions; ``health`` (None: the edges' own [health] checks) gives its
    edges their own probes, whose results count for this pool only."""

    name: str
    edges: tuple[Edge, ...]
    health: HealthSettings | None = None

    def health_key(self, edge: Edge) -> str:
        return f"{self.name}/{edge.name}" if self.health is not None else edge.name


@dataclass(frozen=True, slots=True)
class Probe:
    """One health check: its key in the health map, the edge, how it is probed."""

    key: str
    edge: Edge
    settings: HealthSettings


@dataclass(frozen=True, slots=True)
class Topology:
    source: str
    default_region: str
    regions: tuple[RegionConfig, ...]
    zones: tuple[Zone, ...]
    dns: DnsSettings
    geoip: GeoIPSettings
    health: HealthSettings
    cdn: CdnSettings = field(default_factory=CdnSettings)
    pools: tuple[Pool, ...] = ()

    def pool_probes(self) -> tuple[Probe, ...]:
        """The probes of the pools with their own health settings (the edges' own checks,
        ``[health]``, are the health checker's default)."""
        return tuple(Probe(p.health_key(e), e, p.health) for p in self.pools
                     if p.health is not None for e in p.edges)

    def find_edge(self, name: str) -> Edge:
        for e in self.edges:
            if e.name == name:
                return e
        raise KeyError(name)

    def region(self, name: str) -> RegionConfig:
        for rc in self.regions:
            if rc.name == name:
                return rc
        raise KeyError(name)

    @property
    def edges(self) -> tuple[Edge, ...]:
        return tuple(e for rc in self.regions for e in rc.edges)


def load_topology(path: str | Path) -> Topology:
    """Read and validate a topology file; raises ConfigError."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError("", f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError("", f"{path}: not valid TOML: not UTF-8 ({exc.reason} at byte "
                              f"{exc.start})") from None
    return parse_topology(data, source=str(path))


def parse_topology(data: dict[str, Any], source: str = "<memory>") -> Topology:
    top = check_keys(
        data, "",
        {"default_region", "dns", "geoip", "health", "regions", "zones", "edge", "origins",
         "origin", "pools", "sites"},
        {"default_region", "regions", "zones"},
    )
    regions = _regions(get(top, "", "regions", list))
    names = [rc.name for rc in regions]
    default = get(top, "", "default_region", str)
    if default not in names:
        raise ConfigError("default_region", f"{default!r} is not one of the regions {names}")
    health = _health(top.get("health", {}))
    pools = _pools(get(top, "", "pools", list, []), regions, health)
    zones = parse_zones(get(top, "", "zones", list), names, {p.name: tuple(dict.fromkeys(
        e.region for e in p.edges)) for p in pools})
    cdn = parse_cdn(top, source, names)
    return Topology(
        source=source,
        default_region=default,
        regions=regions,
        zones=serve_sites_from_their_regions(zones, cdn.sites),  # a site's regions (#14)
        dns=_dns(top.get("dns", {})),
        geoip=_geoip(top.get("geoip", {})),
        health=health,
        cdn=cdn,
        pools=pools,
    )


def _dns(table: Any) -> DnsSettings:
    p = "dns"
    t = check_keys(table, p, {"listen", "tcp_idle_timeout", "max_udp_payload", "answer_cache_size",
                              "udp_fast_path", "tcp_query_timeout", "nsid", "identity", "version",
                              "cookies", "cookie_secret", "cookie_rotation", "rrl"} | OBS_KEYS)
    d = DnsSettings()
    listen = d.listen
    if "listen" in t:
        items = str_list(t, p, "listen")
        if not items:
            raise ConfigError(join(p, "listen"), "needs at least one HOST:PORT")
        listen = tuple(host_port(v, join(join(p, "listen"), i)) for i, v in enumerate(items))
    payload = get(t, p, "max_udp_payload", int, d.max_udp_payload)
    number_in(payload, join(p, "max_udp_payload"), 512, 65535)
    cache = get(t, p, "answer_cache_size", int, d.answer_cache_size)
    number_in(cache, join(p, "answer_cache_size"), 16, 10_000_000)
    idle = get(t, p, "tcp_idle_timeout", float, d.tcp_idle_timeout)
    positive(idle, join(p, "tcp_idle_timeout"))
    fast = get(t, p, "udp_fast_path", bool, d.udp_fast_path)
    query_timeout = get(t, p, "tcp_query_timeout", float, d.tcp_query_timeout)
    positive(query_timeout, join(p, "tcp_query_timeout"))
    texts = {}
    for key, limit in (("nsid", 512), ("identity", 255), ("version", 255)):
        value = texts[key] = get(t, p, key, str, getattr(d, key))
        if not value.isascii() or len(value) > limit:
            raise ConfigError(join(p, key), f"must be ASCII, at most {limit} characters")
    secret = get(t, p, "cookie_secret", str, d.cookie_secret)
    if secret and not re.fullmatch(r"[0-9a-fA-F]{32}", secret):
        raise ConfigError(join(p, "cookie_secret"), "must be 32 hex digits (16 bytes)")
    rotation = get(t, p, "cookie_rotation", float, d.cookie_rotation)
    number_in(rotation, join(p, "cookie_rotation"), 60, 86400)
    settings = DnsSettings(listen, idle, payload, cache, fast, query_timeout, texts["nsid"],
                           texts["identity"], texts["version"],
                           get(t, p, "cookies", bool, d.cookies), secret, rotation,
                           _rrl(get(t, p, "rrl", dict, {})))
    return replace(settings, obs=parse_obs(t, p))


def _rrl(table: dict) -> RrlSettings:
    p = "dns.rrl"
    t = check_keys(table, p, {"enabled", "responses_per_second", "window", "slip", "ipv4_prefix",
                              "ipv6_prefix", "exempt", "table_size"})
    d = RrlSettings()
    rate = get(t, p, "responses_per_second", float, d.responses_per_second)
    number_in(rate, join(p, "responses_per_second"), 1, 1e7)
    window = get(t, p, "window", float, d.window)
    number_in(window, join(p, "window"), 1, 3600)
    slip = int(number_in(get(t, p, "slip", int, d.slip), join(p, "slip"), 0, 100))
    v4 = int(number_in(get(t, p, "ipv4_prefix", int, d.ipv4_prefix), join(p, "ipv4_prefix"),
                       0, 32))
    v6 = int(number_in(get(t, p, "ipv6_prefix", int, d.ipv6_prefix), join(p, "ipv6_prefix"),
                       0, 128))
    exempt = []
    for i, text in enumerate(str_list(t, p, "exempt")):
        try:
            exempt.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            raise ConfigError(join(join(p, "exempt"), i),
                              f"not a network (ADDRESS/PREFIX): {text!r}") from None
    size = int(number_in(get(t, p, "table_size", int, d.table_size), join(p, "table_size"),
                         16, 10_000_000))
    return RrlSettings(get(t, p, "enabled", bool, d.enabled), rate, window, slip, v4, v6,
                       tuple(exempt), size)


def _geoip(table: Any) -> GeoIPSettings:
    t = check_keys(table, "geoip", {"database", "watch_interval", "map_cache_dir"})
    db = get(t, "geoip", "database", str, "") or None
    watch = get(t, "geoip", "watch_interval", float, GeoIPSettings().watch_interval)
    positive(watch, "geoip.watch_interval")
    return GeoIPSettings(db, watch, get(t, "geoip", "map_cache_dir", str, ""))


def _health(table: Any, p: str = "health", d: HealthSettings = HealthSettings()
            ) -> HealthSettings:
    """``[health]``, or a pool's ``health`` (``p``) whose defaults are ``d``, the [health]."""
    t = check_keys(table, p, {"path", "interval", "timeout", "rise", "fall", "host", "status",
                              "check", "port", "tls_verify", "ca_file"})
    path = get(t, p, "path", str, d.path)
    if not path.startswith("/"):
        raise ConfigError(join(p, "path"), f"must start with '/', got {path!r}")
    interval = positive(get(t, p, "interval", float, d.interval), join(p, "interval"))
    timeout = positive(get(t, p, "timeout", float, d.timeout), join(p, "timeout"))
    rise = int(number_in(get(t, p, "rise", int, d.rise), join(p, "rise"), 1, 100))
    fall = int(number_in(get(t, p, "fall", int, d.fall), join(p, "fall"), 1, 100))
    host = get(t, p, "host", str, d.host)
    if any(c.isspace() or not c.isprintable() or c in "/?#@" for c in host):
        raise ConfigError(join(p, "host"), f"not a host name: {host!r}")
    status = d.status
    if "status" in t:
        value = t["status"]
        items = value if isinstance(value, list) else [value]
        for i, code in enumerate(items):
            key = join(join(p, "status"), i) if isinstance(value, list) else join(p, "status")
            if not isinstance(code, int) or isinstance(code, bool) or not 100 <= code <= 599:
                raise ConfigError(key, f"must be an HTTP status 100-599, got {code!r}")
        status = tuple(items)
    check = get(t, p, "check", str, d.check)
    if check not in ("http", "https", "tcp"):
        raise ConfigError(join(p, "check"), f"must be 'http', 'https' or 'tcp', got {check!r}")
    port = int(number_in(get(t, p, "port", int, d.port), join(p, "port"), 0, 65535))
    ca_file = get(t, p, "ca_file", str, d.ca_file)
    if ca_file and not Path(ca_file).is_file():
        raise ConfigError(join(p, "ca_file"), f"not a readable file: {ca_file!r}")
    return HealthSettings(path, interval, timeout, rise, fall, host, status, check, port,
                          get(t, p, "tls_verify", bool, d.tls_verify), ca_file)


def _weight(t: dict, p: str) -> int:
    return int(number_in(get(t, p, "weight", int, 1), join(p, "weight"), 0, 10_000))


def _pools(items: list, regions: tuple[RegionConfig, ...],
           health: HealthSettings) -> tuple[Pool, ...]:
    edges = {e.name: e for rc in regions for e in rc.edges}
    out: list[Pool] = []
    for i, item in enumerate(items):
        p = join("pools", i)
        t = check_keys(item, p, {"name", "edges", "health"}, {"name", "edges"})
        name = get(t, p, "name", str)
        bare = name.replace("-", "").replace("_", "")
        if not name or not bare.isascii() or not bare.isalnum():
            raise ConfigError(join(p, "name"), f"must be letters, digits, '-' or '_', got {name!r}")
        if any(q.name == name for q in out):
            raise ConfigError(join(p, "name"), f"duplicate pool {name!r}")
        names = str_list(t, p, "edges")
        if not names:
            raise ConfigError(join(p, "edges"), "a pool needs at least one edge")
        for j, e in enumerate(names):
            if e not in edges:
                raise ConfigError(join(join(p, "edges"), j), f"unknown edge {e!r}")
            if e in names[:j]:
                raise ConfigError(join(join(p, "edges"), j), f"edge {e!r} listed twice")
        own = _health(t["health"], join(p, "health"), health) if "health" in t else None
        out.append(Pool(name, tuple(edges[e] for e in names), own))
    return tuple(out)


def _regions(items: list) -> tuple[RegionConfig, ...]:
    if not items:
        raise ConfigError("regions", "at least one region is required")
    seen: set[str] = set()
    edge_names: set[str] = set()
    out = []
    for i, item in enumerate(items):
        p = join("regions", i)
        t = check_keys(
            item, p,
            {"name", "latitude", "longitude", "countries", "continents", "edges", "redis",
             "weight", "parent"},
            {"name", "latitude", "longitude", "edges"},
        )
        name = get(t, p, "name", str)
        bare = name.replace("-", "").replace("_", "")
        if not name or not bare.isascii() or not bare.isalnum():
            raise ConfigError(join(p, "name"), f"must be letters, digits, '-' or '_', got {name!r}")
        if name in seen:
            raise ConfigError(join(p, "name"), f"duplicate region {name!r}")
        seen.add(name)
        lat = number_in(get(t, p, "latitude", float), join(p, "latitude"), -90, 90)
        lon = number_in(get(t, p, "longitude", float), join(p, "longitude"), -180, 180)
        countries = str_list(t, p, "countries")
        for j, c in enumerate(countries):
            if len(c) != 2 or not c.isalpha() or not c.isupper():
                raise ConfigError(join(join(p, "countries"), j), f"not an ISO country code: {c!r}")
        continents = str_list(t, p, "continents")
        for j, c in enumerate(continents):
            if c not in CONTINENTS:
                raise ConfigError(
                    join(join(p, "continents"), j),
                    f"not a continent code: {c!r} (one of {', '.join(sorted(CONTINENTS))})",
                )
        edges = _edges(get(t, p, "edges", list), join(p, "edges"), name, edge_names)
        region = Region(name, lat, lon, frozenset(countries), frozenset(continents))
        redis = parse_redis(t["redis"], join(p, "redis"), name) if "redis" in t else None
        parent = get(t, p, "parent", str, None)
        out.append(RegionConfig(region, edges, redis, _weight(t, p), parent or None))
    _check_parents(out)
    return tuple(out)


def _check_parents(regions: list[RegionConfig]) -> None:
    """``parent`` names another region, and following parents never comes back (no cycle)."""
    parents = {rc.name: rc.parent for rc in regions}
    for i, rc in enumerate(regions):
        if rc.parent is None:
            continue
        key = join(join("regions", i), "parent")
        if rc.parent == rc.name:
            raise ConfigError(key, f"a region cannot be its own parent ({rc.name!r})")
        if rc.parent not in parents:
            raise ConfigError(key, f"{rc.parent!r} is not one of the regions {list(parents)}")
        seen, at = {rc.name}, rc.parent
        while at is not None:
            if at in seen:
                raise ConfigError(key, f"parents form a cycle through {at!r}")
            seen.add(at)
            at = parents[at]


def _edges(items: list, path: str, region: str, seen: set[str]) -> tuple[Edge, ...]:
    if not items:
        raise ConfigError(path, "a region needs at least one edge")
    out = []
    for i, item in enumerate(items):
        p = join(path, i)
        t = check_keys(item, p, {"name", "ipv4", "ipv6", "port", "check_address", "weight"},
                       {"name"})
        name = get(t, p, "name", str)
        if not name:
            raise ConfigError(join(p, "name"), "must not be empty")
        if name in seen:
            raise ConfigError(join(p, "name"), f"duplicate edge {name!r}")
        seen.add(name)
        v4 = get(t, p, "ipv4", str, None)
        v6 = get(t, p, "ipv6", str, None)
        if v4 is None and v6 is None:
            raise ConfigError(p, "an edge needs an ipv4 or an ipv6 address")
        v4 = ip_address(v4, join(p, "ipv4"), 4) if v4 is not None else None
        v6 = ip_address(v6, join(p, "ipv6"), 6) if v6 is not None else None
        if v6 is not None and "%" in v6:
            raise ConfigError(join(p, "ipv6"), f"must not have a zone index (%...), got {v6!r}")
        port = int(number_in(get(t, p, "port", int, 80), join(p, "port"), 1, 65535))
        check = get(t, p, "check_address", str, None)
        check = ip_address(check, join(p, "check_address")) if check is not None else (v4 or v6)
        out.append(Edge(name, region, v4, v6, port, check, _weight(t, p)))
    return tuple(out)
