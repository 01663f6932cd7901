"""A real Prometheus (Debian package ``prometheus``) scraping the real local demo.

``geoedge demo`` runs on free ports (twelve processes); Prometheus gets the scrape
configuration of geoedge/deploy/monitoring.py for GeoDNS's metrics listener and every edge's
admin listener, with a 1 s scrape interval. Queries made through GeoDNS must then show up
through Prometheus's HTTP API (polled with a deadline), every target must be up, and every
expression of the Grafana dashboard must evaluate.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from demoutil import DemoProcess, demo_config, fetch, free_port
from dnsutil import query

from geoconfig.topology import load_topology
from geoedge.deploy.monitoring import dump_config, prometheus_config

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "geoedge.json"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
GB = "81.2.69.0/24"


def api(base: str, path: str, **params: str) -> dict[str, Any]:
    url = f"{base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def poll(predicate, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.25)


@pytest.fixture
def demo(tmp_path: Path):
    config, ports = demo_config(tmp_path)
    proc = DemoProcess(config)
    try:
        proc.wait_for(r"All 12 processes are up", 90)
        proc.wait_for(r"GeoDNS metrics: http://127\.0\.0\.1:\d+/metrics", 10)
        yield proc, ports, config
    finally:
        proc.close()


@pytest.fixture
def prometheus(tmp_path: Path, demo):
    if not Path(PROMETHEUS).exists():
        pytest.fail("prometheus is not installed (apt-get install prometheus; see .ci/run)")
    _proc, ports, config = demo
    topology = load_topology(config)
    edges = [(f"{e.ipv4}:{ports.admin}", e.region, e.name) for e in topology.edges]
    conf = tmp_path / "prometheus.yml"
    origins = [f"{o.host}:{o.port}" for o in topology.cdn.origins]
    conf.write_text(dump_config(prometheus_config([f"127.0.0.1:{ports.metrics}"], edges, "1s",
                                                  origins)))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={conf}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as resp:
                    return resp.status == 200
            except OSError:
                return False

        assert poll(ready, 30), (tmp_path / "prometheus.log").read_text()
        yield base, ports, topology
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def test_prometheus_scrapes_the_demo(prometheus) -> None:
    base, ports, topology = prometheus
    for _ in range(5):
        query(ports.dns, "www.example.test", subnet=GB)
    edge = next(e for e in topology.edges if e.region == "eu-west")
    assert fetch(edge.ipv4, ports.edge)[0] == 200

    def series(expr: str) -> list[dict[str, Any]]:
        out = api(base, "query", query=expr)
        assert out["status"] == "success", out
        return out["data"]["result"]

    # every target (GeoDNS, the six edges' admin listeners, the two origins) is scraped and up
    up = poll(lambda: (r := series("up")) and len(r) == 9 and
              all(x["value"][1] == "1" for x in r) and r, 30)
    assert up, series("up")
    assert {x["metric"]["job"] for x in up} == {"geodns", "edges", "origins"}
    # the origins count what reached them (the fetch below makes at least one request)
    # the queries above, counted by GeoDNS in C, labelled with the answered region
    expr = 'geoedge_dns_queries_total{proto="udp",qtype="A",rcode="NOERROR",region="eu-west"}'
    got = poll(lambda: (r := series(expr)) and float(r[0]["value"][1]) >= 5 and r, 30)
    assert got, series("geoedge_dns_queries_total")
    assert got[0]["metric"]["job"] == "geodns"
    regions = poll(lambda: (r := series("geoedge_dns_region_up")) and len(r) == 3 and r, 10)
    assert {x["metric"]["region"] for x in regions} == {"us-east", "eu-west", "ap-southeast"}
    # the edge's own request counter, through its admin listener, with the region label
    hits = poll(lambda: (r := series(f'geoedge_requests_total{{edge="{edge.name}"}}'))
                and float(r[0]["value"][1]) >= 1 and r, 30)
    assert hits and hits[0]["metric"]["region"] == "eu-west"
    served = poll(lambda: (r := series("sum(geoedge_origin_server_requests_total)"))
                  and float(r[0]["value"][1]) >= 1 and r, 30)
    assert served, series("geoedge_origin_server_requests_total")
    # every expression of the Grafana dashboard is valid PromQL over these series
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            out = api(base, "query", query=target["expr"])
            assert out["status"] == "success", (panel["title"], target["expr"], out)


def test_the_demo_plan_serves_every_components_metrics(tmp_path: Path) -> None:
    """Pure: GeoDNS gets --metrics-listen (dns.metrics_listen, else 127.0.0.1:9153), every edge
    an admin listener on its own address (the port of edge.admin_listen, else 9180)."""
    from geoedge.demo.services import plan

    demo = ROOT / "examples" / "demo.toml"
    services = plan(load_topology(demo), demo, None, tmp_path)
    dns = next(s for s in services if s.role == "dns")
    assert dns.argv[dns.argv.index("--metrics-listen") + 1] == "127.0.0.1:9153"
    assert dns.metrics == "http://127.0.0.1:9153/metrics"
    edges = [s for s in services if s.role == "edge"]
    assert len(edges) == 6
    for s in edges:
        host = s.address.rsplit(":", 1)[0]
        assert s.argv[s.argv.index("--admin-listen") + 1] == f"{host}:9180"
        assert s.metrics == f"http://{host}:9180/metrics"
    config, ports = demo_config(tmp_path)
    services = plan(load_topology(config), config, None, tmp_path)
    assert {s.metrics.rsplit(":", 1)[1] for s in services if s.metrics} == {
        f"{ports.metrics}/metrics", f"{ports.admin}/metrics"}
