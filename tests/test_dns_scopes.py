"""Scopes hold in every health state: every address inside a claimed scope gets the answer the
scope was claimed for (sampled at each entry's first, middle and last address)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest
from dnsutil import DEMO

from geoconfig.topology import load_topology
from geodata import GeoReader, rank_regions
from geodata.regionmap import SLOW
from geodns.engine import Engine

FIXTURES = Path(__file__).parent / "fixtures"
DOWN = {"eu-west-1": False, "eu-west-2": False}


@pytest.fixture(scope="module", params=["merge-test.mmdb", "city-test.mmdb"])
def engine(request) -> Engine:
    return Engine(load_topology(DEMO), GeoReader(FIXTURES / request.param))


@pytest.mark.parametrize("health", [{}, DOWN, {**DOWN, "us-east-1": False, "us-east-2": False}],
                         ids=["all-up", "eu-west-down", "only-ap-up"])
def test_every_scope_holds_for_its_answer(engine: Engine, health: dict[str, bool]) -> None:
    engine.set_health(health)
    assert engine.maps.ready.wait(30)
    active, geo = engine.maps.active, next(iter(engine.zones.geo_names().values()))
    for table, bits, cls in ((active.v4, 32, IPv4Address), (active.v6, 64, IPv6Address)):
        for start, plen, val in zip(table.starts, table.plens, table.vals, strict=True):
            if val == SLOW:
                continue
            claimed = engine.addresses(geo, active.orders[val])
            size = 1 << (bits - plen)
            for point in (start, start + size // 2, start + size - 1):
                ip = cls(point << (bits - 32 if bits == 32 else 64))
                order = rank_regions(engine.reader.locate(ip), engine.regions,
                                     engine.topology.default_region).order
                assert engine.addresses(geo, order) == claimed, (str(ip), plen, health)


def test_failover_narrows_then_merges_again(engine: Engine) -> None:
    engine.set_health({})
    assert engine.maps.ready.wait(30)
    all_up = len(engine.maps.active)
    engine.set_health({**DOWN, "us-east-1": False, "us-east-2": False})
    assert engine.maps.ready.wait(30)
    assert len(engine.maps.active) < all_up  # one region answers everything: merged wider
    engine.set_health({})
    assert engine.maps.ready.wait(30) and len(engine.maps.active) == all_up
