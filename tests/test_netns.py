"""The demo's failover, end to end, across network namespaces: a real partition, not a stop.

Rules:

- Needs root and ``ip netns`` (see tests/netnsutil.py for the lab: one namespace per region,
  a core namespace with GeoDNS, the origins and the client, veth links, addresses
  10.77.N.0/24). Without them the tests skip with the reason (printed in pytest's summary).
- The twelve processes are the demo's real commands, each started in its namespace with
  ``ip netns exec``; the demo's [health] (interval 1 s, timeout 1 s, rise 2, fall 2) applies.
- Failover: a GB client (ECS 81.2.69.0/24) gets eu-west's addresses and a GET through them
  answers 200 via an eu-west edge; core's end of the eu-west link goes down; within 5 s GeoDNS
  answers with us-east's addresses and a GET through them works; the link comes back up and
  the answers return to eu-west within 10 s. The measured times are printed.
- Latency: with ``tc ... netem`` delays on the links (eu-west 10 ms, us-east 40 ms,
  ap-southeast 90 ms from core) the region GeoDNS picks for the GB client is also the one with
  the lowest HTTP round trip. Kernels without sch_netem skip only that test.
- Every wait polls with a deadline; the teardown checks that no process is left in any of the
  lab's namespaces and deletes them, even when a test failed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import netnsutil
import pytest
from demoutil import alive, fetch
from dnsutil import addresses, query
from netnsutil import (
    DNS_ADDRESS,
    REGIONS,
    CoreSupervisor,
    Lab,
    NetnsThread,
    default_prefix,
    edge_addresses,
    http_rtt,
    need_lab,
    netns_config,
    netns_services,
)

from geoconfig.topology import load_topology

GB = "81.2.69.0/24"
EDGE_PORT = 8080
DELAYS_MS = {"eu-west": 10, "us-east": 40, "ap-southeast": 90}


@dataclass
class Cdn:
    lab: Lab
    client: NetnsThread  # a thread in core: DNS queries and HTTP requests go from there
    sup: CoreSupervisor


def answer(subnet: str = GB) -> set[str]:
    return addresses(query(53, "www.example.test", "A", subnet=subnet, host=DNS_ADDRESS))


def poll_answer(cdn: Cdn, want: set[str], timeout: float) -> float | None:
    """Seconds until GeoDNS (asked from core) answers ``want``; None if not within timeout."""
    began = time.monotonic()
    while (elapsed := time.monotonic() - began) <= timeout:
        if cdn.client.call(answer) == want:
            return elapsed
        time.sleep(0.05)
    return None


@pytest.fixture(scope="module")
def cdn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cdn]:
    need_lab()
    tmp = tmp_path_factory.mktemp("netns")
    lab = Lab(default_prefix())
    client: NetnsThread | None = None
    sup: CoreSupervisor | None = None
    pids: dict[str, int] = {}
    try:
        try:
            lab.create()
        except RuntimeError as exc:  # e.g. a kernel without veth
            pytest.skip(f"netns lab unavailable: cannot build the namespaces: {exc}")
        config = netns_config(tmp)
        client = NetnsThread(lab.core)
        sup = CoreSupervisor(lab, netns_services(lab, config, tmp / "data"), tmp / "logs")
        sup.start_all(timeout=60)
        pids = sup.pids()
        assert len(pids) == 12, sup.lines
        yield Cdn(lab, client, sup)
    finally:
        if sup is not None:
            pids |= sup.pids()
            sup.close()
        if client is not None:
            client.close()
        leftovers = lab.destroy()  # kills (and names) anything still running in them
    assert not leftovers, f"processes left in the namespaces: {leftovers}"
    assert lab.existing() == [], "namespaces not deleted"
    assert [name for name, pid in pids.items() if alive(pid)] == []


def test_the_lab_puts_every_process_in_its_namespace(cdn: Cdn) -> None:
    running = {ns: set(cdn.lab.pids(ns)) for ns in cdn.lab.all_netns()}
    for name, pid in cdn.sup.pids().items():
        region = next((r for r in REGIONS if name.startswith(("redis-" + r, r + "-"))), None)
        ns = cdn.lab.netns(region) if region else cdn.lab.core
        assert pid in running[ns], f"{name} (pid {pid}) is not in {ns}"


def test_cutting_the_eu_west_link_moves_gb_clients_to_us_east(cdn: Cdn) -> None:
    eu, us = edge_addresses("eu-west"), edge_addresses("us-east")
    assert poll_answer(cdn, eu, 10) is not None, "GB client does not get eu-west"
    first = sorted(cdn.client.call(answer))[0]
    status, via = cdn.client.call(fetch, first, EDGE_PORT)
    assert status == 200
    assert via in {"1.1 geoedge-eu-west-1", "1.1 geoedge-eu-west-2"}

    cdn.lab.cut("eu-west")
    try:
        failover = poll_answer(cdn, us, 5.0)
        assert failover is not None, "GeoDNS still answers eu-west 5 s after the partition"
        print(f"\nfailover after cutting eu-west's link: {failover:.2f} s")
        # fall 2 at a 1 s interval: not before the second failed probe
        assert failover >= 0.5, f"failover after {failover:.2f} s: faster than fall=2 allows"
        with pytest.raises(OSError):  # really partitioned, not stopped
            cdn.client.call(fetch, first, EDGE_PORT, "/index.html", 1.0)
        moved = sorted(cdn.client.call(answer))[0]
        status, via = cdn.client.call(fetch, moved, EDGE_PORT)
        assert status == 200
        assert via in {"1.1 geoedge-us-east-1", "1.1 geoedge-us-east-2"}
    finally:
        cdn.lab.mend("eu-west")

    recovery = poll_answer(cdn, eu, 10.0)
    assert recovery is not None, "answers did not return to eu-west within 10 s"
    print(f"recovery after restoring eu-west's link: {recovery:.2f} s")
    assert recovery >= 0.5, f"recovery after {recovery:.2f} s: faster than rise=2 allows"
    status, via = cdn.client.call(fetch, sorted(cdn.client.call(answer))[0], EDGE_PORT)
    assert status == 200 and via.startswith("1.1 geoedge-eu-west-"), (status, via)
    # the edges' own processes never stopped: it was the network
    assert len(cdn.sup.pids()) == 12


def test_nearest_region_is_also_fastest(cdn: Cdn) -> None:
    eu = edge_addresses("eu-west")
    assert poll_answer(cdn, eu, 15) is not None, "GB client does not get eu-west"
    problem = cdn.lab.netem_problem()
    if problem is not None:
        rtts = {r: cdn.client.call(http_rtt, min(edge_addresses(r)), EDGE_PORT)
                for r in REGIONS}
        print("\nHTTP RTT without delays: " +
              ", ".join(f"{r} {t * 1000:.1f} ms" for r, t in rtts.items()))
        pytest.skip(f"{problem}: cannot emulate the delay between regions")
    try:
        for region, delay in DELAYS_MS.items():
            done = cdn.lab.netem(region, delay)
            assert done.returncode == 0, done.stderr
        # health probes keep passing with the delays, so the answer is still eu-west
        assert poll_answer(cdn, eu, 5) is not None
        chosen = "eu-west"
        rtts = {r: cdn.client.call(http_rtt, min(edge_addresses(r)), EDGE_PORT)
                for r in REGIONS}
        print("\nHTTP RTT with netem delays: " +
              ", ".join(f"{r} {t * 1000:.1f} ms" for r, t in rtts.items()))
        assert min(rtts, key=lambda r: rtts[r]) == chosen, rtts
        assert rtts["eu-west"] < rtts["us-east"] < rtts["ap-southeast"], rtts
        # and the delay is real: at least one one-way delay per round trip
        assert rtts["eu-west"] >= DELAYS_MS["eu-west"] / 1000, rtts
    finally:
        for region in DELAYS_MS:
            cdn.lab.clear_netem(region)


def test_netns_config_moves_every_address(tmp_path: Path) -> None:
    """The lab's topology (no namespaces needed): checked inside ``netns_config``."""
    config = load_topology(netns_config(tmp_path))
    assert config.dns.listen == ((DNS_ADDRESS, 53),)
    assert {e.region: e.ipv4 for e in config.edges if e.name.endswith("-1")} == {
        r: f"10.77.{n}.1" for r, n in REGIONS.items()}


@pytest.mark.parametrize("problem", [None, "needs root", "`ip netns add` failed: EPERM"])
def test_a_missing_lab_is_a_skip_with_its_reason(monkeypatch: pytest.MonkeyPatch,
                                                 problem: str | None) -> None:
    """Skipped, with the reason, without root, ``ip`` or namespace support (under CI too)."""
    monkeypatch.setattr(netnsutil, "availability", lambda: problem)
    monkeypatch.setenv("CI", "1")
    if problem is None:
        netnsutil.need_lab()
    else:
        with pytest.raises(pytest.skip.Exception, match=re.escape(problem)):
            netnsutil.need_lab()
