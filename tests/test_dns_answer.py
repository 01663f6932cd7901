"""``build_answer`` and ``pack_answer`` called directly, on zones compiled from a topology dict.

The geo choice is a fake resolver with fixed addresses per geo name, so every case is a pure
function of (zones, qname, qtype, qclass, tcp). Records are compared as (owner, type, TTL)
triples; ``pack_answer`` is checked by gluing a header and the query's own question in front of
``Packed.body`` and parsing the result with dnspython.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dnslib
import pytest

from geoconfig.topology import Topology, parse_topology
from geoconfig.zoneconfig import GeoName
from geodata import GeoReader
from geodns.answer import (
    FORMERR,
    MAX_CHAIN,
    NOERROR,
    NOTIMP,
    NXDOMAIN,
    REFUSED,
    Answer,
    Packed,
    build_answer,
    nxdomain_fast,
    pack_answer,
)
from geodns.engine import Engine
from geodns.wire import text_to_name
from geodns.zonedata import ZoneSet, compile_zone

FIXTURES = Path(__file__).resolve().parent / "fixtures"

# -------------------------------------------------------------------------------- the zones

GEO_ADDRESSES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "www.example.test.": (("198.51.100.1", "198.51.100.2"), ("2001:db8:1::1",)),
    "eu.example.test.": (("198.51.100.9",), ()),  # IPv4 only
    "api.sub.example.test.": (("203.0.113.7",), ("2001:db8:7::7",)),
}
CHAIN_LEN = 17  # l1 -> www, l2 -> l1, ... : lN is N CNAME links away from the geo name www


def edge(name: str, n: int) -> dict[str, Any]:
    return {"name": name, "ipv4": f"127.0.{n}.1", "ipv6": f"fd00:0:0:{n}::1"}


def topology_dict() -> dict[str, Any]:
    records = [
        {"name": "@", "type": "NS", "value": "ns1"},
        {"name": "@", "type": "NS", "value": "ns.outside.invalid."},  # out of zone: no glue
        {"name": "@", "type": "A", "value": "192.0.2.10"},
        {"name": "@", "type": "AAAA", "value": "2001:db8::10"},
        {"name": "@", "type": "MX", "value": "10 mail"},
        {"name": "@", "type": "MX", "value": "20 mx.sub.example.test."},  # glue from sub zone
        {"name": "@", "type": "MX", "value": "30 mail"},  # same target twice: glue once
        {"name": "@", "type": "TXT", "value": '"v=spf1 -all"', "ttl": 120},
        {"name": "@", "type": "CAA", "value": '0 issue "ca.example"'},
        {"name": "ns1", "type": "A", "value": "192.0.2.53"},
        {"name": "ns1", "type": "AAAA", "value": "2001:db8::53"},
        {"name": "mail", "type": "A", "value": "192.0.2.25", "ttl": 300},
        {"name": "_sip._tcp.srv", "type": "SRV", "value": "0 5 5060 sip"},
        {"name": "sip", "type": "A", "value": "192.0.2.60"},
        {"name": "static", "type": "CNAME", "value": "@"},
        {"name": "cdn", "type": "CNAME", "value": "www", "ttl": 600},
        {"name": "ext", "type": "CNAME", "value": "target.elsewhere.invalid."},
        {"name": "dangling", "type": "CNAME", "value": "missing"},
        {"name": "loop-a", "type": "CNAME", "value": "loop-b"},
        {"name": "loop-b", "type": "CNAME", "value": "loop-a"},
        {"name": "self", "type": "CNAME", "value": "self"},
        {"name": "tosub", "type": "CNAME", "value": "host.sub.example.test."},
        {"name": "tosubgeo", "type": "CNAME", "value": "api.sub.example.test."},
        {"name": "tosubmissing", "type": "CNAME", "value": "nothing.sub.example.test."},
        {"name": "toeu", "type": "CNAME", "value": "eu"},
        # data under the delegated child zone: shadowed, the closest enclosing zone wins
        {"name": "shadow.sub", "type": "A", "value": "192.0.2.99"},
        {"name": "l1", "type": "CNAME", "value": "www"},
    ]
    records += [{"name": f"l{i}", "type": "CNAME", "value": f"l{i - 1}"}
                for i in range(2, CHAIN_LEN + 1)]
    return {
        "default_region": "us-east",
        "regions": [
            {"name": "us-east", "latitude": 39.0, "longitude": -77.5, "continents": ["NA"],
             "edges": [edge("us-east-1", 1)]},
            {"name": "eu-west", "latitude": 53.3, "longitude": -6.3, "continents": ["EU"],
             "edges": [edge("eu-west-1", 2)]},
            {"name": "ap-southeast", "latitude": 1.35, "longitude": 103.8,
             "continents": ["AS"], "edges": [edge("ap-southeast-1", 3)]},
        ],
        "zones": [
            {
                "origin": "example.test",
                "ttl": 3600,
                "soa": {"mname": "ns1", "rname": "hostmaster", "serial": 1, "minimum": 60},
                "records": records,
                "geo": [
                    {"name": "www", "ttl": 30},
                    {"name": "eu", "ttl": 20, "regions": ["eu-west", "us-east"]},
                ],
            },
            {
                "origin": "sub.example.test",
                "ttl": 1800,
                # negative TTL = min(SOA TTL 300, MINIMUM 900) = 300
                "soa": {"mname": "ns1.example.test.", "rname": "hostmaster", "serial": 7,
                        "ttl": 300, "minimum": 900},
                "records": [
                    {"name": "@", "type": "NS", "value": "ns1.example.test."},
                    {"name": "host", "type": "A", "value": "192.0.2.70"},
                    {"name": "mx", "type": "A", "value": "192.0.2.26"},
                    {"name": "back", "type": "CNAME", "value": "www.example.test."},
                ],
                "geo": [{"name": "api", "ttl": 10, "regions": ["ap-southeast"]}],
            },
        ],
    }


@pytest.fixture(scope="module")
def topology() -> Topology:
    return parse_topology(topology_dict())


@pytest.fixture(scope="module")
def zones(topology: Topology) -> ZoneSet:
    return ZoneSet([compile_zone(z) for z in topology.zones])


class FakeResolver:
    """Fixed addresses per geo name; remembers which GeoNames it was asked about."""

    def __init__(self) -> None:
        self.calls: list[GeoName] = []

    def __call__(self, geo: GeoName) -> tuple[tuple[str, ...], tuple[str, ...]]:
        self.calls.append(geo)
        return GEO_ADDRESSES[geo.name]


def ask(zones: ZoneSet, name: str, qtype: str | int = "A", qclass: int = 1,
        tcp: bool = False) -> Answer:
    code = qtype if isinstance(qtype, int) else dnslib.QTYPE.reverse[qtype]
    return build_answer(zones, text_to_name(name), code, qclass, FakeResolver(), tcp)


Rec = tuple[str, str, int]


def recs(rrs: list[dnslib.RR]) -> list[Rec]:
    return [(str(rr.rname).lower(), dnslib.QTYPE.get(rr.rtype), rr.ttl) for rr in rrs]


SOA_PARENT = ("example.test.", "SOA", 60)  # min(3600, 60)
SOA_SUB = ("sub.example.test.", "SOA", 300)  # min(300, 900)
WWW_A = [("www.example.test.", "A", 30)] * 2
WWW_AAAA = [("www.example.test.", "AAAA", 30)]
NS1_GLUE = [("ns1.example.test.", "A", 3600), ("ns1.example.test.", "AAAA", 3600)]


def cname_chain(start: int, stop: int = 0) -> list[Rec]:
    return [(f"l{i}.example.test.", "CNAME", 3600) for i in range(start, stop, -1)]


# (qname, qtype, tcp, rcode, answer, authority, additional, location_dependent)
CASES: list[Any] = [
    # --- apex data
    ("example.test.", "SOA", False, NOERROR, [("example.test.", "SOA", 3600)], [], [], False),
    ("example.test.", "NS", False, NOERROR,
     [("example.test.", "NS", 3600)] * 2, [], NS1_GLUE, False),
    ("example.test.", "A", False, NOERROR, [("example.test.", "A", 3600)], [], [], False),
    ("example.test.", "AAAA", False, NOERROR, [("example.test.", "AAAA", 3600)], [], [], False),
    ("example.test.", "MX", False, NOERROR, [("example.test.", "MX", 3600)] * 3, [],
     [("mail.example.test.", "A", 300), ("mx.sub.example.test.", "A", 1800)], False),
    ("example.test.", "TXT", False, NOERROR, [("example.test.", "TXT", 120)], [], [], False),
    ("example.test.", "CAA", False, NOERROR, [("example.test.", "CAA", 3600)], [], [], False),
    ("example.test.", "SRV", False, NOERROR, [], [SOA_PARENT], [], False),  # NODATA
    # --- existing names, empty non-terminals and names that do not exist
    ("_sip._tcp.srv.example.test.", "SRV", False, NOERROR,
     [("_sip._tcp.srv.example.test.", "SRV", 3600)], [], [], False),
    ("_tcp.srv.example.test.", "A", False, NOERROR, [], [SOA_PARENT], [], False),  # ENT
    ("srv.example.test.", "SRV", False, NOERROR, [], [SOA_PARENT], [], False),  # ENT
    ("_udp.srv.example.test.", "SRV", False, NXDOMAIN, [], [SOA_PARENT], [], False),
    ("x._sip._tcp.srv.example.test.", "A", False, NXDOMAIN, [], [SOA_PARENT], [], False),
    ("nope.example.test.", "A", False, NXDOMAIN, [], [SOA_PARENT], [], False),
    ("mail.example.test.", "AAAA", False, NOERROR, [], [SOA_PARENT], [], False),
    ("mail.example.test.", "MX", False, NOERROR, [], [SOA_PARENT], [], False),
    # --- geo names
    ("www.example.test.", "A", False, NOERROR, WWW_A, [], [], True),
    ("www.example.test.", "AAAA", False, NOERROR, WWW_AAAA, [], [], True),
    ("www.example.test.", "MX", False, NOERROR, [], [SOA_PARENT], [], False),
    ("eu.example.test.", "AAAA", False, NOERROR, [], [SOA_PARENT], [], True),  # no IPv6 edge
    ("eu.example.test.", "A", False, NOERROR, [("eu.example.test.", "A", 20)], [], [], True),
    ("api.sub.example.test.", "A", False, NOERROR, [("api.sub.example.test.", "A", 10)], [],
     [], True),
    # --- CNAME chains
    ("static.example.test.", "A", False, NOERROR,
     [("static.example.test.", "CNAME", 3600), ("example.test.", "A", 3600)], [], [], False),
    pytest.param(
        "static.example.test.", "CNAME", False, NOERROR,
        [("static.example.test.", "CNAME", 3600)], [], [], False,
        id="static.example.test.CNAME"),
    ("static.example.test.", "MX", False, NOERROR,
     [("static.example.test.", "CNAME", 3600), *[("example.test.", "MX", 3600)] * 3], [],
     [("mail.example.test.", "A", 300), ("mx.sub.example.test.", "A", 1800)], False),
    ("static.example.test.", "SRV", False, NOERROR,  # CNAME, then NODATA at the target
     [("static.example.test.", "CNAME", 3600)], [SOA_PARENT], [], False),
    ("cdn.example.test.", "A", False, NOERROR,
     [("cdn.example.test.", "CNAME", 600), *WWW_A], [], [], True),
    ("cdn.example.test.", "AAAA", False, NOERROR,
     [("cdn.example.test.", "CNAME", 600), *WWW_AAAA], [], [], True),
    ("cdn.example.test.", "TXT", False, NOERROR,
     [("cdn.example.test.", "CNAME", 600)], [SOA_PARENT], [], False),
    ("toeu.example.test.", "AAAA", False, NOERROR,
     [("toeu.example.test.", "CNAME", 3600)], [SOA_PARENT], [], True),
    ("ext.example.test.", "A", False, NOERROR,  # out of our zones: stop, no SOA
     [("ext.example.test.", "CNAME", 3600)], [], [], False),
    ("dangling.example.test.", "A", False, NXDOMAIN,  # RFC 6604: the final name's RCODE
     [("dangling.example.test.", "CNAME", 3600)], [SOA_PARENT], [], False),
    ("tosub.example.test.", "A", False, NOERROR,
     [("tosub.example.test.", "CNAME", 3600), ("host.sub.example.test.", "A", 1800)], [], [],
     False),
    ("tosubgeo.example.test.", "AAAA", False, NOERROR,
     [("tosubgeo.example.test.", "CNAME", 3600), ("api.sub.example.test.", "AAAA", 10)], [],
     [], True),
    ("tosubmissing.example.test.", "A", False, NXDOMAIN,  # the SOA of the zone that said so
     [("tosubmissing.example.test.", "CNAME", 3600)], [SOA_SUB], [], False),
    ("back.sub.example.test.", "A", False, NOERROR,
     [("back.sub.example.test.", "CNAME", 1800), *WWW_A], [], [], True),
    ("l15.example.test.", "A", False, NOERROR, [*cname_chain(15), *WWW_A], [], [], True),
    # --- the delegated child zone: closest enclosing zone wins
    ("sub.example.test.", "SOA", False, NOERROR, [("sub.example.test.", "SOA", 300)], [], [],
     False),
    ("sub.example.test.", "NS", False, NOERROR, [("sub.example.test.", "NS", 1800)], [],
     NS1_GLUE, False),
    ("sub.example.test.", "A", False, NOERROR, [], [SOA_SUB], [], False),
    ("shadow.sub.example.test.", "A", False, NXDOMAIN, [], [SOA_SUB], [], False),
    ("a.b.sub.example.test.", "A", False, NXDOMAIN, [], [SOA_SUB], [], False),
    # --- ANY: RFC 8482 over UDP, everything over TCP
    ("example.test.", "ANY", False, NOERROR, [("example.test.", "HINFO", 3600)], [], [], False),
    ("www.example.test.", "ANY", False, NOERROR, [("www.example.test.", "HINFO", 3600)], [],
     [], False),
    ("www.example.test.", "ANY", True, NOERROR, [*WWW_A, *WWW_AAAA], [], [], True),
    ("nope.example.test.", "ANY", False, NXDOMAIN, [], [SOA_PARENT], [], False),
    ("_tcp.srv.example.test.", "ANY", True, NOERROR, [], [SOA_PARENT], [], False),
    ("cdn.example.test.", "ANY", False, NOERROR,
     [("cdn.example.test.", "CNAME", 600), ("www.example.test.", "HINFO", 3600)], [], [],
     False),
    ("mail.example.test.", "ANY", True, NOERROR, [("mail.example.test.", "A", 300)], [], [],
     False),
    # --- types nobody has
    ("example.test.", 65280, False, NOERROR, [], [SOA_PARENT], [], False),
]


@pytest.mark.parametrize(
    ("qname", "qtype", "tcp", "rcode", "answer", "authority", "additional", "dependent"),
    CASES, ids=[None if hasattr(c, "marks") else f"{c[0]}{c[1]}{'-tcp' if c[2] else ''}"
                for c in CASES])
def test_build_answer(zones, qname, qtype, tcp, rcode, answer, authority, additional,
                      dependent):
    got = ask(zones, qname, qtype, tcp=tcp)
    assert got.rcode == rcode
    assert got.authoritative
    assert recs(got.answer) == answer
    assert recs(got.authority) == authority
    assert recs(got.additional) == additional
    assert got.location_dependent is dependent


def test_apex_any_over_tcp_has_every_rrset(zones):
    got = ask(zones, "example.test.", "ANY", tcp=True)
    types = [dnslib.QTYPE.get(rr.rtype) for rr in got.answer]
    assert sorted(set(types)) == ["A", "AAAA", "CAA", "MX", "NS", "SOA", "TXT"]
    assert types.count("MX") == 3 and types.count("NS") == 2
    assert got.rcode == NOERROR and not got.authority and not got.additional
    assert not got.location_dependent


def test_rfc8482_hinfo_rdata(zones):
    (rr,) = ask(zones, "example.test.", "ANY").answer
    assert rr.rdata.data == b"\x07RFC8482\x00"  # CPU "RFC8482", OS ""


def test_negative_soa_keeps_soa_rdata(zones, topology):
    (soa,) = ask(zones, "nope.example.test.", "A").authority
    assert soa.rdata == topology.zones[0].soa.rdata
    assert str(soa.rdata.mname) == "ns1.example.test."
    assert str(soa.rdata.rname) == "hostmaster.example.test."
    (sub,) = ask(zones, "nope.sub.example.test.", "A").authority
    assert sub.rdata.times == (7, 3600, 600, 604800, 900)


def test_geo_resolver_gets_the_geo_name_with_its_regions(zones):
    resolver = FakeResolver()
    build_answer(zones, text_to_name("cdn.example.test."), 1, 1, resolver, False)
    build_answer(zones, text_to_name("eu.example.test."), 28, 1, resolver, False)
    build_answer(zones, text_to_name("api.sub.example.test."), 1, 1, resolver, False)
    assert resolver.calls == [
        GeoName("www.example.test.", 30, ("us-east", "eu-west", "ap-southeast")),
        GeoName("eu.example.test.", 20, ("eu-west", "us-east")),
        GeoName("api.sub.example.test.", 10, ("ap-southeast",)),
    ]
    resolver.calls.clear()
    build_answer(zones, text_to_name("www.example.test."), 1, 1, resolver, tcp=False)
    build_answer(zones, text_to_name("www.example.test."), 255, 1, resolver, tcp=False)
    build_answer(zones, text_to_name("www.example.test."), 15, 1, resolver, tcp=False)
    assert len(resolver.calls) == 1  # ANY over UDP and MX never ask for a location


# --------------------------------------------------------------------- refusals and errors

# (qname, qtype, qclass, rcode)
REFUSALS = [
    ("example.test.", 1, 3, REFUSED),  # CH
    ("example.test.", 1, 4, REFUSED),  # HS
    ("example.test.", 1, 254, REFUSED),  # NONE
    ("example.test.", 1, 0, REFUSED),
    ("example.test.", 252, 1, REFUSED),  # AXFR
    ("example.test.", 251, 1, REFUSED),  # IXFR
    ("sub.example.test.", 252, 1, REFUSED),
    ("example.test.", 41, 1, FORMERR),  # OPT as a QTYPE
    ("example.com.", 41, 1, FORMERR),
    ("example.test.", 41, 3, FORMERR),
    ("example.test.", 128, 1, NOTIMP),
    ("example.test.", 249, 1, NOTIMP),  # TKEY
    ("example.test.", 250, 1, NOTIMP),  # TSIG
    ("example.test.", 253, 1, NOTIMP),  # MAILB
    ("example.test.", 254, 1, NOTIMP),  # MAILA
    ("www.example.test.", 254, 1, NOTIMP),
    ("example.com.", 1, 1, REFUSED),  # in no zone we serve
    ("test.", 1, 1, REFUSED),  # parent of a zone
    (".", 2, 1, REFUSED),
    ("example.com.", 128, 1, REFUSED),
    ("nope.example.com.", 252, 1, REFUSED),
]


@pytest.mark.parametrize(("qname", "qtype", "qclass", "rcode"), REFUSALS)
def test_refusals_and_errors(zones, qname, qtype, qclass, rcode):
    got = ask(zones, qname, qtype, qclass)
    assert got.rcode == rcode
    assert not got.authoritative
    assert not got.answer and not got.authority and not got.additional
    assert not got.location_dependent


@pytest.mark.parametrize(("qname", "qtype"), [("example.test.", "SOA"),
                                               ("www.example.test.", "A"),
                                               ("nope.example.test.", "A")])
def test_class_any_is_answered_like_in(zones, qname, qtype):
    assert recs(ask(zones, qname, qtype, 255).answer) == recs(ask(zones, qname, qtype).answer)
    assert ask(zones, qname, qtype, 255).rcode == ask(zones, qname, qtype).rcode


# ------------------------------------------------------------------------------ CNAME limits

@pytest.mark.parametrize("name", ["loop-a.example.test.", "loop-b.example.test.",
                                  "self.example.test."])
@pytest.mark.parametrize("qtype", ["A", "MX", "ANY"])
def test_cname_loop_terminates(zones, name, qtype):
    got = ask(zones, name, qtype)  # returns at all: no hang
    assert got.rcode in (NOERROR, 2)  # NOERROR, or SERVFAIL if loops become errors
    assert got.answer and len(got.answer) <= MAX_CHAIN
    assert {dnslib.QTYPE.get(rr.rtype) for rr in got.answer} == {"CNAME"}
    assert not got.location_dependent


def test_cname_chain_longer_than_limit_stops_at_limit(zones):
    got = ask(zones, f"l{CHAIN_LEN}.example.test.", "A")
    assert recs(got.answer) == cname_chain(CHAIN_LEN, CHAIN_LEN - MAX_CHAIN)
    assert not got.location_dependent


def test_cname_loop_has_no_duplicate_records(zones):
    got = ask(zones, "loop-a.example.test.", "A")
    records = [(str(rr.rname), str(rr.rdata)) for rr in got.answer]
    assert len(records) == len(set(records))


def test_cname_chain_of_exactly_max_links_is_answered(zones):
    name = f"l{MAX_CHAIN}.example.test."
    assert text_to_name(name) in zones.location_dependent_names()
    got = ask(zones, name, "A")
    assert recs(got.answer) == [*cname_chain(MAX_CHAIN), *WWW_A]
    assert got.location_dependent


def test_location_dependent_names(zones):
    names = {n for n in zones.location_dependent_names()}
    expected = {"www.example.test.", "eu.example.test.", "api.sub.example.test.",
                "cdn.example.test.", "toeu.example.test.", "tosubgeo.example.test.",
                "back.sub.example.test."}
    expected |= {f"l{i}.example.test." for i in range(1, MAX_CHAIN + 1)}
    assert names == {text_to_name(n) for n in expected}


# ----------------------------------------------------------------------- glue

@pytest.mark.parametrize(
    ("qname", "qtype", "glue"),
    [
        ("example.test.", "NS", {("ns1.example.test.", "A"), ("ns1.example.test.", "AAAA")}),
        ("example.test.", "MX", {("mail.example.test.", "A"), ("mx.sub.example.test.", "A")}),
        ("sub.example.test.", "NS", {("ns1.example.test.", "A"), ("ns1.example.test.", "AAAA")}),
        ("static.example.test.", "NS",
         {("ns1.example.test.", "A"), ("ns1.example.test.", "AAAA")}),
        ("example.test.", "A", set()),
        ("example.test.", "SRV", set()),  # SRV targets get no glue
        ("_sip._tcp.srv.example.test.", "SRV", set()),
    ],
)
def test_glue(zones, qname, qtype, glue):
    got = ask(zones, qname, qtype)
    pairs = [(str(rr.rname), dnslib.QTYPE.get(rr.rtype)) for rr in got.additional]
    assert set(pairs) == glue
    assert len(pairs) == len(set(pairs))  # each target once, even with two MX to "mail"


# ------------------------------------------------- geo names restricted to some regions

@pytest.fixture(scope="module")
def engine(topology) -> Engine:
    return Engine(topology, GeoReader(FIXTURES / "city-test.mmdb"))


EU_FIRST = ("eu-west", "us-east", "ap-southeast")
AP_FIRST = ("ap-southeast", "eu-west", "us-east")


@pytest.mark.parametrize(
    ("geo_name", "order", "down", "expected"),
    [
        ("www.example.test.", EU_FIRST, set(), "127.0.2.1"),
        ("eu.example.test.", EU_FIRST, set(), "127.0.2.1"),
        ("eu.example.test.", AP_FIRST, set(), "127.0.2.1"),  # ap-southeast is not allowed
        ("eu.example.test.", ("us-east", "ap-southeast", "eu-west"), set(), "127.0.1.1"),
        ("eu.example.test.", EU_FIRST, {"eu-west-1"}, "127.0.1.1"),
        ("eu.example.test.", AP_FIRST, {"eu-west-1"}, "127.0.1.1"),
        # every allowed region down: fail open to the nearest allowed one
        ("eu.example.test.", AP_FIRST, {"eu-west-1", "us-east-1"}, "127.0.2.1"),
        ("api.sub.example.test.", EU_FIRST, set(), "127.0.3.1"),
        ("api.sub.example.test.", EU_FIRST, {"ap-southeast-1"}, "127.0.3.1"),
        ("www.example.test.", EU_FIRST, {"eu-west-1"}, "127.0.1.1"),
    ],
)
def test_geo_regions_subset(engine, geo_name, order, down, expected):
    engine.set_health({name: False for name in down})
    try:
        geo = engine.zones.geo_names()[text_to_name(geo_name)]
        v4, v6 = engine.addresses(geo, order)
        assert v4 == (expected,)
        assert v6 == ("fd00:0:0:" + expected.split(".")[2] + "::1",)
    finally:
        engine.set_health({})


# ------------------------------------------------------------------- pack_answer round trip

def round_trip(zones: ZoneSet, qname_text: str, qtype: str, tcp: bool = False,
               qid: int = 0x4242) -> tuple[dns.message.Message, Answer, bytes]:
    """Answer ``qname_text`` (any case) and parse header + the query's question + body."""
    query = dns.message.make_query(qname_text, qtype, id=qid)
    wire = query.to_wire()
    qname_wire = dns.name.from_text(qname_text).to_wire()
    question = wire[12 : 12 + len(qname_wire) + 4]
    lower = text_to_name(qname_text)
    code = dns.rdatatype.from_text(qtype)
    ans = build_answer(zones, lower, code, 1, FakeResolver(), tcp)
    packed = pack_answer(ans, lower, code, 1)
    assert (packed.ancount, packed.nscount, packed.arcount) == (
        len(ans.answer), len(ans.authority), len(ans.additional))
    assert packed.flags == (0x0400 if ans.authoritative else 0) | ans.rcode
    assert packed.location_dependent is ans.location_dependent
    header = struct.pack("!HHHHHH", qid, 0x8000 | packed.flags, 1, packed.ancount,
                         packed.nscount, packed.arcount)
    full = header + question + packed.body
    return dns.message.from_wire(full), ans, full


def names(section: list) -> list[str]:
    return [rrset.name.to_text() for rrset in section]


@pytest.mark.parametrize(
    ("qname", "qtype", "answer_names", "authority_names", "additional_names"),
    [
        ("example.test", "SOA", ["example.test."], [], []),
        ("example.test", "NS", ["example.test."], [], ["ns1.example.test."] * 2),
        ("example.test", "MX", ["example.test."], [],
         ["mail.example.test.", "mx.sub.example.test."]),
        ("www.example.test", "A", ["www.example.test."], [], []),
        ("cdn.example.test", "AAAA", ["cdn.example.test.", "www.example.test."], [], []),
        ("nope.example.test", "A", [], ["example.test."], []),
        ("_tcp.srv.example.test", "A", [], ["example.test."], []),
        ("dangling.example.test", "A", ["dangling.example.test."], ["example.test."], []),
        ("tosubmissing.example.test", "A", ["tosubmissing.example.test."],
         ["sub.example.test."], []),
        ("example.test", "ANY", ["example.test."], [], []),
        ("_sip._tcp.srv.example.test", "SRV", ["_sip._tcp.srv.example.test."], [], []),
        ("l15.example.test", "A", [f"l{i}.example.test." for i in range(15, 0, -1)]
         + ["www.example.test."], [], []),
    ],
)
@pytest.mark.parametrize("case", ["lower", "UPPER", "MiXeD"])
def test_pack_answer_round_trip(zones, qname, qtype, answer_names, authority_names,
                                additional_names, case):
    text = {"lower": qname, "UPPER": qname.upper(),
            "MiXeD": "".join(c.upper() if i % 2 else c for i, c in enumerate(qname))}[case]
    msg, ans, _ = round_trip(zones, text, qtype)
    assert msg.id == 0x4242 and msg.flags & dns.flags.QR and msg.flags & dns.flags.AA
    assert msg.rcode() == ans.rcode
    assert msg.question[0].name.to_text() == text + "."  # the question is the client's bytes
    # the names resolve through the compression pointers to the right names...
    assert [n.lower() for n in names(msg.answer)] == answer_names
    assert [n.lower() for n in names(msg.authority)] == authority_names
    assert [n.lower() for n in names(msg.additional)] == additional_names
    assert sum(len(r) for r in msg.answer) == len(ans.answer)
    assert sum(len(r) for r in msg.authority) == len(ans.authority)
    assert sum(len(r) for r in msg.additional) == len(ans.additional)
    # ...and the owner name equal to the query name echoes the query's case
    if answer_names and answer_names[0] == qname + ".":
        assert names(msg.answer)[0] == text + "."


def test_round_trip_rdata_survives_compression(zones):
    msg, _, _ = round_trip(zones, "ExAmPlE.TeSt", "ANY", tcp=True)
    by_type = {dns.rdatatype.to_text(r.rdtype): r for r in msg.answer}
    assert {r.to_text().lower() for r in by_type["NS"]} == {"ns1.example.test.",
                                                          "ns.outside.invalid."}
    assert sorted(r.to_text().lower() for r in by_type["MX"]) == [
        "10 mail.example.test.", "20 mx.sub.example.test.", "30 mail.example.test."]
    (soa,) = by_type["SOA"]
    assert soa.mname.to_text().lower() == "ns1.example.test."
    assert soa.rname.to_text().lower() == "hostmaster.example.test."
    assert (soa.serial, soa.minimum) == (1, 60)
    assert [r.to_text() for r in by_type["TXT"]] == ['"v=spf1 -all"']
    assert [r.to_text() for r in by_type["CAA"]] == ['0 issue "ca.example"']
    assert by_type["TXT"].ttl == 120
    assert {r.address for r in by_type["A"]} == {"192.0.2.10"}


def test_round_trip_negative_soa_ttl_and_nxdomain_rcode(zones):
    msg, _, _ = round_trip(zones, "NoPe.Sub.Example.Test", "A")
    assert msg.rcode() == dns.rcode.NXDOMAIN
    (soa,) = msg.authority
    assert soa.ttl == 300 and soa.rdtype == dns.rdatatype.SOA
    assert soa.name.to_text() == "Sub.Example.Test."  # points into the question


def test_round_trip_rfc8482_hinfo(zones):
    msg, _, _ = round_trip(zones, "WWW.example.test", "ANY")
    (hinfo,) = msg.answer
    assert hinfo.rdtype == dns.rdatatype.HINFO and hinfo.name.to_text() == "WWW.example.test."
    assert (hinfo[0].cpu, hinfo[0].os) == (b"RFC8482", b"")


def test_round_trip_cname_target_names_echo_query_case_suffix(zones):
    msg, _, full = round_trip(zones, "CDN.EXAMPLE.TEST", "A")
    cname, a = msg.answer
    assert cname.name.to_text() == "CDN.EXAMPLE.TEST."
    # the target shares the suffix compressed against the question
    assert cname[0].target.to_text().lower() == "www.example.test."
    assert a.name.to_text().lower() == "www.example.test."
    assert {r.address for r in a} == {"198.51.100.1", "198.51.100.2"}
    assert b"example" not in full[12 + 22 :]  # the zone name is never spelled out again


@pytest.mark.parametrize("rcode", [REFUSED, FORMERR, NOTIMP])
def test_pack_error_answers(rcode):
    ans = Answer(rcode=rcode, authoritative=False)
    packed = pack_answer(ans, text_to_name("example.com."), 1, 1)
    assert packed.body == b""
    assert (packed.flags, packed.ancount, packed.nscount, packed.arcount) == (rcode, 0, 0, 0)


# ------------------------------------------- the engine's fast paths give the same messages


def glue(question: bytes, packed: Packed, qid: int = 7) -> dns.message.Message:
    header = struct.pack("!HHHHHH", qid, 0x8000 | packed.flags, 1, packed.ancount,
                         packed.nscount, packed.arcount)
    return dns.message.from_wire(header + question + packed.body)


def question_of(text: str, qtype: str) -> bytes:
    wire = dns.message.make_query(text, qtype).to_wire()
    return wire[12 : 12 + len(dns.name.from_text(text).to_wire()) + 4]


def mixed(text: str) -> str:
    return "".join(c.upper() if i % 3 == 1 else c for i, c in enumerate(text))


def case_questions() -> list[tuple[str, str, bool]]:
    """(qname, qtype, tcp) of every CASES row with a named QTYPE."""
    rows = [tuple(c.values if hasattr(c, "values") else c) for c in CASES]
    return [(r[0], r[1], r[2]) for r in rows if isinstance(r[1], str)]


@pytest.mark.parametrize(("qname", "qtype", "tcp"), case_questions())
def test_pre_packed_zone_records_pack_the_same(zones, qname, qtype, tcp):
    """``pack_answer(..., known=zones.packed)`` (what the engine does) equals plain packing."""
    text = mixed(qname.rstrip("."))
    lower = text_to_name(qname)
    code = dns.rdatatype.from_text(qtype)
    ans = build_answer(zones, lower, code, 1, FakeResolver(), tcp)
    plain = pack_answer(ans, lower, code, 1)
    fast = pack_answer(ans, lower, code, 1, known=zones.packed)
    question = question_of(text, qtype)
    assert glue(question, fast) == glue(question, plain)
    assert glue(question, fast).to_text() == glue(question, plain).to_text()


NX_NAMES = ["nope.example.test.", "a.b.c.example.test.", "x._sip._tcp.srv.example.test.",
            "_udp.srv.example.test.", "nope.sub.example.test.", "shadow.sub.example.test.",
            "a.b.sub.example.test.", "l99.example.test."]
EXISTING = ["example.test.", "www.example.test.", "_tcp.srv.example.test.", "srv.example.test.",
            "sub.example.test.", "dangling.example.test.", "cdn.example.test.", "example.com.",
            "test."]


@pytest.mark.parametrize("qtype", ["A", "AAAA", "MX", "ANY", "TXT", "CNAME", "SOA"])
@pytest.mark.parametrize("name", NX_NAMES + EXISTING)
def test_nxdomain_fast_matches_the_general_path(zones, name, qtype):
    lower = text_to_name(name)
    code = dns.rdatatype.from_text(qtype)
    fast = nxdomain_fast(zones, lower, code, 1)
    if name in EXISTING:
        assert fast is None  # exists (or is not ours, or is a CNAME): the general path decides
        return
    assert fast is not None
    for text in (name.rstrip("."), mixed(name.rstrip(".")), name.rstrip(".").upper()):
        question = question_of(text, qtype)
        general = pack_answer(build_answer(zones, lower, code, 1, FakeResolver(), False),
                              lower, code, 1, known=zones.packed)
        got, want = glue(question, fast), glue(question, general)
        assert got == want and got.to_text() == want.to_text()
        assert got.rcode() == dns.rcode.NXDOMAIN
        (soa,) = got.authority
        zone = "sub.example.test." if name.endswith("sub.example.test.") else "example.test."
        assert soa.name.to_text().lower() == zone
        assert soa.ttl == (300 if zone.startswith("sub") else 60)
        assert soa[0].mname.to_text().lower() == "ns1.example.test."


@pytest.mark.parametrize(("qtype", "qclass"), [(41, 1), (252, 1), (251, 1), (128, 1), (1, 3),
                                               (1, 4), (1, 254)])
def test_nxdomain_fast_leaves_errors_to_the_general_path(zones, qtype, qclass):
    assert nxdomain_fast(zones, text_to_name("nope.example.test."), qtype, qclass) is None
