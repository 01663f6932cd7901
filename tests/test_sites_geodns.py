"""A site's ``regions`` (#14) decide which edges GeoDNS answers for the site's names."""

from __future__ import annotations

import tomllib
from pathlib import Path

import dns.edns
import dns.message
import dns.rdatatype
import pytest

from geoconfig.topology import parse_topology
from geoconfig.validate import ConfigError
from geodns.main import load_engine
from geoedge.deploy.writers import dump_toml

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "demo.toml"
EU = {"127.0.2.1", "127.0.2.2"}
US = {"127.0.1.1", "127.0.1.2"}
AP = {"127.0.3.1", "127.0.3.2"}


def demo_with_site(hosts: list[str], regions: list[str]) -> dict:
    data = tomllib.loads(DEMO.read_text())
    data["sites"] = [{"name": "shop", "hosts": hosts, "regions": regions,
                      "origins": [{"name": "shop-1", "host": "127.0.0.1", "port": 9}]}]
    return data


def geo_regions(data: dict) -> dict[str, tuple[str, ...]]:
    topology = parse_topology(data, source=str(DEMO))
    return {g.name: g.regions for z in topology.zones for g in z.geo}


@pytest.mark.parametrize(("hosts", "regions", "expected"), [
    (["www.example.test"], ["eu-west"], ("eu-west",)),  # exact host
    (["*.example.test"], ["eu-west", "us-east"], ("us-east", "eu-west")),  # wildcard, own order
    (["shop.other.test"], ["eu-west"], ("us-east", "eu-west", "ap-southeast")),  # not its name
    (["www.example.test"], [], ("us-east", "eu-west", "ap-southeast")),  # no regions: all
])
def test_a_sites_regions_restrict_its_geo_names(hosts, regions, expected) -> None:
    assert geo_regions(demo_with_site(hosts, regions))["www.example.test."] == expected


def test_a_name_left_without_region_is_a_config_error() -> None:
    data = demo_with_site(["www.example.test"], ["eu-west"])
    for zone in data["zones"]:
        for g in zone["geo"]:
            g["regions"] = ["us-east"]
    with pytest.raises(ConfigError, match=r"sites\[0\]\.regions"):
        parse_topology(data, source=str(DEMO))


@pytest.mark.parametrize(("subnet", "expected"), [
    ("81.2.69.0/24", EU),  # GB: eu-west either way
    ("8.8.8.0/24", EU),  # US: only eu-west serves the site
    ("1.1.1.0/24", EU),  # AU
])
def test_geodns_answers_only_with_the_sites_regions(tmp_path: Path, subnet: str,
                                                    expected: set[str]) -> None:
    path = tmp_path / "topology.toml"
    data = demo_with_site(["www.example.test"], ["eu-west"])
    data["origin"]["root"] = str(ROOT / "examples" / "content")
    path.write_text(dump_toml(data))
    engine = load_engine(path)
    query = dns.message.make_query("www.example.test", "A", use_edns=0)
    addr, prefix = subnet.split("/")
    query.use_edns(0, options=[dns.edns.ECSOption(addr, int(prefix))])
    wire = engine.respond(query.to_wire(), "127.0.0.1")
    reply = dns.message.from_wire(wire)
    got = {r.address for rrset in reply.answer for r in rrset
           if rrset.rdtype == dns.rdatatype.A}
    assert got == expected
