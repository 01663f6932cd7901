"""The C fast path and the Python path give byte-identical answers (#15 "Done when"): on a real
query set (ECS subnets inside real networks of the embedded GeoLite2 database) and a fuzzed
one (valid queries with bytes flipped, cut and added), both at the engine (the C cold path
``answer_common`` against ``respond_uncached``) and over sockets (a server on the C loop and
one on the Python loop, same configuration, every datagram sent to both). The topology has
steering names too: a name restricted to one region (its own region map, so never answered by
C) and a weighted one (drawn per response, never cached nor answered by C)."""

from __future__ import annotations

import random
import socket
import struct
from ipaddress import IPv4Address, IPv6Address

import dns.edns
import dns.message
import pytest
from dnsutil import DEMO, FAST_UDP_BUILT, NOT_BUILT, ServerThread, with_udp_loop

from geodns.engine import Engine
from geodns.main import load_engine

pytestmark = pytest.mark.skipif(not FAST_UDP_BUILT, reason=NOT_BUILT)

GEO = """geo = [
  { name = "www", ttl = 30 },
  { name = "eu", ttl = 20, regions = ["eu-west"] },
  { name = "one", addresses = 1 },
]
"""
NAMES = ["www.example.test", "WwW.example.test", "cdn.example.test", "example.test",
         "mail.example.test", "eu.example.test", "one.example.test", "nx.example.test",
         "nx-{i}.example.test", "foo.other."]
NEVER_C = (b"\x02eu\x07example", b"\x03one\x07example")  # other map / weighted


def topology_text(loop: str) -> str:
    text = with_udp_loop(DEMO.read_text(), loop)
    return text.replace('geo = [\n  { name = "www", ttl = 30 },\n]\n', GEO)


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Engine:
    path = tmp_path_factory.mktemp("paths") / "t.toml"
    path.write_text(topology_text("c"))
    return load_engine(path)


def real_subnets(engine: Engine, rng: random.Random, count: int) -> list[tuple[str, int]]:
    """ECS subnets inside real database networks: entries of the full region map."""
    full, out = engine.maps.full, []
    while len(out) < count:
        if rng.random() < 0.8:
            i = rng.randrange(len(full.v4.starts))
            start, plen = full.v4.starts[i], full.v4.plens[i]
            addr = start + (rng.getrandbits(32 - plen) if plen < 32 else 0)
            out.append((str(IPv4Address(addr & ~0xFF)), 24))
        else:
            i = rng.randrange(len(full.v6.starts))
            start, plen = full.v6.starts[i], full.v6.plens[i]
            addr = start + (rng.getrandbits(64 - plen) if plen < 64 else 0)
            out.append((str(IPv6Address((addr >> 16 << 16) << 64)), 48))
    return out


def real_queries(engine: Engine, seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for i, (addr, plen) in enumerate(real_subnets(engine, rng, count)):
        name = rng.choice(NAMES).format(i=i)
        msg = dns.message.make_query(name, rng.choice(["A", "AAAA", "A", "AAAA", "MX", "TXT"]),
                                     use_edns=0, options=[dns.edns.ECSOption(addr, plen)],
                                     payload=rng.choice([512, 1232, 4096]),
                                     want_dnssec=rng.random() < 0.2)
        msg.flags = rng.choice([0, 0x100])
        msg.id = i & 0xFFFF
        out.append(msg.to_wire())
    return out


def fuzzed(queries: list[bytes], seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for i, q in enumerate(queries):
        b = bytearray(q)
        for _ in range(rng.choice([1, 1, 2, 4])):
            kind = rng.random()
            if kind < 0.6 and len(b) > 2:
                b[rng.randrange(2, len(b))] = rng.randrange(256)
            elif kind < 0.8:
                del b[rng.randrange(12, max(13, len(b))):]
            else:
                b += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
        b[0:2] = (i & 0xFFFF).to_bytes(2, "big")
        out.append(bytes(b))
    return out


def compare_engine(engine: Engine, queries: list[bytes]) -> int:
    from geodns import _fastudp
    answered = 0
    for data in queries:
        fast = _fastudp.answer_common(data, engine.fast_state())
        python, _ = engine.respond_uncached(data, "127.0.0.1", False)
        if fast is not None:
            answered += 1
            assert fast == python, data.hex()
            fields = _fastudp.scan_common(data)
            if fields is not None and fields[4] in (1, 28):  # A, AAAA: their answers vary
                assert not fields[3].startswith(NEVER_C), data.hex()
    return answered


def test_real_query_set_engine(engine: Engine) -> None:
    queries = real_queries(engine, 11, 3000)
    assert compare_engine(engine, queries) > 500  # the first pass stores templates
    assert compare_engine(engine, queries) > 2000  # the second mostly from C


def test_fuzzed_query_set_engine(engine: Engine) -> None:
    queries = real_queries(engine, 12, 4000)
    compare_engine(engine, queries)  # templates for the C path
    mutated = fuzzed(queries, 13)
    compare_engine(engine, mutated)
    assert compare_engine(engine, mutated) > 150  # again, with their templates stored


def boundary_queries(engine: Engine, seed: int, count: int) -> list[bytes]:
    """ECS addresses at region map boundaries (an entry's first address, the one before it),
    the first and the last address of each family, and around the C search's blocks of 16
    entries: full prefixes, so the map key is the address itself."""
    rng = random.Random(seed)
    active = engine.maps.active
    v4, v6 = list(active.v4.starts), list(active.v6.starts)
    picks4 = {0, 1, 15, 16, 17, len(v4) - 17, len(v4) - 16, len(v4) - 1}
    picks6 = {0, 1, 15, 16, 17, len(v6) - 17, len(v6) - 16, len(v6) - 1}
    picks4 |= {rng.randrange(len(v4)) for _ in range(count)}
    picks6 |= {rng.randrange(len(v6)) for _ in range(count)}
    addrs = [(str(IPv4Address(k)), 32) for i in picks4 if 0 <= i < len(v4)
             for k in (v4[i], max(0, v4[i] - 1))]
    addrs += [(str(IPv6Address(k << 64)), 64) for i in picks6 if 0 <= i < len(v6)
              for k in (v6[i], max(0, v6[i] - 1))]
    addrs += [("0.0.0.0", 32), ("255.255.255.255", 32), ("::", 64),
              ("ffff:ffff:ffff:ffff::", 64)]
    out = []
    for i, (addr, plen) in enumerate(addrs):
        msg = dns.message.make_query("www.example.test", rng.choice(["A", "AAAA"]), use_edns=0,
                                     options=[dns.edns.ECSOption(addr, plen)], payload=1232)
        msg.id = i & 0xFFFF
        out.append(msg.to_wire())
    return out


def test_region_map_boundaries_engine(engine: Engine) -> None:
    queries = boundary_queries(engine, 14, 400)
    compare_engine(engine, queries)  # templates for the C path
    assert compare_engine(engine, queries) > len(queries) // 2


def exchange(port: int, queries: list[bytes]) -> dict[int, bytes]:
    """Send every datagram, then read what comes back (by ID) until the socket is quiet."""
    got: dict[int, bytes] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        sock.connect(("127.0.0.1", port))
        for q in queries:
            sock.send(q)
        sock.settimeout(1.0)
        try:
            while True:
                data = sock.recv(65535)
                got[struct.unpack_from("!H", data)[0]] = data
        except TimeoutError:
            pass
    return got


def test_both_loops_send_the_same_bytes(tmp_path, engine: Engine) -> None:
    base = real_queries(engine, 21, 1200)
    queries = base + [q for q in fuzzed(base, 22) if len(q) >= 12]
    queries = [(i & 0xFFFF).to_bytes(2, "big") + q[2:] for i, q in enumerate(queries)]
    servers = []
    try:
        for loop in ("c", "python"):
            path = tmp_path / f"{loop}.toml"
            path.write_text(topology_text(loop))
            servers.append(ServerThread(load_engine(path), udp_loop=loop).start())
            # the further maps merge in the background: until then scopes differ (both right)
            assert all(st.ready.wait(30) for st in servers[-1].engine.map_states)
        c_got, py_got = (exchange(s.port, queries) for s in servers)
    finally:
        for s in servers:
            s.stop()
    weighted = {i for i, q in enumerate(queries) if b"\x03one\x07example" in q.lower()}
    same = {k for k in c_got.keys() | py_got.keys() if k not in weighted}
    assert len(same) > 1500
    for qid in sorted(same):
        assert c_got.get(qid) == py_got.get(qid), queries[qid].hex()
