"""Table-driven tests of the pure signing decisions (geodns/dnssec/policy.py) and of the
answers the signer builds for a fixed ``now`` (geodns/dnssec/signer.py): validity windows,
generation changes, compact-denial NSECs, the NXDOMAIN -> NOERROR rule, DO decides."""

from __future__ import annotations

import dns.dnssec
import dns.message
import dns.name
import dns.rdata
import dns.rdatatype
import pytest
from dnssecutil import signed_topology

from geoconfig.zoneconfig import DnssecConfig
from geodns.answer import build_answer
from geodns.dnssec import policy
from geodns.main import load_engine
from geodns.wire import text_to_name

CFG = DnssecConfig("keys", signature_lifetime=1000, inception_skew=100, refresh=300)
NOW = 1_800_000_000


@pytest.mark.parametrize(("start", "window"), [
    (0, (-100, 1000)), (NOW, (NOW - 100, NOW + 1000))])
def test_validity(start, window):
    assert policy.validity(start, CFG) == window


@pytest.mark.parametrize(("start", "now", "due"), [
    (None, NOW, True),  # nothing signed yet
    (NOW, NOW, False),
    (NOW, NOW + 699, False),  # 301 s left
    (NOW, NOW + 700, True),  # refresh (300 s) left: re-sign
    (NOW, NOW + 5000, True),  # expired
    (NOW, NOW - 100, False),  # clock a little behind: still after inception
    (NOW, NOW - 101, True),  # clock went back past inception
])
def test_generation_due(start, now, due):
    assert policy.generation_due(start, now, CFG) is due


@pytest.mark.parametrize(("nxdomain", "present", "qtype", "bitmap"), [
    (True, {1, 28}, 1, (46, 47, 128)),  # NXDOMAIN: RRSIG NSEC NXNAME, whatever else
    (False, {1, 28}, 16, (1, 28, 46, 47)),  # NODATA for TXT at a geo name
    (False, {1, 28}, 28, (1, 46, 47)),  # AAAA asked, none given: never in the bitmap
    (False, set(), 1, (46, 47)),  # an empty non-terminal
    (False, {2, 6, 48, 15}, 33, (2, 6, 15, 46, 47, 48)),  # the apex
])
def test_denial_types(nxdomain, present, qtype, bitmap):
    assert policy.denial_types(nxdomain, present, qtype) == bitmap


@pytest.mark.parametrize(("static", "geo", "types"), [
    ({16}, False, {16}), ({16}, True, {1, 16, 28}), ((), True, {1, 28})])
def test_name_types(static, geo, types):
    assert policy.name_types(static, geo) == types


def test_successor_is_the_next_name_in_canonical_order():
    name = text_to_name("nope.example.test.")
    nxt = policy.successor(name)
    assert dns.name.from_wire(nxt, 0)[0] == dns.name.from_text("\\000.nope.example.test.")
    assert dns.name.from_text("nope.example.test.") < dns.name.from_text(
        "\\000.nope.example.test.") < dns.name.from_text("a.nope.example.test.")


@pytest.mark.parametrize(("do", "signed", "result"), [
    (True, True, True), (False, True, False), (True, False, False), (False, False, False)])
def test_signs(do, signed, result):
    assert policy.signs(do, signed) is result


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = load_engine(signed_topology(tmp_path_factory.mktemp("signed")))
    engine.dnssec.new_generation(NOW, engine.zones)
    return engine


@pytest.mark.parametrize(("name", "rdtype", "rcode", "nsec_types"), [
    ("nope.example.test.", "A", 0, "RRSIG NSEC NXNAME"),  # NXDOMAIN answered NOERROR
    ("www.example.test.", "TXT", 0, "A AAAA RRSIG NSEC"),
    ("example.test.", "SRV", 0, "A NS SOA MX TXT AAAA RRSIG NSEC DNSKEY CAA"),
    ("cdn.example.test.", "MX", 0, "A AAAA RRSIG NSEC"),  # after the CNAME, at www
    ("www.example.test.", "A", 0, None),  # positive: no NSEC
])
def test_denial_records_for_a_fixed_now(engine, name, rdtype, rcode, nsec_types):
    qname = text_to_name(name)
    qtype = dns.rdatatype.from_text(rdtype)
    answer = build_answer(engine.zones, qname, qtype, 1, lambda geo: (("192.0.2.1",), ()), False)
    out = engine.dnssec.sign_answer(answer, qname, qtype, engine.zones)
    assert out.rcode == rcode
    nsecs = [rr for rr in out.authority if rr.rtype == 47]
    sigs = [rr for rr in out.answer + out.authority if rr.rtype == 46]
    assert sigs
    for sig in sigs:
        wire = bytes(sig.rdata.data)
        rd = dns.rdata.from_wire(1, 46, wire, 0, len(wire))
        assert (rd.inception, rd.expiration) == (NOW - 3600, NOW + 604800)  # the defaults
    if nsec_types is None:
        assert not nsecs
        return
    assert len(nsecs) == 1
    wire = bytes(nsecs[0].rdata.data)
    nsec = dns.rdata.from_wire(1, 47, wire, 0, len(wire))
    owner = str(nsecs[0].rname).lower()
    assert str(nsec.next) == "\\000." + owner
    assert nsec.to_text().split(" ", 1)[1] == nsec_types
    assert nsecs[0].ttl == 60  # the negative TTL


def test_do_decides_and_signatures_verify(engine):
    keyset = None
    for do in (False, True):
        q = dns.message.make_query("nope.example.test", "A", want_dnssec=do, use_edns=0)
        r = dns.message.from_wire(engine.respond(q.to_wire(), "127.0.0.1"))
        if not do:
            assert r.rcode() == 3 and not any(s.rdtype == 46 for s in r.authority)
            continue
        assert r.rcode() == 0
        k = dns.message.make_query("example.test", "DNSKEY", want_dnssec=True, use_edns=0)
        keyset = dns.message.from_wire(engine.respond(k.to_wire(), "127.0.0.1")).answer[0]
        keys = {dns.name.from_text("example.test."): keyset}
        sigs = {(s.name, s.covers): s for s in r.authority if s.rdtype == 46}
        for rrset in r.authority:
            if rrset.rdtype != 46:
                dns.dnssec.validate(rrset, sigs[(rrset.name, rrset.rdtype)], keys,
                                    now=NOW + 10)
    assert keyset is not None


@pytest.mark.parametrize("types", [
    (46, 47, 128), (1, 28, 46, 47), (2, 6, 15, 16, 28, 46, 47, 48, 257), (1,), (65535, 1)])
def test_nsec_rdata_is_dnspythons(types):
    import dns.rdtypes.ANY.NSEC as nsec

    nxt = b"\x01\x00" + text_to_name("x.example.test.")
    ours = policy.nsec_rdata(nxt, types)
    theirs = nsec.NSEC(1, 47, dns.name.from_wire(nxt, 0)[0], nsec.Bitmap.from_rdtypes(
        [dns.rdatatype.RdataType.make(t) for t in types])).to_wire()
    assert ours == theirs


@pytest.mark.parametrize(("owner", "rtype", "ttl", "rdatas"), [
    ("www.example.test.", 1, 30, [b"\x7f\x00\x02\x02", b"\x7f\x00\x02\x01"]),  # unsorted
    ("example.test.", 15, 3600, [b"\x00\x0a" + text_to_name("mail.example.test.")]),
    ("a.b.example.test.", 16, 60, [b"\x03abc", b"\x03abc", b"\x01z"]),  # a duplicate
    ("nope.example.test.", 47, 60, [policy.nsec_rdata(b"\x01\x00" + text_to_name(
        "nope.example.test."), (46, 47, 128))]),
])
def test_signatures_are_dns_dnssec_signs(engine, owner, rtype, ttl, rdatas):
    """The signer builds the RRSIG input itself; dns.dnssec.sign gives the same bytes (ECDSA
    is deterministic, RFC 6979); delv and unbound verify them in the other tests."""
    signer = next(iter(engine.dnssec.signers.values()))
    window = (NOW - 10, NOW + 1000)
    ours = [bytes(rr.rdata.data) for rr in signer.sign(text_to_name(owner), rtype, ttl,
                                                       rdatas, window)]
    assert ours == signer.sign_reference(text_to_name(owner), rtype, ttl, rdatas, window)
