"""The zones of the topology file: SOA, static records and geo-routed names, validated.

Every record is checked as it will be served: names made absolute and kept inside their zone,
RDATA parsed by dnslib and packed once, CNAMEs alone at their name and never at the apex,
an NS at the apex. Problems raise ConfigError naming the key (``zones[0].records[3].value``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import dnslib

from geoconfig.validate import ConfigError, check_keys, get, ip_address, join, number_in, str_list

STATIC_TYPES = frozenset({"A", "AAAA", "CNAME", "TXT", "MX", "CAA", "NS", "SRV", "PTR"})
# For types whose value holds a domain name: how many whitespace-separated fields the value has
# (dnslib silently ignores extra ones: "CNAME a b" would become "a") and which one is the name.
# The name is made absolute here: dnslib leaves '@' as a label and ignores the origin for SRV.
_NAME_VALUES = {"CNAME": (1, 0), "NS": (1, 0), "PTR": (1, 0), "MX": (2, 1), "SRV": (4, 3)}
# Characters that would change how the zone-file line handed to dnslib is parsed.
_ZONE_SPECIAL = frozenset(';()"\\')


@dataclass(frozen=True, slots=True)
class GeoName:
    name: str  # absolute, lower case, with trailing dot
    ttl: int
    regions: tuple[str, ...]
    # steering (geodns/steering.py): a [[pools]] entry serving the name ("": the regions' own
    # edges), addresses per family in an answer (0: every edge of the region), the addresses
    # answered when every region serving it is down (empty: fail open to the nearest)
    pool: str = ""
    addresses: int = 0
    fallback: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DnssecConfig:
    """A signed zone's settings (``zones[N].dnssec``); the keys are read by geodns.dnssec."""

    key_dir: str  # as written; a relative path is relative to the topology file's directory
    signature_lifetime: int = 604800  # seconds from a signing generation's start to expiry
    inception_skew: int = 3600  # inception this long before the generation's start
    refresh: int = 259200  # re-sign everything when a generation has less left than this


@dataclass(frozen=True, slots=True)
class Zone:
    origin: str  # absolute, lower case, with trailing dot
    soa: dnslib.RR
    records: tuple[dnslib.RR, ...]
    geo: tuple[GeoName, ...]
    dnssec: DnssecConfig | None = None  # None: served unsigned

    @property
    def negative_ttl(self) -> int:
        """RFC 2308 §5: the lesser of the SOA's TTL and its MINIMUM field."""
        return min(self.soa.ttl, self.soa.rdata.times[4])


def parse_zones(items: list, region_names: list[str],
                pools: dict[str, tuple[str, ...]] | None = None) -> tuple[Zone, ...]:
    """``pools``: each [[pools]] name and the regions of its edges."""
    if not items:
        raise ConfigError("zones", "at least one zone is required")
    out: list[Zone] = []
    origins: set[str] = set()
    for i, item in enumerate(items):
        p = join("zones", i)
        t = check_keys(item, p, {"origin", "ttl", "soa", "records", "geo", "dnssec"},
                       {"origin", "soa"})
        origin = _absolute(get(t, p, "origin", str), ".", join(p, "origin"))
        if origin in origins:
            raise ConfigError(join(p, "origin"), f"duplicate zone {origin!r}")
        origins.add(origin)
        ttl = int(number_in(get(t, p, "ttl", int, 3600), join(p, "ttl"), 0, 2**31 - 1))
        soa = _soa(t["soa"], join(p, "soa"), origin, ttl)
        records = tuple(
            _record(r, join(join(p, "records"), j), origin, ttl)
            for j, r in enumerate(get(t, p, "records", list, []))
        )
        geo = tuple(
            _geo(g, join(join(p, "geo"), j), origin, region_names, pools or {})
            for j, g in enumerate(get(t, p, "geo", list, []))
        )
        _check_zone_consistency(p, origin, records, geo)
        dnssec = _dnssec(t["dnssec"], join(p, "dnssec"), ttl) if "dnssec" in t else None
        out.append(Zone(origin, soa, records, geo, dnssec))
    return tuple(out)


def _dnssec(table: Any, path: str, zone_ttl: int) -> DnssecConfig:
    d = DnssecConfig("")
    keys = {"key_dir", "signature_lifetime", "inception_skew", "refresh"}
    t = check_keys(table, path, keys, {"key_dir"})
    key_dir = get(t, path, "key_dir", str)
    if not key_dir:
        raise ConfigError(join(path, "key_dir"), "empty path")

    def num(key: str, default: int, low: int, high: int) -> int:
        return int(number_in(get(t, path, key, int, default), join(path, key), low, high))

    lifetime = num("signature_lifetime", d.signature_lifetime, 3600, 2**31 - 1)
    skew = num("inception_skew", d.inception_skew, 0, 86400)
    refresh = num("refresh", d.refresh, 60, 2**31 - 1)
    if refresh >= lifetime:
        raise ConfigError(join(path, "refresh"),
                          f"must be less than signature_lifetime ({lifetime}), got {refresh}")
    if refresh < zone_ttl:
        raise ConfigError(join(path, "refresh"), f"must be at least the zone's ttl ({zone_ttl}) "
                          "so cached answers never outlive their signatures")
    return DnssecConfig(key_dir, lifetime, skew, refresh)


def _absolute(name: str, origin: str, path: str) -> str:
    """Turn a zone-relative name ('www', '@') or an absolute one ('www.example.') into
    a lower-case absolute name and check it is a valid DNS name."""
    if not name:
        raise ConfigError(path, "empty name")
    if name == "@":
        full = origin
    elif name.endswith("."):
        full = name
    else:
        full = f"{name}.{origin}" if origin != "." else f"{name}."
    full = full.lower()
    for ch in full:
        if ch in _ZONE_SPECIAL or ch.isspace() or not ch.isprintable():
            raise ConfigError(path, f"invalid DNS name {name!r}: {ch!r} is not allowed")
    labels = full[:-1].split(".") if full != "." else []  # full always ends with one '.'
    for label in labels:
        if not label or len(label.encode()) > 63:
            raise ConfigError(path, f"invalid DNS name {name!r}")
    if len(full.encode()) > 254:
        raise ConfigError(path, f"name too long: {name!r}")
    return full


def _in_zone(name: str, origin: str) -> bool:
    return name == origin or name.endswith("." + origin)


def _soa(table: Any, path: str, origin: str, zone_ttl: int) -> dnslib.RR:
    keys = {"mname", "rname", "serial", "refresh", "retry", "expire", "minimum", "ttl"}
    t = check_keys(table, path, keys, {"mname", "rname", "serial"})
    mname = _absolute(get(t, path, "mname", str), origin, join(path, "mname"))
    rname = _absolute(get(t, path, "rname", str), origin, join(path, "rname"))

    def num(key: str, default: int) -> int:
        return int(number_in(get(t, path, key, int, default), join(path, key), 0, 2**32 - 1))

    times = (num("serial", 1), num("refresh", 3600), num("retry", 600), num("expire", 604800),
             num("minimum", 60))
    soa = dnslib.SOA(mname, rname, times)
    return dnslib.RR(origin, dnslib.QTYPE.SOA, rdata=soa, ttl=num("ttl", zone_ttl))


def _record(table: Any, path: str, origin: str, zone_ttl: int) -> dnslib.RR:
    t = check_keys(table, path, {"name", "type", "value", "ttl"}, {"name", "type", "value"})
    name = _absolute(get(t, path, "name", str), origin, join(path, "name"))
    if not _in_zone(name, origin):
        raise ConfigError(join(path, "name"), f"{name!r} is outside its zone {origin!r}")
    rtype = get(t, path, "type", str).upper()
    if rtype not in STATIC_TYPES:
        known = ", ".join(sorted(STATIC_TYPES))
        raise ConfigError(join(path, "type"), f"unsupported type {rtype!r} (one of {known})")
    ttl = int(number_in(get(t, path, "ttl", int, zone_ttl), join(path, "ttl"), 0, 2**31 - 1))
    value = get(t, path, "value", str)
    if rtype == "NS" and name != origin:
        raise ConfigError(join(path, "name"), "NS records are only supported at the zone apex")
    rdata = value
    if rtype in _NAME_VALUES:
        fields, at = _NAME_VALUES[rtype]
        parts = value.split()
        if len(parts) != fields:
            raise ConfigError(
                join(path, "value"),
                f"bad {rtype} data {value!r}: expected {fields} field{'s' if fields > 1 else ''}",
            )
        parts[at] = _absolute(parts[at], origin, join(path, "value"))
        rdata = " ".join(parts)
    try:
        rrs = dnslib.RR.fromZone(f"{name} {ttl} IN {rtype} {rdata}", origin=dnslib.DNSLabel(origin))
    except (dnslib.DNSError, ValueError, IndexError, KeyError) as exc:
        raise ConfigError(join(path, "value"), f"bad {rtype} data {value!r}: {exc}") from None
    if len(rrs) != 1:
        raise ConfigError(join(path, "value"), f"bad {rtype} data {value!r}")
    rr = rrs[0]
    try:  # dnslib checks some field ranges only when packing (e.g. CAA flags > 255)
        rr.pack(dnslib.DNSBuffer())
    except (dnslib.DNSError, struct.error, ValueError) as exc:
        raise ConfigError(join(path, "value"), f"bad {rtype} data {value!r}: {exc}") from None
    if rtype == "AAAA":
        ip_address(value, join(path, "value"), 6)
    elif rtype == "A":
        ip_address(value, join(path, "value"), 4)
    return rr


def _geo(table: Any, path: str, origin: str, region_names: list[str],
         pools: dict[str, tuple[str, ...]]) -> GeoName:
    t = check_keys(table, path, {"name", "ttl", "regions", "pool", "addresses", "fallback"},
                   {"name"})
    name = _absolute(get(t, path, "name", str), origin, join(path, "name"))
    if not _in_zone(name, origin):
        raise ConfigError(join(path, "name"), f"{name!r} is outside its zone {origin!r}")
    ttl = int(number_in(get(t, path, "ttl", int, 30), join(path, "ttl"), 0, 86400))
    regions = str_list(t, path, "regions") or tuple(region_names)
    for j, r in enumerate(regions):
        if r not in region_names:
            raise ConfigError(join(join(path, "regions"), j), f"unknown region {r!r}")
    pool, addresses, fallback = _steering(t, path, pools)
    if pool:
        if "regions" in t:
            raise ConfigError(join(path, "regions"), "give either regions or pool, not both")
        regions = pools[pool]
    return GeoName(name, ttl, regions, pool, addresses, fallback)


def _steering(t: dict, path: str,
              pools: dict[str, tuple[str, ...]]) -> tuple[str, int, tuple[str, ...]]:
    pool = get(t, path, "pool", str, "")
    if "pool" in t and pool not in pools:
        known = ", ".join(sorted(pools)) or "none defined"
        raise ConfigError(join(path, "pool"), f"unknown pool {pool!r} ({known})")
    addresses = int(number_in(get(t, path, "addresses", int, 0), join(path, "addresses"),
                              0, 64))
    fallback = tuple(ip_address(v, join(join(path, "fallback"), j))
                     for j, v in enumerate(str_list(t, path, "fallback")))
    return pool, addresses, fallback


def _check_zone_consistency(
    path: str, origin: str, records: tuple[dnslib.RR, ...], geo: tuple[GeoName, ...]
) -> None:
    types: dict[str, set[str]] = {}
    cnames: dict[str, int] = {}
    for rr in records:
        name = str(rr.rname).lower()
        rtype = dnslib.QTYPE[rr.rtype]
        types.setdefault(name, set()).add(rtype)
        if rtype == "CNAME":
            cnames[name] = cnames.get(name, 0) + 1
    if "CNAME" in types.get(origin, set()):
        raise ConfigError(join(path, "records"), "a CNAME cannot be at the zone apex")
    for name, ts in types.items():
        if "CNAME" in ts and len(ts) > 1:
            raise ConfigError(join(path, "records"), f"{name} has a CNAME and other data")
        if cnames.get(name, 0) > 1:
            raise ConfigError(join(path, "records"), f"{name} has more than one CNAME")
    if "NS" not in types.get(origin, set()):
        raise ConfigError(join(path, "records"), "the zone apex needs at least one NS record")
    seen: set[str] = set()
    for j, g in enumerate(geo):
        p = join(join(path, "geo"), j)
        if g.name in seen:
            raise ConfigError(join(p, "name"), f"duplicate geo name {g.name!r}")
        seen.add(g.name)
        clash = types.get(g.name, set()) & {"A", "AAAA", "CNAME"}
        if clash:
            raise ConfigError(join(p, "name"), f"{g.name} also has static {sorted(clash)} records")
