"""Zones compiled for lookup: names in lower-case wire format mapped to their RRsets.

Built once per topology load from :class:`geoconfig.topology.Zone` objects and never mutated, so
a reload swaps the whole thing at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dnslib

from geoconfig.zoneconfig import GeoName, Zone
from geodns.pack import PackedRR, pack_rr
from geodns.wire import text_to_name

QTYPE_CNAME = 5


@dataclass(slots=True)
class ZoneData:
    origin: bytes
    soa: dnslib.RR
    negative_ttl: int
    negative_soa: dnslib.RR  # the SOA as sent with NXDOMAIN/NODATA (TTL = negative TTL)
    rrsets: dict[bytes, dict[int, list[dnslib.RR]]] = field(default_factory=dict)
    existing: set[bytes] = field(default_factory=set)  # every name that exists, incl. ENTs
    geo: dict[bytes, GeoName] = field(default_factory=dict)
    # the negative SOA as (fixed header, MNAME labels, RNAME labels, times) when both names
    # are inside the zone, so NXDOMAIN can point them at the question's zone suffix
    negative_parts: tuple[bytes, bytes, bytes, bytes] | None = None
    nxdomain_by_length: dict[int, Any] = field(default_factory=dict)  # answer.nxdomain_fast

    def exists(self, name: bytes) -> bool:
        return name in self.existing


def _parents(name: bytes, origin: bytes) -> list[bytes]:
    """``name`` and each ancestor of it down to (and including) the zone origin."""
    out = [name]
    while name != origin and name != b"\x00":
        name = name[name[0] + 1 :]
        out.append(name)
    return out


def compile_zone(zone: Zone) -> ZoneData:
    origin = text_to_name(zone.origin)
    soa = zone.soa
    negative = dnslib.RR(soa.rname, soa.rtype, rdata=soa.rdata, ttl=zone.negative_ttl)
    data = ZoneData(origin, soa, zone.negative_ttl, negative)
    data.rrsets.setdefault(origin, {})[dnslib.QTYPE.SOA] = [soa]
    for rr in zone.records:
        name = text_to_name(str(rr.rname))
        data.rrsets.setdefault(name, {}).setdefault(rr.rtype, []).append(rr)
    for geo in zone.geo:
        data.geo[text_to_name(geo.name)] = geo
    for name in [*data.rrsets, *data.geo]:
        data.existing.update(_parents(name, origin))
    return data


def _negative_parts(packed: PackedRR, origin: bytes) -> tuple[bytes, bytes, bytes, bytes] | None:
    _owner, fixed, (mname, rname, times) = packed
    if origin == b"\x00" or not (_is_suffix(mname, origin) and _is_suffix(rname, origin)):
        return None
    cut = len(origin)
    return fixed, mname[:-cut], rname[:-cut], times


def _is_suffix(name: bytes, origin: bytes) -> bool:
    """Whether ``origin`` is ``name`` or one of its ancestors (label-wise)."""
    return name.endswith(origin) and origin in _parents(name, origin)


class ZoneSet:
    """All zones; finds the closest enclosing zone of a name."""

    def __init__(self, zones: list[ZoneData]) -> None:
        self._by_origin = {z.origin: z for z in zones}
        # every zone record pre-packed (pack.py), by id(): records live as long as the zones
        self.packed: dict[int, PackedRR] = {}
        for z in zones:
            for rr in [z.negative_soa, *(r for sets in z.rrsets.values()
                                         for rrs in sets.values() for r in rrs)]:
                self.packed[id(rr)] = pack_rr(rr)
            z.negative_parts = _negative_parts(self.packed[id(z.negative_soa)], z.origin)

    def find(self, name: bytes) -> ZoneData | None:
        """The zone with the longest origin that is ``name`` or an ancestor of it."""
        by_origin = self._by_origin
        while True:
            zone = by_origin.get(name)
            if zone is not None:
                return zone
            if name == b"\x00":
                return None
            name = name[name[0] + 1 :]

    @property
    def zones(self) -> list[ZoneData]:
        return list(self._by_origin.values())

    def geo_names(self) -> dict[bytes, GeoName]:
        out: dict[bytes, GeoName] = {}
        for z in self._by_origin.values():
            out.update(z.geo)
        return out

    def location_dependent_names(self, max_chain: int = 16) -> set[bytes]:
        """Names whose answer can depend on the client's location: geo names and in-zone
        CNAME chains that lead to one."""
        geo = set(self.geo_names())
        out = set(geo)
        for z in self._by_origin.values():
            for name in z.rrsets:
                target = name
                for _ in range(max_chain):
                    cname = self.cname_target(target)
                    if cname is None:
                        break
                    target = cname
                    if target in geo:
                        out.add(name)
                        break
        return out

    def cname_target(self, name: bytes) -> bytes | None:
        zone = self.find(name)
        if zone is None:
            return None
        rrs = zone.rrsets.get(name, {}).get(QTYPE_CNAME)
        return text_to_name(str(rrs[0].rdata.label)) if rrs else None
