"""``geoedge edge``: run one edge node.

Lifecycle: the origin pool starts (with its health probes), then the listener. SIGTERM drains:
``/healthz`` turns 503 at once so GeoDNS moves clients away, the edge keeps serving for
``edge.drain_seconds``, then stops accepting and closes. SIGINT stops at once.

Listeners: the public one (the edge's address, or ``--listen``) serves traffic and
``/healthz``; client connections there are capped per edge and per client address
(edge/connlimit.py). With ``edge.admin_listen`` (or ``--admin-listen``) a second listener
serves ``/metrics`` and ``<admin_path>/stats`` (see edge/admin.py); it is not capped, so put
it on a private address. At start the soft file-descriptor limit is raised towards the hard
one, and a warning is logged when it is below what the caps allow.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from edge.admin import Admin
from edge.connlimit import ConnectionLimiter
from edge.httpserver import HttpProtocol, Limits, Request, ResponseWriter
from edge.proxy import EdgeApp
from edge.purging import attach_purge_log
from edge.shield import Shield, parent_servers
from edge.tier.region import RegionTier
from edge.upstream import OriginPool
from geoconfig.cdnconfig import EdgeSettings
from geoconfig.topology import Topology, load_topology
from geoconfig.validate import format_host_port

log = logging.getLogger("geoedge.edge")


@dataclass
class RunningEdge:
    app: EdgeApp
    pool: OriginPool
    server: asyncio.base_events.Server
    host: str
    port: int
    connections: set[HttpProtocol] = field(default_factory=set)
    admin_server: asyncio.base_events.Server | None = None
    limiter: ConnectionLimiter | None = None

    @property
    def admin_address(self) -> tuple[str, int] | None:
        """Where the admin listener is bound (None without one)."""
        if self.admin_server is None:
            return None
        host, port = self.admin_server.sockets[0].getsockname()[:2]
        return host, port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        self.server.close()
        if self.admin_server is not None:
            self.admin_server.close()
        for proto in list(self.connections):
            if proto.transport is not None and not proto.busy:
                proto.transport.close()
        await self.server.wait_closed()
        if self.admin_server is not None:
            await self.admin_server.wait_closed()
        for task in list(self.app.background):
            task.cancel()
        if self.app.tier is not None:
            await self.app.tier.stop()
        if self.app.shield is not None:
            await self.app.shield.stop()
        await self.pool.stop()


class AdminListener:
    """The admin listener's handler: everything goes to ``Admin.serve_private``."""

    flag_headers: frozenset[bytes] = frozenset()

    def __init__(self, admin: Admin) -> None:
        self.admin = admin

    def fast(self, request: Request) -> bytes | None:
        return None

    async def handle(self, request: Request, writer: ResponseWriter) -> None:
        await self.admin.serve_private(request, writer)


def limits_of(s: EdgeSettings) -> Limits:
    return Limits(s.max_header_bytes, s.max_body_bytes, s.client_header_timeout,
                  s.keepalive_timeout, s.client_body_timeout, s.client_body_min_rate,
                  s.client_request_timeout, s.keepalive_requests, s.max_header_count,
                  s.max_url_bytes, s.max_buffered_bytes)


def raise_fd_limit(settings: EdgeSettings, origins: int) -> None:
    """Raise the soft RLIMIT_NOFILE towards the hard one; warn when the caps do not fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    per_origin = settings.origin_max_conns or settings.max_connections
    wanted = settings.max_connections + origins * per_origin + 256  # + exempt, admin, logs
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning("file-descriptor limit %d is below edge.max_connections + origin "
                    "connections + headroom (%d): lower the caps or raise the limit", soft,
                    wanted)


async def start_edge(topology: Topology, name: str, listen: tuple[str, int] | None = None,
                     clock: Callable[[], float] = time.time,
                     admin_listen: tuple[str, int] | None = None) -> RunningEdge:
    """Start an edge in the running loop (used by the CLI and by tests)."""
    edge = topology.find_edge(name)
    settings = topology.cdn.edge
    pool = OriginPool(topology.cdn.origins, settings)
    await pool.start()
    app = EdgeApp(name, settings, pool, clock)
    redis = topology.region(edge.region).redis
    parent, parent_edges = parent_servers(topology, edge.region)
    if parent is not None:
        app.shield = Shield(edge.region, parent, parent_edges, settings, pool)
        await app.shield.start()
    if redis is not None:
        tier = RegionTier(edge.region, redis, name, clock, app.make_entry)
        attach_purge_log(app, tier, topology.region(edge.region).edges, clock)
        app.admin.listeners.append(tier.purge)
        try:
            await tier.start()  # a Redis that is down is not an error: the breaker opens
        except BaseException:  # a bad tier setting (or a cancel): nothing is left running
            await tier.stop()
            if app.shield is not None:
                await app.shield.stop()
            await pool.stop()
            raise
        app.tier = tier
    limits = limits_of(settings)
    limiter = ConnectionLimiter(settings.max_connections, settings.max_connections_per_address,
                                settings.connection_limit_exempt)
    host, port = listen or (edge.ipv4 or edge.ipv6 or "127.0.0.1", edge.port)
    connections: set[HttpProtocol] = set()
    private = AdminListener(app.admin)

    def factory() -> HttpProtocol:
        proto = HttpProtocol(app, limits, on_close=connections.discard, limiter=limiter)
        connections.add(proto)
        return proto

    def admin_factory() -> HttpProtocol:
        proto = HttpProtocol(private, limits, on_close=connections.discard)
        connections.add(proto)
        return proto

    loop = asyncio.get_running_loop()
    admin_at = admin_listen or settings.admin_listen
    server: asyncio.base_events.Server | None = None
    try:
        server = await loop.create_server(factory, host, port, reuse_address=True, backlog=1024)
        admin_server = None if admin_at is None else await loop.create_server(
            admin_factory, admin_at[0], admin_at[1], reuse_address=True)
    except OSError:
        if server is not None:
            server.close()
        if app.tier is not None:
            await app.tier.stop()
        if app.shield is not None:
            await app.shield.stop()
        await pool.stop()
        raise
    bound = server.sockets[0].getsockname()
    app.background.add(loop.create_task(app.housekeeping()))
    return RunningEdge(app, pool, server, host, bound[1], connections, admin_server, limiter)


async def _serve(topology: Topology, name: str, listen: tuple[str, int] | None,
                 admin_listen: tuple[str, int] | None) -> int:
    raise_fd_limit(topology.cdn.edge, len(topology.cdn.origins))
    try:
        running = await start_edge(topology, name, listen, admin_listen=admin_listen)
    except OSError as exc:  # the reason as text: uvloop's own message embeds an address tuple
        edge = topology.find_edge(name)
        host, port = listen or (edge.ipv4 or edge.ipv6 or "127.0.0.1", edge.port)
        reason = f"[Errno {exc.errno}] {os.strerror(exc.errno)}" if exc.errno else str(exc)
        print(f"geoedge: cannot listen for edge {name} on {format_host_port(host, port)}: "
              f"{reason}", file=sys.stderr)
        return 2
    log.warning("serving edge %s on %s port %d (%d origins, lb %s)", name, running.host,
                running.port, len(topology.cdn.origins), topology.cdn.edge.lb)
    if running.admin_address is not None:
        log.warning("admin listener (/metrics, stats) on %s port %d", *running.admin_address)
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
             log_level: str = "info", admin_listen: tuple[str, int] | None = None) -> int:
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
        return asyncio.run(_serve(topology, name, listen, admin_listen))
    return uvloop.run(_serve(topology, name, listen, admin_listen))
