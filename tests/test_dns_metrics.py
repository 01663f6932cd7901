"""GeoDNS metrics (``[dns] metrics_listen``) and the query log (``[dns.querylog]``).

Real servers (both UDP loops), real queries through dnspython and dig, the metrics read over
HTTP and parsed with prometheus-client's parser, the dnstap file read by the real
``dnstap-read`` (bind9-dnsutils)."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from dnsutil import (
    FAST_UDP_BUILT,
    NOT_BUILT,
    UDP_LOOPS,
    DnsProcess,
    ServerThread,
    demo_engine,
    demo_text,
    free_port,
    query,
    wait_for,
    with_udp_loop,
)
from prometheus_client.parser import text_string_to_metric_families

from geoconfig.dnsobs import ObsSettings, QueryLogSettings
from geodns.obsrun import Observability

needs_c = pytest.mark.skipif(not FAST_UDP_BUILT, reason=NOT_BUILT)
GEOEDGE = str(Path(sys.executable).parent / "geoedge")
EU_SUBNET, US_SUBNET = "81.2.69.0/24", "8.8.8.0/24"


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the endpoint: (name, sorted labels) -> value."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


class Running:
    def __init__(self, loop: str, log: QueryLogSettings | None = None) -> None:
        settings = ObsSettings(("127.0.0.1", 0), log or QueryLogSettings())
        self.obs = Observability.create(settings, "ns1.test")
        self.dns = ServerThread(demo_engine(), udp_loop=loop, obs=self.obs.obs).start()
        self.obs.serve_metrics(self.dns.server)

    def stop(self) -> None:
        self.dns.stop()
        self.obs.stop()


@pytest.fixture(params=UDP_LOOPS)
def running(request: pytest.FixtureRequest) -> Iterator[Running]:
    r = Running(request.param)
    yield r
    r.stop()


def ask_mix(port: int) -> None:
    """3 EU A (ECS), 1 US AAAA (ECS), 2 NXDOMAIN, 1 A over TCP: the counts the tests expect."""
    for _ in range(3):
        query(port, "www.example.test", subnet=EU_SUBNET)
    query(port, "www.example.test", "AAAA", subnet=US_SUBNET)
    query(port, "nope.example.test")
    query(port, "nope.example.test", use_edns=0)
    query(port, "www.example.test", tcp=True)


@needs_c
def test_queries_counted_by_proto_type_rcode_region(running: Running) -> None:
    ask_mix(running.dns.port)
    m = scrape(running.obs.metrics_url)
    q = "geoedge_dns_queries_total"
    assert sample(m, q, proto="udp", qtype="A", rcode="NOERROR", region="eu-west") == 3
    assert sample(m, q, proto="udp", qtype="AAAA", rcode="NOERROR", region="us-east") == 1
    assert sample(m, q, proto="udp", qtype="A", rcode="NXDOMAIN", region="none") == 2
    # TCP from 127.0.0.1 without ECS: the default region (a private address)
    assert sample(m, q, proto="tcp", qtype="A", rcode="NOERROR", region="us-east") == 1
    assert sum(v for (n, _), v in m.items() if n == q) == 7
    assert sample(m, "geoedge_dns_ecs_total", present="true") == 4
    assert sample(m, "geoedge_dns_ecs_total", present="false") == 3
    assert sample(m, "geoedge_dns_latency_seconds_count", proto="udp") == 6
    assert sample(m, "geoedge_dns_latency_seconds_count", proto="tcp") == 1
    assert sample(m, "geoedge_dns_latency_seconds_bucket", proto="udp", le="+Inf") == 6
    hits = sample(m, "geoedge_dns_answer_cache_total", result="hit")
    misses = sample(m, "geoedge_dns_answer_cache_total", result="miss")
    assert hits is not None and misses is not None and hits >= 2 and hits + misses == 7
    # every region and edge is listed, up (never probed), with a change time
    for region in ("us-east", "eu-west", "ap-southeast"):
        assert sample(m, "geoedge_dns_region_up", region=region) == 1
        assert sample(m, "geoedge_dns_edge_up", region=region, edge=f"{region}-1") == 1
        assert sample(m, "geoedge_dns_region_last_change_timestamp_seconds", region=region)
    assert sample(m, "geoedge_dns_reloads_total", result="ok") == 0
    assert sample(m, "process_cpu_seconds_total") is not None


@needs_c
def test_c_loop_paths_are_read_from_c() -> None:
    r = Running("c")
    try:
        for _ in range(5):
            query(r.dns.port, "www.example.test", subnet=EU_SUBNET)
        m = scrape(r.obs.metrics_url)
        paths = {p: sample(m, "geoedge_dns_udp_answer_path_total", path=p)
                 for p in ("cache", "cold", "python", "dropped")}
        # the first goes through Python (which stores the answer), the rest hit the C cache
        assert paths == {"cache": 4, "cold": 0, "python": 1, "dropped": 0}
    finally:
        r.stop()


@needs_c
def test_malformed_datagrams_count_as_unanswered() -> None:
    import socket

    r = Running("c")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for junk in (b"", b"\x00", b"\x12\x34\x81\x00" + bytes(8)):  # a response: dropped
                s.sendto(junk, ("127.0.0.1", r.dns.port))
        query(r.dns.port, "www.example.test")  # after the junk on the same socket path

        def unanswered() -> float | None:
            v = sample(scrape(r.obs.metrics_url), "geoedge_dns_unanswered_total", proto="udp")
            return v if v == 3 else None

        value, _ = wait_for(unanswered, 5)
        assert value == 3
    finally:
        r.stop()


def dnstap_read(path: Path, *args: str) -> str:
    exe = shutil.which("dnstap-read")
    assert exe, "dnstap-read is not installed (apt-get install bind9-dnsutils)"
    out = subprocess.run([exe, *args, str(path)], capture_output=True, text=True, timeout=30,
                         check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


@needs_c
@pytest.mark.parametrize("loop", UDP_LOOPS)
def test_dnstap_log_read_by_dnstap_read(tmp_path: Path, loop: str) -> None:
    path = tmp_path / "queries.dnstap"
    r = Running(loop, QueryLogSettings(str(path), "dnstap"))
    try:
        ask_mix(r.dns.port)
    finally:
        r.stop()
    lines = dnstap_read(path).splitlines()
    assert len(lines) == 7, lines
    assert all(f"<- 127.0.0.1:{r.dns.port} " in ln for ln in lines), lines  # the server's side
    assert sum(" AR " in ln and " UDP " in ln and ln.endswith(" www.example.test/IN/A")
               for ln in lines) == 3
    assert sum(ln.endswith(" www.example.test/IN/AAAA") for ln in lines) == 1
    assert sum(ln.endswith(" nope.example.test/IN/A") for ln in lines) == 2
    assert sum(" TCP " in ln and ln.endswith(" www.example.test/IN/A") for ln in lines) == 1
    yaml = dnstap_read(path, "-y")
    assert "identity: ns1.test" in yaml
    assert yaml.count('query_address: "127.0.0.1"') == 7
    assert yaml.count("CLIENT-SUBNET: 81.2.69.0/24/") >= 3  # (structured and as text)
    assert "status: NXDOMAIN" in yaml
    # a second start keeps the first file as PATH.1 (a stream cannot be appended to)
    r = Running(loop, QueryLogSettings(str(path), "dnstap"))
    try:
        query(r.dns.port, "www.example.test")
    finally:
        r.stop()
    assert len(dnstap_read(path).splitlines()) == 1
    assert len(dnstap_read(tmp_path / "queries.dnstap.1").splitlines()) == 7


@needs_c
@pytest.mark.parametrize("loop", UDP_LOOPS)
def test_json_log_and_sampling(tmp_path: Path, loop: str) -> None:
    path = tmp_path / "queries.jsonl"
    r = Running(loop, QueryLogSettings(str(path), "json"))
    try:
        ask_mix(r.dns.port)
    finally:
        r.stop()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 7
    eu = [x for x in records if x["ecs"] == EU_SUBNET]
    assert len(eu) == 3
    assert all(x["qname"] == "www.example.test." and x["qtype"] == "A" and x["proto"] == "udp"
               and x["rcode"] == "NOERROR" and x["answer"] in ("127.0.2.1", "127.0.2.2")
               and x["client"] == "127.0.0.1" and x["port"] > 0 for x in eu)
    assert [x["rcode"] for x in records if x["qname"] == "nope.example.test."] == ["NXDOMAIN"] * 2
    assert [x["proto"] for x in records].count("tcp") == 1
    sampled = tmp_path / "sampled.jsonl"
    r = Running(loop, QueryLogSettings(str(sampled), "json", sample=3))
    try:
        for _ in range(9):
            query(r.dns.port, "www.example.test")
        m = scrape(r.obs.metrics_url)
    finally:
        r.stop()
    assert len(sampled.read_text().splitlines()) == 3
    assert sample(m, "geoedge_dns_queries_total", proto="udp", qtype="A", rcode="NOERROR",
                  region="us-east") == 9  # the metrics count every query


@needs_c
def test_encoders_survive_random_packets(tmp_path: Path) -> None:
    """Random and truncated packets through obs_note: never a crash, every JSON line valid."""
    from geodns import _fastudp

    chunks: list[bytes] = []
    obs = _fastudp.obs_new(log=(0, 1, 4096, lambda data, n: chunks.append(data), b"", b""))
    rng = random.Random(17)
    good = bytes.fromhex("12340100000100000000000103777777076578616d706c650474657374000001"
                         "00010000291000000000000000")
    long_name = b"\x12\x34\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"\x3f" * 200 + b"\\" * 80
    packets = [long_name, good[:5], good]
    for _ in range(3000):
        base = bytearray(good if rng.random() < 0.5 else rng.randbytes(rng.randrange(0, 80)))
        for _ in range(rng.randrange(0, 6)):
            if base:
                base[rng.randrange(len(base))] = rng.randrange(256)
        packets.append(bytes(base))
    for i, p in enumerate(packets):
        response = None if i % 3 == 0 else rng.randbytes(rng.randrange(0, 60)) or None
        _fastudp.obs_note(obs, p, response, i % 2, 0.0001, "192.0.2.1" if i % 4 else "::1", 53)
    chunks.append(_fastudp.obs_take(obs)[0])
    lines = b"".join(chunks).decode().splitlines()
    assert len(lines) == len(packets)
    for line in lines:
        json.loads(line)
    answers, overflow, unanswered, ecs, _paths, latency = _fastudp.obs_read(obs)
    assert sum(unanswered) + sum(a[-1] for a in answers) + sum(overflow) == len(packets)
    assert sum(ecs[0]) + sum(ecs[1]) == len(packets)
    assert sum(latency[0][:-1]) + sum(latency[1][:-1]) == len(packets)


def test_rrl_counters_exported_when_the_server_has_them() -> None:
    from geodns.metrics import DnsMetrics

    class Server:
        engine = demo_engine()
        obs = None
        stats = {"rrl_dropped": 5, "rrl_slipped": 2}

    names = {s.name: s.value for f in DnsMetrics(Server(), 0.0).collect() for s in f.samples}
    assert names["geoedge_dns_rrl_dropped_total"] == 5
    assert names["geoedge_dns_rrl_slipped_total"] == 2
    Server.stats = None
    names = {s.name for f in DnsMetrics(Server(), 0.0).collect() for s in f.samples}
    assert "geoedge_dns_rrl_dropped_total" not in names


def metrics_url(proc: DnsProcess) -> str:
    for line in proc.log:
        if "serving metrics on " in line:
            return line.split("serving metrics on ", 1)[1].strip()
    raise AssertionError("no metrics line:\n" + "".join(proc.log))


def test_process_health_and_reload_metrics(tmp_path: Path) -> None:
    """``geoedge dns``: every edge down (nothing listens on their port), then a bad reload."""
    text = demo_text(free_port()).replace("\n[dns]\n", "\n[dns]\nmetrics_listen = "
                                          "\"127.0.0.1:0\"\n", 1)
    config = tmp_path / "topology.toml"
    config.write_text(with_udp_loop(text, "c"))
    proc = DnsProcess(config)
    try:
        url = metrics_url(proc)
        first = scrape(url)

        def all_down() -> dict | None:
            m = scrape(url)
            ups = [v for (n, _), v in m.items() if n == "geoedge_dns_edge_up"]
            return m if len(ups) == 6 and not any(ups) else None

        m, _ = wait_for(all_down, 20)
        assert m, "the edges were never reported down"
        assert sample(m, "geoedge_dns_region_up", region="eu-west") == 0
        started = sample(first, "geoedge_dns_region_last_change_timestamp_seconds",
                         region="eu-west")
        changed = sample(m, "geoedge_dns_region_last_change_timestamp_seconds",
                         region="eu-west")
        assert started is not None and changed is not None and changed > started
        config.write_text("not toml [")
        proc.proc.send_signal(signal.SIGHUP)

        def failed() -> dict | None:
            got = scrape(url)
            return got if sample(got, "geoedge_dns_reloads_total", result="failed") else None

        m, _ = wait_for(failed, 10)
        assert m and sample(m, "geoedge_dns_last_reload_success") == 0
    finally:
        assert proc.stop() == 0


@pytest.mark.parametrize(("extra", "key"), [
    ('metrics_listen = "nowhere"', "dns.metrics_listen"),
    ('[dns.querylog]\npath = "q.log"\nformat = "pcap"', "dns.querylog.format"),
    ('[dns.querylog]\nsample = 0', "dns.querylog.sample"),
    ('[dns.querylog]\nflush = 1', "dns.querylog.flush"),
])
def test_bad_settings_name_the_key(tmp_path: Path, extra: str, key: str) -> None:
    text = demo_text(free_port())
    text = text.replace("\n[geoip]\n", f"\n{extra}\n\n[geoip]\n", 1)
    config = tmp_path / "topology.toml"
    config.write_text(text)
    out = subprocess.run([GEOEDGE, "dns", "--config", str(config), "--listen", "127.0.0.1:0"],
                         capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode != 0
    assert key in out.stderr, out.stderr


def test_querylog_refused_with_workers(tmp_path: Path) -> None:
    text = demo_text(free_port()).replace("\n[geoip]\n", f'\n[dns.querylog]\npath = '
                                          f'"{tmp_path}/q.log"\n\n[geoip]\n', 1)
    config = tmp_path / "topology.toml"
    config.write_text(text)
    out = subprocess.run([GEOEDGE, "dns", "--config", str(config), "--workers", "2",
                          "--listen", f"127.0.0.1:{free_port()}"],
                         capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 2
    assert "--workers 1" in out.stderr


def test_unwritable_querylog_is_a_clear_error(tmp_path: Path) -> None:
    text = demo_text(free_port()).replace("\n[geoip]\n", f'\n[dns.querylog]\npath = '
                                          f'"{tmp_path}/missing/q.log"\n\n[geoip]\n', 1)
    config = tmp_path / "topology.toml"
    config.write_text(text)
    out = subprocess.run([GEOEDGE, "dns", "--config", str(config), "--listen", "127.0.0.1:0"],
                         capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 2
    assert "dns.querylog.path" in out.stderr and "missing/q.log" in out.stderr, out.stderr


@needs_c
def test_sigusr1_reopens_the_log_for_rotation(tmp_path: Path) -> None:
    path = tmp_path / "queries.jsonl"
    text = demo_text(free_port()).replace(
        "\n[geoip]\n", f'\n[dns.querylog]\npath = "{path}"\nflush_interval = 0.05\n\n[geoip]\n', 1)
    config = tmp_path / "topology.toml"
    config.write_text(text)
    proc = DnsProcess(config)
    try:
        query(proc.port, "www.example.test")

        def logged(p: Path, n: int) -> bool:
            return p.exists() and len(p.read_text().splitlines()) == n

        assert wait_for(lambda: logged(path, 1), 10)[0]
        rotated = tmp_path / "queries.jsonl.1"
        path.rename(rotated)
        proc.proc.send_signal(signal.SIGUSR1)
        assert wait_for(path.exists, 10)[0], "the log was not reopened"
        query(proc.port, "nope.example.test")
        assert wait_for(lambda: logged(path, 1), 10)[0]
        assert json.loads(path.read_text())["qname"] == "nope.example.test."
        assert logged(rotated, 1)
    finally:
        assert proc.stop() == 0


@needs_c
def test_json_qname_is_the_presentation_form() -> None:
    """Odd bytes in a name: escaped as dnspython (and BIND) write them, inside valid JSON."""
    import dns.message
    import dns.name

    from geodns import _fastudp

    chunks: list[bytes] = []
    obs = _fastudp.obs_new(log=(0, 1, 4096, lambda data, n: chunks.append(data), b"", b""))
    name = dns.name.Name([b"a.b", b"c\\d", b'e"f', b"\x01g\x7f", b"test", b""])
    wire = dns.message.make_query(name, "TXT").to_wire()
    _fastudp.obs_note(obs, wire, None, 0, 0.0, "2001:db8::1", 5353)
    record = json.loads(_fastudp.obs_take(obs)[0])
    assert record["qname"] == name.to_text()
    assert (record["qtype"], record["client"], record["port"]) == ("TXT", "2001:db8::1", 5353)


@needs_c
def test_json_addresses_are_written_as_python_writes_them() -> None:
    """The JSON log's own IPv4/IPv6 formatter against ipaddress (RFC 5952), random addresses
    with runs of zero groups, as client addresses."""
    import ipaddress

    from geodns import _fastudp

    chunks: list[bytes] = []
    obs = _fastudp.obs_new(log=(0, 1, 4096, lambda data, n: chunks.append(data), b"", b""))
    rng = random.Random(5)
    wanted = []
    for _ in range(2000):
        groups = [rng.choice((0, 0, 0, 1, 0xFFFF, rng.randrange(65536))) for _ in range(8)]
        v6 = ipaddress.IPv6Address(b"".join(g.to_bytes(2, "big") for g in groups))
        v4 = ipaddress.IPv4Address(rng.randbytes(4))
        for addr in (v6, v4):
            _fastudp.obs_note(obs, b"\x00" * 12, None, 0, 0.0, str(addr), 1)
            wanted.append(str(addr))
    chunks.append(_fastudp.obs_take(obs)[0])
    got = [json.loads(line)["client"] for line in b"".join(chunks).decode().splitlines()]
    assert got == wanted
