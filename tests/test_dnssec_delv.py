"""Signed answers validated by a real validator: BIND's ``delv`` with the zone's DNSKEY as
its only trust anchor, against geoedge serving the demo topology with example.test signed,
over both UDP loops (the C one answers repeated and cold queries from its caches and
templates). Geo answers for three continents go through an ECS-adding relay (``delv`` cannot
send ECS)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from dnssecutil import EcsRelay, addresses, anchor_file, delv, signed_topology
from dnsutil import UDP_LOOPS, ServerThread

from geodns.main import load_engine

EU, US, AP = ["127.0.2.1", "127.0.2.2"], ["127.0.1.1", "127.0.1.2"], ["127.0.3.1", "127.0.3.2"]


@pytest.fixture(scope="module", params=UDP_LOOPS)
def signed(request, tmp_path_factory) -> Iterator[tuple[int, object]]:
    work = tmp_path_factory.mktemp("signed")
    topology = signed_topology(work, request.param)
    srv = ServerThread(load_engine(topology), udp_loop=request.param).start()
    yield srv.port, anchor_file(work)
    srv.stop()


@pytest.mark.parametrize(("subnet", "expected"), [
    ("81.2.69.0/24", EU), ("8.8.8.0/24", US), ("1.0.16.0/24", AP)])
def test_geo_answers_from_three_continents_validate(signed, subnet, expected):
    port, anchor = signed
    relay = EcsRelay(port, subnet).start()
    try:
        for _ in range(2):  # the second time from the caches (C: its wire cache)
            out = delv(relay.port, anchor, "www.example.test")
            assert "; fully validated" in out, out
            assert addresses(out) == expected, out
    finally:
        relay.stop()


@pytest.mark.parametrize(("name", "rdtype", "expect"), [
    ("mail.example.test", "A", "mail.example.test.\t3600\tIN\tA\t127.0.0.1"),
    ("example.test", "MX", "example.test.\t3600\tIN\tMX\t10 mail.example.test."),
    ("cdn.example.test", "A", "cdn.example.test.\t3600\tIN\tCNAME\twww.example.test."),
    ("static.example.test", "A", "example.test.\t3600\tIN\tA\t127.0.0.1"),
])
def test_static_and_cname_answers_validate(signed, name, rdtype, expect):
    port, anchor = signed
    out = delv(port, anchor, name, rdtype)
    assert "; fully validated" in out, out
    assert expect in re.sub(r"\t+", "\t", out), out


@pytest.mark.parametrize(("name", "rdtype"), [
    ("nope.example.test", "A"),  # NXDOMAIN: compact denial (NOERROR, NSEC with NXNAME)
    ("a.b.nope.example.test", "AAAA"),
    ("www.example.test", "TXT"),  # NODATA at a geo name
    ("example.test", "SRV"),  # NODATA at the apex
    ("cdn.example.test", "MX"),  # a CNAME to a NODATA
])
def test_denial_validates(signed, name, rdtype):
    port, anchor = signed
    out = delv(port, anchor, name, rdtype, "+vtrace")
    assert "fully validated" in out, out
    assert ";-$NXRRSET" in out, out  # compact denial: every negative answer is a NODATA
    assert "NSEC: marking as secure" in out, out
    assert "bogus" not in out and "insecure" not in out, out


def test_cname_to_geo_name_validates_per_continent(signed):
    port, anchor = signed
    relay = EcsRelay(port, "1.0.16.0/24").start()
    try:
        out = delv(relay.port, anchor, "cdn.example.test")
    finally:
        relay.stop()
    assert "; fully validated" in out, out
    assert addresses(out) == AP, out


def test_a_wrong_trust_anchor_fails(signed, tmp_path):
    port, _ = signed
    other = tmp_path / "other"
    other.mkdir()
    signed_topology(other)  # a different key
    out = delv(port, anchor_file(other), "www.example.test")
    assert "fully validated" not in out, out
    assert "resolution failed" in out, out
