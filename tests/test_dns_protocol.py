"""Protocol features of issue #15 §3: NSID (RFC 5001), CHAOS TXT id.server/hostname.bind/
version.bind, Extended DNS Errors (RFC 8914), DNS Cookies (RFC 7873/9018), TCP keepalive
(RFC 7828) and the TCP idle/query timeouts. Engine-level tables, then the live server (both UDP
loops) and the real ``dig``."""

from __future__ import annotations

import re
import shutil
import socket
import struct

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest
from dnsutil import DEMO, UDP_LOOPS, DnsProcess, ServerThread, dig, with_udp_loop

from geoconfig.topology import load_topology
from geoconfig.validate import ConfigError
from geodns.engine import Engine
from geodns.main import load_engine
from geodns.options import COOKIE, EDE, KEEPALIVE, NSID, Cookies, siphash24

CLIENT = "127.0.0.1"
NOW = 1_700_000_000
ON = """nsid = "geo-test-1"
identity = "edge1.test"
version = "geoedge test"
cookie_secret = "000102030405060708090a0b0c0d0e0f"
"""


def config_text(extra: str, loop: str = "c") -> str:
    text = with_udp_loop(DEMO.read_text(), loop)
    return text.replace("\n[dns]\n", "\n[dns]\n" + extra, 1)


def engine_with(tmp_path, extra: str) -> Engine:
    path = tmp_path / "topology.toml"
    path.write_text(config_text(extra))
    engine = load_engine(path)
    engine.clock = lambda: float(NOW)
    return engine


@pytest.fixture(scope="module")
def on(tmp_path_factory) -> Engine:
    return engine_with(tmp_path_factory.mktemp("on"), ON)


@pytest.fixture(scope="module")
def off(tmp_path_factory) -> Engine:
    return engine_with(tmp_path_factory.mktemp("off"), "")


def ask(engine: Engine, name: str, rdtype: str = "A", *, rdclass: str = "IN",
        edns: bool = True, options: tuple[dns.edns.Option, ...] = (), tcp: bool = False,
        idle: float = 0.0, opcode: int = 0) -> dns.message.Message:
    msg = dns.message.make_query(name, rdtype, rdclass, use_edns=0 if edns else False,
                                 options=list(options))
    msg.flags &= ~dns.flags.RD
    msg.set_opcode(opcode)
    raw = engine.respond(msg.to_wire(), CLIENT, tcp, idle)
    assert raw is not None
    return dns.message.from_wire(raw, ignore_trailing=False)


def opt_of(msg: dns.message.Message, code: int) -> bytes | None:
    for o in msg.options:
        if o.otype == code:
            return o.to_wire()
    return None


def txt(msg: dns.message.Message) -> list[str]:
    return [b"".join(r.strings).decode() for rrset in msg.answer for r in rrset]


def generic(code: int, data: bytes) -> dns.edns.GenericOption:
    return dns.edns.GenericOption(code, data)


# == CHAOS and NSID ============================================================================
@pytest.mark.parametrize(("which", "name", "rdtype", "rcode", "texts"), [
    ("on", "id.server", "TXT", "NOERROR", ["edge1.test"]),
    ("on", "hostname.bind", "TXT", "NOERROR", ["edge1.test"]),
    ("on", "ID.SERVER", "ANY", "NOERROR", ["edge1.test"]),
    ("on", "version.bind", "TXT", "NOERROR", ["geoedge test"]),
    ("on", "version.bind", "A", "REFUSED", []),
    ("on", "authors.bind", "TXT", "REFUSED", []),
    ("off", "id.server", "TXT", "REFUSED", []),
    ("off", "version.bind", "TXT", "REFUSED", []),
])
def test_chaos_txt(request, which, name, rdtype, rcode, texts):
    engine = request.getfixturevalue(which)
    msg = ask(engine, name, rdtype, rdclass="CH", edns=False)
    assert dns.rcode.to_text(msg.rcode()) == rcode
    assert txt(msg) == texts
    if texts:
        assert msg.flags & dns.flags.AA
        rrset = msg.answer[0]
        assert (rrset.rdclass, rrset.ttl) == (dns.rdataclass.CH, 0)


@pytest.mark.parametrize(("which", "expected"), [("on", b"geo-test-1"), ("off", None)])
def test_nsid(request, which, expected):
    msg = ask(request.getfixturevalue(which), "www.example.test",
              options=(generic(NSID, b""),))
    assert msg.rcode() == dns.rcode.NOERROR and msg.answer
    assert opt_of(msg, NSID) == expected


# == Extended DNS Errors =======================================================================
@pytest.mark.parametrize(("name", "rdtype", "rdclass", "opcode", "rcode", "info"), [
    ("www.elsewhere.test", "A", "IN", 0, "REFUSED", 20),
    ("www.example.test", "A", "HS", 0, "REFUSED", 20),
    ("id.server", "TXT", "CH", 0, "REFUSED", 20),  # CHAOS off
    ("example.test", "AXFR", "IN", 0, "REFUSED", 18),
    ("example.test", "IXFR", "IN", 0, "REFUSED", 18),
    ("example.test", "TYPE130", "IN", 0, "NOTIMP", 21),
    ("example.test", "A", "IN", 2, "NOTIMP", 21),  # opcode STATUS
    ("www.example.test", "A", "IN", 0, "NOERROR", None),
    ("nope.example.test", "A", "IN", 0, "NXDOMAIN", None),
])
@pytest.mark.parametrize("tcp", [False, True])
def test_ede(off, name, rdtype, rdclass, opcode, rcode, info, tcp):
    for edns in (True, False):
        msg = ask(off, name, rdtype, rdclass=rdclass, edns=edns, tcp=tcp, opcode=opcode)
        assert dns.rcode.to_text(msg.rcode()) == rcode
        data = opt_of(msg, EDE) if edns else None
        if info is None or not edns:
            assert data is None
        else:
            assert data is not None and struct.unpack("!H", data[:2])[0] == info
            assert data[2:]  # a short explanation


# == TCP keepalive =============================================================================
@pytest.mark.parametrize(("data", "tcp", "rcode", "expected"), [
    (b"", True, dns.rcode.NOERROR, struct.pack("!H", 75)),  # 7.5 s in units of 100 ms
    (b"", False, dns.rcode.NOERROR, None),  # ignored over UDP, never sent there
    (b"\x00\x10", True, dns.rcode.FORMERR, None),  # a TIMEOUT in a query
    (b"\x00\x10", False, dns.rcode.NOERROR, None),
])
def test_keepalive(off, data, tcp, rcode, expected):
    msg = ask(off, "www.example.test", options=(generic(KEEPALIVE, data),), tcp=tcp, idle=7.5)
    assert msg.rcode() == rcode
    assert opt_of(msg, KEEPALIVE) == expected


def test_keepalive_caps_at_65535(off):
    msg = ask(off, "www.example.test", options=(generic(KEEPALIVE, b""),), tcp=True,
              idle=100_000.0)
    assert opt_of(msg, KEEPALIVE) == b"\xff\xff"


# == Cookies ===================================================================================
def test_siphash24_reference_vectors():
    key = bytes(range(16))
    assert siphash24(key, b"").hex() == "310e0edd47db6f72"
    assert siphash24(key, bytes(range(15))).hex() == "e545be4961ca29a1"  # 0xa129ca6149be45e5


def test_server_cookie_layout_rfc9018_vector():
    """RFC 9018 Appendix A.1: the hash over client cookie, version, reserved, timestamp, IP."""
    key = bytes.fromhex("e5e973e5a6b2a43f48e7dc849e37bfcf")
    client = bytes.fromhex("2464c4abcf10c957")
    head = bytes.fromhex("010000005cf79f11")  # version 1, reserved, timestamp 1559731985
    ip = socket.inet_aton("198.51.100.100")
    assert (head + siphash24(key, client + head + ip)).hex() == "010000005cf79f111f8130c3eee29480"
    cookies = Cookies(b"any base secret", 3600)
    cookies._keys[1559731985 // 3600] = key  # the period's derived key replaced by the vector's
    server = cookies.server_cookie(client, "198.51.100.100", 1559731985)
    assert server.hex() == "010000005cf79f111f8130c3eee29480"


CC = bytes.fromhex("2464c4abcf10c957")


def cookie_at(engine: Engine, when: int, client_ip: str = CLIENT) -> bytes:
    assert engine.cookies is not None
    return CC + engine.cookies.server_cookie(CC, client_ip, when)


@pytest.mark.parametrize(("case", "data", "tcp", "rcode"), [
    ("client-only", CC, False, dns.rcode.NOERROR),
    ("valid", "now", False, dns.rcode.NOERROR),
    ("valid-previous-period", "prev", False, dns.rcode.NOERROR),
    ("two-periods-old", "old", False, dns.rcode.BADCOOKIE),
    ("from-the-future", "future", False, dns.rcode.BADCOOKIE),
    ("other-client-ip", "other-ip", False, dns.rcode.BADCOOKIE),
    ("random-server-cookie", CC + bytes(range(16)), False, dns.rcode.BADCOOKIE),
    ("random-server-cookie-tcp", CC + bytes(range(16)), True, dns.rcode.NOERROR),
    ("unknown-server-cookie-length", CC + bytes(8), False, dns.rcode.BADCOOKIE),
    ("empty", b"", False, dns.rcode.FORMERR),
    ("short-client", bytes(7), False, dns.rcode.FORMERR),
    ("9-octets", bytes(9), False, dns.rcode.FORMERR),
    ("15-octets", bytes(15), False, dns.rcode.FORMERR),
    ("41-octets", bytes(41), False, dns.rcode.FORMERR),
])
def test_cookies(on, case, data, tcp, rcode):
    whens = {"now": NOW - 10, "prev": NOW - 3600 + 60, "old": NOW - 7300, "future": NOW + 400}
    if isinstance(data, str):
        data = (cookie_at(on, NOW - 10, "10.9.9.9") if data == "other-ip"
                else cookie_at(on, whens[data]))
    msg = ask(on, "www.example.test", options=(generic(COOKIE, data),), tcp=tcp)
    assert msg.rcode() == rcode, case
    got = opt_of(msg, COOKIE)
    if rcode == dns.rcode.FORMERR:
        assert got is None
        return
    assert got is not None and got[:8] == CC and len(got) == 24
    assert got[8:] == on.cookies.server_cookie(CC, CLIENT, NOW)  # fresh in every answer
    assert bool(msg.answer) == (rcode == dns.rcode.NOERROR)
    assert on.cookies.check(got, CLIENT, NOW).valid


def test_cookie_answers_are_not_cached(on):
    first = ask(on, "www.example.test", options=(generic(COOKIE, CC),))
    on.clock = lambda: float(NOW + 1)
    try:
        second = ask(on, "www.example.test", options=(generic(COOKIE, CC),))
    finally:
        on.clock = lambda: float(NOW)
    assert opt_of(first, COOKIE) != opt_of(second, COOKIE)
    assert opt_of(second, COOKIE)[12:16] == struct.pack("!I", NOW + 1)


def test_cookies_off_ignores_the_option(tmp_path):
    engine = engine_with(tmp_path, "cookies = false\n")
    msg = ask(engine, "www.example.test", options=(generic(COOKIE, CC + bytes(16)),))
    assert msg.rcode() == dns.rcode.NOERROR and opt_of(msg, COOKIE) is None


def test_workers_with_one_secret_accept_each_others_cookies(tmp_path):
    a, b = engine_with(tmp_path, ON), engine_with(tmp_path, ON)
    msg = ask(b, "www.example.test", options=(generic(COOKIE, cookie_at(a, NOW - 5)),))
    assert msg.rcode() == dns.rcode.NOERROR


@pytest.mark.parametrize(("line", "key"), [
    ('cookie_secret = "abc"\n', "dns.cookie_secret"),
    ('nsid = "caf\u00e9"\n', "dns.nsid"),
    ("tcp_query_timeout = 0\n", "dns.tcp_query_timeout"),
    ("cookie_rotation = 10\n", "dns.cookie_rotation"),
    ("identity = 5\n", "dns.identity"),
])
def test_config_errors(tmp_path, line, key):
    path = tmp_path / "t.toml"
    path.write_text(config_text(line))
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_topology(path)


# == the live server ===========================================================================
@pytest.fixture(scope="module", params=UDP_LOOPS)
def live(request, tmp_path_factory):
    engine = engine_with(tmp_path_factory.mktemp("live"), ON)
    srv = ServerThread(engine, idle_timeout=4.0, udp_loop=request.param).start()
    yield srv
    srv.stop()


def udp(port: int, msg: dns.message.Message) -> dns.message.Message:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(msg.to_wire(), ("127.0.0.1", port))
        return dns.message.from_wire(s.recv(65535))


@pytest.mark.parametrize(("name", "rdtype", "rdclass", "rcode", "info"), [
    ("www.elsewhere.test", "A", "IN", dns.rcode.REFUSED, 20),
    ("example.test", "AXFR", "IN", dns.rcode.REFUSED, 18),
    ("example.test", "TYPE130", "IN", dns.rcode.NOTIMP, 21),
    ("id.server", "TXT", "CH", dns.rcode.NOERROR, None),
])
def test_live_answers_repeat_the_same(live, name, rdtype, rdclass, rcode, info):
    """Asked three times (the C loop's caches and templates fill after the first), the same
    answer with the same EDE."""
    for _ in range(3):
        msg = dns.message.make_query(name, rdtype, rdclass, use_edns=0)
        got = udp(live.port, msg)
        assert got.rcode() == rcode
        data = opt_of(got, EDE)
        assert (None if data is None else struct.unpack("!H", data[:2])[0]) == info


def test_live_keepalive_over_tcp(live):
    msg = dns.message.make_query("www.example.test", "A", use_edns=0,
                                 options=[generic(KEEPALIVE, b"")])
    got = dns.query.tcp(msg, "127.0.0.1", port=live.port, timeout=3)
    assert opt_of(got, KEEPALIVE) == struct.pack("!H", 40)
    assert opt_of(udp(live.port, msg), KEEPALIVE) is None


def closed_within(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.mark.parametrize(("idle", "query_timeout", "send", "closed"), [
    (0.3, 60.0, b"", True),  # nothing sent: the idle timeout closes it
    (0.3, 60.0, b"\x00", False),  # a query begun: only the query timeout counts now
    (60.0, 0.3, b"\x00", True),  # a query begun and never finished
    (60.0, 0.3, b"", False),  # idle, well within its idle timeout
])
def test_tcp_idle_and_query_timeouts(idle, query_timeout, send, closed):
    srv = ServerThread(load_engine(DEMO), idle_timeout=idle, query_timeout=query_timeout,
                       udp_loop="python", check_loop=False).start()
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=3) as s:
            if send:
                s.sendall(send)
            # the shorter timeout is 0.3 s: a connection still open after 3 s was not closed
            assert closed_within(s, 3.0 if not closed else 20.0) == closed
            if not closed:  # still usable: finish a query and get its answer
                wire = dns.message.make_query("www.example.test", "A").to_wire()
                frame = struct.pack("!H", len(wire)) + wire
                s.sendall(frame[len(send):])
                s.settimeout(3)
                head = s.recv(2)
                assert len(head) == 2
    finally:
        srv.stop()


# == dig =======================================================================================
needs_dig = pytest.mark.skipif(shutil.which("dig") is None,
                               reason="dig not installed (apt-get install bind9-dnsutils)")


@pytest.fixture(scope="module", params=UDP_LOOPS)
def dns_proc(request, tmp_path_factory):
    config = tmp_path_factory.mktemp("digp") / "demo.toml"
    config.write_text(config_text(ON, request.param))
    proc = DnsProcess(config)
    yield proc
    proc.stop()


@needs_dig
def test_dig_nsid(dns_proc):
    out = dig(dns_proc.port, "www.example.test", "+nsid", "+norec")
    assert re.search(r'NSID: .*\("geo-test-1"\)', out), out


@needs_dig
@pytest.mark.parametrize(("name", "value"), [("id.server", "edge1.test"),
                                             ("hostname.bind", "edge1.test"),
                                             ("version.bind", "geoedge test")])
def test_dig_chaos(dns_proc, name, value):
    out = dig(dns_proc.port, "CH", "TXT", name, "+norec")
    assert re.search(rf'{re.escape(name)}\.\s+0\s+CH\s+TXT\s+"{value}"', out), out


@needs_dig
def test_dig_cookie(dns_proc):
    out = dig(dns_proc.port, "www.example.test", "+cookie", "+norec")
    match = re.search(r"COOKIE: ([0-9a-f]{16})([0-9a-f]{32}) \(good\)", out)
    assert match, out
    server = match.group(2)
    again = dig(dns_proc.port, "www.example.test", f"+cookie={match.group(1)}{server}", "+norec")
    assert "status: NOERROR" in again and "(good)" in again, again
    bad = dig(dns_proc.port, "www.example.test", f"+cookie={match.group(1)}{'00' * 16}",
              "+norec", "+nobadcookie")
    assert "status: BADCOOKIE" in bad, bad


@needs_dig
def test_dig_ede_and_keepalive(dns_proc):
    out = dig(dns_proc.port, "www.elsewhere.test", "+norec")
    assert "status: REFUSED" in out and "EDE: 20 (Not Authoritative)" in out, out
    out = dig(dns_proc.port, "www.example.test", "+tcp", "+keepalive", "+norec")
    assert "KEEPALIVE: 10.0 secs" in out, out
