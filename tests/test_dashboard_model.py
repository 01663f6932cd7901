"""The dashboard's pure part (geoedge/demo/dashboard/model.py), table-driven."""

from __future__ import annotations

import pytest
from demoutil import DEMO

from geoconfig.topology import load_topology
from geodata import GeoReader
from geoedge.demo.dashboard import model
from geoedge.demo.dashboard.collector import _url, ecs_query


@pytest.mark.parametrize(("wanted", "health", "state"), [
    (True, 200, "up"), (True, 503, "draining"), (True, 500, "down"), (True, None, "down"),
    (False, 503, "draining"), (False, None, "stopped"), (False, 200, "stopped"),
])
def test_edge_state(wanted: bool, health: int | None, state: str) -> None:
    assert model.edge_state(wanted, health) == state


@pytest.mark.parametrize(("edges", "state"), [
    (["up", "up"], "up"), (["up", "draining"], "degraded"), (["down", "stopped"], "down"),
    (["draining", "draining"], "down"), ([], "down"),
])
def test_region_state(edges: list[str], state: str) -> None:
    assert model.region_state(edges) == state


@pytest.mark.parametrize(("counters", "traffic", "ratio"), [
    ({}, 0, None),
    ({"requests": 50}, 0, None),  # health probes and admin answers are not traffic
    ({"hits": 3, "misses": 1, "requests": 9}, 4, 0.75),
    ({"hits": 1, "stale": 1, "misses": 1, "revalidations": 1, "passes": 4}, 8, 0.25),
])
def test_traffic_and_hit_ratio(counters: dict[str, int], traffic: int,
                               ratio: float | None) -> None:
    assert model.traffic(counters) == traffic
    assert model.hit_ratio(counters) == ratio


def test_rate_over_the_window_and_after_a_restart() -> None:
    r = model.Rate(window=5.0)
    assert r.add(0.0, 100) == 0.0
    assert r.add(1.0, 110) == 10.0
    assert r.add(2.0, 130) == 15.0
    for t in range(3, 10):
        r.add(float(t), 130 + 20 * (t - 2))
    assert r.value == 20.0 and r.samples[0][0] >= 9.0 - 5.0 - 1.0
    assert r.add(10.0, 5) == 0.0  # the edge restarted: its counters start again
    assert r.add(11.0, 15) == 10.0
    assert list(r.history)[-2:] == [0.0, 10.0]


def test_origin_requests_leave_out_health_probes() -> None:
    stats = {"requests": {"/healthz": 40, "/index.html": 3, "/static/a.css": 2}}
    assert model.origin_requests(stats) == 5
    assert model.origin_requests({"requests": "bad"}) == 0


def test_answer_region() -> None:
    edges = {"127.0.2.1": "eu-west", "127.0.2.2": "eu-west", "127.0.1.1": "us-east"}
    assert model.answer_region(["127.0.2.1", "127.0.2.2"], edges) == "eu-west"
    assert model.answer_region(["127.0.2.1", "127.0.1.1"], edges) is None
    assert model.answer_region(["10.0.0.1"], edges) is None
    assert model.answer_region([], edges) is None


def test_sample_clients_of_the_demo_regions() -> None:
    topology = load_topology(DEMO)
    reader = GeoReader()
    try:
        samples = model.sample_clients(reader, [rc.region for rc in topology.regions],
                                       topology.default_region)
    finally:
        reader.close()
    assert {r: (ip, loc.country) for r, (ip, loc) in samples.items()} == {
        "us-east": ("8.8.8.8", "US"), "eu-west": ("81.2.69.160", "GB"),
        "ap-southeast": ("1.0.16.1", "JP")}


def test_dns_queries_by_region() -> None:
    text = """# HELP geoedge_dns_queries_total Queries
# TYPE geoedge_dns_queries_total counter
geoedge_dns_queries_total{proto="udp",qtype="A",rcode="NOERROR",region="eu-west"} 10.0
geoedge_dns_queries_total{proto="tcp",qtype="AAAA",rcode="NOERROR",region="eu-west"} 2.0
geoedge_dns_queries_total{proto="udp",qtype="SOA",rcode="NOERROR",region=""} 7.0
geoedge_dns_queries_created{proto="udp",qtype="A",rcode="NOERROR",region="eu-west"} 1.7e9
geoedge_dns_ecs_total{present="true"} 3.0
"""
    assert model.dns_queries_by_region(text) == {"eu-west": 12.0, "": 7.0}


def test_parse_explain() -> None:
    lines = ["client      81.2.69.160 (as ECS 81.2.69.160/24)",
             "answer      www.example.test. -> eu-west",
             "              A    127.0.2.1 127.0.2.2   TTL 30",
             "answer      cdn.example.test. -> CNAME www.example.test. -> eu-west",
             "ecs scope   /18 for geo-routed names, /0 for the others"]
    assert model.parse_explain(lines) == ("eu-west", 18)
    assert model.parse_explain(["geoedge: not an IP address"]) == (None, None)


def test_ecs_query_and_metrics_url() -> None:
    q = ecs_query("www.example.test.", "81.2.69.160")
    opt = next(rr for rr in q.ar)
    assert opt.rdata[0].code == 8 and opt.rdata[0].data == bytes([0, 1, 24, 0, 81, 2, 69])
    q6 = ecs_query("www.example.test.", "2001:db8::1", "AAAA")
    assert q6.ar[0].rdata[0].data[:4] == bytes([0, 2, 56, 0])
    assert len(q6.ar[0].rdata[0].data) == 4 + 7
    assert _url("127.0.0.1:9153") == "http://127.0.0.1:9153/metrics"
    assert _url(("::1", 9153)) == "http://[::1]:9153/metrics"
    assert _url("[::1]:9153") == "http://[::1]:9153/metrics"
