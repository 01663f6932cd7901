"""The demo's graceful stop (geoedge/demo/drain.py): edges are drained through their admin
API, against a real edge, before the supervisor signals them."""

from __future__ import annotations

import pytest
from edgeutil import DEFAULT_EDGE, edge_env, topology_dict

from geoconfig.topology import parse_topology
from geoedge.demo.drain import drain_edges, drain_wait
from geoedge.demo.services import Probe, Service

__all__ = ["edge_env"]

FAST_HEALTH = {"path": "/healthz", "interval": 0.05, "timeout": 0.05, "rise": 1, "fall": 1}


def edge_service(port: int) -> Service:
    return Service("us-east-1", "edge", "us-east", (), f"127.0.0.1:{port}",
                   Probe("http", "127.0.0.1", port, "/healthz"))


@pytest.mark.parametrize(("health", "wait"), [
    ({"interval": 1.0, "timeout": 1.0, "fall": 2}, 4.0),
    ({"interval": 2.0, "timeout": 0.5, "fall": 3}, 8.5),
])
def test_drain_wait_covers_the_health_checks(health, wait):
    data = topology_dict([], {})
    data["health"] = {"path": "/healthz", "rise": 2, **health}
    assert drain_wait(parse_topology(data)) == wait


async def test_edges_are_drained_then_waited_for(edge_env):
    env = await edge_env()
    data = topology_dict(env.origins, DEFAULT_EDGE)
    data["health"] = FAST_HEALTH
    lines: list[str] = []
    await drain_edges(parse_topology(data), [edge_service(env.edge.port)], lines.append)
    assert (await env.get("/healthz")).status == 503
    assert (await env.get("/healthz")).body == b"draining\n"
    assert lines == ["draining us-east-1: waiting 0.15 s for GeoDNS's health checks to move "
                     "clients away"]


async def test_an_edge_that_refuses_the_drain_is_reported(edge_env):
    env = await edge_env()
    data = topology_dict(env.origins, {**DEFAULT_EDGE, "purge_token": "not-the-edge-token"})
    data["health"] = FAST_HEALTH
    lines: list[str] = []
    await drain_edges(parse_topology(data), [edge_service(env.edge.port)], lines.append)
    assert lines[0] == "!!  us-east-1 did not accept the drain (status 401)"
    assert (await env.get("/healthz")).status == 200


async def test_without_a_purge_token_nothing_is_drained():
    data = topology_dict([], {})
    data["edge"].pop("purge_token", None)
    lines: list[str] = []
    await drain_edges(parse_topology(data), [edge_service(1)], lines.append)
    assert lines == ["!!  no edge.purge_token: edges cannot be drained first, stopping them now"]
