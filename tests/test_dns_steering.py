"""Steering (#15 §4): weights, drained regions, per-name pools with their own health checks,
answer-set sizes and fallbacks. The pure policy table-driven (geodns/steering.py), the config's
errors, the engine's per-selection region maps (scopes correct and widest per name, drained
or failed), tunable health probes against real endpoints (HTTP, HTTPS with a CA made here,
TCP), and a live server asked by dnspython and dig."""

from __future__ import annotations

import asyncio
import http.server
import ssl
import threading
from collections import Counter
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import dns.message
import dns.rdatatype
import pytest
from dnsutil import DEMO, UDP_LOOPS, ServerThread, addresses, dig, ecs_scope, free_port, query

from geoconfig.topology import Edge, HealthSettings, Probe, load_topology
from geoconfig.validate import ConfigError
from geodata import GeoReader, rank_regions
from geodata.regionmap import SLOW
from geodns.engine import Engine
from geodns.health import HealthChecker
from geodns.main import load_engine
from geodns.steering import (
    FAILED_OPEN,
    FALLBACK,
    UP,
    Member,
    Serve,
    answer_set,
    choose,
    weighted_order,
)
from geodns.wire import text_to_name

FIXTURES = Path(__file__).parent / "fixtures"

# ------------------------------------------------------------------------ the pure policy


def m(name: str, weight: int = 1, v6: bool = True) -> Member:
    n = int(name[-1])
    return Member(name, name, f"192.0.2.{n}", f"2001:db8::{n}" if v6 else None, weight)


A1, A2, B1, B2, C1 = m("a1"), m("a2"), m("b1"), m("b2"), m("c3")
SERVE = Serve(("a", "b", "c"), (("a", (A1, A2)), ("b", (B1, B2)), ("c", (C1,))))
ORDER_ABC, ORDER_BCA = ("a", "b", "c"), ("b", "c", "a")
ALL_DOWN = {"a1": False, "a2": False, "b1": False, "b2": False, "c3": False}


def serve(**kw) -> Serve:
    fields = {"regions": SERVE.regions, "members": SERVE.members, **kw}
    return Serve(**fields)


@pytest.mark.parametrize("sv,order,health,expected", [
    (SERVE, ORDER_ABC, {}, ("a", UP)),
    (SERVE, ORDER_BCA, {}, ("b", UP)),
    (SERVE, ORDER_ABC, {"a1": False}, ("a", UP)),  # one edge left is enough
    (SERVE, ORDER_ABC, {"a1": False, "a2": False}, ("b", UP)),
    (SERVE, ORDER_ABC, ALL_DOWN, ("a", FAILED_OPEN)),
    (serve(drained=frozenset({"a"})), ORDER_ABC, {}, ("b", UP)),  # drained: next region
    (serve(drained=frozenset({"a"})), ORDER_ABC, ALL_DOWN, ("b", FAILED_OPEN)),
    (serve(drained=frozenset({"a", "b", "c"})), ORDER_BCA, {}, ("b", FAILED_OPEN)),
    (serve(regions=("c",)), ORDER_ABC, {}, ("c", UP)),  # a name allowed in c only
    (serve(regions=("b", "c")), ORDER_ABC, {"b1": False, "b2": False}, ("c", UP)),
    (serve(fallback=(("198.51.100.1",), ())), ORDER_ABC, ALL_DOWN, ("", FALLBACK)),
    (serve(fallback=(("198.51.100.1",), ())), ORDER_ABC, {"a1": False}, ("a", UP)),
    # weight 0 edges do not keep a region up
    (serve(members=(("a", (m("a1", 0), A2)), ("b", (B1,)), ("c", (C1,)))), ORDER_ABC,
     {"a2": False}, ("b", UP)),
])
def test_choose(sv: Serve, order, health, expected) -> None:
    assert choose(sv, order, health) == expected


def draws(*values: float):
    it = iter(values)
    return lambda: next(it)


@pytest.mark.parametrize("sv,choice,health,draw,expected", [
    (SERVE, ("a", UP), {}, None, (("192.0.2.1", "192.0.2.2"), ("2001:db8::1", "2001:db8::2"))),
    (SERVE, ("a", UP), {"a1": False}, None, (("192.0.2.2",), ("2001:db8::2",))),
    (SERVE, ("a", FAILED_OPEN), ALL_DOWN, None,
     (("192.0.2.1", "192.0.2.2"), ("2001:db8::1", "2001:db8::2"))),
    (serve(fallback=(("198.51.100.1",), ("2001:db8:f::1",))), ("", FALLBACK), ALL_DOWN, None,
     (("198.51.100.1",), ("2001:db8:f::1",))),
    # answer-set size 1 with equal weights: a random one (draws pick the larger key)
    (serve(addresses=1), ("a", UP), {}, draws(0.2, 0.9), (("192.0.2.2",), ("2001:db8::2",))),
    (serve(addresses=1), ("a", UP), {}, draws(0.9, 0.2), (("192.0.2.1",), ("2001:db8::1",))),
    # weights: key draw ** (1 / weight): a2 (weight 3) 0.5 ** (1/3) = 0.79 beats a1's 0.6
    (serve(members=(("a", (A1, m("a2", 3))),)), ("a", UP), {}, draws(0.6, 0.5),
     (("192.0.2.2", "192.0.2.1"), ("2001:db8::2", "2001:db8::1"))),
    (serve(members=(("a", (A1, m("a2", 3))),)), ("a", UP), {}, draws(0.9, 0.5),
     (("192.0.2.1", "192.0.2.2"), ("2001:db8::1", "2001:db8::2"))),
    # a weight-0 edge is never answered while another is up
    (serve(members=(("a", (m("a1", 0), A2)),)), ("a", UP), {}, None,
     (("192.0.2.2",), ("2001:db8::2",))),
    # an edge without IPv6: the families are sized separately
    (serve(members=(("a", (m("a1", v6=False), A2)),), addresses=1), ("a", UP), {},
     draws(0.9, 0.2), (("192.0.2.1",), ("2001:db8::2",))),
])
def test_answer_set(sv: Serve, choice, health, draw, expected) -> None:
    assert answer_set(sv, choice, health, draw) == expected


def test_weighted_order_follows_weights() -> None:
    import random
    draw = random.Random(15).random
    members = (m("a1", 1), m("a2", 3))
    firsts = Counter(weighted_order(members, draw)[0].name for _ in range(4000))
    assert 0.70 < firsts["a2"] / 4000 < 0.80  # 3 / (1 + 3), a fixed seed


def test_weighted_flag() -> None:
    assert not SERVE.weighted
    assert serve(addresses=1).weighted
    assert not serve(addresses=2).weighted  # every region has at most 2 edges
    assert serve(members=(("a", (A1, m("a2", 2))),)).weighted
    assert not serve(members=(("a", (m("a1", 0), A2)),)).weighted  # one live edge


# ------------------------------------------------------------------------ config

EXTRA = """
[[pools]]
name = "api"
edges = ["us-east-2", "eu-west-1"]
health = { path = "/api", host = "api.example.test", status = [200, 204], interval = 0.5 }

[[pools]]
name = "plain"
edges = ["ap-southeast-1", "eu-west-2"]
"""
GEO = """geo = [
  { name = "www", ttl = 30 },
  { name = "eu", ttl = 20, regions = ["eu-west"] },
  { name = "api", pool = "api", ttl = 10, addresses = 1 },
  { name = "one", addresses = 1 },
  { name = "plain", pool = "plain" },
  { name = "fb", regions = ["ap-southeast"], fallback = ["192.0.2.99", "2001:db8::99"] },
]
"""


def steering_text(edge_port: int = 8080, drain: str = "", extra: str = EXTRA,
                  geo: str = GEO) -> str:
    text = DEMO.read_text().replace("port = 8080", f"port = {edge_port}")
    text = text.replace('geo = [\n  { name = "www", ttl = 30 },\n]\n', geo)
    if drain:
        text = text.replace(f'name = "{drain}"\n', f'name = "{drain}"\nweight = 0\n', 1)
    return text + extra


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "topology.toml"
    path.write_text(text)
    return path


def test_config_values(tmp_path) -> None:
    top = load_topology(write(tmp_path, steering_text(drain="eu-west")))
    assert top.region("eu-west").weight == 0 and top.region("us-east").weight == 1
    api, plain = top.pools
    assert [e.name for e in api.edges] == ["us-east-2", "eu-west-1"]
    assert api.health is not None and api.health.host == "api.example.test"
    assert api.health.status == (200, 204) and api.health.interval == 0.5
    assert api.health.timeout == top.health.timeout  # the rest from [health]
    assert plain.health is None
    assert [p.key for p in top.pool_probes()] == ["api/us-east-2", "api/eu-west-1"]
    geo = {g.name: g for g in top.zones[0].geo}
    assert geo["api.example.test."].regions == ("us-east", "eu-west")
    assert geo["api.example.test."].addresses == 1
    assert geo["fb.example.test."].fallback == ("192.0.2.99", "2001:db8::99")


BAD = [
    ('[[pools]]\nname = "p"\nedges = ["nope"]\n', GEO, "pools[0].edges[0]"),
    ('[[pools]]\nname = "p"\nedges = []\n', GEO, "pools[0].edges"),
    ('[[pools]]\nname = "p p"\nedges = ["us-east-1"]\n', GEO, "pools[0].name"),
    ('[[pools]]\nname = "p"\nedges = ["us-east-1", "us-east-1"]\n', GEO, "pools[0].edges[1]"),
    ('[[pools]]\nname = "p"\nedges = ["us-east-1"]\nhealth = { check = "icmp" }\n', GEO,
     "pools[0].health.check"),
    ('[[pools]]\nname = "p"\nedges = ["us-east-1"]\nhealth = { status = [99] }\n', GEO,
     "pools[0].health.status[0]"),
    ('[[pools]]\nname = "p"\nedges = ["us-east-1"]\nhealth = { host = "a b" }\n', GEO,
     "pools[0].health.host"),
    ('[[pools]]\nname = "p"\nedges = ["us-east-1"]\nhealth = { ca_file = "/nonexistent" }\n',
     GEO, "pools[0].health.ca_file"),
    ('[[pools]]\nname = "p"\nedges = ["us-east-1"]\nhealth = { port = 70000 }\n', GEO,
     "pools[0].health.port"),
    ('[[pools]]\nname = "p"\nedges = ["us-east-1"]\nhealth = { bogus = 1 }\n', GEO,
     "pools[0].health.bogus"),
    ("", 'geo = [{ name = "www", pool = "none" }]\n', "zones[0].geo[0].pool"),
    (EXTRA, 'geo = [{ name = "www", pool = "api", regions = ["us-east"] }]\n',
     "zones[0].geo[0].regions"),
    ("", 'geo = [{ name = "www", addresses = 65 }]\n', "zones[0].geo[0].addresses"),
    ("", 'geo = [{ name = "www", fallback = ["nope"] }]\n', "zones[0].geo[0].fallback[0]"),
]


@pytest.mark.parametrize("extra,geo,key", BAD)
def test_config_errors_name_the_key(tmp_path, extra: str, geo: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_topology(write(tmp_path, steering_text(extra=extra, geo=geo)))
    assert err.value.key == key


@pytest.mark.parametrize("old,new,key", [
    ('name = "us-east"\n', 'name = "us-east"\nweight = -1\n', "regions[0].weight"),
    ('{ name = "us-east-1",', '{ name = "us-east-1", weight = 10001,',
     "regions[0].edges[0].weight"),
    ("fall = 2 ", 'check = "udp"\nfall = 2 ', "health.check"),
    ("fall = 2 ", "status = 600\nfall = 2 ", "health.status"),
])
def test_config_errors_weights_and_health(tmp_path, old: str, new: str, key: str) -> None:
    text = steering_text()
    assert old in text
    with pytest.raises(ConfigError) as err:
        load_topology(write(tmp_path, text.replace(old, new, 1)))
    assert err.value.key == key


# ------------------------------------------------------------------------ the engine


def engine_for(tmp_path, db: str = "city-test.mmdb", **kw) -> Engine:
    return Engine(load_topology(write(tmp_path, steering_text(**kw))), GeoReader(FIXTURES / db))


def geo(engine: Engine, name: str):
    return engine.zones.geo_names()[text_to_name(name)]


def assert_scopes_hold(engine: Engine) -> None:
    """Every entry of every map: sampled addresses inside it get the choice claimed for it,
    for every name using that map."""
    for state in engine.map_states:
        assert state.ready.wait(30)
    names = {g: engine.map_of[text_to_name(g.name)] for g in engine.zones.geo_names().values()}
    for g, index in names.items():
        active = engine.map_states[index].active
        for table, bits, cls in ((active.v4, 32, IPv4Address), (active.v6, 64, IPv6Address)):
            for start, plen, val in zip(table.starts, table.plens, table.vals, strict=True):
                if val == SLOW:
                    continue
                claimed = engine.choice(g, active.orders[val])
                size = 1 << (bits - plen)
                for point in (start, start + size // 2, start + size - 1):
                    ip = cls(point if bits == 32 else point << 64)
                    order = rank_regions(engine.reader.locate(ip), engine.regions,
                                         engine.topology.default_region).order
                    assert engine.choice(g, order) == claimed, (g.name, str(ip), plen)


@pytest.mark.parametrize("db", ["merge-test.mmdb", "city-test.mmdb"])
@pytest.mark.parametrize("drain,health", [
    ("", {}), ("eu-west", {}), ("", {"eu-west-1": False, "eu-west-2": False}),
    ("us-east", {"api/eu-west-1": False}),
], ids=["all-up", "eu-drained", "eu-down", "us-drained-api-eu-down"])
def test_scopes_hold_per_name(tmp_path, db: str, drain: str, health: dict) -> None:
    engine = engine_for(tmp_path, db, drain=drain)
    engine.set_health(health)
    assert_scopes_hold(engine)


def test_a_restricted_name_gets_its_own_widest_scopes(tmp_path) -> None:
    engine = engine_for(tmp_path, "merge-test.mmdb")
    for state in engine.map_states:
        assert state.ready.wait(30)
    eu = engine.map_states[engine.map_of[text_to_name("eu.example.test.")]].active
    www = engine.map_states[engine.map_of[text_to_name("www.example.test.")]].active
    assert len(eu) < len(www)  # one region answers every client of "eu": merged wide
    assert engine.map_of[text_to_name("cdn.example.test.")] == engine.map_of[
        text_to_name("www.example.test.")]  # a CNAME to a geo name uses that name's map
    assert engine.map_of[text_to_name("one.example.test.")] == engine.map_of[
        text_to_name("www.example.test.")]  # same selection: one map


def test_drained_region_moves_answers_without_a_health_failure(tmp_path) -> None:
    engine = engine_for(tmp_path, drain="eu-west")
    order = ("eu-west", "us-east", "ap-southeast")
    assert engine.addresses(geo(engine, "www.example.test."), order)[0] == (
        "127.0.1.1", "127.0.1.2")
    assert engine.health == {}  # nothing was marked down
    # a name allowed only in the drained region fails open to it
    assert engine.choice(geo(engine, "eu.example.test."), order) == ("eu-west", FAILED_OPEN)


def test_pool_has_its_own_health_and_edges(tmp_path) -> None:
    engine = engine_for(tmp_path)
    api, order = geo(engine, "api.example.test."), ("eu-west", "us-east", "ap-southeast")
    assert engine.addresses(api, order) == (("127.0.2.1",), ("fd00:0:0:2::1",))
    engine.set_health({"eu-west-1": False})  # the edge's own check: not the pool's
    assert engine.addresses(api, order) == (("127.0.2.1",), ("fd00:0:0:2::1",))
    assert engine.addresses(geo(engine, "www.example.test."), order)[0] == ("127.0.2.2",)
    engine.set_health({"api/eu-west-1": False})  # the pool's check of it
    assert engine.addresses(api, order) == (("127.0.1.2",), ("fd00:0:0:1::2",))
    plain = geo(engine, "plain.example.test.")  # a pool without its own checks
    assert engine.addresses(plain, order) == (("127.0.2.2",), ("fd00:0:0:2::2",))
    engine.set_health({"eu-west-2": False})
    assert engine.addresses(plain, order) == (("127.0.3.1",), ("fd00:0:0:3::1",))


def test_fallback_when_every_region_is_down(tmp_path) -> None:
    engine = engine_for(tmp_path)
    fb = geo(engine, "fb.example.test.")
    engine.set_health({"ap-southeast-1": False, "ap-southeast-2": False})
    assert engine.addresses(fb, ("us-east", "eu-west", "ap-southeast")) == (
        ("192.0.2.99",), ("2001:db8::99",))


def ask_wire(engine: Engine, name: str, subnet: tuple[str, int] | None = None) -> bytes:
    options = [dns.edns.ECSOption(*subnet)] if subnet else []
    msg = dns.message.make_query(name, "A", use_edns=0 if subnet else False, options=options)
    out = engine.respond(msg.to_wire(), "127.0.0.1")
    assert out is not None
    return out


def test_weighted_answers_are_drawn_per_response_and_never_cached(tmp_path) -> None:
    engine = engine_for(tmp_path)
    seen = Counter()
    for _ in range(60):
        msg = dns.message.from_wire(ask_wire(engine, "one.example.test.", ("81.2.69.160", 24)))
        got = addresses(msg)
        assert len(got) == 1
        seen[got.pop()] += 1
    assert len(seen) == 2  # both edges of the region show up
    assert not any(k.startswith(b"\x03one") for k in engine.templates)
    assert all(b"\x03one" not in k for k in engine.wire_udp)
    # an unweighted name is cached as before
    ask_wire(engine, "www.example.test.", ("81.2.69.160", 24))
    assert any(b"\x03www" in k for k in engine.wire_udp)


# ------------------------------------------------------------------------ tunable probes


class Recorder(http.server.BaseHTTPRequestHandler):
    status = 204
    hosts: list[str] = []

    def do_GET(self) -> None:
        type(self).hosts.append(f"{self.path} {self.headers.get('Host')}")
        self.send_response(self.status if self.path == "/api" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def serve_http(context: ssl.SSLContext | None = None) -> http.server.ThreadingHTTPServer:
    Recorder.hosts = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    if context is not None:
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    return httpd


def edge_on(port: int, answered: str = "192.0.2.1") -> Edge:
    # the answered address is not where the probe goes: check_address is
    return Edge("e", "r", answered, None, port, "127.0.0.1")


async def probe_once(edge: Edge, settings: HealthSettings) -> bool:
    checker = HealthChecker((), settings, lambda h: None)
    await checker.start()
    try:
        return await checker.probe(edge, settings)
    finally:
        await checker.stop()


def test_http_probe_host_status_and_port() -> None:
    httpd = serve_http()
    try:
        port = httpd.server_address[1]
        wanted = HealthSettings(path="/api", host="api.example.test", status=(204,))
        assert asyncio.run(probe_once(edge_on(port), wanted))
        assert Recorder.hosts == ["/api api.example.test"]
        assert not asyncio.run(probe_once(edge_on(port), HealthSettings(path="/api",
                                                                        status=(200,))))
        assert asyncio.run(probe_once(edge_on(port), HealthSettings(path="/api")))  # 2xx
        # another port than the answered one
        moved = HealthSettings(path="/api", port=port)
        assert asyncio.run(probe_once(edge_on(free_port()), moved))
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_https_probe_verifies_the_certificate(tmp_path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("api.example.test").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    httpd = serve_http(server_ctx)
    try:
        port = httpd.server_address[1]
        good = HealthSettings(path="/api", host="api.example.test", check="https",
                              ca_file=str(ca_file))
        assert asyncio.run(probe_once(edge_on(port), good))
        wrong_name = HealthSettings(path="/api", host="other.example.test", check="https",
                                    ca_file=str(ca_file))
        assert not asyncio.run(probe_once(edge_on(port), wrong_name))
        unknown_ca = HealthSettings(path="/api", host="api.example.test", check="https")
        assert not asyncio.run(probe_once(edge_on(port), unknown_ca))
        unverified = HealthSettings(path="/api", check="https", tls_verify=False)
        assert asyncio.run(probe_once(edge_on(port), unverified))
        plain_http = HealthSettings(path="/api")  # HTTP to a TLS port fails
        assert not asyncio.run(probe_once(edge_on(port), plain_http))
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_tcp_probe_only_connects() -> None:
    httpd = serve_http()
    try:
        port = httpd.server_address[1]
        assert asyncio.run(probe_once(edge_on(port), HealthSettings(check="tcp")))
        assert Recorder.hosts == []  # no request was sent
        assert not asyncio.run(probe_once(edge_on(free_port()), HealthSettings(check="tcp")))
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_pool_probes_are_keyed_and_use_their_settings() -> None:
    httpd = serve_http()
    changes: list[dict] = []
    try:
        port = httpd.server_address[1]
        plain = Edge("e1", "r", "192.0.2.1", None, port, "127.0.0.1")
        fast = HealthSettings(path="/healthz", interval=0.05, timeout=0.5, rise=1, fall=1)
        pool = Probe("api/e1", plain, HealthSettings(path="/api", interval=0.05, timeout=0.5,
                                                     rise=1, fall=1))

        async def run() -> dict:
            checker = HealthChecker((plain,), fast, lambda h: changes.append(dict(h)), (pool,))
            await checker.start()
            try:
                for _ in range(200):
                    if changes and changes[-1].get("e1") is False and "api/e1" in checker.states:
                        break
                    await asyncio.sleep(0.02)
                return checker.snapshot()
            finally:
                await checker.stop()

        # /healthz is 404 here, /api is 204: the edge is down for its own check only
        assert asyncio.run(run()) == {"e1": False, "api/e1": True}
    finally:
        httpd.shutdown()
        httpd.server_close()


# ------------------------------------------------------------------------ live server


@pytest.mark.parametrize("loop", UDP_LOOPS)
def test_live_server_steers(tmp_path, loop: str) -> None:
    text = steering_text(drain="eu-west").replace("udp_fast_path = true",
                                                   f"udp_fast_path = {str(loop == 'c').lower()}")
    srv = ServerThread(load_engine(write(tmp_path, text)), udp_loop=loop).start()
    try:
        dublin = "81.2.69.160/24"  # eu-west is nearest, but drained: us-east answers
        msg = query(srv.port, "www.example.test", subnet=dublin, use_edns=0)
        assert addresses(msg) == {"127.0.1.1", "127.0.1.2"}
        assert ecs_scope(msg) > 0
        msg = query(srv.port, "one.example.test", subnet=dublin, use_edns=0)
        assert len(addresses(msg)) == 1 and addresses(msg) <= {"127.0.1.1", "127.0.1.2"}
        msg = query(srv.port, "api.example.test", "AAAA", subnet=dublin, use_edns=0)
        assert addresses(msg) == {"fd00:0:0:1::2"}  # the api pool's us-east edge
        msg = query(srv.port, "eu.example.test", subnet=dublin, use_edns=0)
        assert addresses(msg) == {"127.0.2.1", "127.0.2.2"}  # only eu-west: fail open
        assert msg.answer[0].ttl == 20
        out = dig(srv.port, "api.example.test", "A", "+subnet=81.2.69.160/24", "+norec")
        assert "api.example.test.\t10\tIN\tA\t127.0.1.2" in out, out
    finally:
        srv.stop()
