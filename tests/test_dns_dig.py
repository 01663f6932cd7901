"""The server as an operator sees it: the real ``dig`` against ``geoedge dns``."""

from __future__ import annotations

import re
import shutil

import pytest
from dnsutil import DEMO, UDP_LOOPS, DnsProcess, dig, with_udp_loop

pytestmark = pytest.mark.skipif(shutil.which("dig") is None,
                                reason="dig not installed (apt-get install bind9-dnsutils)")


@pytest.fixture(scope="module", params=UDP_LOOPS)
def dns(request, tmp_path_factory):
    config = tmp_path_factory.mktemp("dig") / "demo.toml"  # the demo uses the embedded database
    config.write_text(with_udp_loop(DEMO.read_text(), request.param))
    proc = DnsProcess(config)
    yield proc
    proc.stop()


def flags(out: str) -> set[str]:
    match = re.search(r";; flags: ([a-z ]+);", out)
    assert match, out
    return set(match.group(1).split())


@pytest.mark.parametrize("tcp", ["+notcp", "+tcp"])
@pytest.mark.parametrize(
    ("subnet", "expected", "scope"),
    [
        ("81.2.69.0/24", ["127.0.2.1", "127.0.2.2"], 18),
        ("8.8.8.0/24", ["127.0.1.1", "127.0.1.2"], 14),
        ("1.0.16.0/24", ["127.0.3.1", "127.0.3.2"], 15),
    ],
)
def test_dig_subnet(dns, subnet, expected, scope, tcp):
    out = dig(dns.port, "www.example.test", "A", f"+subnet={subnet}", "+norec", tcp)
    assert "status: NOERROR" in out
    assert flags(out) == {"qr", "aa"}  # authoritative, no recursion available
    assert f"CLIENT-SUBNET: {subnet}/{scope}" in out
    got = sorted(re.findall(r"^www\.example\.test\.\s+30\s+IN\s+A\s+(\S+)$", out, re.M))
    assert got == expected


def test_dig_nxdomain_soa(dns):
    out = dig(dns.port, "missing.example.test", "A", "+norec")
    assert "status: NXDOMAIN" in out
    assert re.search(r"^example\.test\.\s+60\s+IN\s+SOA\s+ns1\.example\.test\. "
                     r"hostmaster\.example\.test\. 2026112701", out, re.M), out


def test_dig_static_records(dns):
    out = dig(dns.port, "example.test", "CAA", "+subnet=81.2.69.0/24")
    assert '0 issue "letsencrypt.org"' in out
    assert "CLIENT-SUBNET: 81.2.69.0/24/0" in out
    assert flags(out) == {"qr", "aa", "rd"}  # RD copied from the query


def test_dig_refused_outside_zone(dns):
    out = dig(dns.port, "example.com", "A")
    assert "status: REFUSED" in out


def test_dig_any_over_udp_is_rfc8482(dns):
    out = dig(dns.port, "example.test", "ANY", "+notcp")
    assert 'HINFO\t"RFC8482" ""' in out


def test_dig_ipv6_subnet_and_aaaa(dns):
    out = dig(dns.port, "www.example.test", "AAAA", "+subnet=2a02:8010::/48")
    assert "CLIENT-SUBNET: 2a02:8010::/48/29" in out
    assert sorted(re.findall(r"IN\s+AAAA\s+(\S+)$", out, re.M)) == ["fd00:0:0:2::1",
                                                                    "fd00:0:0:2::2"]
