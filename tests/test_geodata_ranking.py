"""rank_regions / select_region, with real GeoLite2 data, the fixture databases and tables."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from ipaddress import ip_network
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geodata import (
    GeoReader,
    Location,
    Region,
    Selection,
    great_circle_km,
    rank_regions,
    select_region,
)

FIXTURES = Path(__file__).parent / "fixtures"


def region(name: str, lat: float, lon: float, countries: str = "", continents: str = "") -> Region:
    return Region(name, lat, lon, frozenset(countries.split()), frozenset(continents.split()))


# The demo topology (examples/demo.toml): Ashburn, Dublin, Singapore; default us-east.
DEMO = [
    region("us-east", 39.0, -77.5, continents="NA SA"),
    region("eu-west", 53.3, -6.3, continents="EU AF"),
    region("ap-southeast", 1.35, 103.8, continents="AS OC"),
]
# DEMO plus country mappings and a Frankfurt region, listed last (config order matters).
MAPPED = [
    region("us-east", 39.0, -77.5, "US CA", "NA SA"),
    region("eu-west", 53.3, -6.3, "IE GB", "EU AF"),
    region("ap-southeast", 1.35, 103.8, "SG", "AS OC"),
    region("eu-central", 50.1, 8.7, "DE AT CH", "EU"),
]
US, EU, AP, FRA = "us-east", "eu-west", "ap-southeast", "eu-central"


@pytest.fixture(scope="module")
def embedded() -> Iterator[GeoReader]:
    with GeoReader() as reader:
        yield reader


GREAT_CIRCLE = [
    ((0.0, 0.0, 0.0, 0.0), 0.0),
    ((0.0, 0.0, 0.0, 90.0), 10007.557),  # a quarter of 2*pi*6371.0088
    ((0.0, 0.0, 0.0, 180.0), 20015.114),  # antipodes: pi*R
    ((90.0, 0.0, -90.0, 0.0), 20015.114),  # pole to pole
    ((0.0, 170.0, 0.0, -170.0), 2223.902),  # across the antimeridian: 20 degrees, not 340
    ((53.3, -6.3, 39.0, -77.5), 5463.836),  # Dublin - Ashburn
    ((53.3, -6.3, 1.35, 103.8), 11202.314),  # Dublin - Singapore
]


@pytest.mark.parametrize(("args", "km"), GREAT_CIRCLE)
def test_great_circle_km(args: tuple[float, float, float, float], km: float) -> None:
    assert great_circle_km(*args) == pytest.approx(km, abs=0.001)
    lat1, lon1, lat2, lon2 = args
    assert great_circle_km(lat2, lon2, lat1, lon1) == pytest.approx(km, abs=0.001)


# Real GeoLite2 (Dec 2019) -> demo regions. Distances (km) in the order expected.
EMBEDDED_ORDER = [
    ("81.2.69.160", [EU, US, AP], [428, 5892, 10840]),  # GB, Gamlingay
    ("2001:630::1", [EU, US, AP], [422, 5873, 10903]),  # GB, Reading (IPv6)
    ("::ffff:81.2.69.160", [EU, US, AP], [428, 5892, 10840]),  # IPv4-mapped GB
    ("8.8.8.8", [US, EU, AP], [1773, 6830, 15132]),  # US centroid, Kansas
    ("1.1.1.1", [AP, US, EU], [5656, 16344, 16755]),  # AU, New South Wales
    ("2404:6800::1", [AP, EU, US], [4440, 15584, 16893]),  # AU centroid (IPv6)
    # ZA centroid (-29, 24): Singapore is nearer than Dublin, by about 500 km
    ("196.25.1.1", [AP, EU, US], [9091, 9609, 12915]),
    ("193.99.144.80", [EU, US, AP], [1080, 6513, 10164]),  # DE, Hanover
    ("200.160.2.3", [US, EU, AP], [7745, 9182, 15729]),  # BR, Rio de Janeiro
    ("133.11.0.1", [AP, EU, US], [5323, 9589, 10870]),  # JP, Tokyo
    ("2.16.0.1", [EU, US, AP], [1233, 6658, 10337]),  # no country; continent EU at (47, 8)
]


@pytest.mark.parametrize(("ip", "order", "km"), EMBEDDED_ORDER)
def test_embedded_by_distance(embedded: GeoReader, ip: str, order: list[str], km: list[int]):
    ranking = rank_regions(embedded.locate(ip), DEMO, "us-east")
    assert (ranking.method, ranking.order) == ("distance", tuple(order))
    assert [round(d) for d in ranking.distances_km if d is not None] == km


# Not found, or found with nothing usable: default first, then by distance from us-east
# (Dublin 5464 km, Singapore 15526 km).
@pytest.mark.parametrize(
    "ip",
    ["10.1.2.3", "192.0.2.1", "2001:db8::1", "127.0.0.1", "fd00::1", "::1",
     "23.128.130.1",  # registered_country US only: no location, no continent, no mapping
     "80.231.5.1"],  # satellite provider: a record with no geo data at all
)
def test_embedded_default(embedded: GeoReader, ip: str) -> None:
    ranking = rank_regions(embedded.locate(ip), DEMO, "us-east")
    assert ranking == rank_regions(None, DEMO, "us-east")
    assert (ranking.order, ranking.method) == ((US, EU, AP), "default")
    assert ranking.distances_km == (None, None, None)


# No coordinates: country mapping, then continent mapping, then default, then the rest by
# distance from the first. Dublin-Frankfurt 1091, Singapore-Frankfurt 10256, Singapore-Dublin
# 11202, Ashburn-Dublin 5464, Ashburn-Frankfurt 6555 km.
FIXTURE_ORDER = [
    ("city-test.mmdb", "203.0.113.65", "country", [FRA, EU, US, AP]),  # DE, EU
    ("city-test.mmdb", "2001:db8:2::1", "country", [EU, FRA, US, AP]),  # IE, EU
    ("city-test.mmdb", "203.0.113.129", "continent", [EU, US, FRA, AP]),  # AF only
    ("city-test.mmdb", "203.0.113.161", "continent", [AP, US, FRA, EU]),  # registered JP, AS
    ("city-test.mmdb", "198.18.0.1", "default", [US, EU, FRA, AP]),  # a record, nothing in it
    ("city-test.mmdb", "198.51.100.200", "default", [US, EU, FRA, AP]),  # not found
    ("city-test.mmdb", "192.0.2.1", "distance", [EU, FRA, US, AP]),  # London: 465, 637 km
    ("city-test.mmdb", "2001:db8:1::1", "distance", [AP, FRA, EU, US]),  # Tokyo: 5317, 9332
    ("country-test.mmdb", "192.0.2.1", "country", [EU, FRA, US, AP]),  # GB, EU
    ("country-test.mmdb", "203.0.113.1", "country", [AP, US, FRA, EU]),  # SG, AS
    ("country-test.mmdb", "198.51.100.1", "country", [US, EU, FRA, AP]),  # US, NA
    ("country-test.mmdb", "::ffff:198.51.100.1", "country", [US, EU, FRA, AP]),
    ("country-test.mmdb", "2001:db8:1::1", "default", [US, EU, FRA, AP]),  # IPv4-only db
]


@pytest.mark.parametrize(("db", "ip", "method", "order"), FIXTURE_ORDER)
def test_fixture_order(db: str, ip: str, method: str, order: list[str]) -> None:
    with GeoReader(FIXTURES / db) as reader:
        ranking = rank_regions(reader.locate(ip), MAPPED, "us-east")
    assert (ranking.method, ranking.order) == (method, tuple(order))
    assert (None in ranking.distances_km) == (method != "distance")


def where(country: str | None, continent: str | None, lat: float | None = None,
          lon: float | None = None) -> Location:
    return Location(country, continent, lat, lon, 24, ip_network("192.0.2.0/24"), True)


TWINS = [region("a", 10.0, 10.0), region("b", 0.0, 0.0), region("c", 10.0, 10.0)]
SYNTHETIC = [
    # several country matches keep config order; eu-west also matches EU but appears once
    (where("GB", "EU"), region("x", 0, 0, "GB"), [EU, "x", FRA, US, AP]),
    (where("FR", "EU"), None, [EU, FRA, US, AP]),  # no country match: EU regions, config order
    (where("FR", None), None, [US, EU, FRA, AP]),  # nothing matches: default first
    (where(None, "AN"), None, [US, EU, FRA, AP]),  # Antarctica: no region has it
    (where("US", "NA", 51.5, -0.1), None, [EU, FRA, US, AP]),  # coordinates beat the mapping
]


@pytest.mark.parametrize(("location", "extra", "order"), SYNTHETIC)
def test_synthetic(location: Location, extra: Region | None, order: list[str]) -> None:
    regions = [*MAPPED[:2], *([extra] if extra else []), *MAPPED[2:]]
    assert rank_regions(location, regions, "us-east").order == tuple(order)


def test_default_not_first_in_config() -> None:
    assert rank_regions(None, DEMO, "ap-southeast").order == (AP, EU, US)  # 11202 < 15526 km


def test_distance_ties_keep_config_order() -> None:
    assert rank_regions(where(None, None, 10.0, 10.0), TWINS, "b").order == ("a", "c", "b")
    assert rank_regions(None, TWINS, "b").order == ("b", "a", "c")


@pytest.mark.parametrize(
    ("regions", "default", "message"),
    [([], "us-east", "no regions"), (DEMO, "eu-central", "not one of"),
     ([*DEMO, DEMO[0]], "us-east", "repeat")],
)
def test_rank_regions_rejects_bad_config(regions: list[Region], default: str, message: str):
    with pytest.raises(ValueError, match=message):
        rank_regions(None, regions, default)


ORDER = ("eu-west", "us-east", "ap-southeast")
SELECTIONS: list[tuple[Mapping[str, bool] | Callable[[str], bool], Selection]] = [
    ({"eu-west": True, "us-east": True, "ap-southeast": True}, Selection("eu-west", False)),
    ({"eu-west": False, "us-east": True, "ap-southeast": True}, Selection("us-east", False)),
    ({"eu-west": False, "us-east": False, "ap-southeast": True}, Selection("ap-southeast", False)),
    ({"eu-west": True, "us-east": False, "ap-southeast": False}, Selection("eu-west", False)),
    ({"eu-west": False, "us-east": False, "ap-southeast": False}, Selection("eu-west", True)),
    ({"ap-southeast": True}, Selection("ap-southeast", False)),  # missing counts as down
    ({}, Selection("eu-west", True)),  # nothing known up: fail open to the best
    (lambda name: name != "eu-west", Selection("us-east", False)),
    (lambda name: False, Selection("eu-west", True)),
]


@pytest.mark.parametrize(("health", "expected"), SELECTIONS)
def test_select_region(health: Mapping[str, bool] | Callable[[str], bool], expected: Selection):
    assert select_region(ORDER, health) == expected


def test_select_region_single_and_empty() -> None:
    assert select_region(["us-east"], {"us-east": False}) == Selection("us-east", True)
    with pytest.raises(ValueError, match="no regions"):
        select_region([], {})


@given(
    lat=st.floats(min_value=-90, max_value=90),
    lon=st.floats(min_value=-180, max_value=180),
    default=st.sampled_from([r.name for r in MAPPED]),
)
def test_distance_ranking_property(lat: float, lon: float, default: str) -> None:
    ranking = rank_regions(where(None, None, lat, lon), MAPPED, default)
    assert sorted(ranking.order) == sorted(r.name for r in MAPPED)
    assert ranking.method == "distance"
    distances = [d for d in ranking.distances_km if d is not None]
    assert len(distances) == len(MAPPED)
    assert distances == sorted(distances)
    by_name = {r.name: r for r in MAPPED}
    for name, km in zip(ranking.order, distances, strict=True):
        assert km == great_circle_km(lat, lon, by_name[name].latitude, by_name[name].longitude)
