"""Failover with real HTTP health endpoints and the real ``geoedge dns`` process."""

from __future__ import annotations

import pytest
from dnsutil import (
    UDP_LOOPS,
    DnsProcess,
    HealthEndpoint,
    addresses,
    demo_text,
    free_port,
    query,
    wait_for,
    with_udp_loop,
)

EU = {"127.0.2.1", "127.0.2.2"}
US = {"127.0.1.1", "127.0.1.2"}
AP = {"127.0.3.1", "127.0.3.2"}
ALL = {"us-east": US, "eu-west": EU, "ap-southeast": AP}
GB = "81.2.69.0/24"


@pytest.fixture
def edges():
    port = free_port()
    endpoints = {ip: HealthEndpoint(ip, port).start() for ips in ALL.values() for ip in ips}
    yield port, endpoints
    for ep in endpoints.values():
        ep.stop()


def answer(dns: DnsProcess, subnet: str = GB) -> set[str]:
    return addresses(query(dns.port, "www.example.test", subnet=subnet))


@pytest.mark.parametrize("loop", UDP_LOOPS)
def test_default_settings_fail_over_within_5s_and_come_back(edges, tmp_path, loop):
    port, endpoints = edges
    config = tmp_path / "topology.toml"
    config.write_text(with_udp_loop(demo_text(port), loop))  # default [health] settings
    dns = DnsProcess(config)
    try:
        got, _ = wait_for(lambda: answer(dns) == EU, 5)
        assert got, answer(dns)
        for ip in EU:
            endpoints[ip].stop()
        moved, took = wait_for(lambda: answer(dns) == US, 10)
        assert moved, f"still {answer(dns)} after {took:.1f}s"
        assert took < 5.0, f"failover took {took:.1f}s"
        for ip in EU:
            endpoints[ip].start()
        back, took = wait_for(lambda: answer(dns) == EU, 10)
        assert back, f"still {answer(dns)} after {took:.1f}s"
    finally:
        assert dns.stop() == 0


@pytest.mark.parametrize("loop", UDP_LOOPS)
def test_partial_region_answers_only_healthy_edges_and_fail_open(edges, tmp_path, loop):
    port, endpoints = edges
    config = tmp_path / "topology.toml"
    health = "interval = 0.2\ntimeout = 0.5\nrise = 1\nfall = 1"
    config.write_text(with_udp_loop(demo_text(port, health=health), loop))
    dns = DnsProcess(config)
    try:
        endpoints["127.0.2.1"].stop()
        got, _ = wait_for(lambda: answer(dns) == {"127.0.2.2"}, 5)
        assert got, answer(dns)
        for ep in endpoints.values():
            ep.stop()
        # every region down: fail open to the nearest region, with all of its edges
        got, _ = wait_for(lambda: answer(dns) == EU and answer(dns, "1.0.16.0/24") == AP, 5)
        assert got, (answer(dns), answer(dns, "1.0.16.0/24"))
        endpoints["127.0.3.1"].start()
        # only one edge anywhere: everyone goes there
        got, _ = wait_for(lambda: answer(dns) == {"127.0.3.1"}, 5)
        assert got, answer(dns)
    finally:
        assert dns.stop() == 0
    assert any("DOWN" in line for line in dns.log)
