"""``geoedge edge``: run one edge node.

Lifecycle: the origin pool starts (with its health probes), then the listener. SIGTERM drains:
``/healthz`` turns 503 at once so GeoDNS moves clients away, the edge keeps serving for
``edge.drain_seconds``, then stops accepting and closes. SIGINT stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from edge.httpserver import HttpProtocol, Limits
from edge.proxy import EdgeApp
from edge.tier.region import RegionTier
from edge.upstream import OriginPool
from geoconfig.topology import Topology, load_topology

log = logging.getLogger("geoedge.edge")


@dataclass
class RunningEdge:
    app: EdgeApp
    pool: OriginPool
    server: asyncio.base_events.Server
    host: str
    port: int
    connections: set[HttpProtocol] = field(default_factory=set)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        self.server.close()
        for proto in list(self.connections):
            if proto.transport is not None and not proto.busy:
                proto.transport.close()
        await self.server.wait_closed()
        for task in list(self.app.background):
            task.cancel()
        if self.app.tier is not None:
            await self.app.tier.stop()
        await self.pool.stop()


async def start_edge(topology: Topology, name: str, listen: tuple[str, int] | None = None,
                     clock: Callable[[], float] = time.time) -> RunningEdge:
    """Start an edge in the running loop (used by the CLI and by tests)."""
    edge = topology.find_edge(name)
    settings = topology.cdn.edge
    pool = OriginPool(topology.cdn.origins, settings)
    await pool.start()
    app = EdgeApp(name, settings, pool, clock)
    redis = topology.region(edge.region).redis
    if redis is not None:
        tier = RegionTier(edge.region, redis, name, clock, app.make_entry)
        tier.shared.on_purge = lambda kind, value, soft: app.admin.purge(kind, value, soft,
                                                                        notify=False)
        app.admin.listeners.append(tier.purge)
        await tier.start()  # a Redis that is down is not an error: the breaker opens
        app.tier = tier
    limits = Limits(settings.max_header_bytes, settings.max_body_bytes,
                    settings.client_header_timeout, settings.keepalive_timeout)
    host, port = listen or (edge.ipv4 or edge.ipv6 or "127.0.0.1", edge.port)
    connections: set[HttpProtocol] = set()

    def factory() -> HttpProtocol:
        proto = HttpProtocol(app, limits, on_close=connections.discard)
        connections.add(proto)
        return proto

    loop = asyncio.get_running_loop()
    try:
        server = await loop.create_server(factory, host, port, reuse_address=True, backlog=1024)
    except OSError:
        if app.tier is not None:
            await app.tier.stop()
        await pool.stop()
        raise
    bound = server.sockets[0].getsockname()
    app.background.add(loop.create_task(app.housekeeping()))
    return RunningEdge(app, pool, server, host, bound[1], connections)


async def _serve(topology: Topology, name: str, listen: tuple[str, int] | None) -> int:
    try:
        running = await start_edge(topology, name, listen)
    except OSError as exc:
        print(f"geoedge: cannot listen for edge {name}: {exc}", file=sys.stderr)
        return 2
    log.warning("serving edge %s on %s port %d (%d origins, lb %s)", name, running.host,
                running.port, len(topology.cdn.origins), topology.cdn.edge.lb)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    draining = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, draining.set)

    async def drain() -> None:
        await draining.wait()
        running.app.admin.draining = True
        log.warning("draining for %.1f s", topology.cdn.edge.drain_seconds)
        await asyncio.sleep(topology.cdn.edge.drain_seconds)
        stop.set()

    drainer = loop.create_task(drain())
    await stop.wait()
    drainer.cancel()
    await running.stop()
    log.warning("stopped")
    return 0


def run_edge(config: str, name: str, listen: tuple[str, int] | None = None,
             log_level: str = "info") -> int:
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    topology = load_topology(config)
    names = [e.name for e in topology.edges]
    if name not in names:
        print(f"geoedge: no edge named {name!r} in {config} (edges: {', '.join(names)})",
              file=sys.stderr)
        return 2
    if not topology.cdn.origins:
        print(f"geoedge: {config} has no [[origins]] for the edge to fetch from",
              file=sys.stderr)
        return 2
    try:
        import uvloop
    except ImportError:  # optional on platforms without it
        return asyncio.run(_serve(topology, name, listen))
    return uvloop.run(_serve(topology, name, listen))
