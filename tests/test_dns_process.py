"""``geoedge dns`` as a real process: workers sharing a port, database hot reload, and
start-up failures (wrong database type, address in use) that must end with a clear message."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest
from dnsutil import (
    UDP_LOOPS,
    DnsProcess,
    addresses,
    demo_text,
    ecs_scope,
    free_port,
    query,
    wait_for,
    with_udp_loop,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
GEOEDGE = str(Path(sys.executable).parent / "geoedge")

EU = {"127.0.2.1", "127.0.2.2"}
US = {"127.0.1.1", "127.0.1.2"}
AP = {"127.0.3.1", "127.0.3.2"}
SUBNETS = [("81.2.69.0/24", EU), ("8.8.8.0/24", US), ("1.0.16.0/24", AP)]  # GB, US, JP


def write_config(tmp_path: Path, database: str = "", watch_interval: float = 2.0,
                 loop: str = "c") -> Path:
    # Edges on a port where nothing listens: every edge is down, every region fails open to
    # its nearest region with all its edges, so the answers are the same as when all are up.
    text = demo_text(free_port(), watch_interval=watch_interval)
    if database:
        text = text.replace('database = ""', f'database = "{database}"')
        assert database in text
    config = tmp_path / "topology.toml"
    config.write_text(with_udp_loop(text, loop))
    return config


def ask(port: int, subnet: str, timeout: float = 1.0) -> dns.message.Message:
    """One UDP query from a fresh socket (a new source port each time)."""
    addr, prefix = subnet.split("/")
    msg = dns.message.make_query("www.example.test", "A", use_edns=0,
                                 options=[dns.edns.ECSOption(addr, int(prefix))])
    return dns.query.udp(msg, "127.0.0.1", port=port, timeout=timeout)


def answers(port: int, subnet: str) -> set[str] | None:
    try:
        return addresses(ask(port, subnet, timeout=0.5))
    except (dns.exception.Timeout, OSError):
        return None


class Supervisor:
    """``geoedge dns --workers N`` on a fixed port, in its own session (process group) so that
    every process it forks can be found and cleaned up."""

    def __init__(self, config: Path, port: int, workers: int) -> None:
        self.proc = subprocess.Popen(
            [GEOEDGE, "dns", "--config", str(config), "--listen", f"127.0.0.1:{port}",
             "--workers", str(workers)],
            stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.port = port
        self.log: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)

    def serving_pids(self) -> list[int]:
        return [int(m.group(1)) for line in list(self.log)
                if (m := re.search(r"serving DNS on 127\.0\.0\.1 port \d+ \(udp\+tcp\), pid (\d+)",
                                       line))]

    def children(self) -> set[int]:
        out = subprocess.run(["ps", "--ppid", str(self.proc.pid), "-o", "pid="],
                             capture_output=True, text=True, check=False).stdout
        return {int(p) for p in out.split()}

    def text(self) -> str:
        return "".join(self.log)

    def kill_group(self) -> None:
        """Cleanup: SIGKILL the process group this test started (the supervisor and every
        worker it forked; they share its session)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split(") ", 1)[1][0] != "Z"  # a zombie is not alive
    except (OSError, IndexError):
        return False


# --------------------------------------------------------------------------------- workers


def test_workers_need_a_fixed_port(tmp_path):
    config = write_config(tmp_path)
    out = subprocess.run(
        [GEOEDGE, "dns", "--config", str(config), "--listen", "127.0.0.1:0", "--workers", "2"],
        capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 2
    assert "--workers > 1 needs fixed ports" in out.stderr
    assert "Traceback" not in out.stderr


def test_workers_zero_is_refused(tmp_path):
    config = write_config(tmp_path)
    out = subprocess.run(
        [GEOEDGE, "dns", "--config", str(config), "--listen", "127.0.0.1:0", "--workers", "0"],
        capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 2
    assert "--workers must be at least 1" in out.stderr


@pytest.fixture(params=UDP_LOOPS)
def two_workers(request, tmp_path) -> Iterator[Supervisor]:
    sup = Supervisor(write_config(tmp_path, loop=request.param), free_port(), workers=2)
    try:
        started, _ = wait_for(lambda: len(set(sup.serving_pids())) >= 2, 30)
        assert started, "workers did not start:\n" + sup.text()
        yield sup
    finally:
        if sup.proc.poll() is None:
            sup.kill_group()


def test_two_workers_share_the_port_and_a_killed_one_is_restarted(two_workers):
    sup = two_workers
    first = set(sup.serving_pids())
    assert len(first) == 2 and sup.proc.pid not in first
    assert sup.children() == first

    # ~200 queries, each from its own socket (so SO_REUSEPORT spreads them over the workers)
    for i in range(198):
        subnet, expected = SUBNETS[i % 3]
        msg = ask(sup.port, subnet)
        assert msg.rcode() == dns.rcode.NOERROR and addresses(msg) == expected, (i, subnet)
    for subnet, expected in SUBNETS:  # and over TCP
        assert addresses(query(sup.port, "www.example.test", subnet=subnet, tcp=True)) == expected

    # a worker killed outright is replaced, and the port keeps answering throughout
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    restarted, _ = wait_for(lambda: len(set(sup.serving_pids()) - first) == 1, 15)
    assert restarted, sup.text()
    (newcomer,) = set(sup.serving_pids()) - first
    assert sup.children() == (first - {victim}) | {newcomer}
    assert f"worker {victim} was killed by signal 9; restarting it" in sup.text()
    for i in range(30):
        subnet, expected = SUBNETS[i % 3]
        assert answers(sup.port, subnet) == expected
    assert sup.proc.poll() is None
    assert "Traceback" not in sup.text()


def test_sigterm_stops_workers_and_supervisor(two_workers):
    sup = two_workers
    first, second = sorted(set(sup.serving_pids()))
    # SIGTERM one worker at a time (the supervisor restarts each): every worker must stop.
    # Regression: stop() used to wake its UDP thread with a datagram to its own port, which
    # SO_REUSEPORT delivers to one fixed slot of the group (often another worker's). A
    # restarted worker takes the last slot, so these three cover both slots whatever the
    # kernel's hash is: worker 1, its replacement, then the original worker 2.
    targets = [first, None, second]
    for step in range(3):
        target = targets[step]
        assert target is not None
        before = set(sup.serving_pids())
        os.kill(target, signal.SIGTERM)
        stopped, _ = wait_for(lambda t=target: not alive(t), 3)
        assert stopped, f"step {step + 1}: worker {target} did not stop within 3 s of SIGTERM"
        replaced, _ = wait_for(lambda b=before: len(set(sup.serving_pids()) - b) == 1, 15)
        assert replaced, sup.text()
        if step == 0:
            (targets[1],) = set(sup.serving_pids()) - before
    assert answers(sup.port, "81.2.69.0/24") == EU

    # SIGTERM to the supervisor stops every worker and then itself
    workers = sup.children()
    assert len(workers) == 2
    sup.proc.send_signal(signal.SIGTERM)
    try:
        code = sup.proc.wait(10)
    except subprocess.TimeoutExpired:
        code = None
    assert code == 0, f"supervisor still running 10 s after SIGTERM: {sup.children()}"
    gone, _ = wait_for(lambda: not any(alive(pid) for pid in workers), 5)
    assert gone, [pid for pid in workers if alive(pid)]
    assert answers(sup.port, "81.2.69.0/24") is None


# ------------------------------------------------------------------------ database hot reload


def load_make_mmdb():
    spec = importlib.util.spec_from_file_location("make_mmdb", FIXTURES / "make_mmdb.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_city_db(path: Path, extra: list[tuple[str, dict]]) -> None:
    """The city-test fixture's networks plus ``extra`` (global addresses: the fixture's own
    documentation ranges are not global, so servers ignore them in ECS, RFC 7871 §7.1.1)."""
    mk = load_make_mmdb()
    mk.write_db(path, "GeoIP2-City", 6, [*mk.CITY_NETWORKS, *extra])


def replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@pytest.mark.parametrize("loop", UDP_LOOPS)
def test_database_hot_reload(tmp_path, loop):
    mk = load_make_mmdb()
    london = mk.geo_record("GB", "EU", (51.5142, -0.0931))
    singapore = mk.geo_record("SG", "AS", (1.2897, 103.8501))
    v1, v2 = tmp_path / "v1.mmdb", tmp_path / "v2.mmdb"
    write_city_db(v1, [("81.2.68.0/22", london)])
    write_city_db(v2, [("81.2.69.0/24", singapore)])
    db = tmp_path / "geo.mmdb"
    db.write_bytes(v1.read_bytes())
    config = write_config(tmp_path, database=str(db), watch_interval=0.1, loop=loop)

    def seen(proc: DnsProcess) -> tuple[frozenset[str], int | None]:
        msg = query(proc.port, "www.example.test", subnet="81.2.69.0/24")
        return frozenset(addresses(msg)), ecs_scope(msg)

    def reloads() -> int:
        return sum("reloaded (file changed)" in line for line in dnsp.log)

    dnsp = DnsProcess(config)
    try:
        assert seen(dnsp) == (EU, 22)
        assert any(str(db) in line and "GeoIP2-City" in line for line in dnsp.log)
        # Rewrite the config unchanged until a reload shows that the watcher is running (the
        # watcher starts a moment after "serving DNS" is logged; a change made before that is
        # covered by test_change_during_startup_is_not_missed).
        for _ in range(20):
            config.write_text(config.read_text())
            watching, _ = wait_for(lambda: reloads() > 0, 0.5)
            if watching:
                break
        assert watching, "".join(dnsp.log)
        before = reloads()

        replace(db, v2.read_bytes())
        moved, took = wait_for(lambda: seen(dnsp) == (AP, 24), 10)
        assert moved, (seen(dnsp), "".join(dnsp.log))
        assert took < 5
        assert reloads() == before + 1

        # a broken database: logged, and the previous one keeps answering
        replace(db, b"this is not a MaxMind DB file\n" * 100)
        logged, _ = wait_for(lambda: any("reload (file changed) failed" in line
                                         for line in dnsp.log), 10)
        assert logged, "".join(dnsp.log)
        failure = next(line for line in dnsp.log if "reload (file changed) failed" in line)
        assert str(db) in failure and "not a MaxMind DB file" in failure
        for _ in range(5):
            assert seen(dnsp) == (AP, 24)
        assert dnsp.proc.poll() is None

        # a good file again is picked up
        replace(db, v1.read_bytes())
        back, _ = wait_for(lambda: seen(dnsp) == (EU, 22), 10)
        assert back, (seen(dnsp), "".join(dnsp.log))
        assert "Traceback" not in "".join(dnsp.log)
    finally:
        assert dnsp.stop() == 0


async def test_change_during_startup_is_not_missed(tmp_path):
    from geodns.main import load_engine, serve

    mk = load_make_mmdb()
    v2 = tmp_path / "v2.mmdb"
    write_city_db(v2, [("81.2.69.0/24", mk.geo_record("SG", "AS", (1.2897, 103.8501)))])
    db = tmp_path / "geo.mmdb"
    write_city_db(db, [("81.2.68.0/22", mk.geo_record("GB", "EU", (51.5142, -0.0931)))])
    config = write_config(tmp_path, database=str(db), watch_interval=0.05)
    engine = load_engine(config)  # what run_dns does first...
    replace(db, v2.read_bytes())  # ...then the database is updated while the server starts
    port = free_port()
    ready = asyncio.Event()
    server = asyncio.create_task(serve(config, engine, [("127.0.0.1", port)], False, ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)

        async def answer() -> set[str] | None:
            return await asyncio.to_thread(answers, port, "81.2.69.0/24")

        assert await answer() in (EU, AP)
        deadline = asyncio.get_running_loop().time() + 2  # 40 watch intervals
        while await answer() != AP and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        assert await answer() == AP, "still answering from the database loaded at start-up"
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


# ---------------------------------------------------------------------- start-up failures


@pytest.mark.parametrize(
    ("database", "words"),
    [
        ("not-geo", ["geoip database error", "not-geo.mmdb", "'GeoIP2-ASN'",
                     "not a City or Country database"]),
        ("garbage", ["geoip database error", "garbage.mmdb", "not a MaxMind DB file"]),
        ("missing", ["geoip database error", "missing.mmdb", "cannot open"]),
    ],
)
def test_bad_database_at_startup_exits_2(tmp_path, database, words):
    path = {"not-geo": FIXTURES / "not-geo.mmdb", "garbage": tmp_path / "garbage.mmdb",
            "missing": tmp_path / "missing.mmdb"}[database]
    if database == "garbage":
        path.write_bytes(b"\x00" * 4096)
    config = write_config(tmp_path, database=str(path))
    out = subprocess.run([GEOEDGE, "dns", "--config", str(config), "--listen", "127.0.0.1:0"],
                         capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 2, out.stderr
    for word in words:
        assert word in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def occupy(kind: socket.SocketKind) -> socket.socket:
    sock = socket.socket(socket.AF_INET, kind)
    sock.bind(("127.0.0.1", 0))
    if kind == socket.SOCK_STREAM:
        sock.listen(1)
    return sock


@pytest.mark.parametrize("kind", [socket.SOCK_DGRAM, socket.SOCK_STREAM], ids=["udp", "tcp"])
def test_address_in_use_single_process(tmp_path, kind):
    config = write_config(tmp_path)
    with occupy(kind) as sock:
        port = sock.getsockname()[1]
        out = subprocess.run(
            [GEOEDGE, "dns", "--config", str(config), "--listen", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode != 0
    assert f"127.0.0.1:{port}" in out.stderr or f"127.0.0.1 port {port}" in out.stderr
    assert "in use" in out.stderr
    assert "Traceback" not in out.stderr


def test_address_in_use_with_workers(tmp_path):
    config = write_config(tmp_path)
    with occupy(socket.SOCK_DGRAM) as sock:
        sup = Supervisor(config, sock.getsockname()[1], workers=2)
        try:
            ended, _ = wait_for(lambda: sup.proc.poll() is not None, 4)
        finally:
            if sup.proc.poll() is None:
                sup.kill_group()
    assert ended, f"still running after 4 s; {sup.text().count('restarting')} restarts"
    assert sup.proc.returncode != 0
    assert "in use" in sup.text()
    assert "Traceback" not in sup.text()
