"""``geoedge demo``: the plan (pure, table-driven) and the real thing end to end.

The end-to-end tests run ``geoedge demo`` as a subprocess on free ports: twelve real processes
(three redis-server, two origins, six edges, GeoDNS), queried with dnspython and plain HTTP.
The failover test is the issue's: a GB client gets eu-west; both eu-west edges are stopped;
within 5 s GeoDNS answers with us-east and fetches through the new answer work; the edges come
back and the answers return to eu-west; no request made with a fresh answer fails.
"""

from __future__ import annotations

import http.client
import os
import pty
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from demoutil import DEMO, DemoProcess, alive, demo_config, fetch
from dnsutil import addresses, query, wait_for

from geoconfig.topology import load_topology
from geoedge.demo.services import plan, select

GB = "81.2.69.0/24"
EU_WEST = {"127.0.2.1", "127.0.2.2"}
US_EAST = {"127.0.1.1", "127.0.1.2"}


# --- the plan ---------------------------------------------------------------------------------

def test_plan_starts_redis_origins_edges_then_dns() -> None:
    services = plan(load_topology(DEMO), DEMO, "/usr/bin/redis-server", Path("/tmp/d"),
                    access_logs=Path("/tmp/d/logs"))
    assert [(s.name, s.role, s.region, s.address) for s in services] == [
        ("redis-us-east", "redis", "us-east", "127.0.1.10:6379"),
        ("redis-eu-west", "redis", "eu-west", "127.0.2.10:6379"),
        ("redis-ap-southeast", "redis", "ap-southeast", "127.0.3.10:6379"),
        ("origin-1", "origin", "", "127.0.1.11:8080"),
        ("origin-2", "origin", "", "127.0.1.12:8080"),
        ("us-east-1", "edge", "us-east", "127.0.1.1:8080"),
        ("us-east-2", "edge", "us-east", "127.0.1.2:8080"),
        ("eu-west-1", "edge", "eu-west", "127.0.2.1:8080"),
        ("eu-west-2", "edge", "eu-west", "127.0.2.2:8080"),
        ("ap-southeast-1", "edge", "ap-southeast", "127.0.3.1:8080"),
        ("ap-southeast-2", "edge", "ap-southeast", "127.0.3.2:8080"),
        ("geodns", "dns", "", "127.0.0.1:5353 [::1]:5353 (udp+tcp)"),
    ]
    redis = services[1]
    assert redis.argv[:5] == ("/usr/bin/redis-server", "--bind", "127.0.2.10", "--port", "6379")
    assert "/tmp/d/redis-eu-west" in redis.argv
    edge = services[7]
    at = edge.argv.index("edge")
    options = dict(zip(edge.argv[at + 1::2], edge.argv[at + 2::2], strict=False))
    assert {k: options[k] for k in (
        "--config", "--name", "--admin-listen", "--access-log", "--log-level")} == {
        "--config": str(DEMO), "--name": "eu-west-1", "--admin-listen": "127.0.2.1:9180",
        "--access-log": "/tmp/d/logs/eu-west-1.access.log", "--log-level": "info"}
    assert (edge.probe.kind, edge.probe.host, edge.probe.port, edge.probe.path) == (
        "http", "127.0.2.1", 8080, "/healthz")
    dns = services[-1]
    assert (dns.probe.kind, dns.probe.host, dns.probe.port, dns.probe.path) == (
        "dns", "127.0.0.1", 5353, "example.test.")


@pytest.mark.parametrize(("binary", "ipv6", "roles", "dns_args"), [
    ("redis-server", True, {"redis": 3, "origin": 2, "edge": 6, "dns": 1},
     ["127.0.0.1:5353", "[::1]:5353"]),
    (None, True, {"origin": 2, "edge": 6, "dns": 1}, ["127.0.0.1:5353", "[::1]:5353"]),
    ("redis-server", False, {"redis": 3, "origin": 2, "edge": 6, "dns": 1},
     ["127.0.0.1:5353"]),
])
def test_plan_without_redis_or_ipv6(binary: str | None, ipv6: bool, roles: dict[str, int],
                                    dns_args: list[str]) -> None:
    services = plan(load_topology(DEMO), DEMO, binary, Path("/tmp/d"), ipv6=ipv6)
    counted: dict[str, int] = {}
    for s in services:
        counted[s.role] = counted.get(s.role, 0) + 1
    assert counted == roles
    argv = list(services[-1].argv)
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--listen"] == dns_args


@pytest.mark.parametrize(("target", "names"), [
    ("eu-west", ["eu-west-1", "eu-west-2"]),
    ("eu-west-2", ["eu-west-2"]),
    ("geodns", ["geodns"]),
    ("redis-us-east", ["redis-us-east"]),
    ("mars", []),
])
def test_select(target: str, names: list[str]) -> None:
    services = plan(load_topology(DEMO), DEMO, "redis-server", Path("/tmp/d"))
    assert [s.name for s in select(services, target)] == names


# --- the real thing ---------------------------------------------------------------------------

def answer(dns_port: int, subnet: str = GB) -> list[str]:
    msg = query(dns_port, "www.example.test", "A", subnet=subnet)
    return sorted(addresses(msg))


@pytest.fixture
def demo(tmp_path: Path):
    config, ports = demo_config(tmp_path)
    proc = DemoProcess(config)
    try:
        proc.wait_for(r"All 12 processes are up", 60)
        yield proc, ports, config
    finally:
        proc.close()


def geoedge_fetch(config: Path, dns_port: int, edge_port: int, *args: str,
                  url: str | None = None) -> str:
    """The real ``geoedge fetch`` as a GB client; its report (exit status must be 0)."""
    out = subprocess.run(
        [sys.executable, "-m", "geoedge.cli", "fetch", "--config", str(config),
         "--dns", f"127.0.0.1:{dns_port}", "--client-ip", "81.2.69.160",
         url or f"http://www.example.test:{edge_port}/index.html", *args],
        capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def geoedge_purge(config: Path, edge_port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "geoedge.cli", "purge", "--config", str(config),
         f"http://www.example.test:{edge_port}/index.html"],
        capture_output=True, text=True, timeout=30, check=False)


def test_region_failover_end_to_end(demo) -> None:
    proc, ports, config = demo
    pids = proc.pids()
    assert len(pids) == 12, proc.output
    assert set(answer(ports.dns)) == EU_WEST
    report = geoedge_fetch(config, ports.dns, ports.edge, "--each")
    assert re.search(r"region +eu-west\n +edge +eu-west-1 ", report), report
    # the region's other edge finds it in the region's Redis
    assert re.search(r"cache-status +geoedge-eu-west-redis; hit; ttl=\d+, geoedge-eu-west-2; "
                     r"fwd=uri-miss", report), report
    # a purge reaches every edge (and, through them, every region's Redis)
    ca = proc.wait_for(r"^CA certificate: (\S+)$", 10).group(1)  # HTTPS, verified
    report = geoedge_fetch(config, ports.dns, ports.edge, "--cacert", ca,
                           url=f"https://www.example.test:{ports.https}/index.html")
    assert re.search(r"region +eu-west\n +edge +eu-west-1 ", report), report
    assert re.search(r"tls +TLSv1\.[23], \S+, ALPN http/1\.1", report), report
    purged = geoedge_purge(config, ports.edge)
    assert purged.returncode == 0, purged.stdout
    assert re.search(r"eu-west-1 .* purged 1\n", purged.stdout), purged.stdout
    assert len(re.findall(r" purged \d+", purged.stdout)) == 6
    report = geoedge_fetch(config, ports.dns, ports.edge, "--each")
    assert re.search(r"cache-status +geoedge-eu-west-1; fwd=uri-miss; fwd-status=200; stored",
                     report), report

    # a client that asks GeoDNS afresh before every request, all the time
    failures: list[str] = []
    seen: list[tuple[float, str]] = []
    done = threading.Event()

    def client() -> None:
        while not done.is_set():
            try:
                first = answer(ports.dns)[0]
                status, _ = fetch(first, ports.edge)
            except (OSError, http.client.HTTPException) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
                continue
            if status != 200:
                failures.append(f"status {status} from {first}")
            seen.append((time.monotonic(), first))
            time.sleep(0.02)

    worker = threading.Thread(target=client, daemon=True)
    worker.start()
    try:
        assert wait_for(lambda: seen, 10)[0], f"no answer from the demo: {failures}"
        stopped = time.monotonic()
        proc.send("stop eu-west")
        moved = None
        while time.monotonic() - stopped < 5 and moved is None:
            if set(answer(ports.dns)) == US_EAST:
                moved = time.monotonic() - stopped
            time.sleep(0.05)
        assert moved is not None, "GeoDNS still answers eu-west 5 s after the region stopped"
        report = geoedge_fetch(config, ports.dns, ports.edge)
        assert re.search(r"region +us-east\n +edge +us-east-1 ", report), report
        assert re.search(r"status +200 OK", report), report
        proc.wait_for(r"stopped eu-west-1, eu-west-2", 20)
        purged = geoedge_purge(config, ports.edge)  # an edge that misses a purge is an error
        assert purged.returncode == 1, purged.stdout
        assert re.search(r"eu-west-1 .* not reached", purged.stdout), purged.stdout
        with pytest.raises(OSError):
            fetch("127.0.2.1", ports.edge)

        proc.send("start eu-west")
        proc.wait_for(r"ok\s+eu-west-2 ", 30)
        back = time.monotonic()
        while set(answer(ports.dns)) != EU_WEST:
            assert time.monotonic() - back < 10, "answers did not return to eu-west"
            time.sleep(0.05)
        returned = time.monotonic()  # the client's next answer is eu-west's
        assert wait_for(lambda: seen[-1][0] > returned, 10)[0], f"client stalled: {failures}"
    finally:
        done.set()
        worker.join(10)
    assert not failures, failures
    regions = [first for _, first in seen]
    assert regions[0] in EU_WEST and regions[-1] in EU_WEST
    assert any(first in US_EAST for first in regions)

    # a crash is repaired: SIGKILL an edge, the supervisor restarts it
    proc.send("kill us-east-1")
    proc.wait_for(r"us-east-1 exited with code -9", 10)
    proc.wait_for(r"us-east-1 is back on", 30)
    assert fetch("127.0.1.1", ports.edge)[0] == 200

    pids = proc.pids()
    assert proc.interrupt() == 0
    assert "geoedge demo: stopped" in proc.output
    assert [n for n, pid in pids.items() if alive(pid)] == []


def test_a_terminal_is_left_blocking(tmp_path: Path) -> None:
    """asyncio makes the console's stdin non-blocking; a terminal shares that flag with the
    shell, which must get it back as it was."""
    config, _ = demo_config(tmp_path)
    master, terminal = pty.openpty()
    try:
        assert os.get_blocking(terminal)
        proc = DemoProcess(config, stdin=terminal)
        try:
            proc.wait_for(r"Type here:", 60)
            os.write(master, b"status\n")
            proc.wait_for(r"\bgeodns\b.*\bup\b", 10, since=len(proc.lines))
            assert proc.interrupt() == 0
        finally:
            proc.close()
        assert os.get_blocking(terminal)
    finally:
        os.close(master)
        os.close(terminal)


def test_killing_the_supervisor_leaves_nothing_running(demo) -> None:
    proc = demo[0]
    pids = proc.pids()
    proc.proc.send_signal(signal.SIGKILL)
    proc.proc.wait(10)
    deadline = time.monotonic() + 15
    while [pid for pid in pids.values() if alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [n for n, pid in pids.items() if alive(pid)] == []


def test_a_process_that_cannot_start_stops_the_demo(tmp_path: Path) -> None:
    config, ports = demo_config(tmp_path)
    config.write_text(config.read_text().replace(
        f'root = "{DEMO.parent / "content"}"', f'root = "{tmp_path / "missing"}"'))
    proc = DemoProcess(config)
    try:
        assert proc.proc.wait(60) == 1
    finally:
        proc.close()
    out = proc.output
    assert re.search(r"origin-\d exited with code 2 while starting", out), out
    assert "missing" in out  # the end of its log says why
    # what had started (the Redis servers) was stopped again
    for region in (1, 2, 3):
        with socket.socket() as s:
            assert s.connect_ex((f"127.0.{region}.10", ports.redis)) != 0


def test_a_taken_address_stops_the_demo_before_anything_starts(tmp_path: Path) -> None:
    config, ports = demo_config(tmp_path)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", ports.dns))  # GeoDNS cannot listen
        proc = DemoProcess(config)
        try:
            assert proc.proc.wait(60) == 1
        finally:
            proc.close()
    out = proc.output
    assert (f"in use by another process (another demo still running?): "
            f"127.0.0.1:{ports.dns} (udp+tcp) (geodns)") in out, out
    assert " ok " not in out  # nothing was started


def test_bad_config_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(DEMO.read_text().replace("latitude = 53.3", "latitude = 153.3"))
    proc = DemoProcess(bad)
    try:
        assert proc.proc.wait(30) == 2
    finally:
        proc.close()
    assert "regions[1].latitude" in proc.output
