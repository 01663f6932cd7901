"""The C UDP loop (geodns/_fastudp.c) on its own, and how the server chooses its UDP loop.

The DNS server, robustness, process, reload and failover tests already run against both loops
(``UDP_LOOPS`` in dnsutil.py); these are the cases specific to the C loop: batches that mix
cached answers, Python answers and garbage, cache swaps between batches, callback errors, send
errors, IPv6, and stopping. Datagrams sent before ``serve()`` starts are all received by its first
``recvmmsg()``, so a test knows exactly what one batch holds. Under CI (``CI`` set) a missing
extension is a failure, not a skip: CI must exercise the C path.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import dns.message
import dns.rcode
import pytest
from dnsutil import (
    FAST_UDP_BUILT,
    NOT_BUILT,
    ServerThread,
    addresses,
    demo_engine,
    query,
    wait_for,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geodns.engine import Engine
from geodns.server import DnsServer, fast_udp_serve

CLIENT = "127.0.0.1"
EU = {"127.0.2.1", "127.0.2.2"}


def test_extension_is_built_under_ci():
    if os.environ.get("CI") and not FAST_UDP_BUILT:
        pytest.fail("CI must build the C extension geodns._fastudp (gcc and python3-dev, see "
                    ".ci/run): " + NOT_BUILT)
    if not FAST_UDP_BUILT:
        pytest.skip(NOT_BUILT)


def test_python_loop_when_turned_off_or_not_built(monkeypatch):
    """``udp_fast_path = false`` and a missing extension both serve with the Python loop."""
    for fast, built in ((False, True), (True, False)):
        if not built:
            monkeypatch.setattr("geodns.server.fast_udp_serve", lambda: None)
        srv = ServerThread(demo_engine(), udp_loop="c" if fast else "python", check_loop=False)
        srv.start()
        try:
            assert srv.server.udp_loop == "python"
            msg = query(srv.port, "www.example.test", subnet="81.2.69.0/24")
            assert addresses(msg) == EU
        finally:
            srv.stop()
        assert not any(t.is_alive() for t in srv.server._threads)


needs_c = pytest.mark.skipif(not FAST_UDP_BUILT, reason=NOT_BUILT)


def qwire(name: str, rdtype: str = "A", qid: int = 1, subnet: str | None = None) -> bytes:
    options = []
    if subnet is not None:
        addr, prefix = subnet.split("/")
        options.append(dns.edns.ECSOption(addr, int(prefix)))
    msg = dns.message.make_query(name, rdtype, use_edns=0, options=options, id=qid)
    return msg.to_wire()


class Loop:
    """``_fastudp.serve`` on a bound socket in a thread, with counting callbacks."""

    def __init__(self, sock: socket.socket, cache_of: Callable[[], dict],
                 answer: Callable[[bytes, str, bool], bytes | None],
                 watch: object | None = None) -> None:
        self.sock = sock
        self.cache_calls = 0
        self.answered: list[bytes] = []  # datagrams handed to Python
        self.send_failures: list[tuple[str, int]] = []
        self.result: object = None
        self.error: BaseException | None = None
        serve = fast_udp_serve()
        assert serve is not None

        def cache() -> dict:
            self.cache_calls += 1
            return cache_of()

        def py_answer(data: bytes, client: str, tcp: bool) -> bytes | None:
            self.answered.append(data)
            return answer(data, client, tcp)

        def run() -> None:
            try:
                self.result = serve(sock.fileno(), cache, py_answer,
                                    lambda ip, err: self.send_failures.append((ip, err)),
                                    watch=watch)
            except BaseException as exc:  # noqa: BLE001 - the test inspects whatever serve raised
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)

    def start(self) -> Loop:
        self.thread.start()
        return self

    def stop(self) -> None:
        """Wake the loop as DnsServer.stop does; serve() must return None."""
        with contextlib.suppress(OSError):  # ENOTCONN when unconnected, but it wakes serve()
            self.sock.shutdown(socket.SHUT_RD)
        self.thread.join(5)
        assert not self.thread.is_alive(), "serve() did not return after shutdown"


@pytest.fixture(params=[("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)],
                ids=["ipv4", "ipv6"])
def pair(request) -> Iterator[tuple[socket.socket, socket.socket, str]]:
    """(server socket, client socket connected to it, the client's address as formatted)."""
    host, family = request.param
    server = socket.socket(family, socket.SOCK_DGRAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    server.bind((host, 0))
    client = socket.socket(family, socket.SOCK_DGRAM)
    client.connect(server.getsockname()[:2])
    client.settimeout(3)
    yield server, client, client.getsockname()[0]
    client.close()
    server.close()


def receive_all(client: socket.socket, count: int) -> list[bytes]:
    return [client.recv(65535) for _ in range(count)]


@needs_c
def test_one_batch_of_hits_misses_and_garbage(pair):
    server, client, client_ip = pair
    engine, oracle = demo_engine(), demo_engine()
    subnets = ["81.2.69.0/24", "8.8.8.0/24", "1.0.16.0/24", "2a02:8010::/48"]
    cached = [qwire("www.example.test", t, 0, s) for s in subnets for t in ("A", "AAAA")]
    cached += [qwire("example.test", "SOA", 0), qwire("nope.example.test", "A", 0)]
    for wire in cached:  # warm the server's cache, with another ID
        engine.respond(wire, client_ip)
    rng = random.Random(5)
    batch: list[bytes] = []
    for i, wire in enumerate(cached):
        batch.append(bytes([0x10, i]) + wire[2:])  # hits, each with its own ID
    batch += [qwire("new.example.test", "A", 0x2001), qwire("example.test", "NS", 0x2002),
              qwire("www.example.test", "A", 0x2003, "203.116.0.0/24")]  # misses
    batch += [b"", b"\x00", bytes(11), rng.randbytes(12), rng.randbytes(200),  # garbage
              qwire("www.example.test")[:-3], bytes([0x30, 1]) + cached[0][2:][:9]]
    batch += [bytes([0x40, i]) + cached[i % len(cached)][2:] for i in range(20)]  # repeats
    rng.shuffle(batch)
    assert len(batch) <= 64
    for data in batch:
        client.send(data)
    hits = {data for data in batch if len(data) >= 12 and
            isinstance(engine.wire_udp.get(data[2:]), bytes)}
    loop = Loop(server, lambda: engine.wire_udp,
                lambda d, c, t: engine.respond(d, c, t)).start()
    expected = [r for r in (oracle.respond(d, client_ip) for d in batch) if r is not None]
    got = receive_all(client, len(expected))
    assert Counter(got) == Counter(expected)  # the right bytes, IDs included
    assert {r[:2] for r in got} == {r[:2] for r in expected}
    assert loop.cache_calls == 1  # one batch
    assert sorted(loop.answered) == sorted(d for d in batch if d not in hits)
    assert len(hits) == len(cached) + 20
    loop.stop()
    assert loop.error is None and loop.result is None


@needs_c
def test_cache_is_read_again_for_every_batch(pair):
    server, client, _ = pair
    wire = qwire("www.example.test", "A", 7)
    caches = [{wire[2:]: b"first"}]
    loop = Loop(server, lambda: caches[0], lambda d, c, t: None).start()
    client.send(wire)
    assert client.recv(100) == wire[:2] + b"first"
    caches[0] = {wire[2:]: b"second"}  # swapped, as set_health and reloads do
    client.send(wire)
    assert client.recv(100) == wire[:2] + b"second"
    caches[0].clear()  # cleared: a miss, handed to Python (which drops it)
    client.send(wire)
    wait_for(lambda: loop.answered, 3)
    assert loop.answered == [wire]
    loop.stop()


@needs_c
def test_watch_calls_cache_of_only_when_an_attribute_changed(pair):
    """With ``watch`` (the server), cache_of() is called again only when watch.engine, its
    wire_udp, templates or maps.active is another object than at the last call."""
    server, client, _ = pair
    wire = qwire("www.example.test", "A", 7)
    owner = SimpleNamespace(engine=SimpleNamespace(
        wire_udp={wire[2:]: b"first"}, templates={}, maps=SimpleNamespace(active=object())))
    loop = Loop(server, lambda: owner.engine.wire_udp, lambda d, c, t: None, owner).start()

    def answer() -> bytes:
        client.send(wire)
        return client.recv(100)[2:]

    assert (answer(), loop.cache_calls) == (b"first", 1)
    assert (answer(), loop.cache_calls) == (b"first", 1)  # nothing changed: no call
    owner.engine.wire_udp = {wire[2:]: b"second"}  # a new cache generation
    assert (answer(), loop.cache_calls) == (b"second", 2)
    owner.engine.maps.active = object()  # a merged region map swapped in
    assert (answer(), loop.cache_calls) == (b"second", 3)
    owner.engine.templates = {}  # a health change
    assert (answer(), loop.cache_calls) == (b"second", 4)
    owner.engine = SimpleNamespace(wire_udp={wire[2:]: b"third"}, templates={},
                                   maps=owner.engine.maps)  # a reload
    assert (answer(), loop.cache_calls) == (b"third", 5)
    assert (answer(), loop.cache_calls) == (b"third", 5)
    owner.engine = SimpleNamespace(wire_udp={wire[2:]: b"fourth"})  # no maps: every batch
    assert (answer(), loop.cache_calls) == (b"fourth", 6)
    assert (answer(), loop.cache_calls) == (b"fourth", 7)
    loop.stop()
    assert loop.error is None and loop.result is None


@needs_c
def test_per_client_values_and_subclasses_go_to_python(pair):
    server, client, client_ip = pair
    per_client, other = qwire("a.example.test", qid=1), qwire("b.example.test", qid=2)

    class Odd(bytes):
        pass

    cache = {per_client[2:]: {client_ip: b"cached"}, other[2:]: Odd(b"odd")}
    loop = Loop(server, lambda: cache, lambda d, c, t: d[:2] + b"py:" + c.encode()).start()
    client.send(per_client)
    client.send(other)
    assert sorted(receive_all(client, 2)) == sorted(
        [per_client[:2] + b"py:" + client_ip.encode(), other[:2] + b"py:" + client_ip.encode()])
    assert sorted(loop.answered) == sorted([per_client, other])
    loop.stop()


@needs_c
def test_cache_cleared_by_a_callback_keeps_the_batch_answers(pair):
    """A callback that empties the cache mid-batch cannot free the answers already chosen (the
    cache held the only reference to their bytes); the datagrams after it are misses."""
    server, client, _ = pair
    hit = qwire("www.example.test", qid=1)
    cache = {hit[2:]: bytes(bytearray(b"x" * 500))}  # a new object, referenced by the cache only
    wires = [bytes([0, i]) + hit[2:] for i in range(10)]
    wires.insert(5, qwire("miss.example.test", qid=0x99))

    def answer(data: bytes, client_ip: str, tcp: bool) -> bytes:
        cache.clear()
        return data[:2] + b"miss"

    for w in wires:
        client.send(w)
    loop = Loop(server, lambda: cache, answer).start()
    got = receive_all(client, len(wires))
    assert sorted(got) == sorted([bytes([0, i]) + b"x" * 500 for i in range(5)] + [b"\x00\x99miss"]
                                 + [bytes([0, i]) + b"miss" for i in range(5, 10)])
    loop.stop()


@needs_c
def test_callback_exception_is_raised_after_sending_what_was_ready(pair):
    server, client, _ = pair
    hit = qwire("www.example.test", qid=1)
    cache = {hit[2:]: b"ok"}

    def answer(data: bytes, client_ip: str, tcp: bool) -> bytes:
        raise KeyboardInterrupt  # _answer logs Exceptions; anything else must not be swallowed

    for w in (hit, qwire("boom.example.test", qid=2)):
        client.send(w)
    loop = Loop(server, lambda: cache, answer).start()
    loop.thread.join(5)
    assert isinstance(loop.error, KeyboardInterrupt)
    assert client.recv(100) == hit[:2] + b"ok"


@needs_c
@pytest.mark.parametrize(("cache_of", "answer", "problem"), [
    (lambda: [], lambda d, c, t: None, "cache_of() must return a dict"),
    (dict, lambda d, c, t: "text", "answer() must return bytes or None"),
])
def test_wrong_callback_results_raise_type_error(pair, cache_of, answer, problem):
    server, client, _ = pair
    client.send(qwire("www.example.test"))
    loop = Loop(server, cache_of, answer).start()
    loop.thread.join(5)
    assert isinstance(loop.error, TypeError) and problem in str(loop.error)


@needs_c
def test_send_error_is_reported_and_the_rest_of_the_batch_is_sent(pair):
    server, client, client_ip = pair
    big, small = qwire("big.example.test", qid=1), qwire("small.example.test", qid=2)

    def answer(data: bytes, client_ip: str, tcp: bool) -> bytes:
        return data[:2] + (b"x" * 70000 if data == big else b"fine")  # 70000: EMSGSIZE

    client.send(big)
    client.send(small)
    loop = Loop(server, dict, answer).start()
    assert client.recv(100) == small[:2] + b"fine"
    assert loop.send_failures == [(client_ip, errno.EMSGSIZE)]
    loop.stop()


@needs_c
def test_a_non_blocking_socket_is_refused():
    """Its shutdown would never wake the loop (EAGAIN, not 0): refused instead of spinning."""
    serve = fast_udp_serve()
    assert serve is not None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        with pytest.raises(ValueError, match="non-blocking"):
            serve(s.fileno(), dict, lambda *a: None, lambda *a: None)


@needs_c
@pytest.mark.parametrize("bad", [-1, 10**6])
def test_bad_arguments(bad):
    serve = fast_udp_serve()
    assert serve is not None
    with pytest.raises(ValueError):
        if bad < 0:
            serve(bad, dict, lambda *a: None, lambda *a: None)
        else:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                serve(s.fileno(), dict, lambda *a: None, lambda *a: None, batch=bad)
    with pytest.raises(TypeError):
        serve(0, None, lambda *a: None, lambda *a: None)


# -- the whole server ---------------------------------------------------------------------------
def c_server() -> ServerThread:
    srv = ServerThread(demo_engine(), listen=[("127.0.0.1", 0), ("::1", 0)], udp_loop="c")
    return srv.start()


@needs_c
def test_stop_while_idle_leaves_no_thread():
    srv = c_server()
    assert query(srv.port, "www.example.test", subnet="81.2.69.0/24").rcode() == dns.rcode.NOERROR
    started = time.monotonic()
    srv.stop()
    assert time.monotonic() - started < 3
    assert srv.server._threads and not any(t.is_alive() for t in srv.server._threads)


@needs_c
def test_stop_under_load_leaves_no_thread(caplog):
    srv = c_server()
    port6 = srv.addresses[1][1]
    done = threading.Event()
    sent = [0]
    hit = qwire("www.example.test", "A", 1, "81.2.69.0/24")

    def blast(host: str, port: int, family: socket.AddressFamily) -> None:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            rng = random.Random(port)
            while not done.is_set():
                kind = rng.random()
                if kind < 0.5:
                    wire = hit
                elif kind < 0.8:  # a fresh name: a miss, answered in Python
                    wire = qwire(f"n{rng.randrange(10**9)}.example.test")
                else:
                    wire = rng.randbytes(rng.randrange(40))
                try:
                    s.sendto(wire, (host, port))
                    sent[0] += 1
                except BlockingIOError:
                    time.sleep(0.001)
                try:
                    while s.recv(65535):
                        pass
                except BlockingIOError:
                    pass

    senders = [threading.Thread(target=blast, args=a, daemon=True) for a in
               (("127.0.0.1", srv.port, socket.AF_INET), ("::1", port6, socket.AF_INET6))]
    for t in senders:
        t.start()
    assert wait_for(lambda: sent[0] > 100, 10)[0], "the senders did not get going"
    started = time.monotonic()
    srv.stop()
    took = time.monotonic() - started
    done.set()
    for t in senders:
        t.join(5)
    assert took < 5, f"stop took {took:.1f}s under load"
    assert not any(t.is_alive() for t in srv.server._threads)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.fixture(scope="module")
def fast_server() -> Iterator[ServerThread]:
    if not FAST_UDP_BUILT:
        pytest.skip(NOT_BUILT)
    srv = c_server()
    yield srv
    srv.stop()


@needs_c
@settings(deadline=None, max_examples=60, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(burst=st.lists(st.one_of(
    st.binary(max_size=80),
    st.binary(min_size=12, max_size=700),
    st.sampled_from([qwire("www.example.test", "A", 3, "81.2.69.0/24"), qwire("example.test"),
                     qwire("nope.example.test", "AAAA")]).flatmap(
        lambda w: st.binary(min_size=2, max_size=2).map(lambda i: i + w[2:])),
), min_size=1, max_size=150))
def test_fuzz_burst_keeps_serving(fast_server, burst):
    """Bursts of garbage, near-queries and repeated valid queries (many in one batch), sent
    without waiting: the server keeps answering, over IPv4 and IPv6, and its threads live."""
    for host, port in fast_server.addresses:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            for data in burst:
                s.sendto(data, (host, port))
        msg = query(port, "www.example.test", subnet="81.2.69.0/24", host=host)
        assert addresses(msg) == EU
    assert all(t.is_alive() for t in fast_server.server._threads)


@needs_c
def test_health_change_is_seen_by_the_c_loop():
    """set_health swaps the engine's wire_udp dict; the next batch reads the new one."""
    srv = c_server()
    try:
        engine: Engine = srv.server.engine
        assert addresses(query(srv.port, "www.example.test", subnet="81.2.69.0/24")) == EU
        assert addresses(query(srv.port, "www.example.test", subnet="81.2.69.0/24")) == EU
        engine.set_health({"eu-west-1": False, "eu-west-2": False})
        msg = query(srv.port, "www.example.test", subnet="81.2.69.0/24")
        assert addresses(msg) == {"127.0.1.1", "127.0.1.2"}  # failed over to us-east
        srv.server.engine = demo_engine()  # a reload: a new engine, an empty cache
        assert addresses(query(srv.port, "www.example.test", subnet="81.2.69.0/24")) == EU
    finally:
        srv.stop()


def test_server_defaults_to_the_fast_path():
    assert DnsServer(demo_engine(), []).udp_fast_path is True


# -- the wire cache's two generations (what the C loop reads) ------------------------------------
def test_random_names_do_not_flush_the_answers_asked_again(monkeypatch):
    engine = demo_engine()
    engine.cache_size = 16
    hot = [qwire("www.example.test", t, 1, s) for s in ("81.2.69.0/24", "8.8.8.0/24")
           for t in ("A", "AAAA")]
    slow: list[bytes] = []
    uncached = engine.respond_uncached
    monkeypatch.setattr(engine, "respond_uncached",
                        lambda d, c, t, i=0.0: (slow.append(d), uncached(d, c, t, i))[1])
    for wire in hot:
        engine.respond(wire, CLIENT)
    for i in range(200):  # never asked again; the hot queries are asked now and then
        engine.respond(qwire(f"r{i}.example.test", "A", 2), CLIENT)
        if i % 10 == 0:
            for wire in hot:
                engine.respond(wire, CLIENT)
        assert len(engine.wire_udp) <= 16 and len(engine.wire_udp_old) <= 16
    assert [d for d in slow if d in hot] == hot  # each computed once, never again
    for wire in hot:  # and the C loop's dict holds them again after being asked
        engine.respond(wire, CLIENT)
        assert isinstance(engine.wire_udp.get(wire[2:]), bytes)


def test_health_change_empties_both_generations():
    engine = demo_engine()
    engine.cache_size = 16
    for i in range(40):
        engine.respond(qwire(f"r{i}.example.test"), CLIENT)
    assert engine.wire_udp and engine.wire_udp_old
    engine.set_health({"eu-west-1": False})
    assert not engine.wire_udp and not engine.wire_udp_old
    assert not engine.wire_tcp and not engine.wire_tcp_old


def test_engine_parser_follows_the_switch(tmp_path):
    """``udp_fast_path = false`` means no C at all: the engine parses with the Python code."""
    from dnsutil import DEMO, with_udp_loop

    from geodns.main import load_engine

    config = tmp_path / "demo.toml"
    config.write_text(with_udp_loop(DEMO.read_text(), "python"))
    assert load_engine(config).scan_common is None
    assert (demo_engine().scan_common is not None) == FAST_UDP_BUILT


def _cold_queries(seed: int, count: int) -> list[bytes]:
    import dns.edns
    rng = random.Random(seed)
    names = ["www.example.test", "WWW.example.test", "cdn.example.test", "example.test",
             "mail.example.test", "foo.other.", "static.example.test"]
    out = []
    for i in range(count):
        name = rng.choice([*names, f"nx{i}.example.test"])
        if rng.random() < 0.6:
            addr = ".".join(str(rng.randrange(256)) for _ in range(3)) + ".0"
            option = dns.edns.ECSOption(addr, rng.choice([0, 8, 16, 24, 32]))
        else:
            option = dns.edns.ECSOption(f"2a02:{rng.randrange(65536):x}::", rng.choice([32, 48]))
        msg = dns.message.make_query(name, rng.choice(["A", "AAAA", "MX", "ANY", "TXT"]),
                                     use_edns=None if rng.random() < 0.1 else 0,
                                     options=[option] if rng.random() < 0.9 else [],
                                     payload=rng.choice([512, 1232, 4096]),
                                     want_dnssec=rng.random() < 0.3)
        msg.flags = rng.choice([0, 0x100, 0x10])
        out.append(msg.to_wire())
    return out


def test_cold_path_answers_byte_identical_to_python():
    """The C cold path (region map + templates) and the Python path give the same bytes, on a
    random query set, twice over (the second pass mostly from C's templates)."""
    if not FAST_UDP_BUILT:
        pytest.skip(NOT_BUILT)
    from geodns import _fastudp

    engine = demo_engine()
    answered = 0
    for data in _cold_queries(7, 1500) * 2:
        fast = _fastudp.answer_common(data, engine.fast_state())
        python, _ = engine.respond_uncached(data, "127.0.0.1", False)
        if fast is not None:
            answered += 1
            assert fast == python, data.hex()
    assert answered > 1000
