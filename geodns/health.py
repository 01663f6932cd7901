"""Edge health: a pure rise/fall state machine and the HTTP prober that feeds it.

Rules (as in HAProxy and gdnsd's http_status monitor):

- An edge that has never been probed counts as up.
- A probe succeeds when ``GET http://ADDRESS:PORT{path}`` answers 2xx within ``timeout``;
  anything else (refused, reset, timeout, other status) is a failure. Tunable (``[health]``,
  and per ``[[pools]]`` entry): ``host`` sends that Host header (and, over TLS, server name),
  ``status`` lists the statuses that pass instead of 2xx, ``check = "https"`` sends the GET
  over TLS (certificate verified unless ``tls_verify = false``; ``ca_file``), ``check = "tcp"``
  only connects, ``port`` probes another port than the answered one; ADDRESS is the edge's
  ``check_address`` (its answered address unless set).
- Probes are keyed: each edge by its name with the ``[health]`` settings, and each edge of a
  pool with its own ``health`` by ``POOL/EDGE`` with the pool's (``Topology.pool_probes``);
  the health map handed to ``on_change`` holds every key.
- An up edge goes down after ``fall`` consecutive failures; a down edge comes up after ``rise``
  consecutive successes. A result that agrees with the current state resets the other counter.
- Every edge is probed every ``interval`` seconds. With the defaults (interval 1 s, timeout 1 s,
  fall 2) a dead edge is marked down within 2 s when it refuses connections and within about
  3 s when it does not answer at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp

from geoconfig.topology import Edge, HealthSettings, Probe

log = logging.getLogger("geoedge.health")


@dataclass(frozen=True, slots=True)
class EdgeState:
    up: bool = True
    successes: int = 0
    failures: int = 0


def observe(state: EdgeState, ok: bool, rise: int, fall: int) -> EdgeState:
    """The state after one probe result."""
    if ok:
        successes = state.successes + 1
        up = state.up or successes >= rise
        return EdgeState(up, 0 if up else successes, 0)
    failures = state.failures + 1
    up = state.up and failures < fall
    return EdgeState(up, 0, failures if up else 0)


class HealthChecker:
    """Probes every edge and calls ``on_change(health)`` whenever an edge flips."""

    def __init__(self, edges: tuple[Edge, ...], settings: HealthSettings,
                 on_change: Callable[[Mapping[str, bool]], None],
                 extra: tuple[Probe, ...] = ()) -> None:
        self.on_change = on_change
        self.settings = settings
        self.edges = edges
        self.extra = extra
        self.states: dict[str, EdgeState] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._tls: dict[tuple[bool, str], ssl.SSLContext] = {}
        self._by_key = self.probes()

    def probes(self) -> dict[str, Probe]:
        """Every probe by key: the edges with ``settings``, then the extra (pool) ones."""
        out = {e.name: Probe(e.name, e, self.settings) for e in self.edges}
        out.update((p.key, p) for p in self.extra)
        return out

    def snapshot(self) -> dict[str, bool]:
        return {name: st.up for name, st in self.states.items()}

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=True),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None),  # probe() bounds each probe itself
        )
        self._spawn()

    def reconfigure(self, edges: tuple[Edge, ...], settings: HealthSettings,
                    extra: tuple[Probe, ...] = ()) -> None:
        """Switch to a new edge list (after a reload); an unchanged probe keeps its state."""
        old = self.probes()
        self.edges, self.settings, self.extra = edges, settings, extra
        self._by_key = self.probes()
        keep = {k for k, p in self._by_key.items() if old.get(k) == p}
        for name in list(self._tasks):
            if name not in keep:
                self._tasks.pop(name).cancel()
                self.states.pop(name, None)
        if self._session is not None:
            self._spawn()

    def _spawn(self) -> None:
        for key, probe in self._by_key.items():
            if key not in self._tasks:
                self._tasks[key] = asyncio.create_task(self._run(probe))

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def probe(self, edge: Edge, settings: HealthSettings | None = None) -> bool:
        """One probe of ``edge`` with ``settings`` (default: ``[health]``)."""
        assert self._session is not None
        s = settings or self.settings
        host = f"[{edge.check_address}]" if ":" in edge.check_address else edge.check_address
        port = s.port or edge.port
        url = f"{'https' if s.check == 'https' else 'http'}://{host}:{port}{s.path}"
        try:
            # asyncio.timeout, not aiohttp's: a cancellation that coincides with the timeout
            # must still cancel (aiohttp's nested timers can turn it into a TimeoutError)
            async with asyncio.timeout(s.timeout):
                if s.check == "tcp":
                    _, writer = await asyncio.open_connection(edge.check_address, port)
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
                    return True
                extra: dict = {}
                if s.host:
                    extra["headers"] = {"Host": s.host}
                if s.check == "https":
                    extra["ssl"] = self._context(s)
                    if s.host:
                        extra["server_hostname"] = s.host
                async with self._session.get(url, allow_redirects=False, **extra) as resp:
                    return resp.status in s.status if s.status else 200 <= resp.status < 300
        except (aiohttp.ClientError, TimeoutError, OSError, ssl.SSLError) as exc:
            log.debug("probe %s failed: %r", url, exc)
            return False

    def _context(self, s: HealthSettings) -> ssl.SSLContext | bool:
        if not s.tls_verify:
            return False  # aiohttp: TLS without verification
        key = (s.tls_verify, s.ca_file)
        ctx = self._tls.get(key)
        if ctx is None:
            ctx = self._tls[key] = ssl.create_default_context(cafile=s.ca_file or None)
        return ctx

    async def _run(self, probe: Probe) -> None:
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        while self._tasks.get(probe.key) is me:  # a replaced or removed prober ends
            started = loop.time()
            ok = await self.probe(probe.edge, probe.settings)
            self.record(probe.key, ok)
            await asyncio.sleep(max(0.0, probe.settings.interval - (loop.time() - started)))

    def record(self, name: str, ok: bool) -> None:
        before = self.states.get(name, EdgeState())
        probe = self._by_key.get(name)
        s = probe.settings if probe is not None else self.settings
        after = observe(before, ok, s.rise, s.fall)
        self.states[name] = after
        if after.up != before.up:
            log.log(logging.INFO if after.up else logging.WARNING, "edge %s is now %s", name,
                    "UP" if after.up else "DOWN")
            self.on_change(self.snapshot())


__all__ = ["EdgeState", "HealthChecker", "observe"]
