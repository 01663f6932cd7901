"""Authoritative answer building: a pure function of the zones, the question and the geo choice.

Rules (RFC 1034 §4.3.2, RFC 2308, RFC 6604, RFC 8482):

- A name in no zone we serve: REFUSED, AA=0, no records.
- Class other than IN (or ANY): REFUSED. QTYPE OPT is FORMERR; AXFR/IXFR are REFUSED (zone
  transfers are not offered); other meta types (128-254) are NOTIMP.
- CNAME at the name (and QTYPE is not CNAME): the CNAME goes in the answer and the lookup
  restarts at its target, for targets in any zone we serve, at most 16 links; a loop stops at
  the first name seen twice, each CNAME once. The final name's result sets the RCODE (RFC 6604).
- A name that exists with no data of the type: NOERROR/NODATA with the zone's SOA in the
  authority section, its TTL the negative TTL (min of SOA TTL and MINIMUM, RFC 2308 §5).
- A name that does not exist (not even as an empty non-terminal): NXDOMAIN with the SOA likewise.
- Geo names answer A/AAAA with the addresses ``GeoResolver`` gives for the client; such answers
  are flagged ``location_dependent`` (the ECS scope then comes from the database network).
- ANY over UDP gets one synthesized HINFO "RFC8482" RRset (RFC 8482 §4.2); over TCP every RRset.
- NS and MX answers carry in-zone A/AAAA for their targets in the additional section.
- CHAOS (class 3) TXT or ANY for ``id.server``/``hostname.bind`` (``dns.identity``) and
  ``version.bind`` (``dns.version``): one TXT in class CH, TTL 0, AA=1; any other CHAOS query,
  or one whose value is off (""), is REFUSED as every class other than IN.
- Extended DNS Errors (RFC 8914) explain the REFUSED and NOTIMP answers (``Answer.ede``; the
  engine sends them only to queries with EDNS): a name in no zone, or a class not served: 20
  Not Authoritative; AXFR/IXFR: 18 Prohibited; meta types: 21 Not Supported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import dnslib

from geoconfig.zoneconfig import GeoName
from geodns.pack import MessageWriter, PackedRR
from geodns.wire import text_to_name
from geodns.zonedata import ZoneSet

A, NS, CNAME, SOA, MX, TXT, AAAA, OPT = 1, 2, 5, 6, 15, 16, 28, 41
HINFO, IXFR, AXFR, ANY = 13, 251, 252, 255
CLASS_IN, CLASS_CH, CLASS_ANY = 1, 3, 255
EDE_PROHIBITED, EDE_NOT_AUTHORITATIVE, EDE_NOT_SUPPORTED = 18, 20, 21
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
MAX_CHAIN = 16

GeoResolver = Callable[[GeoName], tuple[tuple[str, ...], tuple[str, ...]]]
"""Given a geo name, the (IPv4, IPv6) addresses to answer with for the current client."""


@dataclass(slots=True)
class Answer:
    rcode: int = NOERROR
    authoritative: bool = True
    answer: list[dnslib.RR] = field(default_factory=list)
    authority: list[dnslib.RR] = field(default_factory=list)
    additional: list[dnslib.RR] = field(default_factory=list)
    location_dependent: bool = False
    ede: tuple[int, str] | None = None  # RFC 8914 (INFO-CODE, EXTRA-TEXT) explaining an error


def chaos_answer(qname: bytes, qtype: int, identity: str, version: str) -> Answer:
    """The answer to a CHAOS-class query (see the module's rules)."""
    values = {b"\x02id\x06server\x00": identity, b"\x08hostname\x04bind\x00": identity,
              b"\x07version\x04bind\x00": version}
    value = values.get(qname, "")
    if not value or qtype not in (TXT, ANY):
        return Answer(rcode=REFUSED, authoritative=False,
                      ede=(EDE_NOT_AUTHORITATIVE, "not served in class CH"))
    rr = dnslib.RR(_label(qname), TXT, CLASS_CH, 0, dnslib.TXT(value.encode("ascii")))
    return Answer(answer=[rr])


def _label(wire: bytes) -> dnslib.DNSLabel:
    labels = []
    pos = 0
    while wire[pos]:
        labels.append(wire[pos + 1 : pos + 1 + wire[pos]])
        pos += 1 + wire[pos]
    return dnslib.DNSLabel(labels)


def _geo_rrs(name: bytes, geo: GeoName, qtype: int, resolve: GeoResolver) -> list[dnslib.RR]:
    v4, v6 = resolve(geo)
    label = _label(name)
    out: list[dnslib.RR] = []
    if qtype in (A, ANY):
        out += [dnslib.RR(label, A, rdata=dnslib.A(ip), ttl=geo.ttl) for ip in v4]
    if qtype in (AAAA, ANY):
        out += [dnslib.RR(label, AAAA, rdata=dnslib.AAAA(ip), ttl=geo.ttl) for ip in v6]
    return out


def _rfc8482(name: bytes) -> dnslib.RR:
    rdata = dnslib.RD(b"\x07RFC8482\x00")  # HINFO CPU="RFC8482", OS=""
    return dnslib.RR(_label(name), HINFO, rdata=rdata, ttl=3600)


def nxdomain_fast(zones: ZoneSet, qname: bytes, qtype: int, qclass: int) -> Packed | None:
    """The NXDOMAIN for a name that plainly does not exist, packed directly; None when the
    general path must decide. Same result as ``pack_answer(build_answer(...))``."""
    if qclass not in (CLASS_IN, CLASS_ANY) or qtype in (OPT, AXFR, IXFR) or 128 <= qtype < ANY:
        return None
    zone = zones.find(qname)
    if zone is None or zone.exists(qname):
        return None
    parts = zone.negative_parts
    if parts is None:
        writer = MessageWriter(qname)
        writer.add(zones.packed[id(zone.negative_soa)])
        return Packed(0x0400 | NXDOMAIN, 0, 1, 0, writer.body(), False)
    # the answer depends only on the zone and where its name starts in the question
    cache = zone.nxdomain_by_length
    packed = cache.get(len(qname))
    if packed is None:
        fixed, mname, rname, times = parts
        zone_ptr = (0xC000 | (12 + len(qname) - len(zone.origin))).to_bytes(2, "big")
        rdata = b"".join((mname, zone_ptr, rname, zone_ptr, times))
        body = b"".join((zone_ptr, fixed, len(rdata).to_bytes(2, "big"), rdata))
        packed = cache[len(qname)] = Packed(0x0400 | NXDOMAIN, 0, 1, 0, body, False)
    return packed


def build_answer(zones: ZoneSet, qname: bytes, qtype: int, qclass: int,
                 resolve: GeoResolver, tcp: bool) -> Answer:
    if qtype == OPT:
        return Answer(rcode=FORMERR, authoritative=False)
    zone = zones.find(qname)
    if zone is None or qclass not in (CLASS_IN, CLASS_ANY):
        text = "not in a zone served here" if zone is None else "class not served"
        return Answer(rcode=REFUSED, authoritative=False, ede=(EDE_NOT_AUTHORITATIVE, text))
    if qtype in (AXFR, IXFR):
        return Answer(rcode=REFUSED, authoritative=False,
                      ede=(EDE_PROHIBITED, "zone transfers are not offered"))
    if 128 <= qtype < ANY:
        return Answer(rcode=NOTIMP, authoritative=False,
                      ede=(EDE_NOT_SUPPORTED, "meta query type"))
    out = Answer()
    name = qname
    seen = {qname}
    while True:
        sets = zone.rrsets.get(name, {})
        geo = zone.geo.get(name)
        cname = sets.get(CNAME)
        if cname and qtype != CNAME:
            if len(seen) > MAX_CHAIN:  # MAX_CHAIN links followed: answer with those
                return out
            out.answer += cname
            target = text_to_name(str(cname[0].rdata.label))
            next_zone = zones.find(target)
            if next_zone is None or target in seen:  # out of our zones, or a loop
                return out
            seen.add(target)
            name, zone = target, next_zone
            continue
        if not zone.exists(name):
            out.rcode = NXDOMAIN
            out.authority.append(zone.negative_soa)
            return out
        if qtype == ANY and not tcp:
            out.answer.append(_rfc8482(name))
            return out
        before = len(out.answer)
        if geo is not None and qtype in (A, AAAA, ANY):
            out.location_dependent = True
            out.answer += _geo_rrs(name, geo, qtype, resolve)
        if qtype == ANY:
            for rrs in sets.values():
                out.answer += rrs
        else:
            out.answer += sets.get(qtype, [])
        if len(out.answer) == before:  # NODATA at the final name
            out.authority.append(zone.negative_soa)
        _add_glue(zones, out, qtype)
        return out


def _add_glue(zones: ZoneSet, out: Answer, qtype: int) -> None:
    if qtype not in (NS, MX):
        return
    seen: set[bytes] = set()
    for rr in out.answer:
        if rr.rtype == NS or rr.rtype == MX:
            target = str(rr.rdata.label)
        else:
            continue
        name = text_to_name(target)
        zone = zones.find(name)
        if zone is None or name in seen:
            continue
        seen.add(name)
        sets = zone.rrsets.get(name, {})
        out.additional += sets.get(A, []) + sets.get(AAAA, [])


@dataclass(frozen=True, slots=True)
class Packed:
    """An answer in wire format minus the header and the question: it is appended to a
    12-byte header and the query's own question bytes (same length, so the compression pointers
    into the question, at offset 12, stay right and the answer echoes the query's case)."""

    flags: int  # AA and RCODE bits
    ancount: int
    nscount: int
    arcount: int
    body: bytes
    location_dependent: bool
    ede: tuple[int, str] | None = None


def pack_answer(ans: Answer, qname: bytes, qtype: int, qclass: int,
                known: dict[int, PackedRR] | None = None) -> Packed:
    """Pack the sections; ``known`` holds pre-packed zone records (``ZoneSet.packed``)."""
    del qtype, qclass  # the question is the query's own bytes
    writer = MessageWriter(qname)
    known = known or {}
    for section in (ans.answer, ans.authority, ans.additional):
        writer.records(section, known)
    flags = (0x0400 if ans.authoritative else 0) | (ans.rcode & 0xF)
    return Packed(flags, len(ans.answer), len(ans.authority), len(ans.additional),
                  writer.body(), ans.location_dependent, ans.ede)
