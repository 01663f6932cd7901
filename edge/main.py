"""``geoedge edge``: run one edge node.

Lifecycle: the origin pool starts (with its health probes), then the listener. SIGTERM and
SIGINT stop: the listeners close at once, idle connections close, the requests in progress
finish (their responses say ``Connection: close``) for at most ``edge.drain_timeout`` seconds,
then whatever is left is cut and the process exits; an idle edge exits at once. To move
clients away first, drain through the admin API (``POST <admin_path>/drain``: ``/healthz``
answers 503 while the edge keeps serving), wait until GeoDNS has moved them, then signal.

Listeners: the public one (the edge's address, or ``--listen``) serves traffic and
``/healthz``; client connections there are capped per edge and per client address
(edge/connlimit.py). With ``edge.admin_listen`` (or ``--admin-listen``) a second listener
serves ``/metrics`` and ``<admin_path>/stats`` (see edge/admin.py); it is not capped, so put
it on a private address. With ``edge.tls_listen`` (or ``--tls-listen``) a third one
terminates TLS (edge/tls.py) for the same handler. The handler is the site router
(edge/sites.py): the Host picks the site and its app. At start the soft file-descriptor limit
is raised towards the hard one, and a warning is logged when it is below what the caps allow.

Reloads (edge/reload.py): SIGHUP, or a change to the topology file or its certificates,
applies sites, origins, knobs and certificates without dropping connections or the cache; a
bad file is logged and the running configuration stays.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import resource
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from edge import heap
from edge.accesslog import AccessLog, LoggedHandler, open_access_log
from edge.admin import Admin
from edge.connlimit import ConnectionLimiter
from edge.disk.tiered import close_store, start_store
from edge.httpserver import HttpProtocol, Limits, Request, ResponseWriter
from edge.proxy import EdgeApp
from edge.purging import attach_purge_log
from edge.reload import Reloader, cert_spec
from edge.shield import Shield, parent_servers
from edge.sites import SiteRouter
from edge.tier.region import RegionTier
from edge.tls import CertError, Contexts, TlsAcceptor, TlsListenError, h2_protocol
from edge.upstream import OriginPool
from edge.workerchannel import open_channel
from edge.workers import (
    WorkerRole,
    cpu_count,
    for_worker,
    orphaned,
    supervise,
    workers_problem,
)
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
    router: SiteRouter | None = None
    tls_server: TlsAcceptor | None = None
    acceptor: TlsAcceptor | None = None
    access: AccessLog | None = None  # the access log (edge/accesslog.py), when configured
    also: list[asyncio.base_events.Server] = field(default_factory=list)  # more listeners

    @property
    def tls_port(self) -> int | None:
        """The HTTPS listener's port (None without one)."""
        return None if self.tls_server is None else self.tls_server.sockets[0].getsockname()[1]

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

    async def stop(self, drain_timeout: float = 0.0) -> None:
        """Stop accepting at once, let the requests in progress finish for at most
        ``drain_timeout`` seconds (idle connections close now), cut the rest, stop."""
        self.server.close()
        if self.tls_server is not None:
            self.tls_server.close()
        for extra in self.also:
            extra.close()
        if self.admin_server is not None:
            self.admin_server.close()
        self.app.admin.draining = True
        busy = sum(1 for proto in self.connections if proto.busy)
        if busy or drain_timeout:
            log.warning("stopped accepting: %d requests in progress (drain timeout %g s)", busy,
                        drain_timeout)
        for proto in list(self.connections):
            proto.shut_down()
        deadline = time.monotonic() + drain_timeout
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # each finishing response closes its connection
        if self.connections:
            log.warning("drain timeout (%g s): cutting %d connections", drain_timeout,
                        len(self.connections))
        for proto in list(self.connections):
            proto.abort()
        await self.server.wait_closed()
        if self.tls_server is not None:
            await self.tls_server.wait_closed()
        for extra in self.also:
            await extra.wait_closed()
        if self.admin_server is not None:
            await self.admin_server.wait_closed()
        for task in list(self.app.background):
            task.cancel()
        if self.app.tier is not None:
            await self.app.tier.stop()
        if self.router is not None:
            await self.router.stop()
        if self.app.shield is not None:
            await self.app.shield.stop()
        await self.pool.stop()
        await asyncio.to_thread(close_store, self.app.store)
        if self.access is not None:
            self.access.close()


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
                     admin_listen: tuple[str, int] | None = None,
                     tls_listen: tuple[str, int] | None = None,
                     worker: WorkerRole | None = None,
                     also_listen: Sequence[tuple[str, int]] = (),
                     access_log: str | None = None) -> RunningEdge:
    """Start an edge in the running loop (used by the CLI and by tests). ``worker``: this
    process is one of a multi-worker edge's (edge/workers.py); ``also_listen``: more
    addresses serving the same (the demo's IPv6 ones); ``access_log``: overrides
    ``edge.access_log``."""
    edge = topology.find_edge(name)
    settings = topology.cdn.edge
    access = open_access_log(settings.access_log if access_log is None else access_log,
                             settings.access_log_format, name, edge.region, clock)  # OSError
    pool = OriginPool(topology.cdn.origins, settings)
    await pool.start()
    app = EdgeApp(name, settings, pool, clock)
    try:
        start_store(app.store)
    except OSError as exc:
        await pool.stop()
        raise OSError(exc.errno, f"edge.disk_path {settings.disk_path!r}: {exc.strerror}") from exc
    redis = topology.region(edge.region).redis
    parent, parent_edges = parent_servers(topology, edge.region)
    if parent is not None:
        app.shield = Shield(edge.region, parent, parent_edges, settings, pool)
        await app.shield.start()
    if redis is not None:
        node = name if worker is None else f"{name}/w{worker.index}"
        tier = RegionTier(edge.region, redis, node, clock, app.make_entry)
        attach_purge_log(app, tier, topology.region(edge.region).edges, clock,
                         None if worker is None else (worker.index, worker.count))
        app.admin.listeners.append(tier.purge)
        try:
            await tier.start()  # a Redis that is down is not an error: the breaker opens
        except BaseException:  # a bad tier setting (or a cancel): nothing is left running
            await tier.stop()
            if app.shield is not None:
                await app.shield.stop()
            await pool.stop()
            close_store(app.store)
            if access is not None:
                access.close()
            raise
        app.tier = tier
    https = tls_listen or topology.cdn.tls.listen
    router = SiteRouter(app, None)
    try:
        await router.apply(topology.cdn)
        contexts = _contexts(topology, https)
    except BaseException:
        await router.stop()
        if app.tier is not None:
            await app.tier.stop()
        await pool.stop()
        close_store(app.store)
        if access is not None:
            access.close()
        raise
    limits = limits_of(settings)
    limiter = ConnectionLimiter(settings.max_connections, settings.max_connections_per_address,
                                settings.connection_limit_exempt)
    host, port = listen or (edge.ipv4 or edge.ipv6 or "127.0.0.1", edge.port)
    connections: set[HttpProtocol] = set()
    private = AdminListener(app.admin)
    handler = router if access is None else LoggedHandler(router, access)

    def factory() -> HttpProtocol:
        proto = HttpProtocol(handler, limits, on_close=connections.discard, limiter=limiter)
        connections.add(proto)
        return proto

    h2 = h2_protocol()

    def tls_factory(alpn: str | None) -> HttpProtocol:
        kind = h2 if alpn == "h2" and h2 is not None else HttpProtocol
        proto = kind(handler, limits, on_close=connections.discard, limiter=limiter)
        proto.scheme = "https"
        connections.add(proto)
        return proto

    def admin_factory() -> HttpProtocol:
        proto = HttpProtocol(private, limits, on_close=connections.discard)
        connections.add(proto)
        return proto

    loop = asyncio.get_running_loop()
    admin_at = admin_listen or settings.admin_listen
    server: asyncio.base_events.Server | None = None
    tls_server: TlsAcceptor | None = None
    acceptor = None if contexts is None else TlsAcceptor(
        contexts, tls_factory, settings.client_header_timeout, settings.max_connections)
    also: list[asyncio.base_events.Server] = []
    try:
        server = await loop.create_server(factory, host, port, reuse_address=True, backlog=1024,
                                          reuse_port=worker is not None)
        for extra_host, extra_port in also_listen:
            also.append(await loop.create_server(factory, extra_host, extra_port,
                                                 reuse_address=True, backlog=1024))
        if acceptor is not None and https is not None:
            await acceptor.listen(https[0] or host, https[1], reuse_port=worker is not None)
            tls_server = acceptor
            router.https_port = acceptor.sockets[0].getsockname()[1]
        admin_server = None if admin_at is None else await loop.create_server(
            admin_factory, admin_at[0], admin_at[1], reuse_address=True)
    except (OSError, TlsListenError):
        for listener in (server, tls_server, *also):
            if listener is not None:
                listener.close()
        await router.stop()
        if access is not None:
            access.close()
        if app.tier is not None:
            await app.tier.stop()
        if app.shield is not None:
            await app.shield.stop()
        await pool.stop()
        close_store(app.store)
        raise
    bound = server.sockets[0].getsockname()
    app.background.add(loop.create_task(app.housekeeping()))
    return RunningEdge(app, pool, server, host, bound[1], connections, admin_server, limiter,
                       router, tls_server, acceptor, access, also)


def _contexts(topology: Topology, https: tuple[str, int] | None) -> Contexts | None:
    """The HTTPS listener's TLS contexts (None without a listener); CertError when unusable."""
    if https is None:
        return None
    spec = cert_spec(topology.cdn)
    if spec is None:
        raise CertError("edge.tls_listen needs a certificate: set edge.tls_cert and "
                        "edge.tls_key, or a site's tls.cert and tls.key")
    return Contexts(spec, alpn_protocols(), topology.cdn.tls.session_tickets)


def alpn_protocols() -> tuple[str, ...]:
    """ALPN offered: h2 only when the HTTP/2 server (edge/h2server.py) is there."""
    return ("h2", "http/1.1") if h2_protocol() is not None else ("http/1.1",)


async def _serve(topology: Topology, name: str, listen: tuple[str, int] | None,
                 admin_listen: tuple[str, int] | None,
                 load: Callable[[str], Topology] = load_topology,
                 worker: WorkerRole | None = None,
                 also_listen: Sequence[tuple[str, int]] = (),
                 access_log: str | None = None) -> int:
    raise_fd_limit(topology.cdn.edge, len(topology.cdn.origins))
    try:
        running = await start_edge(topology, name, listen, admin_listen=admin_listen,
                                   worker=worker, also_listen=also_listen,
                                   access_log=access_log)
    except (CertError, TlsListenError) as exc:
        print(f"geoedge: edge {name}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the reason as text: uvloop's own message embeds an address tuple
        edge = topology.find_edge(name)
        host, port = listen or (edge.ipv4 or edge.ipv6 or "127.0.0.1", edge.port)
        reason = f"[Errno {exc.errno}] {os.strerror(exc.errno)}" if exc.errno else str(exc)
        if exc.filename:  # the access log, not a listener
            print(f"geoedge: cannot open the access log of edge {name} ({exc.filename}): "
                  f"{reason}", file=sys.stderr)
            return 2
        where = ", ".join(format_host_port(h, p) for h, p in [(host, port), *also_listen])
        print(f"geoedge: cannot listen for edge {name} on {where}: {reason}", file=sys.stderr)
        return 2
    # the signal handlers before the "serving" line: whoever waits for that line may signal
    loop = asyncio.get_running_loop()
    assert running.router is not None
    # start-up's objects and the stores' indexes out of the full collections' walk, now and
    # after each reload (edge/heap.py)
    settle = functools.partial(heap.settle, *running.app.store.long_lived())
    reloader = Reloader(topology.source, topology, running.router, running.acceptor,
                        alpn_protocols(), load, applied=settle)
    watcher = loop.create_task(reloader.watch())
    hup: set[asyncio.Task[bool]] = set()

    def on_hup() -> None:
        task = loop.create_task(reloader.reload("SIGHUP"))
        hup.add(task)
        task.add_done_callback(hup.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    access = running.access  # SIGUSR1 (log rotation) never kills an edge, with a log or not
    loop.add_signal_handler(signal.SIGUSR1, access.reopen if access is not None else
                            lambda: log.info("SIGUSR1: no access log to reopen"))
    settle()
    log.info("serving edge %s on %s port %d (%d origins, lb %s)", name, running.host,
             running.port, len(topology.cdn.origins), topology.cdn.edge.lb)
    for extra in running.also:
        log.info("serving edge %s also on %s port %d", name,
                 *extra.sockets[0].getsockname()[:2])
    if running.admin_address is not None:
        log.info("admin listener (/metrics, stats) on %s port %d", *running.admin_address)
    if running.tls_port is not None:
        log.info("HTTPS on port %d (ALPN %s)", running.tls_port, ", ".join(alpn_protocols()))
    if running.access is not None:
        log.info("access log %s (%s); SIGUSR1 reopens it", running.access.path,
                 running.access.fmt)
    if worker is not None:  # a worker whose supervisor is gone stops
        running.app.background.add(loop.create_task(orphaned(os.getppid(), stop)))
        if worker.channel_fd is not None:
            admin = running.app.admin
            channel = await open_channel(
                worker.channel_fd, lambda k, v, soft: admin.purge(k, v, soft, notify=False))
            admin.confirmers.append(channel.confirm)
    await stop.wait()
    watcher.cancel()
    await running.stop(topology.cdn.edge.drain_timeout)
    log.info("stopped")
    return 0


def run_edge(config: str, name: str, listen: tuple[str, int] | None = None,
             log_level: str = "info", admin_listen: tuple[str, int] | None = None,
             tls_listen: tuple[str, int] | None = None, tls_cert: str | None = None,
             tls_key: str | None = None, workers: int | None = None,
             worker: WorkerRole | None = None,
             also_listen: Sequence[tuple[str, int]] = (), access_log: str | None = None) -> int:
    """Run an edge until stopped; ``workers`` (default: the config's) > 1 supervises that many
    worker processes (edge/workers.py), which run this with their ``worker``.
    ``also_listen`` and ``access_log``: see start_edge (one worker only)."""
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

    def load(path: str) -> Topology:  # the file, with the command line's TLS options on top
        return with_tls_options(load_topology(path), tls_listen, tls_cert, tls_key)

    if bool(tls_cert) != bool(tls_key):
        print("geoedge: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    topology = load(config)
    names = [e.name for e in topology.edges]
    if name not in names:
        print(f"geoedge: no edge named {name!r} in {config} (edges: {', '.join(names)})",
              file=sys.stderr)
        return 2
    if not topology.cdn.origins and not topology.cdn.sites:
        print(f"geoedge: {config} has no [[origins]] nor [[sites]] for the edge to fetch from",
              file=sys.stderr)
        return 2
    count = workers if workers is not None else (topology.cdn.edge.workers or cpu_count())
    if worker is None and count > 1:
        if also_listen or access_log is not None:
            print("geoedge: several --listen addresses and --access-log need one worker "
                  "(use [edge] access_log with --workers)", file=sys.stderr)
            return 2
        problem = workers_problem(topology, name, count)
        if problem is not None:
            print(f"geoedge: {problem}", file=sys.stderr)
            return 2
        edge = topology.find_edge(name)
        where = listen or (edge.ipv4 or edge.ipv6 or "127.0.0.1", edge.port)
        tls_args = ([f"--tls-listen={format_host_port(*tls_listen)}"] if tls_listen else []) + (
            ["--tls-cert", tls_cert, "--tls-key", tls_key] if tls_cert and tls_key else [])
        return supervise(config, name, where, count, log_level,
                         admin_listen or topology.cdn.edge.admin_listen,
                         grace=topology.cdn.edge.drain_timeout + 10.0, extra=tls_args)
    if worker is not None:
        topology = for_worker(topology, worker)
    try:
        import uvloop
    except ImportError:  # optional on platforms without it
        return asyncio.run(_serve(topology, name, listen, admin_listen, load, worker,
                                  also_listen, access_log))
    return uvloop.run(_serve(topology, name, listen, admin_listen, load, worker, also_listen,
                             access_log))


def with_tls_options(topology: Topology, listen: tuple[str, int] | None, cert: str | None,
                     key: str | None) -> Topology:
    """``--tls-listen``, ``--tls-cert`` and ``--tls-key`` over ``[edge] tls_*``."""
    tls = topology.cdn.tls
    if listen is not None:
        tls = replace(tls, listen=listen)
    if cert and key:
        tls = replace(tls, cert=Path(cert), key=Path(key))
    return replace(topology, cdn=replace(topology.cdn, tls=tls))
