"""What anyone can read (#11 item 9): metrics and stats only on the admin listener; reserved
paths matched on the path alone, so a query never sends them to the origin or the cache."""

from __future__ import annotations

import pytest
from edgeutil import edge_env

__all__ = ["edge_env"]


@pytest.mark.parametrize("path", ["/metrics", "/metrics?x=1", "/.geoedge/stats",
                                  "/.geoedge/stats?full"])
async def test_private_paths_are_not_public(edge_env, path):
    env = await edge_env()
    env.origin.route(path.split("?")[0], headers=[("Cache-Control", "max-age=60")],
                     body=b"from the origin")
    for _ in range(2):
        r = await env.get(path)
        assert r.status == 404 and b"admin listener" in r.body
    assert env.origin.count() == 0 and len(env.app.store) == 0
    r = await env.private(path)
    assert r.status == 200 and b"from the origin" not in r.body


async def test_healthz_with_a_query_is_the_edges_own(edge_env):
    env = await edge_env()
    env.origin.route("/healthz", headers=[("Cache-Control", "max-age=60")], body=b"origin")
    for path in ("/healthz?x", "/healthz?x=1&y", "/healthz"):
        r = await env.get(path)
        assert (r.status, r.body) == (200, b"ok\n")
        assert (await env.private(path)).body == b"ok\n"  # also on the admin listener
    assert env.origin.count() == 0 and len(env.app.store) == 0


async def test_admin_listener_serves_only_the_edges_own(edge_env):
    env = await edge_env()
    env.origin.route("/page", body=b"origin")
    r = await env.private("/page")
    assert r.status == 404 and env.origin.count() == 0


async def test_without_an_admin_listener_metrics_are_not_served(edge_env):
    env = await edge_env(admin_listen=None)
    assert env.edge.admin_address is None
    assert (await env.get("/metrics")).status == 404
    assert (await env.get("/healthz")).status == 200
