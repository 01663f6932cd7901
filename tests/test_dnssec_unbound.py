"""Debian's ``unbound`` as a validating resolver in front of geoedge (signed demo zone, the
zone's DNSKEY as unbound's trust anchor, ECS sent on): geo answers for three continents, a
static name, a CNAME to the geo name and the denials come back secure (AD); an answer whose
signature geoedge's transport alters on the way out is bogus (SERVFAIL, EDE "DNSSEC Bogus")."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rdataclass
import dns.rdatatype
import pytest
from demoutil import free_port
from dnssecutil import signed_topology
from dnsutil import ServerThread, dig
from unboundutil import CONF, running_unbound, unbound_binary

from geodns.dnssec import keys
from geodns.main import load_engine

EU, US, AP = ["127.0.2.1", "127.0.2.2"], ["127.0.1.1", "127.0.1.2"], ["127.0.3.1", "127.0.3.2"]
ALTERED = b"\x04mail\x07example\x04test\x00"  # its A RRSIG is altered on the way out


def _alter(response: bytes) -> bytes:
    msg = dns.message.from_wire(response)
    for rrset in msg.answer:
        if rrset.rdtype == dns.rdatatype.RRSIG:
            sig = rrset[0]
            flipped = bytes([sig.signature[0] ^ 0x01]) + sig.signature[1:]
            rrset.clear()
            rrset.add(sig.replace(signature=flipped))
    return msg.to_wire()


@pytest.fixture(scope="module")
def geoedge(tmp_path_factory) -> Iterator[tuple[int, str]]:
    work = tmp_path_factory.mktemp("signed")
    engine = load_engine(signed_topology(work, "python"))
    respond = engine.respond

    def altering(data: bytes, client: str, tcp: bool = False, idle: float = 0.0) -> bytes | None:
        out = respond(data, client, tcp, idle)
        if out is not None and ALTERED in data.lower():
            return _alter(out)
        return out

    engine.respond = altering  # type: ignore[method-assign]
    srv = ServerThread(engine, udp_loop="python", check_loop=False).start()
    key = keys.load_keys("example.test", work / "keys", "keys")[0]
    yield srv.port, keys.dnskey_text(key)
    srv.stop()


@pytest.fixture(scope="module")
def unbound(geoedge, tmp_path_factory) -> Iterator[int]:
    binary = unbound_binary()
    work = tmp_path_factory.mktemp("unbound")
    conf = Path(work) / "unbound.conf"
    text = CONF.format(port=free_port(), dir=work, geoedge=geoedge[0])
    text = text.replace('module-config: "subnetcache iterator"',
                        'module-config: "subnetcache validator iterator"')
    text = text.replace('    domain-insecure: "example.test"\n',
                        f'    trust-anchor: "{geoedge[1]}"\n    val-log-level: 2\n'
                        '    ede: yes\n')
    conf.write_text(text)
    with running_unbound(binary, conf) as port:
        yield port


def flags(out: str) -> set[str]:
    m = re.search(r";; flags: ([a-z ]+);", out)
    assert m, out
    return set(m.group(1).split())


def status(out: str) -> str:
    m = re.search(r"status: (\w+)", out)
    assert m, out
    return m.group(1)


@pytest.mark.parametrize(("subnet", "expected"), [
    ("81.2.69.0/24", EU), ("8.8.8.0/24", US), ("1.0.16.0/24", AP)])
def test_geo_answers_are_secure(unbound, subnet, expected):
    for name in ("www.example.test", "cdn.example.test"):
        out = dig(unbound, name, "A", f"+subnet={subnet}", "+dnssec")
        assert status(out) == "NOERROR" and "ad" in flags(out), out
        got = sorted(re.findall(r"^www\.example\.test\.\s+\d+\s+IN\s+A\s+(\S+)$", out, re.M))
        assert got == expected, out


@pytest.mark.parametrize(("name", "rdtype", "rcode"), [
    ("example.test", "MX", "NOERROR"),
    ("ns1.example.test", "AAAA", "NOERROR"),
    ("nope.example.test", "A", "NOERROR"),  # compact denial: NXDOMAIN proven as NODATA
    ("www.example.test", "TXT", "NOERROR"),
])
def test_static_and_denials_are_secure(unbound, name, rdtype, rcode):
    out = dig(unbound, name, rdtype, "+dnssec")
    assert status(out) == rcode and "ad" in flags(out), out


def test_an_altered_signature_is_bogus(unbound):
    out = dig(unbound, "mail.example.test", "A", "+dnssec")
    assert status(out) == "SERVFAIL" and "ANSWER: 0," in out, out
    assert "EDE: 6 (DNSSEC Bogus)" in out and "signature crypto failed" in out, out
    # the same zone's other answers stay secure
    again = dig(unbound, "example.test", "A", "+dnssec")
    assert status(again) == "NOERROR" and "ad" in flags(again), again

