"""The region map: compilation, buddy merging, re-merging by a coarser key, the disk cache."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from pathlib import Path

import pytest

from geodata import GeoReader, Region, rank_regions
from geodata.mapcache import cache_key, dumps, load_or_compile, loads
from geodata.regionmap import SLOW, MmdbTree, RegionMap, compile_map

FIXTURES = Path(__file__).parent / "fixtures"


def region(name: str, lat: float, lon: float, continents: str = "") -> Region:
    return Region(name, lat, lon, frozenset(), frozenset(continents.split()))


DEMO = [
    region("us-east", 39.0, -77.5, "NA SA"),
    region("eu-west", 53.3, -6.3, "EU AF"),
    region("ap-southeast", 1.35, 103.8, "AS OC"),
]
US_ORDER = ("us-east", "eu-west", "ap-southeast")
EU_ORDER = ("eu-west", "us-east", "ap-southeast")
AP_EU = ("ap-southeast", "eu-west", "us-east")
AP_US = ("ap-southeast", "us-east", "eu-west")


def compiled(name: str) -> RegionMap:
    return compile_map(MmdbTree(FIXTURES / name), DEMO, "us-east")


def entry(rmap: RegionMap, address: str) -> tuple[tuple[str, ...] | None, str]:
    """(order or None for SLOW, the entry's network) holding ``address``."""
    ip = ip_address(address)
    family = 1 if ip.version == 4 else 2
    val, plen = rmap.lookup(family, ip.packed)
    bits = 32 if family == 1 else 128
    net = ip_network((type(ip)(int(ip) >> (bits - plen) << (bits - plen)), plen))
    return (None if val == SLOW else rmap.orders[val]), str(net)


# (fixture, address, order, the merged network it answers for)
FULL_ORDER = [
    ("merge-test.mmdb", "198.51.100.1", EU_ORDER, "198.51.100.0/25"),  # London + Paris
    ("merge-test.mmdb", "198.51.100.100", EU_ORDER, "198.51.100.0/25"),
    ("merge-test.mmdb", "198.51.100.129", US_ORDER, "198.51.100.128/26"),  # New York
    ("merge-test.mmdb", "198.51.100.200", AP_EU, "198.51.100.192/26"),  # Tokyo
    ("merge-test.mmdb", "203.0.113.1", AP_EU, "203.0.113.0/25"),  # Singapore
    ("merge-test.mmdb", "203.0.113.200", AP_US, "203.0.113.128/25"),  # Sydney
    ("merge-test.mmdb", "192.0.2.65", EU_ORDER, "192.0.2.64/26"),  # not buddies: no merge
    ("merge-test.mmdb", "192.0.2.129", EU_ORDER, "192.0.2.128/26"),
    ("merge-test.mmdb", "10.1.2.3", US_ORDER, "0.0.0.0/1"),  # private: the block, default
    ("merge-test.mmdb", "2001:db8:1::1", AP_EU, "2001:db8:1::/48"),
    ("merge-test.mmdb", "2001:db8:3::1", AP_EU, "2001:db8:2::/47"),
    ("merge-test.mmdb", "::ffff:192.0.2.1", None, "::/64"),  # IPv4 alias: ask the database
    # networks deeper than /64: one order for the whole /64 gives it that order; two are SLOW
    ("merge-test.mmdb", "2001:db8:10::1", AP_EU, "2001:db8:10::/64"),
    ("merge-test.mmdb", "2001:db8:10:0:ffff::1", AP_EU, "2001:db8:10::/64"),
    ("merge-test.mmdb", "2001:db8:20::1", None, "2001:db8:20::/64"),
    ("city-test.mmdb", "203.0.113.70", EU_ORDER, "203.0.113.64/26"),  # DE, no coordinates
    ("city-test.mmdb", "203.0.113.130", EU_ORDER, "203.0.113.128/27"),  # continent AF only
    ("city-test.mmdb", "198.51.100.200", US_ORDER, "196.0.0.0/6"),  # US + unlocated merged
    ("country-test.mmdb", "192.0.2.1", EU_ORDER, "192.0.2.0/24"),
    ("country-test.mmdb", "2001:db8::1", None, "::/0"),  # IPv4-only database
]


@pytest.mark.parametrize(("db", "address", "order", "network"), FULL_ORDER)
def test_full_order_map(db: str, address: str, order: tuple[str, ...] | None,
                        network: str) -> None:
    assert entry(compiled(db), address) == (order, network)


# merged by the first region only (every region up): Singapore and Sydney become one /24
FIRST_REGION = [
    ("203.0.113.1", "ap-southeast", "203.0.113.0/24"),
    ("203.0.113.200", "ap-southeast", "203.0.113.0/24"),
    ("198.51.100.1", "eu-west", "198.51.100.0/25"),
    ("198.51.100.129", "us-east", "198.51.100.128/26"),
    # a SLOW /64 whose deeper networks (Tokyo, Sydney) share the first region gets it
    ("2001:db8:20::1", "ap-southeast", "2001:db8:20::/64"),
    ("2001:db8:20:0:8000::1", "ap-southeast", "2001:db8:20::/64"),
]


@pytest.mark.parametrize(("address", "first", "network"), FIRST_REGION)
def test_merged_by_first_region(address: str, first: str, network: str) -> None:
    full = compiled("merge-test.mmdb")
    merged = full.merged(lambda v: full.orders[v][0])
    order, net = entry(merged, address)
    assert order is not None and (order[0], net) == (first, network)


@pytest.mark.parametrize("db", ["merge-test.mmdb", "city-test.mmdb", "country-test.mmdb"])
def test_every_entry_agrees_with_the_database(db: str) -> None:
    """No entry is too wide: its first, last and middle addresses, and every fixture network
    start inside it, rank exactly as the database ranks them."""
    rmap = compiled(db)
    with GeoReader(FIXTURES / db) as reader:
        for table, bits, cls in ((rmap.v4, 32, IPv4Address), (rmap.v6, 64, IPv6Address)):
            for start, plen, val in zip(table.starts, table.plens, table.vals, strict=True):
                if val == SLOW:
                    continue
                size = 1 << (bits - plen)
                shift = 0 if bits == 32 else 64
                for point in (start, start + size // 2, start + size - 1):
                    ip = cls(point << shift)
                    want = rank_regions(reader.locate(ip), DEMO, "us-east").order
                    assert rmap.orders[val] == want, (str(ip), plen)


def test_entries_partition_the_space() -> None:
    rmap = compiled("merge-test.mmdb")
    for table, bits in ((rmap.v4, 32), (rmap.v6, 64)):
        at = 0
        for start, plen in zip(table.starts, table.plens, strict=True):
            assert start == at and start % (1 << (bits - plen)) == 0
            at = start + (1 << (bits - plen))
        assert at == 1 << bits


def test_cache_round_trip_and_key(tmp_path: Path) -> None:
    db = FIXTURES / "merge-test.mmdb"
    rmap = compiled("merge-test.mmdb")
    assert loads(dumps(rmap)) == rmap
    assert rmap.deep == ((int(IPv6Address("2001:db8:20::")) >> 64, (rmap.orders.index(AP_EU),
                                                                     rmap.orders.index(AP_US))),)
    with pytest.raises(ValueError):
        loads(dumps(rmap)[:-1])
    moved = [DEMO[0], DEMO[1], region("ap-southeast", 1.3, 103.8, "AS OC")]
    assert cache_key(db, DEMO, "us-east") != cache_key(db, moved, "us-east")
    assert cache_key(db, DEMO, "us-east") != cache_key(db, DEMO, "eu-west")
    first = load_or_compile(db, DEMO, "us-east", tmp_path)
    [cached] = tmp_path.glob("regionmap-*.bin")
    assert first == rmap and load_or_compile(db, DEMO, "us-east", tmp_path) == rmap
    cached.write_bytes(b"garbage")
    assert load_or_compile(db, DEMO, "us-east", tmp_path) == rmap  # compiled again
    assert loads(cached.read_bytes()) == rmap
