"""Edge health: a pure rise/fall state machine and the HTTP prober that feeds it.

Rules (as in HAProxy and gdnsd's http_status monitor):

- An edge that has never been probed counts as up.
- A probe succeeds when ``GET http://ADDRESS:PORT{path}`` answers 2xx within ``timeout``;
  anything else (refused, reset, timeout, other status) is a failure.
- An up edge goes down after ``fall`` consecutive failures; a down edge comes up after ``rise``
  consecutive successes. A result that agrees with the current state resets the other counter.
- Every edge is probed every ``interval`` seconds. With the defaults (interval 1 s, timeout 1 s,
  fall 2) a dead edge is marked down within 2 s when it refuses connections and within about
  3 s when it does not answer at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp

from geoconfig.topology import Edge, HealthSettings

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
                 on_change: Callable[[Mapping[str, bool]], None]) -> None:
        self.on_change = on_change
        self.settings = settings
        self.edges = edges
        self.states: dict[str, EdgeState] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None

    def snapshot(self) -> dict[str, bool]:
        return {name: st.up for name, st in self.states.items()}

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=True),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None),  # probe() bounds each probe itself
        )
        self._spawn()

    def reconfigure(self, edges: tuple[Edge, ...], settings: HealthSettings) -> None:
        """Switch to a new edge list (after a reload); an unchanged edge keeps its state."""
        old = {e.name: e for e in self.edges}
        keep = {e.name for e in edges if old.get(e.name) == e and settings == self.settings}
        for name in list(self._tasks):
            if name not in keep:
                self._tasks.pop(name).cancel()
                self.states.pop(name, None)
        self.edges, self.settings = edges, settings
        if self._session is not None:
            self._spawn()

    def _spawn(self) -> None:
        for edge in self.edges:
            if edge.name not in self._tasks:
                self._tasks[edge.name] = asyncio.create_task(self._run(edge))

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def probe(self, edge: Edge) -> bool:
        assert self._session is not None
        url = edge.check_url_base + self.settings.path
        try:
            # asyncio.timeout, not aiohttp's: a cancellation that coincides with the timeout
            # must still cancel (aiohttp's nested timers can turn it into a TimeoutError)
            async with asyncio.timeout(self.settings.timeout):
                async with self._session.get(url, allow_redirects=False) as resp:
                    return 200 <= resp.status < 300
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.debug("probe %s failed: %r", url, exc)
            return False

    async def _run(self, edge: Edge) -> None:
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        while self._tasks.get(edge.name) is me:  # a replaced or removed prober ends
            started = loop.time()
            ok = await self.probe(edge)
            self.record(edge.name, ok)
            await asyncio.sleep(max(0.0, self.settings.interval - (loop.time() - started)))

    def record(self, name: str, ok: bool) -> None:
        before = self.states.get(name, EdgeState())
        after = observe(before, ok, self.settings.rise, self.settings.fall)
        self.states[name] = after
        if after.up != before.up:
            log.log(logging.INFO if after.up else logging.WARNING, "edge %s is now %s", name,
                    "UP" if after.up else "DOWN")
            self.on_change(self.snapshot())


__all__ = ["EdgeState", "HealthChecker", "observe"]
