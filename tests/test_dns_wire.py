"""``geodns.wire``: parse_query on valid and malformed packets, and the name helpers."""

from __future__ import annotations

import struct

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rdataclass
import dns.rdatatype
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geodns.wire import Drop, Ecs, Edns, FormErr, name_to_text, parse_query, text_to_name

WWW = b"\x03www\x07example\x04test\x00"
QUESTION = WWW + struct.pack("!HH", 1, 1)


def header(qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0, flags: int = 0x0100,
           qid: int = 0xBEEF) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


def opt(options: bytes = b"", udp: int = 1232, ttl: int = 0, owner: bytes = b"\x00") -> bytes:
    return owner + struct.pack("!HHIH", 41, udp, ttl, len(options)) + options


def option(code: int, data: bytes) -> bytes:
    return struct.pack("!HH", code, len(data)) + data


def ecs(family: int, source: int, address: bytes, scope: int = 0) -> bytes:
    return option(8, struct.pack("!HBB", family, source, scope) + address)


def with_opt(*records: bytes, an: int = 0) -> bytes:
    """A query for www.example.test A with the given records (the last ``len - an`` in the
    additional section)."""
    return header(an=an, ar=len(records) - an) + QUESTION + b"".join(records)


def dnspython(name: str = "www.example.test", rdtype: str = "A", **kw) -> bytes:
    return dns.message.make_query(name, rdtype, id=0xBEEF, **kw).to_wire()


# ------------------------------------------------------------------------------- valid queries

# (packet, qname, qtype, qclass, edns or None)
VALID = [
    pytest.param(dnspython(use_edns=False), WWW, 1, 1, None, id="no-edns"),
    pytest.param(dnspython(use_edns=0), WWW, 1, 1, Edns(1232, 0, False, None), id="edns"),
    pytest.param(dnspython(use_edns=0, payload=4096), WWW, 1, 1, Edns(4096, 0, False, None),
                 id="edns-4096"),
    pytest.param(dnspython(use_edns=0, payload=100), WWW, 1, 1, Edns(512, 0, False, None),
                 id="udp-size-100-is-512"),
    pytest.param(with_opt(opt(udp=0)), WWW, 1, 1, Edns(512, 0, False, None),
                 id="udp-size-0-is-512"),
    pytest.param(with_opt(opt(udp=511)), WWW, 1, 1, Edns(512, 0, False, None),
                 id="udp-size-511-is-512"),
    pytest.param(with_opt(opt(udp=513)), WWW, 1, 1, Edns(513, 0, False, None),
                 id="udp-size-513"),
    pytest.param(dnspython(use_edns=0, want_dnssec=True), WWW, 1, 1,
                 Edns(1232, 0, True, None), id="do-bit"),
    pytest.param(with_opt(opt(ttl=0x00017FFF)), WWW, 1, 1, Edns(1232, 1, False, None),
                 id="version-1-other-flags-not-do"),
    pytest.param(with_opt(opt(ttl=0xFF008000)), WWW, 1, 1, Edns(1232, 0, True, None),
                 id="extended-rcode-bits-ignored"),
    pytest.param(dnspython(use_edns=0, options=[dns.edns.ECSOption("81.2.69.0", 24)]),
                 WWW, 1, 1, Edns(1232, 0, False, Ecs(1, 24, bytes([81, 2, 69]))), id="ecs-v4"),
    pytest.param(dnspython(use_edns=0, options=[dns.edns.ECSOption("2a02:8010::", 48)]),
                 WWW, 1, 1,
                 Edns(1232, 0, False, Ecs(2, 48, bytes.fromhex("2a028010 0000"))), id="ecs-v6"),
    pytest.param(dnspython(use_edns=0, options=[dns.edns.ECSOption("81.2.64.0", 20)]),
                 WWW, 1, 1, Edns(1232, 0, False, Ecs(1, 20, bytes([81, 2, 64]))),
                 id="ecs-v4-20"),
    pytest.param(dnspython(use_edns=0, options=[dns.edns.ECSOption("2001:db8::", 56)]),
                 WWW, 1, 1, Edns(1232, 0, False, Ecs(2, 56, bytes.fromhex("20010db8000000"))),
                 id="ecs-v6-56"),
    pytest.param(with_opt(opt(ecs(1, 0, b""))), WWW, 1, 1, Edns(1232, 0, False, Ecs(1, 0, b"")),
                 id="ecs-source-0"),
    pytest.param(with_opt(opt(ecs(2, 128, bytes(range(16))))), WWW, 1, 1,
                 Edns(1232, 0, False, Ecs(2, 128, bytes(range(16)))), id="ecs-v6-128"),
    pytest.param(with_opt(opt(option(10, bytes(8)) + ecs(1, 8, b"\x51") + option(12, b""))),
                 WWW, 1, 1, Edns(1232, 0, False, Ecs(1, 8, b"\x51"),
                                 ((10, bytes(8)), (12, b""))),
                 id="ecs-among-other-options"),
    pytest.param(dnspython("WwW.ExAmPlE.TeSt", "AAAA"), WWW, 28, 1, None,
                 id="mixed-case"),
    pytest.param(dnspython(".", "NS"), b"\x00", 2, 1, None, id="root"),
    pytest.param(dnspython("example.test", "ANY", rdclass="CH"),
                 b"\x07example\x04test\x00", 255, 3, None, id="any-ch"),
    pytest.param(dnspython("example.test", "TYPE65535"),
                 b"\x07example\x04test\x00", 65535, 1, None, id="type-65535"),
    # an answer record in a query (with a compressed owner) is skipped, not trusted
    pytest.param(header(an=1, ar=1) + QUESTION + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4)
                 + bytes(4) + opt(), WWW, 1, 1, Edns(1232, 0, False, None),
                 id="answer-record-skipped"),
    pytest.param(header(ns=1) + QUESTION + b"\x03foo\xc0\x10" + struct.pack("!HHIH", 2, 1, 0, 2)
                 + b"\xc0\x0c", WWW, 1, 1, None, id="authority-record-skipped"),
]


@pytest.mark.parametrize(("packet", "qname", "qtype", "qclass", "edns"), VALID)
def test_parse_valid(packet, qname, qtype, qclass, edns):
    q = parse_query(packet)
    assert (q.id, q.qname, q.qtype, q.qclass) == (0xBEEF, qname, qtype, qclass)
    assert q.edns == edns
    assert q.question == packet[12 : 12 + len(qname) + 4]
    assert q.question.lower() == qname + struct.pack("!HH", qtype, qclass)


def test_mixed_case_question_bytes_kept():
    q = parse_query(dnspython("WwW.ExAmPlE.TeSt"))
    assert q.question[:17] == b"\x03WwW\x07ExAmPlE\x04TeSt"
    assert q.qname == WWW


@pytest.mark.parametrize(
    ("flags", "opcode"),
    [(0x0000, 0), (0x0100, 0), (0x2000, 4), (0x2800, 5), (0x7800, 15), (0x0010, 0)],
)
def test_flags_and_opcode(flags, opcode):
    q = parse_query(header(flags=flags) + QUESTION)
    assert q.flags == flags and q.opcode == opcode


def test_name_of_exactly_255_octets_is_valid():
    name = (b"\x3f" + b"a" * 63) * 3 + b"\x3d" + b"b" * 61 + b"\x00"
    assert len(name) == 255
    assert parse_query(header() + name + b"\x00\x01\x00\x01").qname == name


def test_question_pointing_into_the_header_is_formerr():
    # b"\x00" at offset 7 (the low byte of ANCOUNT=0) would read as the root: a pointer into
    # the header is never a valid name (and would make the answer depend on the ID bytes)
    packet = header() + b"\x03www\xc0\x07" + b"\x00\x01\x00\x01"
    with pytest.raises(FormErr, match="compression pointer into the header"):
        parse_query(packet)


def test_ecs_padded():
    assert Ecs(1, 24, bytes([81, 2, 69])).padded() == bytes([81, 2, 69, 0])
    assert Ecs(2, 48, bytes(6)).padded() == bytes(16)
    assert Ecs(1, 0, b"").padded() == bytes(4)


# ------------------------------------------------------------------------- malformed queries

LONG_NAME = (b"\x3f" + b"a" * 63) * 4 + b"\x00"  # 257 octets


# (packet, reason substring, question kept, edns kept)
OPT_ONLY = Edns(1232, 0, False, None)  # the OPT header parsed; its options did not

FORMERRS = [
    pytest.param(header(qd=0), "QDCOUNT is 0, expected 1", None, None, id="qdcount-0"),
    pytest.param(header(qd=2) + QUESTION * 2, "QDCOUNT is 2, expected 1", None, None,
                 id="qdcount-2"),
    pytest.param(header(), "name runs past the end", None, None, id="no-question"),
    pytest.param(header() + b"\x03www\x07exam", "label runs past the end", None, None,
                 id="label-past-end"),
    pytest.param(header() + b"\x03www", "name runs past the end", None, None,
                 id="no-root-label"),
    pytest.param(header() + WWW + b"\x00\x01\x00", "question runs past the end", None, None,
                 id="short-type-class"),
    pytest.param(header() + LONG_NAME + b"\x00\x01\x00\x01", "name longer than 255 octets",
                 None, None, id="name-257"),
    pytest.param(header() + b"\x40abc\x00\x00\x01\x00\x01", "unsupported label type", None,
                 None, id="label-type-0x40"),
    pytest.param(header() + b"\x80abc\x00\x00\x01\x00\x01", "unsupported label type", None,
                 None, id="label-type-0x80"),
    pytest.param(header() + b"\xc0\x0c\x00\x01\x00\x01", "pointer loop or forward pointer",
                 None, None, id="pointer-to-itself"),
    pytest.param(header() + b"\x03www\xc0\x20\x00\x01\x00\x01",
                 "pointer loop or forward pointer", None, None, id="forward-pointer"),
    pytest.param(header() + b"\x03www\xc0", "truncated compression pointer", None, None,
                 id="truncated-pointer"),
    pytest.param(header(ar=1) + QUESTION, "name runs past the end", QUESTION, None,
                 id="missing-record"),
    pytest.param(header(ar=1) + QUESTION + b"\x00\x00\x29", "record runs past the end",
                 QUESTION, None, id="short-record"),
    pytest.param(header(ar=1) + QUESTION + b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 4),
                 "record data runs past the end", QUESTION, None, id="rdata-past-end"),
    pytest.param(with_opt(opt(), an=1), "OPT record outside the additional section", QUESTION,
                 None, id="opt-in-answer"),
    pytest.param(header(ns=1) + QUESTION + opt(), "OPT record outside the additional section",
                 QUESTION, None, id="opt-in-authority"),
    pytest.param(with_opt(opt(), opt()), "more than one OPT record", QUESTION,
                 Edns(1232, 0, False, None), id="two-opts"),
    pytest.param(with_opt(opt(owner=b"\xc0\x0c")), "OPT record owner is not the root", QUESTION,
                 None, id="opt-owner-not-root"),
    pytest.param(with_opt(opt(b"\x00\x08\x00")), "truncated EDNS option", QUESTION, OPT_ONLY,
                 id="truncated-option"),
    pytest.param(with_opt(opt(b"\x00\x0a\x00\x09" + bytes(8))), "option runs past the OPT",
                 QUESTION, OPT_ONLY, id="option-past-opt"),
    pytest.param(with_opt(opt(ecs(1, 8, b"\x51") + ecs(1, 8, b"\x52"))),
                 "more than one ECS option", QUESTION, OPT_ONLY, id="two-ecs"),
    pytest.param(with_opt(opt(option(8, b"\x00\x01\x18"))), "ECS option shorter than 4 octets",
                 QUESTION, OPT_ONLY, id="ecs-short"),
    pytest.param(with_opt(opt(ecs(3, 24, bytes(3)))), "ECS family 3 is not IPv4 or IPv6",
                 QUESTION, OPT_ONLY, id="ecs-family-3"),
    pytest.param(with_opt(opt(ecs(0, 0, b""))), "ECS family 0 is not IPv4 or IPv6", QUESTION,
                 OPT_ONLY, id="ecs-family-0"),
    pytest.param(with_opt(opt(ecs(1, 33, bytes(5)))),
                 "ECS source prefix 33 is longer than the address", QUESTION, OPT_ONLY,
                 id="ecs-v4-33"),
    pytest.param(with_opt(opt(ecs(2, 129, bytes(17)))),
                 "ECS source prefix 129 is longer than the address", QUESTION, OPT_ONLY,
                 id="ecs-v6-129"),
    pytest.param(with_opt(opt(ecs(1, 24, bytes(4)))), "ECS address length does not match",
                 QUESTION, OPT_ONLY, id="ecs-address-too-long"),
    pytest.param(with_opt(opt(ecs(1, 24, bytes(2)))), "ECS address length does not match",
                 QUESTION, OPT_ONLY, id="ecs-address-too-short"),
    pytest.param(with_opt(opt(ecs(1, 0, b"\x00"))), "ECS address length does not match",
                 QUESTION, OPT_ONLY, id="ecs-source-0-with-address"),
    pytest.param(with_opt(opt(ecs(1, 20, b"\x51\x02\x4f"))), "bits set past its source prefix",
                 QUESTION, OPT_ONLY, id="ecs-bits-past-20"),
    pytest.param(with_opt(opt(ecs(2, 1, b"\xc0"))), "bits set past its source prefix",
                 QUESTION, OPT_ONLY, id="ecs-v6-bits-past-1"),
    pytest.param(header() + QUESTION + b"xyz", "3 bytes after the last record", QUESTION, None,
                 id="trailing-bytes"),
    pytest.param(with_opt(opt()) + b"\x00", "1 bytes after the last record", QUESTION,
                 Edns(1232, 0, False, None), id="trailing-after-opt"),
]


@pytest.mark.parametrize(("packet", "reason", "question", "edns"), FORMERRS)
def test_formerr(packet, reason, question, edns):
    with pytest.raises(FormErr) as info:
        parse_query(packet)
    err = info.value
    assert reason in err.reason and reason in str(err)
    assert (err.id, err.flags) == (0xBEEF, 0x0100)
    assert err.question == question
    assert err.edns == edns


def test_ecs_scope_in_a_query_is_formerr():  # RFC 7871 §7.1.2
    with pytest.raises(FormErr, match="ECS scope prefix 24 in a query") as info:
        parse_query(with_opt(opt(ecs(1, 32, bytes([8, 8, 8, 8]), scope=24))))
    assert info.value.edns is not None


def test_formerr_for_bad_ecs_keeps_the_opt():
    with pytest.raises(FormErr) as info:
        parse_query(with_opt(opt(ecs(3, 24, bytes(3)), udp=4096, ttl=0x8000)))
    assert info.value.edns is not None
    assert (info.value.edns.udp_size, info.value.edns.do) == (4096, True)


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        pytest.param(b"", "shorter than a DNS header", id="empty"),
        pytest.param(header()[:11], "shorter than a DNS header", id="11-bytes"),
        pytest.param(header(flags=0x8100) + QUESTION, "QR=1", id="response"),
        pytest.param(header(qd=0, flags=0x8000), "QR=1", id="response-no-question"),
        pytest.param(dns.message.make_response(
            dns.message.make_query("www.example.test", "A")).to_wire(), "QR=1",
                     id="dnspython-response"),
    ],
)
def test_drop(packet, reason):
    with pytest.raises(Drop, match=reason):
        parse_query(packet)


# ----------------------------------------------------------------------------- name helpers

@pytest.mark.parametrize(
    ("text", "wire", "back"),
    [
        ("www.example.test.", WWW, "www.example.test."),
        ("www.example.test", WWW, "www.example.test."),
        ("WWW.Example.TEST.", WWW, "www.example.test."),
        (".", b"\x00", "."),
        ("", b"\x00", "."),
        ("test", b"\x04test\x00", "test."),
        ("_sip._tcp.example.test.", b"\x04_sip\x04_tcp\x07example\x04test\x00",
         "_sip._tcp.example.test."),
        ("a-b.x1.", b"\x03a-b\x02x1\x00", "a-b.x1."),
        ("a" * 63 + ".", b"\x3f" + b"a" * 63 + b"\x00", "a" * 63 + "."),
    ],
)
def test_text_to_name_and_back(text, wire, back):
    assert text_to_name(text) == wire
    assert name_to_text(wire) == back
    assert text_to_name(name_to_text(wire)) == wire


def test_name_to_text_keeps_case_of_wire():
    assert name_to_text(b"\x03WwW\x00") == "WwW."


LDH = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_",
              min_size=1, max_size=63)


@given(st.lists(LDH, min_size=0, max_size=6))
def test_text_name_round_trip_property(labels):
    text = ".".join(labels) + "."
    wire = text_to_name(text)
    assert wire == dns.name.from_text(text).to_wire().lower() if labels else wire == b"\x00"
    assert name_to_text(wire) == text.lower() if labels else name_to_text(wire) == "."
    assert text_to_name(name_to_text(wire)) == wire


# ------------------------------------------------------------------ property: dnspython queries

LABELS = st.lists(st.binary(min_size=1, max_size=63), min_size=0, max_size=8).filter(
    lambda labels: sum(len(label) + 1 for label in labels) + 1 <= 255)
META_OK = st.integers(0, 65535)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(labels=LABELS, rdtype=META_OK, rdclass=META_OK, qid=st.integers(0, 65535),
       use_edns=st.sampled_from([False, 0]), want_dnssec=st.booleans(),
       payload=st.integers(0, 65535), ecs_prefix=st.none() | st.integers(0, 32),
       flip_case=st.booleans())
def test_parse_dnspython_queries(labels, rdtype, rdclass, qid, use_edns, want_dnssec, payload,
                                 ecs_prefix, flip_case):
    name = dns.name.Name([*labels, b""])
    if flip_case:
        name = dns.name.Name([label.swapcase() for label in name.labels])
    options = []
    if ecs_prefix is not None and use_edns is not False:
        options.append(dns.edns.ECSOption("81.2.69.160", ecs_prefix))
    msg = dns.message.make_query(name, rdtype, rdclass, use_edns=use_edns, payload=payload,
                                 want_dnssec=want_dnssec and use_edns is not False,
                                 options=options, id=qid)
    wire = msg.to_wire()
    q = parse_query(wire)
    name_wire = name.to_wire()
    assert q.qname == b"".join(bytes([len(lab)]) + lab.lower() for lab in labels) + b"\x00"
    assert q.qname == name.canonicalize().to_wire()
    assert (q.id, q.qtype, q.qclass) == (qid, rdtype, rdclass)
    assert q.question == wire[12 : 12 + len(name_wire) + 4]
    assert q.question[: len(name_wire)] == name_wire  # the client's own case
    if use_edns is False:
        assert q.edns is None
    else:
        assert q.edns is not None
        assert q.edns.udp_size == max(payload, 512)
        assert q.edns.do is (want_dnssec and use_edns is not False)
        if ecs_prefix is None:
            assert q.edns.ecs is None
        else:
            assert q.edns.ecs is not None
            assert (q.edns.ecs.family, q.edns.ecs.source) == (1, ecs_prefix)
            expected = dns.edns.ECSOption("81.2.69.160", ecs_prefix).to_wire()[4:]
            assert q.edns.ecs.address == expected
