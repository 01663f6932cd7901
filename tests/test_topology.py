"""The topology file: the demo file's exact contents, and one test per kind of bad file.

Every bad-config case starts from ``examples/demo.toml`` parsed with tomllib, applies one small
edit, and checks that :class:`ConfigError` names the right key path and the problem.
"""

from __future__ import annotations

import copy
import ipaddress
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dnslib
import pytest

from geoconfig.topology import (
    DnsSettings,
    GeoIPSettings,
    HealthSettings,
    Topology,
    load_topology,
    parse_topology,
)
from geoconfig.validate import ConfigError
from geoconfig.zoneconfig import GeoName

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.toml"

Doc = dict[str, Any]
Path_ = tuple[str | int, ...]


def demo_data() -> Doc:
    with DEMO.open("rb") as f:
        return tomllib.load(f)


@pytest.fixture(scope="module")
def demo() -> Topology:
    return load_topology(DEMO)


# --------------------------------------------------------------------------- the demo file


def test_demo_source_and_default(demo: Topology) -> None:
    assert demo.source == str(DEMO)
    assert demo.default_region == "us-east"
    assert [rc.name for rc in demo.regions] == ["us-east", "eu-west", "ap-southeast"]


@pytest.mark.parametrize(
    ("name", "lat", "lon", "continents", "edges"),
    [
        ("us-east", 39.0, -77.5, {"NA", "SA"},
         [("us-east-1", "127.0.1.1", "fd00:0:0:1::1"),
          ("us-east-2", "127.0.1.2", "fd00:0:0:1::2")]),
        ("eu-west", 53.3, -6.3, {"EU", "AF"},
         [("eu-west-1", "127.0.2.1", "fd00:0:0:2::1"),
          ("eu-west-2", "127.0.2.2", "fd00:0:0:2::2")]),
        ("ap-southeast", 1.35, 103.8, {"AS", "OC"},
         [("ap-southeast-1", "127.0.3.1", "fd00:0:0:3::1"),
          ("ap-southeast-2", "127.0.3.2", "fd00:0:0:3::2")]),
    ],
)
def test_demo_region(
    demo: Topology,
    name: str,
    lat: float,
    lon: float,
    continents: set[str],
    edges: list[tuple[str, str, str]],
) -> None:
    rc = demo.region(name)
    assert rc.region.name == name
    assert rc.region.latitude == lat
    assert rc.region.longitude == lon
    assert rc.region.continents == frozenset(continents)
    assert rc.region.countries == frozenset()
    assert [(e.name, e.ipv4, e.ipv6) for e in rc.edges] == edges
    for e in rc.edges:
        assert e.region == name
        assert e.port == 8080
        assert e.check_address == e.ipv4
        assert e.check_url_base == f"http://{e.ipv4}:8080"


def test_demo_edges(demo: Topology) -> None:
    assert len(demo.edges) == 6
    assert len({e.name for e in demo.edges}) == 6
    ula = ipaddress.ip_network("fd00::/8")
    for e in demo.edges:
        assert e.ipv6 is not None
        assert ipaddress.ip_address(e.ipv6) in ula
        assert ipaddress.ip_address(e.ipv4).is_loopback
    with pytest.raises(KeyError):
        demo.region("mars")


def test_demo_settings(demo: Topology) -> None:
    assert demo.dns == DnsSettings(
        listen=(("127.0.0.1", 5353), ("::1", 5353)),
        tcp_idle_timeout=10.0,
        max_udp_payload=1232,
        answer_cache_size=100_000,
        udp_fast_path=True,
    )
    assert demo.geoip == GeoIPSettings(database=None, watch_interval=2.0)
    assert demo.health == HealthSettings(path="/healthz", interval=1.0, timeout=1.0, rise=2,
                                         fall=2)


def test_demo_zone(demo: Topology) -> None:
    assert len(demo.zones) == 1
    zone = demo.zones[0]
    assert zone.origin == "example.test."

    assert str(zone.soa.rname) == "example.test."
    assert zone.soa.rtype == dnslib.QTYPE.SOA
    assert zone.soa.ttl == 3600
    assert str(zone.soa.rdata.mname) == "ns1.example.test."
    assert str(zone.soa.rdata.rname) == "hostmaster.example.test."
    assert tuple(zone.soa.rdata.times) == (2026112701, 3600, 600, 604800, 60)
    assert zone.negative_ttl == 60

    got = [(str(rr.rname), dnslib.QTYPE[rr.rtype], str(rr.rdata), rr.ttl) for rr in zone.records]
    assert got == [
        ("example.test.", "NS", "ns1.example.test.", 3600),
        ("example.test.", "A", "127.0.0.1", 3600),
        ("example.test.", "AAAA", "::1", 3600),
        ("example.test.", "MX", "10 mail.example.test.", 3600),
        ("example.test.", "TXT", '"v=spf1 mx -all"', 3600),
        ("example.test.", "CAA", '0 issue "letsencrypt.org"', 3600),
        ("ns1.example.test.", "A", "127.0.0.1", 3600),
        ("ns1.example.test.", "AAAA", "::1", 3600),
        ("mail.example.test.", "A", "127.0.0.1", 3600),
        ("static.example.test.", "CNAME", "example.test.", 3600),
        ("cdn.example.test.", "CNAME", "www.example.test.", 3600),
    ]
    assert zone.geo == (GeoName("www.example.test.", 30, ("us-east", "eu-west", "ap-southeast")),)


def test_demo_records_pack(demo: Topology) -> None:
    """Every record accepted at load time can be put on the wire."""
    zone = demo.zones[0]
    for rr in (zone.soa, *zone.records):
        rr.pack(dnslib.DNSBuffer())


def test_parse_topology_matches_load(demo: Topology) -> None:
    parsed = parse_topology(demo_data(), source=str(DEMO))
    assert parsed == demo


def test_defaults_for_optional_tables() -> None:
    data = demo_data()
    for key in ("dns", "geoip", "health"):
        del data[key]
    edge = data["regions"][0]["edges"][0]
    del edge["port"], edge["ipv4"]
    del data["zones"][0]["ttl"], data["zones"][0]["geo"][0]["ttl"]
    topo = parse_topology(data)
    assert topo.source == "<memory>"
    assert topo.dns == DnsSettings()
    assert topo.geoip == GeoIPSettings()
    assert topo.health == HealthSettings()
    e = topo.edges[0]
    assert (e.ipv4, e.port, e.check_address) == (None, 80, "fd00:0:0:1::1")
    assert e.check_url_base == "http://[fd00:0:0:1::1]:80"
    assert topo.zones[0].records[0].ttl == 3600
    assert topo.zones[0].geo[0].ttl == 30


def test_optional_values_accepted() -> None:
    data = demo_data()
    data["geoip"]["database"] = "/var/lib/geoip/City.mmdb"
    data["regions"][1]["countries"] = ["IE", "GB"]
    data["regions"][0]["edges"][0]["check_address"] = "127.0.9.9"
    data["zones"][0]["origin"] = "Example.TEST."
    data["zones"][0]["records"] += [
        {"name": "_sip._tcp", "type": "srv", "value": "0 5 5060 sip", "ttl": 60},
        {"name": "apex-alias", "type": "CNAME", "value": "@"},
        {"name": "@", "type": "MX", "value": "20  mail2.other.test."},
    ]
    data["zones"][0]["geo"] = [{"name": "WWW", "regions": ["eu-west"]}]
    topo = parse_topology(data)
    assert topo.geoip.database == "/var/lib/geoip/City.mmdb"
    assert topo.region("eu-west").region.countries == frozenset({"IE", "GB"})
    assert topo.edges[0].check_address == "127.0.9.9"
    zone = topo.zones[0]
    assert zone.origin == "example.test."
    got = [(str(rr.rname), dnslib.QTYPE[rr.rtype], str(rr.rdata), rr.ttl)
           for rr in zone.records[-3:]]
    assert got == [
        # relative targets are resolved against the origin for every type, SRV included
        ("_sip._tcp.example.test.", "SRV", "0 5 5060 sip.example.test.", 60),
        # '@' in a value means the origin, as in a zone file
        ("apex-alias.example.test.", "CNAME", "example.test.", 3600),
        ("example.test.", "MX", "20 mail2.other.test.", 3600),
    ]
    for rr in zone.records:
        rr.pack(dnslib.DNSBuffer())
    assert zone.geo == (GeoName("www.example.test.", 30, ("eu-west",)),)


# --------------------------------------------------------------------------- bad files


def at(doc: Any, path: Path_) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def set_(path: Path_, value: Any) -> Callable[[Doc], None]:
    def edit(doc: Doc) -> None:
        at(doc, path[:-1])[path[-1]] = value

    return edit


def delete(*paths: Path_) -> Callable[[Doc], None]:
    def edit(doc: Doc) -> None:
        for path in paths:
            del at(doc, path[:-1])[path[-1]]

    return edit


def append(path: Path_, value: Any) -> Callable[[Doc], None]:
    def edit(doc: Doc) -> None:
        at(doc, path).append(value)

    return edit


def rec(name: str, rtype: str, value: str) -> Callable[[Doc], None]:
    """Add a record to the demo zone (it becomes zones[0].records[11])."""
    return append(("zones", 0, "records"), {"name": name, "type": rtype, "value": value})


def second_zone(origin: str) -> Callable[[Doc], None]:
    def edit(doc: Doc) -> None:
        zone = copy.deepcopy(doc["zones"][0])
        zone["origin"] = origin
        doc["zones"].append(zone)

    return edit


R11 = "zones[0].records[11]"  # the record added by rec()
E00 = "regions[0].edges[0]"

BAD: list[Any] = [
    # unknown keys, everywhere
    pytest.param(set_(("colour",), "blue"), "colour", ["unknown key"], id="unknown-top-level"),
    pytest.param(set_(("regions", 1, "lat"), 53.3), "regions[1].lat", ["unknown key"],
                 id="unknown-region-key"),
    pytest.param(set_(("regions", 0, "edges", 1, "address"), "127.0.0.1"),
                 "regions[0].edges[1].address", ["unknown key"], id="unknown-edge-key"),
    pytest.param(set_(("zones", 0, "records", 3, "priority"), 10),
                 "zones[0].records[3].priority", ["unknown key"], id="unknown-record-key"),
    pytest.param(set_(("zones", 0, "soa", "email"), "x"), "zones[0].soa.email", ["unknown key"],
                 id="unknown-soa-key"),
    pytest.param(set_(("zones", 0, "geo", 0, "weight"), 1), "zones[0].geo[0].weight",
                 ["unknown key"], id="unknown-geo-key"),
    pytest.param(set_(("zones", 0, "zone_ttl"), 1), "zones[0].zone_ttl", ["unknown key"],
                 id="unknown-zone-key"),
    pytest.param(set_(("dns", "port"), 53), "dns.port", ["unknown key", "listen"],
                 id="unknown-dns-key"),
    pytest.param(set_(("health", "retries"), 3), "health.retries", ["unknown key", "rise"],
                 id="unknown-health-key"),
    pytest.param(set_(("geoip", "url"), "x"), "geoip.url", ["unknown key"],
                 id="unknown-geoip-key"),
    # wrong types
    pytest.param(set_(("regions", 1, "latitude"), "53.3"), "regions[1].latitude",
                 ["must be a number", "str"], id="string-latitude"),
    pytest.param(set_(("regions", 1, "longitude"), True), "regions[1].longitude",
                 ["must be a number", "bool"], id="bool-longitude"),
    pytest.param(set_(("health", "rise"), True), "health.rise",
                 ["must be an integer", "boolean"], id="bool-rise"),
    pytest.param(set_(("regions", 0, "edges", 1, "port"), False), "regions[0].edges[1].port",
                 ["must be an integer", "boolean"], id="bool-port"),
    pytest.param(set_(("zones", 0, "ttl"), 60.5), "zones[0].ttl", ["must be an integer", "float"],
                 id="float-ttl"),
    pytest.param(set_(("health",), []), "health", ["must be a table", "list"],
                 id="list-for-health"),
    pytest.param(set_(("dns",), ["127.0.0.1:53"]), "dns", ["must be a table"], id="list-for-dns"),
    pytest.param(set_(("zones", 0, "soa"), []), "zones[0].soa", ["must be a table"],
                 id="list-for-soa"),
    pytest.param(set_(("regions",), {}), "regions", ["must be an array"], id="table-for-regions"),
    pytest.param(set_(("regions", 0, "edges"), {"name": "x"}), "regions[0].edges",
                 ["must be an array"], id="table-for-edges"),
    pytest.param(append(("regions", 0, "edges"), "127.0.0.9"), "regions[0].edges[2]",
                 ["must be a table", "str"], id="string-for-edge"),
    pytest.param(append(("zones", 0, "records"), 7), R11,
                 ["must be a table"], id="int-for-record"),
    pytest.param(set_(("default_region",), 1), "default_region", ["must be a string"],
                 id="int-default-region"),
    pytest.param(set_(("regions", 0, "continents"), ["NA", 1]), "regions[0].continents[1]",
                 ["must be a string"], id="int-in-continents"),
    pytest.param(set_(("dns", "listen"), "127.0.0.1:53"), "dns.listen", ["must be an array"],
                 id="string-for-listen"),
    pytest.param(set_(("regions", 0, "latitude"), 10**400), "regions[0].latitude",
                 ["too large"], id="huge-int-latitude"),
    # ranges
    pytest.param(set_(("regions", 0, "latitude"), 95), "regions[0].latitude",
                 ["between -90 and 90", "95"], id="latitude-95"),
    pytest.param(set_(("regions", 2, "longitude"), -181), "regions[2].longitude",
                 ["between -180 and 180", "-181"], id="longitude-minus-181"),
    pytest.param(set_(("regions", 2, "longitude"), float("nan")), "regions[2].longitude",
                 ["between -180 and 180", "nan"], id="longitude-nan"),
    pytest.param(set_(("regions", 0, "edges", 0, "port"), 0), f"{E00}.port",
                 ["between 1 and 65535"], id="edge-port-0"),
    pytest.param(set_(("health", "interval"), -1), "health.interval", ["greater than 0", "-1"],
                 id="negative-health-interval"),
    pytest.param(set_(("health", "interval"), float("nan")), "health.interval",
                 ["greater than 0", "nan"], id="nan-health-interval"),
    pytest.param(set_(("health", "timeout"), 0), "health.timeout", ["greater than 0"],
                 id="zero-health-timeout"),
    pytest.param(set_(("health", "timeout"), float("inf")), "health.timeout", ["finite", "inf"],
                 id="inf-health-timeout"),
    pytest.param(set_(("health", "fall"), 0), "health.fall", ["between 1 and 100"],
                 id="health-fall-0"),
    pytest.param(set_(("health", "path"), "healthz"), "health.path", ["must start with '/'"],
                 id="health-path-relative"),
    pytest.param(set_(("dns", "max_udp_payload"), 511), "dns.max_udp_payload",
                 ["between 512 and 65535", "511"], id="udp-payload-511"),
    pytest.param(set_(("dns", "tcp_idle_timeout"), float("nan")), "dns.tcp_idle_timeout",
                 ["greater than 0"], id="nan-tcp-idle-timeout"),
    pytest.param(set_(("dns", "answer_cache_size"), 1), "dns.answer_cache_size",
                 ["between 16 and"], id="tiny-answer-cache"),
    pytest.param(set_(("dns", "udp_fast_path"), "yes"), "dns.udp_fast_path",
                 ["must be true or false", "'yes'"], id="string-udp-fast-path"),
    pytest.param(set_(("dns", "udp_fast_path"), 1), "dns.udp_fast_path",
                 ["must be true or false"], id="int-udp-fast-path"),
    pytest.param(set_(("geoip", "watch_interval"), 0), "geoip.watch_interval",
                 ["greater than 0"], id="zero-watch-interval"),
    pytest.param(set_(("zones", 0, "ttl"), -1), "zones[0].ttl", ["between 0 and"],
                 id="negative-zone-ttl"),
    pytest.param(set_(("zones", 0, "soa", "serial"), 2**32), "zones[0].soa.serial",
                 ["between 0 and 4294967295", "got 4294967296"], id="soa-serial-too-big"),
    pytest.param(set_(("zones", 0, "geo", 0, "ttl"), 86401), "zones[0].geo[0].ttl",
                 ["between 0 and 86400"], id="geo-ttl-too-big"),
    # regions and edges
    pytest.param(set_(("regions", 2, "name"), "us-east"), "regions[2].name",
                 ["duplicate region", "us-east"], id="duplicate-region"),
    pytest.param(set_(("regions", 1, "name"), "eu west"), "regions[1].name",
                 ["letters, digits"], id="region-name-with-space"),
    pytest.param(set_(("regions", 1, "name"), "eu-west\u00b2"), "regions[1].name",
                 ["letters, digits"], id="region-name-not-ascii"),
    pytest.param(set_(("regions",), []), "regions", ["at least one region"], id="no-regions"),
    pytest.param(delete(("regions", 1, "latitude")), "regions[1].latitude",
                 ["required key is missing"], id="region-without-latitude"),
    pytest.param(set_(("regions", 1, "continents"), ["EU", "XX"]), "regions[1].continents[1]",
                 ["not a continent code", "XX"], id="bad-continent"),
    pytest.param(set_(("regions", 1, "countries"), ["ie"]), "regions[1].countries[0]",
                 ["not an ISO country code", "ie"], id="bad-country"),
    pytest.param(set_(("regions", 1, "edges", 0, "name"), "us-east-1"),
                 "regions[1].edges[0].name", ["duplicate edge", "us-east-1"],
                 id="duplicate-edge-name"),
    pytest.param(set_(("regions", 0, "edges", 0, "name"), ""), f"{E00}.name", ["empty"],
                 id="empty-edge-name"),
    pytest.param(set_(("regions", 0, "edges"), []), "regions[0].edges", ["at least one edge"],
                 id="region-without-edges"),
    pytest.param(delete(("regions", 0, "edges")), "regions[0].edges",
                 ["required key is missing"], id="region-missing-edges-key"),
    pytest.param(delete(("regions", 0, "edges", 0, "ipv4"), ("regions", 0, "edges", 0, "ipv6")),
                 E00, ["needs an ipv4 or an ipv6 address"], id="edge-without-addresses"),
    pytest.param(set_(("regions", 0, "edges", 0, "ipv6"), "127.0.0.1"), f"{E00}.ipv6",
                 ["must be an IPv6 address", "127.0.0.1"], id="ipv4-in-ipv6-field"),
    pytest.param(set_(("regions", 0, "edges", 0, "ipv4"), "fd00::1"), f"{E00}.ipv4",
                 ["must be an IPv4 address"], id="ipv6-in-ipv4-field"),
    pytest.param(set_(("regions", 0, "edges", 0, "ipv4"), "127.0.1"), f"{E00}.ipv4",
                 ["not an IP address"], id="bad-ipv4"),
    pytest.param(set_(("regions", 0, "edges", 0, "ipv6"), "fe80::1%eth0"), f"{E00}.ipv6",
                 ["zone index"], id="scoped-ipv6"),
    pytest.param(set_(("regions", 0, "edges", 0, "check_address"), ""), f"{E00}.check_address",
                 ["not an IP address"], id="empty-check-address"),
    # dns.listen
    pytest.param(set_(("dns", "listen"), ["127.0.0.1"]), "dns.listen[0]", ["HOST:PORT"],
                 id="listen-without-port"),
    pytest.param(set_(("dns", "listen"), ["127.0.0.1:53", "[::1]:dns"]), "dns.listen[1]",
                 ["port must be a number", "dns"], id="listen-port-not-number"),
    pytest.param(set_(("dns", "listen"), ["127.0.0.1: 53"]), "dns.listen[0]",
                 ["port must be a number"], id="listen-port-with-space"),
    pytest.param(set_(("dns", "listen"), ["127.0.0.1:65536"]), "dns.listen[0]",
                 ["port must be 0..65535"], id="listen-port-too-big"),
    pytest.param(set_(("dns", "listen"), ["300.0.0.1:53"]), "dns.listen[0]",
                 ["not an IP address"], id="listen-bad-ipv4"),
    pytest.param(set_(("dns", "listen"), ["::1:53:x"]), "dns.listen[0]",
                 ["port must be a number"], id="listen-unbracketed-ipv6"),
    pytest.param(set_(("dns", "listen"), []), "dns.listen", ["at least one HOST:PORT"],
                 id="listen-empty"),
    # default region
    pytest.param(delete(("default_region",)), "default_region", ["required key is missing"],
                 id="missing-default-region"),
    pytest.param(set_(("default_region",), "mars"), "default_region",
                 ["'mars' is not one of the regions"], id="unknown-default-region"),
    # zones
    pytest.param(delete(("zones",)), "zones", ["required key is missing"], id="missing-zones"),
    pytest.param(set_(("zones",), []), "zones", ["at least one zone"], id="no-zones"),
    pytest.param(delete(("zones", 0, "soa")), "zones[0].soa", ["required key is missing"],
                 id="zone-without-soa"),
    pytest.param(delete(("zones", 0, "soa", "serial")), "zones[0].soa.serial",
                 ["required key is missing"], id="soa-without-serial"),
    pytest.param(second_zone("EXAMPLE.test."), "zones[1].origin",
                 ["duplicate zone", "example.test."], id="duplicate-zone"),
    pytest.param(set_(("zones", 0, "origin"), "example..test"), "zones[0].origin",
                 ["invalid DNS name"], id="origin-empty-label"),
    pytest.param(set_(("zones", 0, "origin"), "example.test.."), "zones[0].origin",
                 ["invalid DNS name"], id="origin-double-trailing-dot"),
    pytest.param(set_(("zones", 0, "origin"), "exa mple.test"), "zones[0].origin",
                 ["invalid DNS name", "' '"], id="origin-with-space"),
    pytest.param(set_(("zones", 0, "origin"), "x" * 64 + ".test"), "zones[0].origin",
                 ["invalid DNS name"], id="origin-label-too-long"),
    pytest.param(set_(("zones", 0, "soa", "mname"), "ns 1"), "zones[0].soa.mname",
                 ["invalid DNS name"], id="soa-mname-with-space"),
    # records
    pytest.param(rec("www.other.test.", "A", "127.0.0.1"), f"{R11}.name",
                 ["outside its zone", "www.other.test.", "example.test."],
                 id="record-outside-zone"),
    pytest.param(rec("badexample.test.", "A", "127.0.0.1"), f"{R11}.name",
                 ["outside its zone"], id="record-suffix-but-outside-zone"),
    pytest.param(rec("foo bar", "TXT", '"hi"'), f"{R11}.name",
                 ["invalid DNS name", "' '"], id="record-name-with-space"),
    pytest.param(rec("x;y", "TXT", '"hi"'), f"{R11}.name", ["invalid DNS name", "';'"],
                 id="record-name-with-semicolon"),
    pytest.param(rec("", "A", "127.0.0.1"), f"{R11}.name", ["empty name"], id="record-empty-name"),
    pytest.param(set_(("zones", 0, "records", 1, "type"), "SPF"), "zones[0].records[1].type",
                 ["unsupported type", "'SPF'"], id="unknown-record-type"),
    pytest.param(set_(("zones", 0, "records", 1, "value"), "127.0.0.256"),
                 "zones[0].records[1].value", ["bad A data", "127.0.0.256"], id="bad-a-octet"),
    pytest.param(set_(("zones", 0, "records", 1, "value"), "::1"), "zones[0].records[1].value",
                 ["bad A data"], id="ipv6-in-a-record"),
    pytest.param(set_(("zones", 0, "records", 1, "value"), "1.2.3.04"),
                 "zones[0].records[1].value", ["not an IP address"], id="a-leading-zero"),
    pytest.param(set_(("zones", 0, "records", 1, "value"), "1.2.3.4 5.6.7.8"),
                 "zones[0].records[1].value", ["not an IP address"], id="a-two-addresses"),
    pytest.param(set_(("zones", 0, "records", 2, "value"), "127.0.0.1"),
                 "zones[0].records[2].value", ["bad AAAA data"], id="ipv4-in-aaaa-record"),
    pytest.param(set_(("zones", 0, "records", 3, "value"), "mail"), "zones[0].records[3].value",
                 ["bad MX data", "2 fields"], id="mx-without-preference"),
    pytest.param(set_(("zones", 0, "records", 3, "value"), "70000 mail"),
                 "zones[0].records[3].value", ["bad MX data", "preference"], id="mx-preference"),
    pytest.param(set_(("zones", 0, "records", 4, "value"), '"unterminated'),
                 "zones[0].records[4].value", ["bad TXT data"], id="txt-unterminated"),
    pytest.param(set_(("zones", 0, "records", 5, "value"), '300 issue "letsencrypt.org"'),
                 "zones[0].records[5].value", ["bad CAA data"], id="caa-flags-too-big"),
    pytest.param(set_(("zones", 0, "records", 5, "value"), "0 issue"),
                 "zones[0].records[5].value", ["bad CAA data"], id="caa-missing-value"),
    pytest.param(set_(("zones", 0, "records", 10, "value"), "www mail"),
                 "zones[0].records[10].value", ["bad CNAME data", "1 field"],
                 id="cname-two-targets"),
    pytest.param(rec("_sip._tcp", "SRV", "0 5 sip"), f"{R11}.value", ["bad SRV data"],
                 id="srv-missing-field"),
    pytest.param(rec("_sip._tcp", "SRV", "0 5 5060 sip..x"), f"{R11}.value",
                 ["invalid DNS name", "sip..x"], id="srv-bad-target"),
    pytest.param(set_(("zones", 0, "records", 9, "value"), "a(b"), "zones[0].records[9].value",
                 ["invalid DNS name"], id="cname-target-with-paren"),
    pytest.param(set_(("zones", 0, "records", 1, "ttl"), -5), "zones[0].records[1].ttl",
                 ["between 0 and"], id="negative-record-ttl"),
    pytest.param(delete(("zones", 0, "records", 1, "value")), "zones[0].records[1].value",
                 ["required key is missing"], id="record-without-value"),
    pytest.param(rec("sub", "NS", "ns1"), f"{R11}.name", ["only supported at the zone apex"],
                 id="ns-below-apex"),
    pytest.param(rec("mail", "CNAME", "www"), "zones[0].records",
                 ["mail.example.test.", "CNAME and other data"], id="cname-with-other-data"),
    pytest.param(rec("cdn", "CNAME", "mail"), "zones[0].records",
                 ["cdn.example.test.", "more than one CNAME"], id="two-cnames"),
    pytest.param(rec("@", "CNAME", "www"), "zones[0].records",
                 ["CNAME cannot be at the zone apex"], id="cname-at-apex"),
    pytest.param(delete(("zones", 0, "records", 0)), "zones[0].records",
                 ["apex needs at least one NS"], id="zone-without-ns"),
    pytest.param(delete(("zones", 0, "records")), "zones[0].records",
                 ["apex needs at least one NS"], id="zone-without-records"),
    # geo names
    pytest.param(set_(("zones", 0, "geo", 0, "name"), "www.other.test."), "zones[0].geo[0].name",
                 ["outside its zone", "www.other.test."], id="geo-outside-zone"),
    pytest.param(set_(("zones", 0, "geo", 0, "regions"), ["us-east", "mars"]),
                 "zones[0].geo[0].regions[1]", ["unknown region", "mars"],
                 id="geo-unknown-region"),
    pytest.param(set_(("zones", 0, "geo", 0, "name"), "mail"), "zones[0].geo[0].name",
                 ["mail.example.test.", "static", "'A'"], id="geo-clashes-with-a"),
    pytest.param(set_(("zones", 0, "geo", 0, "name"), "cdn"), "zones[0].geo[0].name",
                 ["static", "'CNAME'"], id="geo-clashes-with-cname"),
    pytest.param(set_(("zones", 0, "geo", 0, "name"), "@"), "zones[0].geo[0].name",
                 ["static", "'A'", "'AAAA'"], id="geo-at-apex-with-static-address"),
    pytest.param(append(("zones", 0, "geo"), {"name": "WWW.example.test."}),
                 "zones[0].geo[1].name", ["duplicate geo name"], id="duplicate-geo-name"),
    pytest.param(append(("zones", 0, "geo"), {"ttl": 30}), "zones[0].geo[1].name",
                 ["required key is missing"], id="geo-without-name"),
    # the regions' shared cache tier
    pytest.param(set_(("regions", 1, "redis"), {"url": "redis://a", "cluster": ["b:1"]}),
                 "regions[1].redis", ["exactly one of url"], id="redis-url-and-cluster"),
    pytest.param(set_(("regions", 1, "redis"), {}), "regions[1].redis",
                 ["exactly one of url"], id="redis-neither"),
    pytest.param(set_(("regions", 1, "redis"), {"url": "http://a"}), "regions[1].redis.url",
                 ["redis:// url"], id="redis-not-redis-url"),
    pytest.param(set_(("regions", 1, "redis"), {"cluster": ["a"]}),
                 "regions[1].redis.cluster[0]", ["host:port"], id="redis-cluster-node"),
    pytest.param(set_(("regions", 1, "redis"), {"url": "redis://a", "timeout": 0}),
                 "regions[1].redis.timeout", ["between 0 and 10"], id="redis-timeout"),
    pytest.param(set_(("regions", 1, "redis"), {"url": "redis://a", "prefix": "x{y"}),
                 "regions[1].redis.prefix", ["braces"], id="redis-prefix"),
    pytest.param(set_(("regions", 1, "redis"), {"url": "redis://a", "db": 1}),
                 "regions[1].redis.db", ["unknown key"], id="redis-unknown-key"),
]


def test_region_redis_defaults() -> None:
    data = demo_data()
    data["regions"][1]["redis"] = {"url": "redis://127.0.0.1:6379/0"}
    redis = parse_topology(data).regions[1].redis
    assert redis is not None
    assert (redis.url, redis.cluster, redis.prefix, redis.timeout, redis.max_object_bytes) == (
        "redis://127.0.0.1:6379/0", (), "geoedge:eu-west:", 0.05, 1 << 20)


@pytest.mark.parametrize(("edit", "key", "words"), BAD)
def test_bad_config(edit: Callable[[Doc], None], key: str, words: list[str]) -> None:
    data = demo_data()
    parse_topology(copy.deepcopy(data))  # the unedited file is fine
    edit(data)
    with pytest.raises(ConfigError) as info:
        parse_topology(data)
    err = info.value
    assert err.key == key, f"{err.key!r}: {err.problem}"
    for word in words:
        assert word.lower() in err.problem.lower(), f"{word!r} not in {err.problem!r}"
    assert str(err) == f"{key}: {err.problem}"


def test_bad_case_ids_unique() -> None:
    ids = [p.id for p in BAD]
    assert len(ids) == len(set(ids))


# --------------------------------------------------------------------------- load_topology


def test_load_toml_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('default_region = "us-east"\n[dns\nlisten = ["127.0.0.1:53"]\n')
    with pytest.raises(ConfigError) as info:
        load_topology(path)
    err = info.value
    assert err.key == ""
    assert err.problem.startswith(f"{path}: not valid TOML: ")
    assert "line 2" in err.problem
    assert str(err) == err.problem


def test_load_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('default_region = "us-\u00e9ast"\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_topology(path)
    assert info.value.key == ""
    assert f"{path}: not valid TOML: not UTF-8" in info.value.problem


def test_load_reports_key_of_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "demo.toml"
    path.write_text(DEMO.read_text().replace("latitude = 53.3", "latitude = 95.0"))
    with pytest.raises(ConfigError) as info:
        load_topology(path)
    assert str(info.value) == "regions[1].latitude: must be between -90 and 90, got 95.0"


def test_load_missing_file_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: cannot read: No such file"):
        load_topology(tmp_path / "nope.toml")


def test_load_accepts_str_path(tmp_path: Path) -> None:
    path = tmp_path / "copy.toml"
    path.write_bytes(DEMO.read_bytes())
    topo = load_topology(str(path))
    assert topo.source == str(path)
    assert topo.default_region == "us-east"
