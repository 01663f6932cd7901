"""``start_edge(..., also_listen=...)`` / ``geoedge edge --listen A --listen B``: every address
serves the same edge (the demo's edges listen on their IPv4 and IPv6 addresses)."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from edgeutil import DEFAULT_EDGE, EDGE_NAME, FakeClock, TestOrigin, topology_dict

from edge.main import start_edge
from geoconfig.topology import parse_topology


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")
async def test_every_listen_address_serves_the_same_cache() -> None:
    clock = FakeClock()
    origin = TestOrigin("origin-1", clock)
    await origin.start()
    origin.route("/x", headers=[("Cache-Control", "max-age=60")], body=b"X")
    topology = parse_topology(topology_dict([origin], DEFAULT_EDGE))
    edge = await start_edge(topology, EDGE_NAME, listen=("127.0.0.1", 0), clock=clock,
                            also_listen=[("::1", 0)])
    try:
        v6_port = edge.also[0].sockets[0].getsockname()[1]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{edge.url}/x") as r:
                assert (r.status, await r.read()) == (200, b"X")
                assert "fwd=uri-miss" in r.headers["Cache-Status"]
            async with session.get(f"http://[::1]:{v6_port}/x",
                                   headers={"Host": f"127.0.0.1:{edge.port}"}) as r:
                assert (r.status, await r.read()) == (200, b"X")
                assert "; hit" in r.headers["Cache-Status"]  # the same store
        assert origin.count("/x") == 1
    finally:
        await edge.stop()
        await origin.stop()
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:  # closed with the edge
        s.bind(("::1", v6_port))
