"""Response Rate Limiting (#15 §3): the policy table-driven against both implementations
(geodns/rrl.py and the C loop's geodns/_rrl.h), the truncated form, the config, and a flood
from one loopback address against a live server (both UDP loops) counted in its stats; dig
sees the truncated answers."""

from __future__ import annotations

import socket
import struct

import dns.flags
import dns.message
import dns.query
import pytest
from dnsutil import DEMO, FAST_UDP_BUILT, UDP_LOOPS, ServerThread, dig, wait_for, with_udp_loop

from geoconfig.topology import RrlSettings, load_topology
from geoconfig.validate import ConfigError
from geodns.main import load_engine
from geodns.rrl import DROP, SEND, SLIP, RateLimiter, parse_exempt, truncated

S, D, T = SEND, DROP, SLIP
BASE = RrlSettings(enabled=True, responses_per_second=2, window=3, slip=2)


def c_limiter(s: RrlSettings):
    from geodns import _fastudp
    return _fastudp.Rrl(s.responses_per_second, s.window, s.slip, s.ipv4_prefix, s.ipv6_prefix,
                        parse_exempt(s.exempt), s.table_size)


def limiters(s: RrlSettings) -> list:
    out = [RateLimiter(s)]
    if FAST_UDP_BUILT:
        out.append(c_limiter(s))
    return out


# (settings, [(client, now), ...], expected verdicts)
CASES = {
    "burst of rate, then limited, slip every 2nd": (
        BASE, [("10.0.0.1", 0.0)] * 8, [S, S, D, T, D, T, D, T]),
    "same /24 shares a bucket": (
        BASE, [("10.0.0.1", 0.0), ("10.0.0.200", 0.0), ("10.0.0.7", 0.0)], [S, S, D]),
    "another /24 has its own": (
        BASE, [("10.0.0.1", 0.0), ("10.0.0.2", 0.0), ("10.0.1.1", 0.0)], [S, S, S]),
    "refill at rate per second": (
        BASE, [("10.0.0.1", 0.0), ("10.0.0.1", 0.0), ("10.0.0.1", 0.0), ("10.0.0.1", 1.0),
               ("10.0.0.1", 1.0), ("10.0.0.1", 1.0)], [S, S, D, S, T, D]),
    "balance never above rate": (
        BASE, [("10.0.0.1", 100.0)] * 3, [S, S, D]),
    "debt bounded by window: back after window seconds": (
        BASE, [("10.0.0.1", 0.0)] * 20 + [("10.0.0.1", 3.5), ("10.0.0.1", 3.5)],
        [S, S] + [D, T] * 9 + [S, D]),
    "slip 1 truncates every limited answer": (
        RrlSettings(True, 1, 5, 1), [("10.0.0.1", 0.0)] * 4, [S, T, T, T]),
    "slip 0 drops all": (
        RrlSettings(True, 1, 5, 0), [("10.0.0.1", 0.0)] * 4, [S, D, D, D]),
    "slip 3": (
        RrlSettings(True, 1, 5, 3), [("10.0.0.1", 0.0)] * 7, [S, D, D, T, D, D, T]),
    "IPv6 by /56": (
        BASE, [("2001:db8:0:1::1", 0.0), ("2001:db8:0:ff::2", 0.0), ("2001:db8:0:100::1", 0.0),
               ("2001:db8:0:2::1", 0.0)], [S, S, S, D]),
    "custom prefixes: per address": (
        RrlSettings(True, 1, 5, 0, ipv4_prefix=32, ipv6_prefix=128),
        [("10.0.0.1", 0.0), ("10.0.0.2", 0.0), ("::1", 0.0), ("::2", 0.0), ("::1", 0.0)],
        [S, S, S, S, D]),
    "exempt networks are never limited": (
        RrlSettings(True, 1, 5, 0, exempt=("10.0.0.0/8", "2001:db8::/32")),
        [("10.1.2.3", 0.0)] * 3 + [("2001:db8::1", 0.0)] * 3 + [("11.0.0.1", 0.0)] * 2,
        [S, S, S, S, S, S, S, D]),
    "time going backwards counts as none elapsed": (
        BASE, [("10.0.0.1", 5.0), ("10.0.0.1", 5.0), ("10.0.0.1", 1.0)], [S, S, D]),
    "fractional rate refill": (
        RrlSettings(True, 4, 1, 0),
        [("10.0.0.1", 0.0)] * 5 + [("10.0.0.1", 0.25), ("10.0.0.1", 0.25)], [S, S, S, S, D, D, D]),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("impl", ["python", "c"])
def test_policy(name: str, impl: str) -> None:
    settings, events, expected = CASES[name]
    if impl == "c" and not FAST_UDP_BUILT:
        pytest.skip("the C extension is not built")
    limiter = RateLimiter(settings) if impl == "python" else c_limiter(settings)
    got = [limiter.check(ip, now) for ip, now in events]
    assert got == expected
    assert limiter.dropped == expected.count(D)
    assert limiter.slipped == expected.count(T)


def test_python_table_full_forgets_refilled_prefixes() -> None:
    limiter = RateLimiter(RrlSettings(True, 1, 5, 0, table_size=16))
    for i in range(16):
        assert limiter.check(f"10.0.{i}.1", 0.0) == S
    assert limiter.check("10.0.0.1", 0.0) == D  # still remembered
    assert limiter.check("10.9.9.9", 100.0) == S  # table full: the refilled ones go
    assert len(limiter.table) == 1
    assert limiter.check("10.0.0.1", 100.0) == S


def test_c_table_stays_bounded_under_many_prefixes() -> None:
    if not FAST_UDP_BUILT:
        pytest.skip("the C extension is not built")
    limiter = c_limiter(RrlSettings(True, 1, 5, 0, table_size=16))
    for i in range(5000):
        assert limiter.check(f"10.{i // 256}.{i % 256}.1", 0.0) == S
    assert limiter.dropped == 0


def _response(qname: bytes, body: bytes = b"", qd: int = 1, flags: int = 0x8400) -> bytes:
    return struct.pack("!HHHHHH", 0x1234, flags, qd, 1, 0, 1) + qname + b"\x00\x01\x00\x01" + body


@pytest.mark.parametrize("response,expected", [
    (_response(b"\x03www\x04test\x00", b"\xc0\x0c" + bytes(14)),
     struct.pack("!HHHHHH", 0x1234, 0x8600, 1, 0, 0, 0) + b"\x03www\x04test\x00\x00\x01\x00\x01"),
    (_response(b"\x00", flags=0x8403),  # the root, NXDOMAIN kept
     struct.pack("!HHHHHH", 0x1234, 0x8603, 1, 0, 0, 0) + b"\x00\x00\x01\x00\x01"),
    (_response(b"", qd=0)[:12], struct.pack("!HHHHHH", 0x1234, 0x8600, 0, 0, 0, 0)),
    (_response(b"\x03www\xc0\x0c"),  # not a plain name: no question
     struct.pack("!HHHHHH", 0x1234, 0x8600, 0, 0, 0, 0)),
    (b"\x12\x34\x80", b"\x12\x34\x80"),  # shorter than a header: as is
])
def test_truncated(response: bytes, expected: bytes) -> None:
    assert truncated(response) == expected


@pytest.mark.parametrize("extra,key", [
    ("enabled = 1", "dns.rrl.enabled"),
    ("responses_per_second = 0", "dns.rrl.responses_per_second"),
    ("window = 0", "dns.rrl.window"),
    ("slip = -1", "dns.rrl.slip"),
    ("ipv4_prefix = 33", "dns.rrl.ipv4_prefix"),
    ("ipv6_prefix = 129", "dns.rrl.ipv6_prefix"),
    ('exempt = ["10.0.0.0/33"]', "dns.rrl.exempt[0]"),
    ('exempt = ["not a net"]', "dns.rrl.exempt[0]"),
    ("table_size = 1", "dns.rrl.table_size"),
    ("burst = 3", "dns.rrl.burst"),
])
def test_config_errors_name_the_key(tmp_path, extra: str, key: str) -> None:
    path = tmp_path / "t.toml"
    path.write_text(rrl_config(extra))
    with pytest.raises(ConfigError) as err:
        load_topology(path)
    assert err.value.key == key


def test_config_defaults_and_values(tmp_path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(DEMO.read_text())
    assert load_topology(path).dns.rrl == RrlSettings()
    assert not RrlSettings().enabled
    path.write_text(rrl_config('enabled = true\nslip = 3\nexempt = ["192.0.2.7/24", "::1"]'))
    rrl = load_topology(path).dns.rrl
    assert (rrl.enabled, rrl.slip, rrl.exempt) == (True, 3, ("192.0.2.0/24", "::1/128"))


def rrl_config(extra: str, loop: str = "c") -> str:
    text = with_udp_loop(DEMO.read_text(), loop)
    return text.replace("\n[geoip]\n", f"\n[dns.rrl]\n{extra}\n\n[geoip]\n", 1)


def _server(tmp_path, extra: str, loop: str) -> ServerThread:
    path = tmp_path / "topology.toml"
    path.write_text(rrl_config(extra, loop))
    return ServerThread(load_engine(path), udp_loop=loop).start()


def _flood(port: int, count: int) -> tuple[int, int, bytes]:
    """Send ``count`` queries for www.example.test from one socket, then read every answer
    until the socket has been quiet; (full answers, truncated answers, one truncated one)."""
    query = dns.message.make_query("www.example.test", "A", use_edns=False)
    query.flags &= ~dns.flags.RD
    wire = query.to_wire()
    full = tc = 0
    sample = b""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.connect(("127.0.0.1", port))
        for _ in range(count):
            sock.send(wire)
        sock.settimeout(1.0)
        try:
            while True:
                data = sock.recv(4096)
                msg = dns.message.from_wire(data)
                if msg.flags & dns.flags.TC:
                    tc += 1
                    sample = data
                else:
                    assert msg.answer, "a full answer has the records"
                    full += 1
        except TimeoutError:
            pass
    return full, tc, sample


@pytest.mark.parametrize("loop", UDP_LOOPS)
def test_flood_from_one_address_is_limited_and_counted(tmp_path, loop: str) -> None:
    srv = _server(tmp_path, "enabled = true\nresponses_per_second = 5\nwindow = 60\nslip = 2",
                  loop)
    try:
        count = 300
        full, tc, sample = _flood(srv.port, count)
        stats, _ = wait_for(lambda: (s := srv.server.stats())["rrl_dropped"]
                            + s["rrl_slipped"] + full == count and s, 10)
        assert stats, srv.server.stats()
        assert stats["rrl_slipped"] == tc  # every slipped answer arrived, truncated
        assert stats["rrl_dropped"] > 0 and tc > 0
        assert abs(stats["rrl_dropped"] - stats["rrl_slipped"]) <= 1  # slip = 2
        assert full < count // 2
        msg = dns.message.from_wire(sample)
        assert not msg.answer and len(msg.question) == 1
        assert sample[2:] == truncated(b"\0\0" + _normal_answer(srv.port)[2:])[2:]
        # TCP is never limited: the client the truncated answer sends there gets its answer
        query = dns.message.make_query("www.example.test", "A", use_edns=False)
        assert dns.query.tcp(query, "127.0.0.1", port=srv.port, timeout=3).answer
        # dig sees the truncation (+ignore: no retry over TCP)
        out = dig(srv.port, "www.example.test", "A", "+ignore", "+norec", "+noedns")
        assert "flags: qr aa tc" in out or ";; connection timed out" in out, out
    finally:
        srv.stop()


def _normal_answer(port: int) -> bytes:
    """The full answer's bytes, asked over TCP (never limited) with the flood's query."""
    query = dns.message.make_query("www.example.test", "A", use_edns=False)
    query.flags &= ~dns.flags.RD
    wire = query.to_wire()
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        sock.sendall(struct.pack("!H", len(wire)) + wire)
        length = struct.unpack("!H", sock.recv(2))[0]
        data = b""
        while len(data) < length:
            data += sock.recv(length - len(data))
    return data


@pytest.mark.parametrize("loop", UDP_LOOPS)
def test_exempt_and_disabled_are_not_limited(tmp_path, loop: str) -> None:
    for extra in ('enabled = true\nresponses_per_second = 1\nexempt = ["127.0.0.0/8"]', ""):
        srv = _server(tmp_path, extra, loop)
        try:
            full, tc, _ = _flood(srv.port, 50)
            assert (full, tc) == (50, 0)
            assert srv.server.stats() == {"rrl_dropped": 0, "rrl_slipped": 0}
        finally:
            srv.stop()


def test_dig_sees_every_limited_answer_truncated(tmp_path) -> None:
    """slip = 1 and a long window: after one answer, dig's (over UDP, +ignore) are truncated."""
    srv = _server(tmp_path, "enabled = true\nresponses_per_second = 1\nwindow = 600\nslip = 1",
                  "c")
    try:
        _flood(srv.port, 20)
        out = dig(srv.port, "www.example.test", "A", "+ignore", "+norec")
        assert "flags: qr aa tc" in out and "ANSWER: 0" in out, out
        out = dig(srv.port, "www.example.test", "A", "+norec")  # dig retries over TCP
        assert "ANSWER: 2" in out or "ANSWER: 1" in out, out
        assert srv.server.stats()["rrl_slipped"] >= 19
    finally:
        srv.stop()
