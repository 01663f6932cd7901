"""``geoedge dns``: load the topology, start the listeners, health checks and hot reload.

Reload rules: when the topology file or the database file changes (checked every
``geoip.watch_interval`` seconds by size and mtime), or on SIGHUP, the new files are loaded and
validated off the event loop, then a new engine is swapped in at once. A file that does not load
is logged and the running configuration is kept. Listen addresses and ``dns.udp_fast_path``
are fixed at start-up.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from geoconfig.topology import Topology, load_topology
from geoconfig.validate import ConfigError, format_host_port
from geodata import GeoDatabaseError, GeoReader, embedded_database_path
from geodns.engine import Engine
from geodns.health import HealthChecker
from geodns.obsrun import Observability
from geodns.server import DnsServer

log = logging.getLogger("geoedge.dns")


def load_engine(config_path: str | Path) -> Engine:
    """Load and validate everything an engine needs; raises ConfigError or GeoDatabaseError.

    The files' fingerprint is taken *before* each is read, so a change made while loading is
    seen by the watcher as a change and loaded again."""
    config_print = _fingerprint([Path(config_path)])
    topology = load_topology(config_path)
    db_path = database_path(topology)
    db_print = _fingerprint([db_path])
    engine = Engine(topology, GeoReader(db_path))
    engine.fingerprint = config_print + db_print
    return engine


def settle_heap() -> None:
    """Collect once, then freeze what is alive (the engine: zones, maps, caches so far) out of
    the cyclic garbage collector's sight, so its full collections stop traversing it: a full
    collection over a loaded engine took ~24 ms of CPU, the largest pause of an answering
    process (docs/benchmarks.md). Called after start-up and after each reload (unfreezing
    first, so the replaced engine's cycles are collected, not kept frozen)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def database_path(topology: Topology) -> Path:
    path = topology.geoip.database
    if path is None:
        return embedded_database_path()
    if not os.path.isabs(path):
        return Path(topology.source).parent / path
    return Path(path)


def _fingerprint(paths: list[Path]) -> tuple:
    out = []
    for p in paths:
        try:
            st = p.stat()
            out.append((str(p), st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append((str(p), None))
    return tuple(out)


@dataclass
class Service:
    """One process's running DNS service: server, health checker and reload watcher."""

    config_path: Path
    server: DnsServer
    health: HealthChecker
    obs: Observability | None = None  # metrics and query log (geodns/obsrun.py)

    def watched(self) -> list[Path]:
        return [self.config_path, Path(self.server.engine.reader.path)]

    def apply_health(self, health: dict[str, bool]) -> None:
        self.server.engine.set_health(health)
        if self.obs is not None:
            self.obs.health_changed(health)

    async def reload(self, reason: str) -> bool:
        try:
            engine = await asyncio.to_thread(load_engine, self.config_path)
        except (ConfigError, GeoDatabaseError, OSError) as exc:
            log.error("reload (%s) failed, keeping the running configuration: %s", reason, exc)
            if self.obs is not None:
                self.obs.reloaded(False)
            return False
        topology = engine.topology
        self.health.reconfigure(topology.edges, topology.health, topology.pool_probes())
        engine.set_health(self.health.snapshot())
        engine.counts = self.server.engine.counts  # the metrics' counters go on
        self.server.engine = engine
        if self.obs is not None:
            self.obs.reloaded(True)
            self.obs.health_changed(self.health.snapshot())  # edges kept, dropped or new
        log.info("reloaded (%s): %d zones, %d regions, database %s (%s)", reason,
                 len(topology.zones), len(topology.regions), engine.reader.path,
                 engine.reader.database_type)
        settle_heap()  # after the log line, which tests and operators wait for
        return True

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self.server.engine.topology.geoip.watch_interval)
            self.server.engine.refresh_signatures()  # a new DNSSEC generation when due
            seen = self.server.engine.fingerprint  # taken before the running files were read
            if _fingerprint(self.watched()) != seen and not await self.reload("file changed"):
                # a bad file: keep the running one, and try again only when it changes again
                self.server.engine.fingerprint = _fingerprint(self.watched())


def _where(listen: list[tuple[str, int]]) -> str:
    return ", ".join(format_host_port(h, p) for h, p in listen)


async def serve(config_path: Path, engine: Engine, listen: list[tuple[str, int]],
                reuse_port: bool, ready: asyncio.Event | None = None) -> int:
    topology = engine.topology
    try:
        obs = Observability.create(topology.dns.obs, topology.dns.identity)
    except ConfigError as exc:
        print(f"geoedge: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"geoedge: dns.querylog.path: cannot open {topology.dns.obs.querylog.path}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 2
    server = DnsServer(engine, listen, topology.dns.tcp_idle_timeout, reuse_port,
                       udp_fast_path=topology.dns.udp_fast_path,
                       query_timeout=topology.dns.tcp_query_timeout, obs=obs.obs)
    service = Service(config_path, server, HealthChecker(topology.edges, topology.health,
                                                         lambda h: service.apply_health(h),
                                                         topology.pool_probes()), obs)
    where = _where(listen)
    try:
        addresses = await server.start()
        obs.serve_metrics(server)
    except OSError as exc:
        await server.stop()
        obs.stop()
        if server.addresses and topology.dns.obs.metrics_listen is not None:
            where = "dns.metrics_listen " + format_host_port(*topology.dns.obs.metrics_listen)
        print(f"geoedge: cannot listen on {where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    await service.health.start()
    settle_heap()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    tasks: set[asyncio.Task[bool]] = set()

    def on_hup() -> None:
        task = loop.create_task(service.reload("SIGHUP"))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    loop.add_signal_handler(signal.SIGUSR1, obs.reopen_log)  # query log rotation
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    # only now "serving": a SIGHUP sent on seeing this line must find its handler (the UDP
    # threads already answer, so a client can see the server up before this thread gets here)
    for host, port in addresses:
        log.info("serving DNS on %s port %d (udp+tcp), pid %d", host, port, os.getpid())
    watcher = loop.create_task(service.watch())
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        watcher.cancel()
        await service.health.stop()
        await server.stop()
        obs.stop()
        log.info("stopped")
    return 0


def _run_one(config_path: Path, engine: Engine, listen: list[tuple[str, int]],
             reuse_port: bool) -> int:
    try:
        import uvloop
    except ImportError:  # uvloop is optional on platforms without it
        return asyncio.run(serve(config_path, engine, listen, reuse_port))
    return uvloop.run(serve(config_path, engine, listen, reuse_port))


def run_dns(config: str, listen: list[tuple[str, int]] | None, workers: int = 1,
            log_level: str = "info", metrics_listen: tuple[str, int] | None = None) -> int:
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config_path = Path(config)
    try:
        engine = load_engine(config_path)
    except GeoDatabaseError as exc:
        print(f"geoedge: geoip database error: {exc}", file=sys.stderr)
        return 2
    addrs = listen or list(engine.topology.dns.listen)
    if metrics_listen is not None:  # --metrics-listen (fixed at start-up, like --listen)
        dns = engine.topology.dns
        engine.topology = replace(engine.topology, dns=replace(
            dns, obs=replace(dns.obs, metrics_listen=metrics_listen)))
    log.info("topology %s: %d zones, %d regions; database %s (%s)", config_path,
             len(engine.topology.zones), len(engine.topology.regions), engine.reader.path,
             engine.reader.database_type)
    if engine.reader.path == embedded_database_path():
        log.info("This product includes GeoLite2 data created by MaxMind.")
    if workers < 1:
        print("geoedge: --workers must be at least 1", file=sys.stderr)
        return 2
    if workers == 1:
        return _run_one(config_path, engine, addrs, reuse_port=False)
    obs = engine.topology.dns.obs
    if obs.metrics_listen is not None or obs.querylog.path:
        print("geoedge: dns.metrics_listen and dns.querylog need --workers 1 (each worker "
              "would count and log alone)", file=sys.stderr)
        return 2
    if any(port == 0 for _, port in addrs):
        print("geoedge: --workers > 1 needs fixed ports (port 0 cannot be shared)",
              file=sys.stderr)
        return 2
    return _supervise(config_path, engine, addrs, workers)


def _supervise(config_path: Path, engine: Engine, addrs: list[tuple[str, int]],
               workers: int) -> int:
    """Fork ``workers`` processes that each bind the addresses with SO_REUSEPORT."""
    children: set[int] = set()
    stopping = False

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:  # the worker: never return into the supervisor's frames
            code = 1
            try:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                code = _run_one(config_path, engine, addrs, reuse_port=True)
            except Exception:  # last-resort guard of a forked worker, logged
                log.exception("worker %d failed", os.getpid())
            finally:
                os._exit(code)
        children.add(pid)

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM if signum == signal.SIGINT else signum)
            except ProcessLookupError:
                children.discard(pid)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    for _ in range(workers):
        spawn()
    result = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        children.discard(pid)
        code = os.waitstatus_to_exitcode(status)
        if code == 2 and not stopping:  # a worker could not start (e.g. address in use)
            log.error("worker %d could not start; stopping", pid)
            stopping, result = True, 2
            forward(signal.SIGTERM, None)
        elif not stopping:
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            log.error("worker %d %s; restarting it", pid, how)
            spawn()
    return result
