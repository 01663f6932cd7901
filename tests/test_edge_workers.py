"""``geoedge edge --workers N`` (edge/workers.py): N real processes on one port, supervised,
sharing what they store through a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from edge.workers import FIRST_DELAY, MAX_DELAY, YOUNG, restart_delay
from geoedge.deploy.writers import dump_toml
from tests.edgeutil import DEFAULT_EDGE, WAIT, FakeClock, TestOrigin, topology_dict
from tests.redisutil import RedisServer, redis_server  # noqa: F401  (fixture)

GEOEDGE = str(Path(sys.executable).with_name("geoedge"))
HOST = "www.example.test"
START = 30.0  # seconds for the processes to come up (the tests wait on their log lines)


@pytest.mark.parametrize(("previous", "lived", "expected"), [
    (0.0, 0.5, FIRST_DELAY),  # first restart
    (FIRST_DELAY, 0.5, 2 * FIRST_DELAY),  # dies young again: twice as long
    (4.0, 1.0, 8.0),
    (8.0, 1.0, MAX_DELAY),  # capped
    (MAX_DELAY, 1.0, MAX_DELAY),
    (MAX_DELAY, YOUNG, FIRST_DELAY),  # it ran long enough: start over
])
def test_restart_delay(previous: float, lived: float, expected: float) -> None:
    assert restart_delay(previous, lived) == expected


class Edge:
    """A supervised multi-worker edge process; its stderr collected by a thread."""

    def __init__(self, config: Path, workers: int) -> None:
        self.proc = subprocess.Popen(
            [GEOEDGE, "edge", "--config", str(config), "--name", "us-east-1", "--listen",
             "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--workers", str(workers),
             "--log-level", "info"],
            stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    async def wait_for(self, pattern: str, count: int = 1,
                       timeout: float = START) -> list[re.Match[str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = list(re.finditer(pattern, self.text()))
            if len(found) >= count:
                return found
            if self.proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {count} x {pattern!r} in:\n{self.text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(WAIT * 2)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the edge did not stop in {WAIT * 2:g} s after SIGINT; "
                                 f"its log:\n{self.text()}") from None
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture
def config(tmp_path: Path, redis_server: RedisServer) -> Iterator:  # noqa: F811
    origins: list[TestOrigin] = []

    def make(origin: TestOrigin, redis: bool = True, **edge: object) -> Path:
        origins.append(origin)
        data = topology_dict([origin], {**DEFAULT_EDGE, "drain_timeout": 0.2, **edge})
        for region in data["regions"]:
            if redis and region["name"] == "us-east":
                region["redis"] = {"url": redis_server.url}
        path = tmp_path / "topology.toml"
        path.write_text(dump_toml(data))
        return path

    yield make


async def _get(port: int, path: str) -> tuple[int, bytes]:
    connector = aiohttp.TCPConnector(force_close=True)  # a new connection each time
    async with aiohttp.ClientSession(connector=connector) as s, asyncio.timeout(WAIT), s.get(
            f"http://127.0.0.1:{port}{path}", headers={"Host": HOST}) as r:
        return r.status, await r.read()


async def _requests(admin_port: int) -> float:
    async with aiohttp.ClientSession() as s, asyncio.timeout(WAIT), s.get(
            f"http://127.0.0.1:{admin_port}/metrics") as r:
        text = await r.text()
    m = re.search(r"^geoedge_requests_total\{[^}]*\} (\S+)", text, re.M)
    assert m, text
    return float(m.group(1))


async def _started(edge: Edge, workers: int) -> tuple[int, list[int]]:
    serving = await edge.wait_for(r"serving edge us-east-1 on 127\.0\.0\.1 port (\d+)", workers)
    ports = {int(m.group(1)) for m in serving}
    assert len(ports) == 1, edge.text()  # one port for every worker
    admins = await edge.wait_for(r"admin listener \(/metrics, stats\) on \S+ port (\d+)",
                                 workers)
    return ports.pop(), [int(m.group(1)) for m in admins]


async def test_two_workers_share_one_port_and_one_origin_fetch_per_object(config) -> None:
    origin = TestOrigin("origin-1", FakeClock(time.time()))
    await origin.start()
    for i in range(10):
        origin.route(f"/o/{i}", headers=[("Cache-Control", "max-age=3600")], body=b"x%d" % i)
    edge = Edge(config(origin), 2)
    try:
        port, admins = await _started(edge, 2)
        for _ in range(4):
            for i in range(10):
                assert await _get(port, f"/o/{i}") == (200, b"x%d" % i)
        # new connections are spread over both workers by the kernel (SO_REUSEPORT) ...
        served = [await _requests(a) for a in admins]
        assert all(n > 0 for n in served), served
        # ... and each object was fetched once, whatever worker asked first
        assert origin.count("/o/0", "GET") == 1
        assert sum(origin.count(f"/o/{i}", "GET") for i in range(10)) == 10
        # a purge sent to one worker reaches the other: none serves the old body after it
        origin.route("/o/0", headers=[("Cache-Control", "max-age=3600")], body=b"new")
        async with aiohttp.ClientSession() as s, s.request(
                "PURGE", f"http://127.0.0.1:{port}/o/0",
                headers={"Host": HOST, "Authorization": "Bearer test-purge-token"}) as r:
            assert r.status == 200
        for _ in range(10):
            assert await _get(port, "/o/0") == (200, b"new")
        assert origin.count("/o/0", "GET") == 2
    finally:
        assert edge.stop() == 0
        await origin.stop()


async def test_a_dead_worker_is_started_again(config) -> None:
    origin = TestOrigin("origin-1", FakeClock(time.time()))
    await origin.start()
    origin.route("/a", headers=[("Cache-Control", "max-age=3600")], body=b"A")
    edge = Edge(config(origin), 2)
    try:
        port, _ = await _started(edge, 2)
        pids = [int(p) for p in subprocess.run(
            ["pgrep", "-P", str(edge.proc.pid)], capture_output=True, text=True,
            check=True).stdout.split()]
        assert len(pids) == 2
        os.kill(pids[0], signal.SIGKILL)
        await edge.wait_for(rf"edge worker \d \(pid {pids[0]}\) exited with signal SIGKILL")
        await edge.wait_for(r"serving edge us-east-1 on 127\.0\.0\.1 port (\d+)", 3)
        for _ in range(10):
            assert await _get(port, "/a") == (200, b"A")
    finally:
        assert edge.stop() == 0
        await origin.stop()
    # every worker is gone with the supervisor
    for pid in pids[1:]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_sigterm_drains_every_worker_and_exits_0(config) -> None:
    origin = TestOrigin("origin-1", FakeClock(time.time()))
    await origin.start()
    edge = Edge(config(origin), 2)
    try:
        await _started(edge, 2)
        edge.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(edge.proc.wait, WAIT * 2) == 0
        assert edge.text().count("stopped accepting") >= 2, edge.text()
    finally:
        edge.stop()
        await origin.stop()


async def test_workers_without_a_shared_tier_are_refused(config) -> None:
    origin = TestOrigin("origin-1", FakeClock(time.time()))
    await origin.start()
    try:
        edge = Edge(config(origin, redis=False), 2)
        code = await asyncio.to_thread(edge.proc.wait, WAIT * 2)
        assert code == 2
        assert "edge.workers = 2" in edge.text() and "redis" in edge.text()
    finally:
        await origin.stop()


async def test_a_stuck_worker_delays_a_purge_and_loses_its_disk_cache(config,
                                                                     tmp_path: Path) -> None:
    """SIGSTOP one worker: a purge through the other is still answered (after the channel's
    timeout); the stuck worker, killed before it confirmed, starts again with its disk cache
    emptied instead of serving what was purged."""
    origin = TestOrigin("origin-1", FakeClock(time.time()))
    await origin.start()
    origin.route("/p", headers=[("Cache-Control", "max-age=3600")], body=b"P")
    edge = Edge(config(origin, disk_path=str(tmp_path / "cache")), 2)
    pids: list[int] = []
    try:
        port, _ = await _started(edge, 2)
        for _ in range(6):
            assert await _get(port, "/p") == (200, b"P")
        pids[:] = sorted(int(p) for p in subprocess.run(
            ["pgrep", "-P", str(edge.proc.pid)], capture_output=True, text=True,
            check=True).stdout.split())
        assert {p.name for p in (tmp_path / "cache").iterdir()} == {"w0", "w1"}
        os.kill(pids[1], signal.SIGSTOP)
        answered = None
        for _ in range(20):  # new connections until one lands on the running worker
            try:
                async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                        force_close=True)) as s, asyncio.timeout(4.0), s.request(
                        "PURGE", f"http://127.0.0.1:{port}/p",
                        headers={"Host": HOST, "Authorization": "Bearer test-purge-token"}) as r:
                    answered = r.status
                    break
            except TimeoutError:  # this one went to the stopped worker
                continue
        assert answered == 200
        await edge.wait_for(r"not confirmed by every worker")
        os.kill(pids[1], signal.SIGKILL)
        await edge.wait_for(r"edge worker 1: purges were sent while it was down")
        await edge.wait_for(r"serving edge us-east-1 on 127\.0\.0\.1 port (\d+)", 3)
    finally:
        for pid in pids:  # whatever happened, none stays stopped
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        assert edge.stop() == 0
        await origin.stop()


async def test_sighup_reloads_every_worker(config) -> None:
    """SIGHUP to the supervisor: every worker reloads the file (a new site, with an origin of
    its own, is served by whichever worker a connection lands on); a bad file is rejected by
    every worker, which keeps serving."""
    origin, other = (TestOrigin(n, FakeClock(time.time())) for n in ("origin-1", "origin-2"))
    await origin.start()
    await other.start()
    origin.route("/before", headers=[("Cache-Control", "max-age=3600")], body=b"default")
    for i in range(12):
        other.route(f"/n/{i}", headers=[("Cache-Control", "max-age=3600")], body=b"new site")
    path = config(origin)
    edge = Edge(path, 2)
    try:
        port, _ = await _started(edge, 2)
        assert await _get_host(port, "new.test", "/before") == (200, b"default")
        with path.open("rb") as f:
            data = tomllib.load(f)
        data["sites"] = [{"name": "new", "hosts": ["new.test"],
                          "origins": [{"name": "o2", "host": "127.0.0.1", "port": other.port}]}]
        path.write_text(dump_toml(data))
        edge.proc.send_signal(signal.SIGHUP)
        await edge.wait_for(r"reloaded \S+ \(SIGHUP\): 1 sites", 2)
        for i in range(12):  # new connections: the kernel spreads them over both workers
            assert await _get_host(port, "new.test", f"/n/{i}") == (200, b"new site")
        path.write_text(path.read_text() + "\n[edge]\nnot_a_knob = 1\n")
        edge.proc.send_signal(signal.SIGHUP)
        await edge.wait_for(r"reload \(SIGHUP\) rejected", 2)
        for i in range(12):
            assert await _get_host(port, "new.test", f"/n/{i}") == (200, b"new site")
        assert edge.proc.poll() is None
    finally:
        assert edge.stop() == 0
        await origin.stop()
        await other.stop()


async def _get_host(port: int, host: str, path: str) -> tuple[int, bytes]:
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as s, asyncio.timeout(WAIT), s.get(
            f"http://127.0.0.1:{port}{path}", headers={"Host": host}) as r:
        return r.status, await r.read()


async def test_each_worker_acknowledges_the_purge_log(config, redis_server) -> None:  # noqa: F811
    """The region's purge log is acknowledged per worker (us-east-1/w0, /w1) with the count
    (us-east-1/workers): the edge counts as confirmed once both have applied the entry."""
    origin = TestOrigin("origin-1", FakeClock(time.time()))
    await origin.start()
    origin.route("/q", headers=[("Cache-Control", "max-age=3600")], body=b"Q")
    edge = Edge(config(origin), 2)
    try:
        port, _ = await _started(edge, 2)
        assert await _get(port, "/q") == (200, b"Q")
        async with aiohttp.ClientSession() as s, asyncio.timeout(WAIT + 5), s.post(
                f"http://127.0.0.1:{port}/.geoedge/purge",
                json={"url": f"http://{HOST}/q", "wait": 2},
                headers={"Host": HOST, "Authorization": "Bearer test-purge-token"}) as r:
            assert r.status == 200, await r.text()
            doc = await r.json()
        # us-east-2 is in the region but not running
        assert doc["region"]["edges"] == {"us-east-1": True, "us-east-2": False}, doc
        with redis_server.client() as c:
            key = next(iter(c.scan_iter("*{purgelog}:acks")))
            acks = {k.decode(): v.decode() for k, v in c.hgetall(key).items()}
        assert acks["us-east-1/workers"] == "2"
        assert {"us-east-1/w0", "us-east-1/w1"} <= set(acks), acks
        assert "us-east-1" not in acks
    finally:
        assert edge.stop() == 0
        await origin.stop()
