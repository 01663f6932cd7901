"""The authoritative server over real sockets, queried with dnspython (UDP, TCP, IPv4, IPv6)."""

from __future__ import annotations

import ipaddress
import socket
import struct

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import maxminddb
import pytest
from dnsutil import DEMO, UDP_LOOPS, ServerThread, addresses, demo_engine, ecs_scope, query

from geodata import embedded_database_path

EU = {"127.0.2.1", "127.0.2.2"}
US = {"127.0.1.1", "127.0.1.2"}
AP = {"127.0.3.1", "127.0.3.2"}
EU6 = {"fd00:0:0:2::1", "fd00:0:0:2::2"}
AP6 = {"fd00:0:0:3::1", "fd00:0:0:3::2"}


@pytest.fixture(scope="module", params=UDP_LOOPS)
def server(request):
    srv = ServerThread(demo_engine(), listen=[("127.0.0.1", 0), ("::1", 0)],
                       idle_timeout=1.0, udp_loop=request.param).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def mmdb():
    with maxminddb.open_database(str(embedded_database_path())) as reader:
        yield reader


def db_prefix(mmdb, address: str) -> int:
    return mmdb.get_with_prefix_len(address)[1]


@pytest.mark.parametrize("tcp", [False, True])
@pytest.mark.parametrize(
    ("subnet", "rdtype", "expected"),
    [
        ("81.2.69.0/24", "A", EU),  # GB
        ("2a02:8010::/48", "A", EU),  # GB over IPv6 ECS
        ("81.2.69.0/24", "AAAA", EU6),
        ("8.8.8.0/24", "A", US),  # US
        ("200.160.0.0/24", "A", US),  # BR: nearer to us-east than eu-west
        ("1.0.16.0/24", "A", AP),  # JP
        ("1.128.0.0/24", "AAAA", AP6),  # AU
        ("52.76.0.0/24", "A", AP),  # SG
    ],
)
def test_geo_answer_follows_ecs(server, mmdb, subnet, rdtype, expected, tcp):
    msg = query(server.port, "www.example.test", rdtype, subnet=subnet, tcp=tcp)
    assert msg.rcode() == dns.rcode.NOERROR
    assert msg.flags & dns.flags.AA and not msg.flags & dns.flags.RA
    assert addresses(msg) == expected
    assert msg.answer[0].ttl == 30
    # the region map's entry: the database network, or wider (merged by the answer)
    address = ipaddress.ip_address(subnet.split("/")[0])
    family = 1 if address.version == 4 else 2
    assert ecs_scope(msg) == server.engine.maps.active.lookup(family, address.packed)[1]
    assert ecs_scope(msg) <= db_prefix(mmdb, str(address))


def test_scope_is_merged_network_not_source(server, mmdb):
    # 81.2.69.0 sits in a /22 in the database, merged with its neighbours into a /18 (every
    # address of it gets eu-west first): a /24 query is answered for the whole /18.
    msg = query(server.port, "www.example.test", subnet="81.2.69.0/24")
    assert ecs_scope(msg) == 18 and db_prefix(mmdb, "81.2.69.0") == 22


def test_echoes_ecs_family_source_and_address(server):
    msg = query(server.port, "www.example.test", subnet="81.2.69.0/24")
    (opt,) = [o for o in msg.options if isinstance(o, dns.edns.ECSOption)]
    assert (opt.family, opt.srclen, opt.address) == (1, 24, "81.2.69.0")


def test_static_name_has_scope_zero(server):
    msg = query(server.port, "example.test", "MX", subnet="81.2.69.0/24")
    assert ecs_scope(msg) == 0
    assert [str(r) for r in msg.answer[0]] == ["10 mail.example.test."]
    # glue for the in-zone mail exchanger
    assert {rr.name.to_text() for rr in msg.additional} == {"mail.example.test."}


@pytest.mark.parametrize(("subnet", "scope"), [("10.1.0.0/16", 8), ("192.168.1.0/24", 16),
                                               ("0.0.0.0/0", 0), ("fd00::/56", 1)])
def test_private_ecs_gets_its_block_default_region(server, subnet, scope):
    # not in the database: the default region, for the block around it (as gdnsd); /0: the
    # resolver (127.0.0.1, also not in the database) with scope 0
    msg = query(server.port, "www.example.test", subnet=subnet)
    assert addresses(msg) == US
    assert ecs_scope(msg) == scope


def test_no_edns_means_no_opt_and_default_region(server):
    msg = query(server.port, "www.example.test", use_edns=False)
    assert msg.edns == -1 and msg.opt is None
    assert addresses(msg) == US


def test_no_ecs_no_ecs_in_answer(server):
    msg = query(server.port, "www.example.test")
    assert msg.edns == 0 and ecs_scope(msg) is None


def test_cname_to_geo_name_is_location_dependent(server):
    msg = query(server.port, "cdn.example.test", subnet="81.2.69.0/24")
    assert [rrset.rdtype for rrset in msg.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
    assert addresses(msg) == EU
    assert ecs_scope(msg) == 18


def test_static_cname_chain_to_apex(server):
    msg = query(server.port, "static.example.test", "A")
    assert [str(rr.name) for rr in msg.answer] == ["static.example.test.", "example.test."]
    assert addresses(msg) == {"127.0.0.1"}


def test_nxdomain_has_soa_with_negative_ttl(server):
    msg = query(server.port, "nope.example.test", "A")
    assert msg.rcode() == dns.rcode.NXDOMAIN
    assert msg.flags & dns.flags.AA
    (soa,) = msg.authority
    assert soa.rdtype == dns.rdatatype.SOA and soa.ttl == 60
    assert str(soa.name) == "example.test."


def test_nodata_has_soa(server):
    msg = query(server.port, "mail.example.test", "AAAA")
    assert msg.rcode() == dns.rcode.NOERROR and not msg.answer
    assert msg.authority[0].rdtype == dns.rdatatype.SOA


def test_geo_name_nodata_for_other_types(server):
    msg = query(server.port, "www.example.test", "MX", subnet="81.2.69.0/24")
    assert msg.rcode() == dns.rcode.NOERROR and not msg.answer
    assert ecs_scope(msg) == 0


@pytest.mark.parametrize("name", ["example.com", "test", "."])
def test_refused_outside_zones(server, name):
    msg = query(server.port, name, "A")
    assert msg.rcode() == dns.rcode.REFUSED
    assert not msg.flags & dns.flags.AA


def test_case_is_echoed(server):
    msg = query(server.port, "WwW.ExAmPlE.tEsT", "A", subnet="81.2.69.0/24")
    assert msg.question[0].name.to_text() == "WwW.ExAmPlE.tEsT."
    assert addresses(msg) == EU


def test_rd_is_copied_and_ra_never_set(server):
    q = dns.message.make_query("example.test", "SOA", use_edns=0)
    assert q.flags & dns.flags.RD
    msg = dns.query.udp(q, "127.0.0.1", port=server.port, timeout=3)
    assert msg.flags & dns.flags.RD and not msg.flags & dns.flags.RA
    assert msg.flags & dns.flags.AA


def test_badvers(server):
    q = dns.message.make_query("example.test", "SOA", use_edns=1)
    msg = dns.query.udp(q, "127.0.0.1", port=server.port, timeout=3)
    assert msg.rcode() == dns.rcode.BADVERS
    assert msg.edns == 0 and not msg.answer


def test_any_over_udp_is_rfc8482_and_full_over_tcp(server):
    udp = query(server.port, "example.test", "ANY")
    assert [rrset.rdtype for rrset in udp.answer] == [dns.rdatatype.HINFO]
    assert "RFC8482" in udp.answer[0].to_text()
    tcp = query(server.port, "example.test", "ANY", tcp=True)
    types = {rrset.rdtype for rrset in tcp.answer}
    assert {dns.rdatatype.SOA, dns.rdatatype.NS, dns.rdatatype.MX, dns.rdatatype.CAA} <= types


def test_ipv6_listener(server):
    v6_port = server.addresses[1][1]
    msg = query(v6_port, "www.example.test", "AAAA", subnet="1.0.16.0/24", host="::1")
    assert addresses(msg) == AP6


def test_notimp_for_other_opcodes(server):
    q = dns.message.make_query("example.test", "SOA")
    q.set_opcode(dns.opcode.NOTIFY)
    msg = dns.query.udp(q, "127.0.0.1", port=server.port, timeout=3)
    assert msg.rcode() == dns.rcode.NOTIMP


def raw_query(payload: bytes, port: int) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        s.sendto(payload, ("127.0.0.1", port))
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


def ecs_query(option: bytes) -> bytes:
    q = dns.message.make_query("www.example.test", "A", use_edns=0, id=0x1234)
    wire = q.to_wire()  # the OPT record is last, with RDLENGTH 0
    opt = struct.pack("!HH", 8, len(option)) + option
    return wire[:-2] + struct.pack("!H", len(opt)) + opt


@pytest.mark.parametrize(
    "option",
    [
        struct.pack("!HBB", 3, 24, 0) + bytes(3),  # family 3
        struct.pack("!HBB", 1, 33, 0) + bytes(5),  # IPv4 prefix longer than 32
        struct.pack("!HBB", 2, 129, 0) + bytes(17),  # IPv6 prefix longer than 128
        struct.pack("!HBB", 1, 24, 0) + bytes(4),  # address longer than the prefix needs
        struct.pack("!HBB", 1, 20, 0) + b"\x51\x02\x4f",  # bits set past /20
        struct.pack("!HB", 1, 24),  # truncated option
    ],
)
def test_invalid_ecs_is_formerr(server, option):
    reply = raw_query(ecs_query(option), server.port)
    assert reply is not None
    msg = dns.message.from_wire(reply)
    assert msg.id == 0x1234 and msg.rcode() == dns.rcode.FORMERR


def test_valid_raw_ecs_query_answers(server):
    reply = raw_query(ecs_query(struct.pack("!HBB", 1, 24, 0) + bytes([81, 2, 69])),
                      server.port)
    assert addresses(dns.message.from_wire(reply)) == EU


@pytest.mark.parametrize("loop", UDP_LOOPS)
def test_truncation_without_edns_and_full_answer_over_tcp(tmp_path, loop):
    from geodns.main import load_engine

    text = tmp_path / "big.toml"
    body = DEMO.read_text().replace(
        '  { name = "mail", type = "A", value = "127.0.0.1" },',
        '  { name = "mail", type = "A", value = "127.0.0.1" },\n' + "\n".join(
            f'  {{ name = "big", type = "TXT", value = \'"{i:02d}{"x" * 60}"\' }},'
            for i in range(12)))
    text.write_text(body)
    srv = ServerThread(load_engine(text), udp_loop=loop).start()
    try:
        udp = query(srv.port, "big.example.test", "TXT", use_edns=False)
        assert udp.flags & dns.flags.TC and not udp.answer
        small = query(srv.port, "big.example.test", "TXT", payload=512)
        assert small.flags & dns.flags.TC and small.edns == 0
        big = query(srv.port, "big.example.test", "TXT", payload=4096)
        assert not big.flags & dns.flags.TC and len(big.answer[0]) == 12
        tcp = query(srv.port, "big.example.test", "TXT", tcp=True, use_edns=False)
        assert not tcp.flags & dns.flags.TC and len(tcp.answer[0]) == 12
    finally:
        srv.stop()


def test_tcp_pipelined_queries_on_one_connection(server):
    names = ["www.example.test", "example.test", "nope.example.test"]
    wires = [dns.message.make_query(n, "A", id=i + 1).to_wire() for i, n in enumerate(names)]
    with socket.create_connection(("127.0.0.1", server.port), timeout=3) as s:
        s.sendall(b"".join(struct.pack("!H", len(w)) + w for w in wires))
        replies = []
        buf = b""
        while len(replies) < 3:
            buf += s.recv(65535)
            while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
                n = struct.unpack("!H", buf[:2])[0]
                replies.append(dns.message.from_wire(buf[2 : 2 + n]))
                buf = buf[2 + n :]
    assert [m.id for m in replies] == [1, 2, 3]
    assert [m.rcode() for m in replies] == [0, 0, dns.rcode.NXDOMAIN]


def test_tcp_idle_connection_is_closed(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        assert s.recv(10) == b""  # the server closes it after its 1 s idle timeout


def test_short_and_response_packets_are_dropped(server):
    assert raw_query(b"\x12\x34\x01", server.port) is None
    reply = dns.message.make_response(dns.message.make_query("example.test", "A"))
    assert raw_query(reply.to_wire(), server.port) is None
    # and the server still answers afterwards
    assert query(server.port, "example.test", "SOA").rcode() == 0
