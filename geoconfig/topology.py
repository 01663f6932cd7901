"""The topology file: one TOML document describing zones, regions, edges and health checks.

``load_topology(path)`` reads and validates it and returns a frozen :class:`Topology`; any
problem raises :class:`ConfigError` naming the key (``regions[1].latitude``) and what is wrong.
Nothing is read at import time; callers decide when to (re)load.

Shape (see ``examples/demo.toml`` for a complete file)::

    default_region = "us-east"
    [dns]      listen, tcp_idle_timeout, tcp_query_timeout, max_udp_payload, answer_cache_size,
               udp_fast_path, nsid, identity, version, cookies, cookie_secret, cookie_rotation
    [geoip]    database ("" = the embedded GeoLite2-City), watch_interval, map_cache_dir
    [health]   path, interval, timeout, rise, fall
    [[regions]] name, latitude, longitude, countries, continents, redis, parent,
                edges = [{ name, ipv4, ipv6, port, check_address }]
    [[zones]]  origin, ttl, soa = {...}, records = [{ name, type, value, ttl }],
               geo = [{ name, ttl, regions }]
    [edge], [[origins]], [origin]   the CDN part: see geoconfig/cdnconfig.py
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoconfig.cdnconfig import CdnSettings, RedisConfig, parse_cdn, parse_redis
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

    @property
    def check_url_base(self) -> str:
        host = f"[{self.check_address}]" if ":" in self.check_address else self.check_address
        return f"http://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class RegionConfig:
    region: Region
    edges: tuple[Edge, ...]
    redis: RedisConfig | None = None  # the region's shared cache tier
    parent: str | None = None  # origin shield: misses go to this region's edges first

    @property
    def name(self) -> str:
        return self.region.name


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
         "origin"},
        {"default_region", "regions", "zones"},
    )
    regions = _regions(get(top, "", "regions", list))
    names = [rc.name for rc in regions]
    default = get(top, "", "default_region", str)
    if default not in names:
        raise ConfigError("default_region", f"{default!r} is not one of the regions {names}")
    zones = parse_zones(get(top, "", "zones", list), names)
    return Topology(
        source=source,
        default_region=default,
        regions=regions,
        zones=zones,
        dns=_dns(top.get("dns", {})),
        geoip=_geoip(top.get("geoip", {})),
        health=_health(top.get("health", {})),
        cdn=parse_cdn(top, source),
    )


def _dns(table: Any) -> DnsSettings:
    p = "dns"
    t = check_keys(table, p, {"listen", "tcp_idle_timeout", "max_udp_payload", "answer_cache_size",
                              "udp_fast_path", "tcp_query_timeout", "nsid", "identity", "version",
                              "cookies", "cookie_secret", "cookie_rotation"})
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
    return DnsSettings(listen, idle, payload, cache, fast, query_timeout, texts["nsid"],
                       texts["identity"], texts["version"],
                       get(t, p, "cookies", bool, d.cookies), secret, rotation)


def _geoip(table: Any) -> GeoIPSettings:
    t = check_keys(table, "geoip", {"database", "watch_interval", "map_cache_dir"})
    db = get(t, "geoip", "database", str, "") or None
    watch = get(t, "geoip", "watch_interval", float, GeoIPSettings().watch_interval)
    positive(watch, "geoip.watch_interval")
    return GeoIPSettings(db, watch, get(t, "geoip", "map_cache_dir", str, ""))


def _health(table: Any) -> HealthSettings:
    p = "health"
    t = check_keys(table, p, {"path", "interval", "timeout", "rise", "fall"})
    d = HealthSettings()
    path = get(t, p, "path", str, d.path)
    if not path.startswith("/"):
        raise ConfigError(join(p, "path"), f"must start with '/', got {path!r}")
    interval = positive(get(t, p, "interval", float, d.interval), join(p, "interval"))
    timeout = positive(get(t, p, "timeout", float, d.timeout), join(p, "timeout"))
    rise = int(number_in(get(t, p, "rise", int, d.rise), join(p, "rise"), 1, 100))
    fall = int(number_in(get(t, p, "fall", int, d.fall), join(p, "fall"), 1, 100))
    return HealthSettings(path, interval, timeout, rise, fall)


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
             "parent"},
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
        out.append(RegionConfig(region, edges, redis, parent or None))
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
        t = check_keys(item, p, {"name", "ipv4", "ipv6", "port", "check_address"}, {"name"})
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
        out.append(Edge(name, region, v4, v6, port, check))
    return tuple(out)
