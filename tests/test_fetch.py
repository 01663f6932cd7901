"""``geoedge fetch`` against real components, plus tables for its pure parts.

The integration cases run the real GeoDNS server (on a thread, port 0) over a copy of the demo
topology whose six edges are real edges listening on their demo addresses (127.0.N.M) with one
port the kernel picked, in front of one real origin (the demo content and API). The CLI runs
in-process through ``geoedge.cli.main`` (one case runs the console script as a subprocess).
Each case fetches its own path, so the edges' caches, shared by the module, do not interfere.
"""

from __future__ import annotations

import asyncio
import copy
import json
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dns.edns
import dns.message
import dns.rdatatype
import dnslib
import pytest
from aiohttp import web
from dnsutil import DEMO, ServerThread, demo_text
from edgeutil import DEFAULT_EDGE, topology_dict

from edge.main import RunningEdge, start_edge
from geoconfig.topology import load_topology, parse_topology
from geodata import GeoReader, embedded_database_path
from geodns.engine import Engine
from geoedge.cli import main
from geoedge.client.fetch import (
    Result,
    format_dns_line,
    format_report,
    locate,
    parse_url,
    redis_region,
    via_edge,
)
from geoedge.client.fetcherror import FetchError
from geoedge.client.stubdns import (
    DnsReply,
    DnsSummary,
    build_query,
    needs_tcp,
    parse_client_ip,
    parse_reply,
)
from origin.app import create_app

GEOEDGE = str(Path(sys.executable).parent / "geoedge")
GB, US, JP = "81.2.69.160", "8.8.8.8", "1.0.16.1"
EDGE_IPS = {
    "us-east-1": "127.0.1.1", "us-east-2": "127.0.1.2",
    "eu-west-1": "127.0.2.1", "eu-west-2": "127.0.2.2",
    "ap-southeast-1": "127.0.3.1", "ap-southeast-2": "127.0.3.2",
}


# -- the running CDN ------------------------------------------------------------------------------
class LoopThread:
    """An event loop on a daemon thread, for servers the synchronous tests talk to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Cdn:
    data: dict[str, Any]  # the topology, as parsed TOML, with the edges' real port
    port: int  # every edge's port
    config: Path  # the same topology as a file, for --config
    dns: ServerThread

    def url(self, path: str, host: str = "www.example.test") -> str:
        return f"http://{host}:{self.port}{path}"

    def args(self, path: str, *extra: str, dns_port: int | None = None) -> list[str]:
        return ["fetch", self.url(path), "--dns", f"127.0.0.1:{dns_port or self.dns.port}",
                "--config", str(self.config), *extra]


def dns_server(data: dict[str, Any]) -> ServerThread:
    """The real DNS server for this topology (no health checker: every edge counts as up)."""
    engine = Engine(parse_topology(data, source=str(DEMO)), GeoReader(embedded_database_path()))
    return ServerThread(engine).start()


async def _start_origin() -> tuple[web.AppRunner, int]:
    """The demo origin (its content and API) on 127.0.0.1, port 0."""
    runner = web.AppRunner(create_app("origin-1", load_topology(DEMO).cdn.origin),
                           access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, runner.addresses[0][1]


async def _start_edges(data: dict[str, Any]) -> tuple[list[RunningEdge], int]:
    """The six edges on their demo addresses, all on the port the first one was given."""
    topology = parse_topology(data, source=str(DEMO))
    for _ in range(5):
        edges: list[RunningEdge] = []
        port = 0
        try:
            for name, ip in EDGE_IPS.items():
                edges.append(await start_edge(topology, name, listen=(ip, port)))
                port = edges[-1].port
        except OSError:  # that port is taken on another address: try another one
            for edge in edges:
                await edge.stop()
            continue
        return edges, port
    raise OSError("no port free on all six edge addresses")


@pytest.fixture(scope="module")
def cdn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cdn]:
    loop = LoopThread()
    runner, origin_port = loop.run(_start_origin())
    data = topology_dict([SimpleNamespace(name="origin-1", port=origin_port)],
                         {**DEFAULT_EDGE, "purge_token": "demo-purge-token"})
    edges, port = loop.run(_start_edges(data))
    for rc in data["regions"]:
        for edge in rc["edges"]:
            edge["port"] = port
    config = tmp_path_factory.mktemp("fetch") / "topology.toml"
    config.write_text(demo_text(port))
    server = dns_server(data)
    try:
        yield Cdn(data, port, config, server)
    finally:
        server.stop()
        for edge in edges:
            loop.run(edge.stop())
        loop.run(runner.cleanup())
        loop.close()


# -- running the command --------------------------------------------------------------------------
@dataclass
class Run:
    code: int
    out: str
    err: str

    def reports(self) -> list[dict[str, str]]:
        """The report blocks: {"request": "GET http://...", label: value, ...}."""
        blocks: list[dict[str, str]] = []
        for line in self.out.splitlines():
            if line.split(" ", 1)[0] in ("GET", "HEAD", "PURGE", "POST"):
                blocks.append({"request": line})
            elif line.startswith("  ") and blocks:
                label, _, value = line.strip().partition(" ")
                blocks[-1].setdefault(label, value.strip())
        return blocks

    @property
    def report(self) -> dict[str, str]:
        (only,) = self.reports()
        return only

    @property
    def dns_line(self) -> str:
        return self.out.splitlines()[0]


def fetch(capsys: pytest.CaptureFixture[str], *args: str) -> Run:
    code = main(list(args))
    out, err = capsys.readouterr()
    return Run(code, out, err)


# -- integration ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("client", "region", "subnet", "scope_min"), [
    (GB, "eu-west", "81.2.69.0/24", 8),
    (US, "us-east", "8.8.8.0/24", 8),
    (JP, "ap-southeast", "1.0.16.0/24", 8),
])
def test_client_lands_on_its_region(cdn: Cdn, capsys, client, region, subnet, scope_min):
    run = fetch(capsys, *cdn.args(f"/index.html?region={region}", "--client-ip", client))
    assert run.code == 0, run.err
    first, second = EDGE_IPS[f"{region}-1"], EDGE_IPS[f"{region}-2"]
    line = run.dns_line
    assert line.startswith(f"www.example.test A via 127.0.0.1:{cdn.dns.port} (ECS {subnet}, "
                           "scope /"), line
    assert line.endswith(f") -> {first}, {second}  ttl 30"), line
    scope = int(line.split("scope /")[1].split(")")[0])
    assert scope_min <= scope <= 24
    r = run.report
    assert r["request"] == f"GET {cdn.url(f'/index.html?region={region}')}"
    assert r["region"] == region
    assert r["edge"] == f"{region}-1 ({first}:{cdn.port})"
    assert r["status"] == "200 OK"
    assert r["cache-status"].startswith(f"geoedge-{region}-1; fwd=uri-miss")
    assert int(r["bytes"]) > 0
    assert r["time"].startswith("dns ") and r["time"].endswith(" ms")


def test_repeat_shows_miss_then_hit_with_age(cdn: Cdn, capsys):
    run = fetch(capsys, *cdn.args("/index.html?case=repeat", "--client-ip", GB,
                                  "--repeat", "2"))
    assert run.code == 0, run.err
    miss, hit = run.reports()
    assert miss["cache-status"] == "geoedge-eu-west-1; fwd=uri-miss; fwd-status=200; stored"
    assert hit["cache-status"].startswith("geoedge-eu-west-1; hit; ttl=")
    assert hit["age"].isdigit()
    assert hit["edge"] == miss["edge"] == f"eu-west-1 (127.0.2.1:{cdn.port})"
    assert miss["time"].startswith("dns ")
    assert hit["time"].startswith("http ")  # the answer was reused: no second query
    assert miss["bytes"] == hit["bytes"]


def test_each_then_asks_every_other_edge_of_the_answer(cdn: Cdn, capsys):
    run = fetch(capsys, *cdn.args("/index.html?case=each", "--client-ip", GB,
                                  "--repeat", "2", "--each"))
    assert run.code == 0, run.err
    miss, hit, other = run.reports()
    assert [r["edge"] for r in (miss, hit, other)] == [
        f"eu-west-1 (127.0.2.1:{cdn.port})", f"eu-west-1 (127.0.2.1:{cdn.port})",
        f"eu-west-2 (127.0.2.2:{cdn.port})"]
    assert hit["cache-status"].startswith("geoedge-eu-west-1; hit")
    assert other["cache-status"].startswith("geoedge-eu-west-2; fwd=uri-miss")  # no Redis here


def test_host_header_and_extra_headers_reach_the_origin(cdn: Cdn, capsys):
    run = fetch(capsys, *cdn.args("/api/echo?case=host", "--client-ip", US, "--body",
                                  "-H", "X-Test: one", "-H", "Accept-Language: fr"))
    assert run.code == 0, run.err
    echo = json.loads(run.out[run.out.index("{"):])
    assert echo["headers"]["host"] == f"www.example.test:{cdn.port}"
    assert echo["headers"]["x-test"] == "one"
    assert echo["headers"]["accept-language"] == "fr"
    assert "1.1 geoedge-us-east-1" in echo["headers"]["via"]
    assert run.report["cache-status"].startswith("geoedge-us-east-1; fwd=uri-miss")


def test_without_client_ip_no_ecs_is_sent(cdn: Cdn, capsys):
    # the server then locates the query's own source, 127.0.0.1: not in the database, so
    # the default region, and no ECS option in the reply (no scope)
    run = fetch(capsys, *cdn.args("/index.html?case=noecs"))
    assert run.code == 0, run.err
    assert f"via 127.0.0.1:{cdn.dns.port} (no ECS) -> 127.0.1.1, 127.0.1.2" in run.dns_line
    assert run.report["region"] == "us-east"


def test_truncated_udp_answer_is_asked_again_over_tcp(cdn: Cdn, capsys):
    data = copy.deepcopy(cdn.data)
    eu = next(rc for rc in data["regions"] if rc["name"] == "eu-west")
    # 100 A records do not fit in 1232 bytes; only the first edge is real
    eu["edges"] = [{"name": "eu-west-1", "ipv4": "127.0.2.1", "port": cdn.port}] + [
        {"name": f"eu-west-x{i}", "ipv4": f"127.0.2.{i}", "port": cdn.port}
        for i in range(10, 109)]
    server = dns_server(data)
    try:
        run = fetch(capsys, *cdn.args("/index.html?case=tc", "--client-ip", GB,
                                      dns_port=server.port))
    finally:
        server.stop()
    assert run.code == 0, run.err
    assert "scope /" in run.dns_line
    assert run.dns_line.endswith(", over TCP after TC=1) -> 127.0.2.1, 127.0.2.10, 127.0.2.11, "
                                 "127.0.2.12, 127.0.2.13, 127.0.2.14, ... (100 addresses)  ttl 30")
    assert run.report["edge"] == f"eu-west-1 (127.0.2.1:{cdn.port})"


def test_refused_first_address_falls_over_to_the_next(cdn: Cdn, capsys):
    data = copy.deepcopy(cdn.data)
    eu = next(rc for rc in data["regions"] if rc["name"] == "eu-west")
    eu["edges"] = [{"name": "eu-west-9", "ipv4": "127.0.2.9", "port": cdn.port},
                   {"name": "eu-west-1", "ipv4": "127.0.2.1", "port": cdn.port}]
    server = dns_server(data)
    try:
        run = fetch(capsys, *cdn.args("/index.html?case=failover", "--client-ip", GB,
                                      dns_port=server.port))
    finally:
        server.stop()
    assert run.code == 0, run.err
    r = run.report
    assert r["skipped"] == (f"127.0.2.9:{cdn.port}: Connection refused; "
                            "trying the next address")
    assert r["edge"] == f"eu-west-1 (127.0.2.1:{cdn.port})"
    assert r["status"] == "200 OK"


def test_no_address_accepting_is_exit_1(cdn: Cdn, capsys):
    data = copy.deepcopy(cdn.data)
    eu = next(rc for rc in data["regions"] if rc["name"] == "eu-west")
    eu["edges"] = [{"name": "eu-west-9", "ipv4": "127.0.2.9", "port": cdn.port}]
    server = dns_server(data)
    try:
        run = fetch(capsys, *cdn.args("/", "--client-ip", GB, dns_port=server.port))
    finally:
        server.stop()
    assert run.code == 1
    assert run.err.startswith("geoedge fetch: no address accepted a connection: 127.0.2.9:")


def test_dns_timeout_is_a_quick_clear_error(cdn: Cdn, capsys):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        start = time.monotonic()
        run = fetch(capsys, *cdn.args("/", "--client-ip", GB, "--timeout", "0.2",
                                      dns_port=port))
        took = time.monotonic() - start
        assert len(_drain(silent)) == 2  # the query and one retry
    assert run.code == 1
    assert run.err == (f"geoedge fetch: DNS: no reply from 127.0.0.1:{port} for "
                       "www.example.test A (2 tries, 0.2 s each)\n")
    assert run.out == ""
    assert took < 2.0


def test_dns_server_not_listening_is_a_clear_error(cdn: Cdn, capsys):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    run = fetch(capsys, *cdn.args("/", "--client-ip", GB, dns_port=port))
    assert run.code == 1
    assert run.err == (f"geoedge fetch: DNS: 127.0.0.1:{port} refused the query "
                       "(nothing listening on UDP)\n")


def test_http_timeout_is_exit_1(capsys):
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        start = time.monotonic()
        run = fetch(capsys, "fetch", f"http://127.0.0.1:{port}/", "--timeout", "0.3")
        took = time.monotonic() - start
    assert run.code == 1
    assert run.err == (f"geoedge fetch: HTTP: no complete response from 127.0.0.1:{port} "
                       "within 0.3 s\n")
    assert took < 2.0


def test_ipv6_asks_for_aaaa(cdn: Cdn, capsys):
    if not _has_ipv6_loopback(cdn.port):
        pytest.skip("::1 is not available here, or its port is taken")
    data = copy.deepcopy(cdn.data)
    eu = next(rc for rc in data["regions"] if rc["name"] == "eu-west")
    eu["edges"][0]["ipv6"] = "::1"
    config = cdn.config.parent / "ipv6.toml"
    config.write_text(demo_text(cdn.port).replace('ipv6 = "fd00:0:0:2::1"', 'ipv6 = "::1"'))
    loop = LoopThread()
    topology = parse_topology(data, source=str(DEMO))
    edge = loop.run(start_edge(topology, "eu-west-1", listen=("::1", cdn.port)))
    server = dns_server(data)
    try:
        run = fetch(capsys, "fetch", cdn.url("/index.html?case=ipv6"), "--ipv6", "--client-ip",
                    "2a02:390::1", "--dns", f"127.0.0.1:{server.port}", "--config", str(config))
    finally:
        server.stop()
        loop.run(edge.stop())
        loop.close()
    assert run.code == 0, run.err
    assert "www.example.test AAAA via" in run.dns_line
    assert "(ECS 2a02:390::/56, scope /" in run.dns_line
    assert run.dns_line.split(" -> ")[1].startswith("::1, fd00:0:0:2::2  ttl 30")
    assert run.report["edge"] == f"eu-west-1 ([::1]:{cdn.port})"
    assert run.report["region"] == "eu-west"


def _has_ipv6_loopback(port: int = 0) -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", port))
    except OSError:
        return False
    return True


def _drain(sock: socket.socket) -> list[bytes]:
    sock.setblocking(False)
    out = []
    while True:
        try:
            out.append(sock.recv(65535))
        except BlockingIOError:
            return out


def test_nxdomain_names_the_server_and_rcode(cdn: Cdn, capsys):
    run = fetch(capsys, "fetch", f"http://nope.example.test:{cdn.port}/", "--dns",
                f"127.0.0.1:{cdn.dns.port}")
    assert run.code == 1
    assert run.err == (f"geoedge fetch: DNS: 127.0.0.1:{cdn.dns.port} answered NXDOMAIN for "
                       "nope.example.test A\n")


def test_no_address_of_that_type_is_exit_1(cdn: Cdn, capsys):
    run = fetch(capsys, "fetch", "http://mail.example.test/", "--ipv6", "--dns",
                f"127.0.0.1:{cdn.dns.port}")
    assert run.code == 1
    assert run.err == (f"geoedge fetch: DNS: 127.0.0.1:{cdn.dns.port} answered NOERROR with no "
                       "AAAA address for mail.example.test\n")


def test_dns_server_on_ipv6(cdn: Cdn, capsys):
    if not _has_ipv6_loopback():
        pytest.skip("no ::1 here")
    server = ServerThread(cdn.dns.engine, listen=[("::1", 0)]).start()
    try:
        run = fetch(capsys, "fetch", cdn.url("/index.html?case=dns6"), "--client-ip", GB,
                    "--dns", f"[::1]:{server.port}", "--config", str(cdn.config))
    finally:
        server.stop()
    assert run.code == 0, run.err
    assert run.dns_line.startswith(f"www.example.test A via [::1]:{server.port} (ECS ")
    assert run.report["edge"].startswith("eu-west-1 ")


def test_refused_outside_the_zones(cdn: Cdn, capsys):
    run = main(["fetch", "http://www.example.org/", "--dns", f"127.0.0.1:{cdn.dns.port}"])
    _, err = capsys.readouterr()
    assert run == 1
    assert "answered REFUSED for www.example.org A" in err


def test_ip_literal_skips_dns_and_names_the_edge_from_the_topology(cdn: Cdn, capsys):
    run = fetch(capsys, "fetch", f"http://127.0.3.2:{cdn.port}/index.html?case=literal",
                "--dns", "127.0.0.1:9", "--config", str(cdn.config))
    assert run.code == 0, run.err
    assert run.dns_line == "127.0.3.2: an IP address, no DNS query"
    assert run.report["region"] == "ap-southeast"
    assert run.report["edge"] == f"ap-southeast-2 (127.0.3.2:{cdn.port})"
    assert run.report["time"].startswith("http ")


def test_without_a_topology_the_edge_comes_from_via(cdn: Cdn, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no examples/demo.toml here
    run = fetch(capsys, "fetch", cdn.url("/index.html?case=via"), "--client-ip", JP,
                "--dns", f"127.0.0.1:{cdn.dns.port}")
    assert run.code == 0, run.err
    assert run.report["region"] == "-"
    assert run.report["edge"] == f"ap-southeast-1 (127.0.3.1:{cdn.port})"


def test_server_error_is_exit_1_and_head_and_purge_work(cdn: Cdn, capsys):
    run = fetch(capsys, *cdn.args("/api/status?code=503", "--client-ip", GB))
    assert run.code == 1
    assert run.report["status"] == "503 Service Unavailable"
    run = fetch(capsys, *cdn.args("/index.html?case=purge", "--client-ip", GB, "-X", "head"))
    assert run.code == 0 and run.report["request"].startswith("HEAD ")
    assert run.report["bytes"] == "0"
    run = fetch(capsys, *cdn.args("/index.html?case=purge", "--client-ip", GB, "-X", "PURGE",
                                  "-H", "Authorization: Bearer demo-purge-token"))
    assert run.code == 0, run.out
    assert run.report["status"].startswith("200")
    run = fetch(capsys, *cdn.args("/index.html?case=purge", "--client-ip", GB))
    assert "fwd=uri-miss" in run.report["cache-status"]  # purged: fetched again


@pytest.mark.parametrize(("args", "message"), [
    (["http://www.example.test/", "--client-ip", "1.2.3.999"],
     "--client-ip: not an IP address: '1.2.3.999'"),
    (["http://www.example.test/", "--client-ip", "1.2.3.4/33"],
     "--client-ip: prefix /33 is longer than an IPv4 address"),
    (["http://www.example.test/", "--client-ip", "1.2.3.4/x"],
     "--client-ip: prefix must be a number, got 'x'"),
    (["ftp://www.example.test/"],
     "ftp:// URLs are not supported, only http:// and https://"),
    (["https://www.example.test/", "--cacert", "/nonexistent.pem"],
     "--cacert /nonexistent.pem: cannot use it"),
    (["www.example.test/"], "URLs without http:// are not supported"),
    (["http://www.example.test/", "--dns", "nope"], "--dns: must be HOST:PORT, got 'nope'"),
    (["http://www.example.test/", "--repeat", "0"], "--repeat must be at least 1, got 0"),
    (["http://www.example.test/", "-H", "nocolon"], "-H must be 'Name: value', got 'nocolon'"),
    (["http://www.example.test/", "--config", "/nonexistent.toml"], "cannot read"),
])
def test_usage_errors_exit_2(capsys, args, message):
    code = main(["fetch", *args])
    out, err = capsys.readouterr()
    assert code == 2
    assert message in err and err.count("\n") == 1
    assert out == ""


def test_console_script_subprocess(cdn: Cdn):
    proc = subprocess.run([GEOEDGE, *cdn.args("/index.html?case=subprocess", "--client-ip",
                                              "81.2.69.160/24", "--repeat", "2")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    run = Run(proc.returncode, proc.stdout, proc.stderr)
    miss, hit = run.reports()
    assert miss["region"] == hit["region"] == "eu-west"
    assert "; hit; " in hit["cache-status"]


# -- pure parts -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "network", "option"), [
    ("81.2.69.160", "81.2.69.0/24", "0001 18 00 510245"),
    ("81.2.69.160/22", "81.2.68.0/22", "0001 16 00 510244"),
    ("81.2.69.160/32", "81.2.69.160/32", "0001 20 00 510245a0"),
    ("81.2.69.160/0", "0.0.0.0/0", "0001 00 00"),
    ("81.2.69.160/9", "81.0.0.0/9", "0001 09 00 5100"),
    ("2001:db8:1234:5678::1", "2001:db8:1234:5600::/56", "0002 38 00 20010db8123456"),
    ("2001:db8::1/48", "2001:db8::/48", "0002 30 00 20010db80000"),
])
def test_client_subnet_and_ecs_option_bytes(text, network, option):
    subnet = parse_client_ip(text)
    assert str(subnet) == network
    assert subnet.option_data().hex() == option.replace(" ", "")


@pytest.mark.parametrize("text", ["", "1.2.3", "1.2.3.4/", "1.2.3.4/-1", "::1/129",
                                  "fe80::1%eth0", "example.test", "1.2.3.4/24/1"])
def test_bad_client_ips(text):
    with pytest.raises(FetchError) as info:
        parse_client_ip(text)
    assert info.value.code == 2
    assert str(info.value).startswith("--client-ip: ")


@pytest.mark.parametrize(("subnet", "qtype"), [(None, "A"), ("81.2.69.160", "A"),
                                               ("2001:db8::1", "AAAA")])
def test_build_query_as_dnspython_reads_it(subnet, qtype):
    wire = build_query("www.example.test", qtype, subnet and parse_client_ip(subnet), 4321)
    msg = dns.message.from_wire(wire)
    assert msg.id == 4321
    assert not msg.flags & dns.flags.RD and not msg.flags & dns.flags.QR
    (question,) = msg.question
    assert question.name.to_text() == "www.example.test."
    assert question.rdtype == dns.rdatatype.from_text(qtype)
    assert msg.edns == 0 and msg.payload == 1232
    if subnet is None:
        assert not msg.options
    else:
        (opt,) = msg.options
        expected = parse_client_ip(subnet)
        assert isinstance(opt, dns.edns.ECSOption)
        assert (opt.address, opt.srclen, opt.scopelen) == (
            str(expected.network.network_address), expected.prefix, 0)
        # the option's exact bytes end the message: code 8, length, data
        data = expected.option_data()
        assert wire.endswith(struct.pack("!HH", 8, len(data)) + data)


def _reply(qid: int = 7, name: str = "www.example.test", qtype: str = "A",
           answers: tuple[str, ...] = (), rcode: int = 0, tc: bool = False,
           scope: int | None = None, cname: str | None = None) -> bytes:
    record = dnslib.DNSRecord(dnslib.DNSHeader(id=qid, qr=1, aa=1, rcode=rcode, tc=int(tc)),
                              q=dnslib.DNSQuestion(name, getattr(dnslib.QTYPE, qtype)))
    owner = name
    if cname is not None:
        record.add_answer(dnslib.RR(name, dnslib.QTYPE.CNAME, rdata=dnslib.CNAME(cname),
                                    ttl=3600))
        owner = cname
    for i, address in enumerate(answers):
        rdata = dnslib.AAAA(address) if ":" in address else dnslib.A(address)
        rtype = dnslib.QTYPE.AAAA if ":" in address else dnslib.QTYPE.A
        record.add_answer(dnslib.RR(owner, rtype, rdata=rdata, ttl=30 - i))
    if scope is not None:
        ecs = struct.pack("!HBB", 1, 24, scope) + bytes([81, 2, 69])
        record.add_ar(dnslib.EDNS0(udp_len=1232, opts=[dnslib.EDNSOption(8, ecs)]))
    return bytes(record.pack())


@pytest.mark.parametrize(("wire", "expected"), [
    (_reply(answers=("127.0.2.1", "127.0.2.2"), scope=22),
     DnsReply("NOERROR", False, ("127.0.2.1", "127.0.2.2"), 29, 22)),
    (_reply(answers=("127.0.2.1",)), DnsReply("NOERROR", False, ("127.0.2.1",), 30, None)),
    (_reply(rcode=3, scope=0), DnsReply("NXDOMAIN", False, (), None, 0)),
    (_reply(rcode=5), DnsReply("REFUSED", False, (), None, None)),
    (_reply(tc=True, scope=0), DnsReply("NOERROR", True, (), None, 0)),
    (_reply(name="cdn.example.test", answers=("127.0.1.1",), cname="www.example.test"),
     DnsReply("NOERROR", False, ("127.0.1.1",), 30, None, ("www.example.test",))),
    (_reply(qtype="AAAA", answers=("fd00:0:0:2::1",)),
     DnsReply("NOERROR", False, ("fd00:0:0:2::1",), 30, None)),
])
def test_parse_reply(wire, expected):
    name = "cdn.example.test" if expected.cnames else "www.example.test"
    qtype = "AAAA" if expected.addresses and ":" in expected.addresses[0] else "A"
    assert parse_reply(wire, 7, name, qtype) == expected


def test_parse_reply_ignores_what_is_not_our_reply_and_rejects_garbage():
    good = _reply(answers=("127.0.2.1",))
    assert parse_reply(good, 8, "www.example.test", "A") is None  # another ID
    assert parse_reply(good, 7, "cdn.example.test", "A") is None  # another question
    assert parse_reply(good, 7, "www.example.test", "AAAA") is None
    assert parse_reply(good, 7, "WWW.Example.Test.", "A") is not None  # case-insensitive
    query = build_query("www.example.test", "A", None, 7)
    assert parse_reply(query, 7, "www.example.test", "A") is None  # QR=0: our own query
    with pytest.raises(FetchError, match="malformed DNS reply"):
        parse_reply(b"\x00\x07\x80", 7, "www.example.test", "A")
    with pytest.raises(FetchError, match="malformed DNS reply"):
        parse_reply(good[:-3], 7, "www.example.test", "A")


@pytest.mark.parametrize(("reply", "tcp"), [
    (DnsReply("NOERROR", True, (), None, None), True),
    (DnsReply("NOERROR", False, ("127.0.0.1",), 30, None), False),
    (DnsReply("NXDOMAIN", False, (), None, None), False),
])
def test_needs_tcp(reply, tcp):
    assert needs_tcp(reply) is tcp


@pytest.mark.parametrize(("via", "edge"), [
    ("1.1 geoedge-eu-west-1", "eu-west-1"),
    ("1.1 geoedge-us-east-2", "us-east-2"),
    ("1.1 proxy.example, 1.1 geoedge-ap-southeast-1", "ap-southeast-1"),
    ("1.1 geoedge-a, 1.1 geoedge-b", "b"),  # the last hop is the nearest
    ("HTTP/1.1 geoedge-x (comment)", "x"),
    ("1.1 squid", None),
    ("", None),
    (None, None),
])
def test_via_edge(via, edge):
    assert via_edge(via) == edge


@pytest.mark.parametrize(("address", "port", "via", "expected"), [
    ("127.0.2.1", 8080, None, ("eu-west", "eu-west-1")),
    ("fd00:0:0:3::2", 8080, None, ("ap-southeast", "ap-southeast-2")),
    ("fd00:0:0:3::9", 8080, None, (None, None)),  # not an edge
    ("fd00::3:0:0:0:2", 8080, None, ("ap-southeast", "ap-southeast-2")),  # same, spelt out
    ("127.0.2.1", 9999, None, (None, None)),  # another port: not that edge
    ("127.0.2.1", 9999, "1.1 geoedge-us-east-2", ("us-east", "us-east-2")),
    ("10.0.0.1", 80, "1.1 geoedge-elsewhere", (None, "elsewhere")),
])
def test_locate_with_the_demo_topology(address, port, via, expected):
    assert locate(load_topology(DEMO), address, port, via) == expected


def test_locate_without_a_topology_uses_via_and_the_shared_tier_member():
    assert locate(None, "127.0.2.1", 8080, "1.1 geoedge-eu-west-1") == (None, "eu-west-1")
    assert locate(None, "127.0.2.1", 8080, None) == (None, None)
    tier = "geoedge-us-east-redis; hit; ttl=59, geoedge-us-east-2; fwd=uri-miss"
    assert locate(None, "127.0.1.2", 8080, "1.1 geoedge-us-east-2", tier) == (
        "us-east", "us-east-2")


@pytest.mark.parametrize(("cache_status", "region"), [
    ("geoedge-us-east-redis; hit; ttl=59, geoedge-us-east-2; fwd=uri-miss", "us-east"),
    ("geoedge-ap-southeast-redis; fwd=uri-miss, geoedge-ap-southeast-1; fwd=uri-miss",
     "ap-southeast"),
    ("geoedge-eu-west-1; hit; ttl=10", None),
    ("other-redis; hit", None),
    ("geoedge--redis; hit", None),
    ("", None),
    (None, None),
])
def test_redis_region(cache_status, region):
    assert redis_region(cache_status) == region


@pytest.mark.parametrize(("url", "host", "port", "path", "header"), [
    ("http://www.example.test/", "www.example.test", 80, "/", "www.example.test"),
    ("http://www.example.test", "www.example.test", 80, "/", "www.example.test"),
    ("http://www.example.test:8080/a/b?x=1&y", "www.example.test", 8080, "/a/b?x=1&y",
     "www.example.test:8080"),
    ("HTTP://WWW.Example.Test:80/", "www.example.test", 80, "/", "WWW.Example.Test:80"),
    ("http://[::1]:8080/x", "::1", 8080, "/x", "[::1]:8080"),
    ("http://127.0.2.1:8080/", "127.0.2.1", 8080, "/", "127.0.2.1:8080"),
])
def test_parse_url(url, host, port, path, header):
    t = parse_url(url)
    assert (t.host, t.port, t.path, t.host_header) == (host, port, path, header)


@pytest.mark.parametrize("url", ["gopher://x/", "ftp://x/", "x/y", "http:///path",
                                 "http://x:99999/"])
def test_bad_urls(url):
    with pytest.raises(FetchError) as info:
        parse_url(url)
    assert info.value.code == 2


@pytest.mark.parametrize(("subnet", "reply", "transport", "line"), [
    ("81.2.69.160", DnsReply("NOERROR", False, ("127.0.2.1", "127.0.2.2"), 30, 22), "udp",
     "www.example.test A via 127.0.0.1:5353 (ECS 81.2.69.0/24, scope /22) -> "
     "127.0.2.1, 127.0.2.2  ttl 30"),
    (None, DnsReply("NOERROR", False, ("127.0.1.1",), 30, None), "udp",
     "www.example.test A via 127.0.0.1:5353 (no ECS) -> 127.0.1.1  ttl 30"),
    ("81.2.69.160", DnsReply("NOERROR", False, ("127.0.2.1",), 30, None), "tcp",
     "www.example.test A via 127.0.0.1:5353 (ECS 81.2.69.0/24, no scope, over TCP after "
     "TC=1) -> 127.0.2.1  ttl 30"),
    (None, DnsReply("NOERROR", False, ("127.0.1.1",), 30, None, ("www.example.test",)), "udp",
     "www.example.test A via 127.0.0.1:5353 (no ECS) -> CNAME www.example.test -> "
     "127.0.1.1  ttl 30"),
])
def test_format_dns_line(subnet, reply, transport, line):
    summary = DnsSummary("www.example.test", "A", "127.0.0.1:5353",
                         subnet and parse_client_ip(subnet), reply, transport, 0.001)
    assert format_dns_line(summary) == line


def test_format_report():
    result = Result("GET", "http://www.example.test:8080/index.html", "127.0.2.1", 8080, 200,
                    "OK", "geoedge-eu-west-1; fwd=uri-miss; stored", "0", 1234, 0.0045,
                    "eu-west", "eu-west-1", dns_seconds=0.0012)
    assert format_report(result) == """\
GET http://www.example.test:8080/index.html
  region        eu-west
  edge          eu-west-1 (127.0.2.1:8080)
  status        200 OK
  cache-status  geoedge-eu-west-1; fwd=uri-miss; stored
  age           0
  bytes         1234
  time          dns 1.2 ms, http 4.5 ms"""
    bare = Result("HEAD", "http://[::1]:80/", "::1", 80, 404, "", None, None, 0, 0.25, None, None,
                  failed=("[::2]:80: Connection refused; trying the next address",))
    assert format_report(bare) == """\
HEAD http://[::1]:80/
  skipped       [::2]:80: Connection refused; trying the next address
  region        -
  edge          - ([::1]:80)
  status        404
  cache-status  -
  age           -
  bytes         0
  time          http 250.0 ms"""

