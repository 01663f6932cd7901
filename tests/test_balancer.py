"""Pure balancer policy: every time-dependent call gets an explicit ``now``."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.balancer import Balancer
from geoconfig.cdnconfig import LB_ALGORITHMS, OriginServer


def pool(*weights: int, names: str = "abcdefghij") -> list[OriginServer]:
    return [OriginServer(names[i], "127.0.0.1", 8000 + i, w) for i, w in enumerate(weights)]


def picks(b: Balancer, n: int, *, now: float = 0.0, key: str = "k", client_ip: str = "10.0.0.1",
          exclude: frozenset[str] = frozenset()) -> str:
    out = []
    for _ in range(n):
        chosen = b.pick(now, key=key, client_ip=client_ip, exclude=exclude)
        assert chosen is not None
        out.append(chosen.name)
    return "".join(out)


# -- round robin -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ((5, 1, 1), "aabacaa" * 2),  # nginx's documented smooth WRR sequence, repeating
        ((1, 1, 1), "abcabc"),
        ((2, 1), "abaaba"),
        ((1,), "aaa"),
        ((1, 3), "babb" * 2),
    ],
)
def test_smooth_weighted_round_robin_sequence(weights, expected):
    assert picks(Balancer(pool(*weights), "round_robin"), len(expected)) == expected


@pytest.mark.parametrize(
    ("down", "exclude", "expected"),
    [
        ("a", "", "bcbc"),
        ("", "a", "bcbc"),
        ("", "ab", "cccc"),
        ("b", "a", "cccc"),
    ],
)
def test_round_robin_skips_down_and_excluded(down, exclude, expected):
    b = Balancer(pool(5, 1, 1), "round_robin")
    for name in down:
        b.set_health(name, False)
    assert picks(b, 4, exclude=frozenset(exclude)) == expected


def test_round_robin_counts_are_exact_for_weights():
    got = picks(Balancer(pool(3, 2, 1), "round_robin"), 600)
    assert (got.count("a"), got.count("b"), got.count("c")) == (300, 200, 100)


# -- least_conn ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("weights", "active", "expected"),
    [
        ((1, 1, 1), (2, 1, 3), "b"),
        ((1, 1, 1), (0, 5, 5), "a"),
        ((4, 1), (2, 1), "a"),  # 2/4 < 1/1
        ((1, 4), (1, 3), "b"),  # 3/4 < 1/1
        ((1, 2), (1, 3), "a"),  # 1/1 < 3/2
    ],
)
def test_least_conn_picks_fewest_active_per_weight(weights, active, expected):
    b = Balancer(pool(*weights), "least_conn")
    for name, count in zip("abc", active, strict=False):
        for _ in range(count):
            b.on_start(name)
    assert picks(b, 1) == expected


def test_least_conn_ties_go_round_robin_and_counts_follow_finish():
    b = Balancer(pool(1, 1, 1), "least_conn")
    b.on_start("a")
    assert picks(b, 4) == "bcbc"  # a busy, b/c tied
    b.on_finish("a", 1.0, 0.01, ok=True)
    assert picks(b, 3) == "abc"  # all tied again: round robin
    for _ in range(3):
        b.on_start("b")
    b.on_finish("b", 1.0, 0.01, ok=None)  # no verdict: still counts the slot
    assert b.state("b").active == 2


# -- ewma ------------------------------------------------------------------------------------

def test_ewma_prefers_faster_origin_and_unknown_gets_tried_first():
    b = Balancer(pool(1, 1, 1), "ewma")
    b.on_start("a")
    b.on_finish("a", 0.0, 0.010, ok=True)
    b.on_start("b")
    b.on_finish("b", 0.0, 0.100, ok=True)
    assert picks(b, 1) == "c"  # unknown latency counts as 0
    b.on_start("c")
    b.on_finish("c", 0.0, 0.500, ok=True)
    assert picks(b, 3) == "aaa"


@pytest.mark.parametrize(
    ("a_active", "expected"),
    [(0, "a"), (5, "a"), (8, "a"), (10, "b"), (20, "b")],  # cost = 0.010 * (active + 1) vs 0.100
)
def test_ewma_cost_includes_in_flight_requests(a_active, expected):
    b = Balancer(pool(1, 1), "ewma")
    b.on_start("a")
    b.on_finish("a", 0.0, 0.010, ok=True)
    b.on_start("b")
    b.on_finish("b", 0.0, 0.100, ok=True)
    for _ in range(a_active):
        b.on_start("a")
    assert picks(b, 1) == expected


def test_ewma_peak_then_time_weighted_decay():
    b = Balancer(pool(1), "ewma", tau=10.0)
    s = b.state("a")
    b.on_start("a")
    b.on_finish("a", 0.0, 0.100, ok=True)
    assert s.latency(0.0, 10.0) == pytest.approx(0.100)
    b.on_start("a")
    b.on_finish("a", 1.0, 1.000, ok=True)  # above the average: peak, taken as is
    assert s.latency(1.0, 10.0) == pytest.approx(1.0)
    b.on_start("a")
    b.on_finish("a", 11.0, 0.100, ok=True)  # 10 s later: w = 1/e
    assert s.ewma == pytest.approx(1.0 / math.e + 0.100 * (1 - 1 / math.e))
    # with no samples the cost decays toward 0, so a once-slow origin is retried eventually
    assert s.latency(21.0, 10.0) == pytest.approx(s.ewma / math.e)
    assert b.snapshot(21.0)[0]["ewma_ms"] == pytest.approx(s.ewma / math.e * 1000, abs=1e-3)


def test_ewma_slow_origin_is_probed_again_after_decay():
    b = Balancer(pool(1, 1), "ewma", tau=10.0)
    for name, latency in (("a", 0.010), ("b", 0.200)):
        b.on_start(name)
        b.on_finish(name, 0.0, latency, ok=True)
    assert picks(b, 1, now=1.0) == "a"
    # a keeps getting fresh samples; b's last sample (0.2 s at t=0) decays below a's 10 ms
    for t in range(1, 40):
        b.on_start("a")
        b.on_finish("a", float(t), 0.010, ok=True)
    assert picks(b, 1, now=40.0) == "b"


def test_ewma_failures_are_not_latency_samples():
    b = Balancer(pool(1, 1), "ewma")
    b.on_start("a")
    b.on_finish("a", 0.0, 0.0001, ok=False)  # a fast "connection refused"
    assert b.state("a").ewma is None


# -- ip_hash ---------------------------------------------------------------------------------

def test_ip_hash_matches_nginx_arithmetic():
    # hash = 89; for byte in 1,2,3: hash = (hash*113 + byte) % 6271  ->  3787, 1505, 751
    # 751 % 3 (total weight) = 1 -> second origin
    assert picks(Balancer(pool(1, 1, 1), "ip_hash"), 3, client_ip="1.2.3.4") == "bbb"


@pytest.mark.parametrize(
    ("ip_a", "ip_b"),
    [
        ("1.2.3.4", "1.2.3.250"),  # same /24
        ("1.2.3.4", "::ffff:1.2.3.9"),  # IPv4-mapped IPv6 is IPv4
        ("2001:db8::1", "2001:db8:0:0::1"),
    ],
)
def test_ip_hash_is_stable(ip_a, ip_b):
    b = Balancer(pool(1, 1, 1, 1, 1), "ip_hash")
    first = picks(b, 5, client_ip=ip_a)
    assert len(set(first)) == 1
    assert picks(b, 1, client_ip=ip_b) == first[0]


def test_ip_hash_spreads_across_many_clients():
    b = Balancer(pool(1, 1, 1), "ip_hash")
    got = "".join(picks(b, 1, client_ip=f"{i // 256}.{i % 256}.{(i * 7) % 256}.1")
                  for i in range(3000))
    for name in "abc":
        assert 0.25 < got.count(name) / len(got) < 0.42


def test_ip_hash_rehashes_past_unavailable_and_keeps_others_stable():
    b = Balancer(pool(1, 1, 1), "ip_hash")
    clients = [f"10.{i}.{i * 3 % 256}.1" for i in range(200)]
    before = {ip: picks(b, 1, client_ip=ip) for ip in clients}
    b.set_health("b", False)
    after = {ip: picks(b, 1, client_ip=ip) for ip in clients}
    assert "b" not in after.values()
    assert all(after[ip] == before[ip] for ip in clients if before[ip] != "b")
    assert after == {ip: picks(b, 1, client_ip=ip) for ip in clients}  # rehash is stable


def test_ip_hash_unparseable_client_falls_back_to_round_robin():
    assert picks(Balancer(pool(1, 1), "ip_hash"), 4, client_ip="unix:/tmp/sock") == "abab"


# -- consistent hash -------------------------------------------------------------------------

KEYS = [f"GET example.com /static/{i}.js" for i in range(10_000)]


def owners(b: Balancer) -> list[str]:
    return [picks(b, 1, key=k) for k in KEYS]


@pytest.mark.parametrize("n", [2, 3, 5, 9])
def test_consistent_hash_adding_a_node_remaps_about_one_in_n(n):
    before = owners(Balancer(pool(*[1] * n), "consistent_hash"))
    after = owners(Balancer(pool(*[1] * (n + 1)), "consistent_hash"))
    new = "abcdefghij"[n]
    moved = [i for i in range(len(KEYS)) if before[i] != after[i]]
    assert all(after[i] == new for i in moved)  # keys only move to the new node
    assert len(moved) / len(KEYS) == pytest.approx(1 / (n + 1), abs=0.06)


def test_consistent_hash_is_sticky_and_weighted():
    b = Balancer(pool(1, 3), "consistent_hash")
    first = owners(b)
    assert first == owners(b)
    assert first.count("b") / len(first) == pytest.approx(0.75, abs=0.06)


def test_consistent_hash_walks_past_unavailable_only_for_their_keys():
    b = Balancer(pool(1, 1, 1), "consistent_hash")
    before = owners(b)
    b.set_health("b", False)
    after = owners(b)
    assert "b" not in after
    assert all(x == y for x, y in zip(before, after, strict=True) if x != "b")
    moved = [y for x, y in zip(before, after, strict=True) if x == "b"]
    assert {"a", "c"} == set(moved)  # b's keys spread over the ring, not onto one node


# -- passive ejection ------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("events", "checks"),
    [
        # max_fails=3 within fail_window=10 -> ejected for fail_timeout=10
        ([(0, False), (1, False), (2, False)], [(2, False), (11.9, False), (12, True)]),
        # spread over more than the window: never 3 within 10 s
        ([(0, False), (6, False), (12, False)], [(12, True), (13, True)]),
        ([(0, False), (5, False), (10, False)], [(10, False), (19.9, False), (20, True)]),  # edge
        # a success clears the failure history
        ([(0, False), (1, False), (1.5, True), (2, False)], [(2, True)]),
        ([(0, False), (1, False)], [(1, True)]),
        # a success during an ejection does not cut it short
        ([(0, False), (1, False), (2, False), (3, True)], [(3, False), (12, True)]),
    ],
)
def test_passive_ejection(events, checks):
    b = Balancer(pool(1, 1), "round_robin", max_fails=3, fail_window=10, fail_timeout=10)
    for now, ok in events:
        b.on_start("a")
        b.on_finish("a", now, 0.01, ok=ok)
    for now, available in checks:
        assert b.available("a", now) is available, now
        assert ("a" in picks(b, 4, now=now)) is available, now


def test_ejection_and_fails_in_snapshot():
    b = Balancer(pool(1, 1), "least_conn", max_fails=2, fail_window=5, fail_timeout=30)
    b.on_start("a")
    b.on_finish("a", 0.0, 0.01, ok=False)
    b.on_start("b")
    rows = {r["name"]: r for r in b.snapshot(1.0)}
    assert rows["a"] == {"name": "a", "weight": 1, "up": True, "ejected": False,
                         "ejected_for": 0.0, "active": 0, "ewma_ms": None, "fails": 1}
    assert rows["b"]["active"] == 1
    b.on_start("a")
    b.on_finish("a", 2.0, 0.01, ok=False)
    assert {r["name"]: (r["ejected"], r["ejected_for"]) for r in b.snapshot(12.0)}["a"] == (
        True, 20.0)


# -- availability, fail-open and exclude -----------------------------------------------------

@pytest.mark.parametrize("algorithm", LB_ALGORITHMS)
def test_all_down_fails_open(algorithm):
    b = Balancer(pool(1, 1, 1), algorithm)
    for name in "abc":
        b.set_health(name, False)
    assert picks(b, 6, exclude=frozenset("a")).strip("bc") == ""
    assert b.pick(0.0, key="k", client_ip="1.2.3.4", exclude=frozenset("abc")) is None
    b.set_health("c", True)
    assert picks(b, 6) == "cccccc"


@pytest.mark.parametrize("algorithm", LB_ALGORITHMS)
def test_ejected_origins_fail_open_too(algorithm):
    b = Balancer(pool(1, 1), algorithm, max_fails=1)
    for name in "ab":
        b.on_start(name)
        b.on_finish(name, 0.0, 0.01, ok=False)
    assert set(picks(b, 4, now=1.0, key="x")) <= {"a", "b"}


@given(
    algorithm=st.sampled_from(LB_ALGORITHMS),
    weights=st.lists(st.integers(1, 5), min_size=1, max_size=6),
    down=st.sets(st.integers(0, 5)),
    exclude=st.sets(st.integers(0, 5)),
    key=st.text(max_size=20),
    client_ip=st.ip_addresses().map(str),
)
def test_pick_honours_exclude_and_prefers_available(algorithm, weights, down, exclude, key,
                                                    client_ip):
    origins = pool(*weights)
    b = Balancer(origins, algorithm)
    names = [o.name for o in origins]
    for i in down & set(range(len(names))):
        b.set_health(names[i], False)
    excluded = frozenset(names[i] for i in exclude if i < len(names))
    chosen = b.pick(0.0, key=key, client_ip=client_ip, exclude=excluded)
    allowed = [n for n in names if n not in excluded]
    if not allowed:
        assert chosen is None
        return
    assert chosen is not None and chosen.name in allowed
    healthy = [n for n in allowed if b.state(n).up]
    if healthy:
        assert chosen.name in healthy


@pytest.mark.parametrize(
    ("origins", "algorithm", "kwargs"),
    [
        (pool(1), "random", {}),
        (pool(1) + pool(1), "round_robin", {}),
        (pool(1), "round_robin", {"max_fails": 0}),
        (pool(1), "ewma", {"tau": 0}),
    ],
)
def test_invalid_configuration_is_rejected(origins, algorithm, kwargs):
    with pytest.raises(ValueError):
        Balancer(origins, algorithm, **kwargs)


def test_empty_pool_picks_nothing():
    assert Balancer([], "consistent_hash").pick(0.0, key="k", client_ip="1.2.3.4") is None
