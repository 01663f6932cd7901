"""Prometheus and Grafana for the deployments: the scrape configuration of every component.

Rules:

* ``prometheus_config(dns, edges, interval)`` is Prometheus's configuration (a document to
  write as JSON, which is YAML too) scraping GeoDNS's ``/metrics`` (``[dns] metrics_listen``)
  in job ``geodns`` and every edge's admin ``/metrics`` (``[edge] admin_listen``) in job
  ``edges``, each edge target labelled with its ``region`` and ``edge_name``, and every
  origin's ``/metrics`` (origin/api.py) in job ``origins``. Used by the
  compose file (below) and by the test that runs a real Prometheus against the local demo.
* In the container deployment GeoDNS serves its metrics on ``0.0.0.0:9153`` and every edge
  its admin listener on ``0.0.0.0:9180``; service ``prometheus`` (port 9090 on the host's
  127.0.0.1) scrapes them every 5 s with ``deploy/prometheus/prometheus.yml`` (generated), and
  service ``grafana`` (port 3000 on 127.0.0.1, anonymous viewer) shows the dashboard
  ``deploy/grafana/dashboards/geoedge.json`` through the provisioning files next to it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

METRICS_PORT = 9153  # GeoDNS's /metrics in the containers
ADMIN_PORT = 9180  # every edge's admin listener (/metrics) in the containers
PROMETHEUS_FILE = "deploy/prometheus/prometheus.yml"
PROMETHEUS_IMAGE = "prom/prometheus:v2.53.0"
GRAFANA_IMAGE = "grafana/grafana:11.1.0"
PROMETHEUS_PORT = 9090
GRAFANA_PORT = 3000
SCRAPE_INTERVAL = "5s"


def prometheus_config(dns: Sequence[str], edges: Sequence[tuple[str, str, str]],
                      interval: str = SCRAPE_INTERVAL,
                      origins: Sequence[str] = ()) -> dict[str, Any]:
    """``dns``: GeoDNS HOST:PORT targets; ``edges``: (HOST:PORT, region, edge name);
    ``origins``: the origins' HOST:PORT (their ``/metrics``)."""
    jobs = [
        {"job_name": "geodns", "static_configs": [{"targets": list(dns)}]},
        {"job_name": "edges", "static_configs": [
            {"targets": [target], "labels": {"region": region, "edge_name": name}}
            for target, region, name in edges]},
    ]
    if origins:
        jobs.append({"job_name": "origins", "static_configs": [{"targets": list(origins)}]})
    return {"global": {"scrape_interval": interval, "evaluation_interval": interval},
            "scrape_configs": jobs}


def dump_config(config: dict[str, Any], header: Sequence[str] = ()) -> str:
    """The configuration as JSON (valid YAML), after ``#`` header lines."""
    lines = [f"# {line}" if line else "#" for line in header]
    return "\n".join([*lines, json.dumps(config, indent=2)]) + "\n"


def container_settings(out: dict[str, Any]) -> None:
    """Set the container topology's metrics listeners (``out``: the raw TOML, changed)."""
    out["dns"] = {**out.get("dns", {}), "metrics_listen": f"0.0.0.0:{METRICS_PORT}"}
    out["edge"] = {**out.get("edge", {}), "admin_listen": f"0.0.0.0:{ADMIN_PORT}"}


def container_prometheus(topology: Any) -> dict[str, Any]:
    """The scrape configuration of the compose deployment (``topology``: the container one)."""
    edges = [(f"edge-{e.name}:{ADMIN_PORT}", e.region, e.name) for e in topology.edges]
    origins = [f"{o.name}:{o.port}" for o in topology.cdn.origins]
    return prometheus_config([f"geodns:{METRICS_PORT}"], edges, origins=origins)


def monitoring_services(backbone: str) -> dict[str, Any]:
    """The ``prometheus`` and ``grafana`` compose services."""
    check = ["CMD", "wget", "-q", "-O", "/dev/null"]
    prometheus = {
        "image": PROMETHEUS_IMAGE,
        "command": ["--config.file=/etc/prometheus/prometheus.yml",
                    "--storage.tsdb.path=/prometheus"],
        "volumes": [f"./{PROMETHEUS_FILE}:/etc/prometheus/prometheus.yml:ro"],
        "ports": [f"127.0.0.1:{PROMETHEUS_PORT}:{PROMETHEUS_PORT}"],
        "networks": {backbone: {}},  # GeoDNS and every edge are on the backbone
        "depends_on": {"geodns": {"condition": "service_healthy"}},
        "healthcheck": {"test": [*check, f"http://127.0.0.1:{PROMETHEUS_PORT}/-/ready"],
                        "interval": "5s", "timeout": "3s", "retries": 3, "start_period": "5s"},
    }
    grafana = {
        "image": GRAFANA_IMAGE,
        "environment": {"GF_AUTH_ANONYMOUS_ENABLED": "true",
                        "GF_AUTH_ANONYMOUS_ORG_ROLE": "Viewer",
                        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH":
                            "/var/lib/grafana/dashboards/geoedge.json"},
        "volumes": ["./deploy/grafana/provisioning:/etc/grafana/provisioning:ro",
                    "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro"],
        "ports": [f"127.0.0.1:{GRAFANA_PORT}:{GRAFANA_PORT}"],
        "networks": {backbone: {}},
        "depends_on": {"prometheus": {"condition": "service_healthy"}},
    }
    return {"prometheus": prometheus, "grafana": grafana}


__all__ = ["container_prometheus", "container_settings", "dump_config", "monitoring_services",
           "prometheus_config"]
