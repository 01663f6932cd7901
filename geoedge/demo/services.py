"""What the local demo runs: every process of a topology, as plain values.

Rules:

- ``plan(topology, config)`` lists the processes in start order: one Redis per region that
  has a standalone ``redis = { url = ... }`` (Redis Cluster regions are the operator's to run),
  the ``[[origins]]``, every edge, then the GeoDNS server. Stop order is the reverse.
- ``redis_cluster``: instead of that one Redis, six cluster-enabled ones per such region,
  ``redis-<region>-1`` .. ``-6`` (``geoedge.demo.cluster``: the url's host, its port and the
  five after it, each with a cluster bus port 10000 higher); none of these ports may be one
  another process of the plan listens on (ConfigError). The edges then read ``edge_config``
  (the copy of the topology in which those regions' tiers are the clusters).
- Each :class:`Service` says how to start it (``argv``), where it listens and how to tell it
  is ready (``probe``): Redis answers ``PING``, origins and edges answer ``GET /healthz`` (the
  edge's health path from ``[health]``) with 200, GeoDNS answers the zone's SOA.
- Edges write their access logs to ``access_logs/<edge>.access.log`` when given (the demo:
  next to its process logs) and serve ``/metrics`` and stats on their own
  address, on ``[edge] admin_listen``'s port or 9180 (:func:`admin_address`; the dashboard
  and Prometheus read them).
- Every service gets an ``--config`` pointing at the same file, so what runs is exactly what
  the topology says; only GeoDNS's IPv6 listeners are dropped where the host has no IPv6
  loopback (``ipv6`` argument), so the demo still starts on such machines.
- Metrics: GeoDNS serves them on ``dns.metrics_listen`` (``--metrics-listen``; default
  127.0.0.1:9153), every edge on an admin listener at its own address and the port of
  ``edge.admin_listen`` (default 9180); ``Service.metrics`` is the URL.
- Pure: no processes, no sockets; the redis binary and data directory are arguments.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from geoconfig.topology import Edge, Topology
from geoconfig.validate import ConfigError, format_host_port
from geoedge.demo.cluster import BUS_OFFSET, cluster_argv, node_addresses


@dataclass(frozen=True, slots=True)
class Probe:
    kind: str  # "redis" | "http" | "dns"
    host: str
    port: int
    path: str = ""  # http: the request path; dns: the name to ask the SOA of


@dataclass(frozen=True, slots=True)
class Service:
    name: str       # unique: "redis-us-east", "origin-1", "us-east-1", "geodns"
    role: str       # "redis" | "origin" | "edge" | "dns"
    region: str     # "" when the service is not in one region
    argv: tuple[str, ...]
    address: str    # for people: "127.0.1.1:8080"
    probe: Probe
    metrics: str = ""  # the Prometheus endpoint's URL (GeoDNS, edges' admin listeners)
    cluster: str = ""  # a Redis Cluster node: the cluster's name (its region's)
    also_ports: tuple[int, ...] = ()  # more TCP ports it listens on, on the probe's host


def redis_address(url: str, key: str) -> tuple[str, int]:
    """(host, port) of a ``redis://`` URL, for starting a server there."""
    parts = urlsplit(url)
    try:
        port = parts.port or 6379
    except ValueError as exc:
        raise ConfigError(key, f"bad port in {url!r}") from exc
    if not parts.hostname:
        raise ConfigError(key, f"no host in {url!r}")
    return parts.hostname, port


DEMO_METRICS = ("127.0.0.1", 9153)  # GeoDNS metrics when the topology sets no dns.metrics_listen
DEMO_ADMIN_PORT = 9180  # each edge's admin listener (/metrics) on its own address, unless
                        # [edge] admin_listen gives another port


def admin_address(edge: Edge, topology: Topology) -> tuple[str, int]:
    """Where the demo puts an edge's admin listener (``/metrics``, stats): the edge's own
    address, on ``[edge] admin_listen``'s port (DEMO_ADMIN_PORT without one)."""
    admin_at = topology.cdn.edge.admin_listen
    return (edge.ipv4 or edge.ipv6 or "127.0.0.1",
            admin_at[1] if admin_at else DEMO_ADMIN_PORT)


def geoedge_argv(*args: str) -> tuple[str, ...]:
    """Run a geoedge subcommand with this interpreter (the venv the demo runs from)."""
    return (sys.executable, "-m", "geoedge.cli", *args)


def plan(topology: Topology, config: Path, redis_binary: str | None, data_dir: Path,
         ipv6: bool = True, edge_ipv6: dict[str, str] | None = None,
         tls: tuple[str, str] | None = None, https_port: int = 8443,
         access_logs: Path | None = None, dns_config: Path | None = None,
         redis_cluster: bool = False, edge_config: Path | None = None) -> list[Service]:
    """The demo's processes for ``topology`` (loaded from ``config``), in start order.
    ``edge_ipv6``: edge name -> ``[V6]:PORT`` for edges to listen on as well as their ipv4
    (``geoedge.demo.ipv6``). ``tls``: (cert, key) files: edges also serve HTTPS on
    ``https_port`` of their IPv4 address. ``access_logs``: the directory for the edges'
    access logs (None: none). ``dns_config``: the topology GeoDNS serves, when not
    ``config`` (the copy with example.test signed, ``geoedge.demo.signing``).
    ``redis_cluster``, ``edge_config``: see the module's rules."""
    cfg = str(config)
    services: list[Service] = []
    if redis_binary is not None and redis_cluster:
        services += _cluster_nodes(topology, redis_binary, data_dir, https_port)
    elif redis_binary is not None:
        for index, rc in enumerate(topology.regions):
            if rc.redis is None or rc.redis.url is None:
                continue
            host, port = redis_address(rc.redis.url, f"regions[{index}].redis.url")
            workdir = data_dir / f"redis-{rc.name}"
            services.append(Service(
                f"redis-{rc.name}", "redis", rc.name,
                (redis_binary, "--bind", host, "--port", str(port), "--save", "",
                 "--appendonly", "no", "--dir", str(workdir), "--loglevel", "warning",
                 "--protected-mode", "no"),
                format_host_port(host, port), Probe("redis", host, port)))
    for origin in topology.cdn.origins:
        services.append(Service(
            origin.name, "origin", "", geoedge_argv("origin", "--config", cfg, "--name",
                                                    origin.name, "--log-level", "info"),
            format_host_port(origin.host, origin.port),
            Probe("http", origin.host, origin.port, "/healthz")))
    for rc in topology.regions:
        for edge in rc.edges:
            host = edge.ipv4 or edge.ipv6 or "127.0.0.1"
            also = (edge_ipv6 or {}).get(edge.name)
            listen_args = ("--listen", format_host_port(host, edge.port), "--listen", also) \
                if also else ()
            if tls is not None and edge.ipv4:
                listen_args += ("--tls-listen", format_host_port(edge.ipv4, https_port),
                                "--tls-cert", tls[0], "--tls-key", tls[1])
            log_args = () if access_logs is None else (
                "--access-log", str(access_logs / f"{edge.name}.access.log"))
            admin = format_host_port(*admin_address(edge, topology))
            services.append(Service(
                edge.name, "edge", rc.name,
                geoedge_argv("edge", "--admin-listen", admin, "--config",
                             str(edge_config or config), "--name",
                             edge.name, *listen_args, *log_args, "--log-level", "info"),
                format_host_port(host, edge.port),
                Probe("http", edge.check_address, edge.port, topology.health.path),
                f"http://{admin}/metrics"))
    listen = [hp for hp in topology.dns.listen if ipv6 or ":" not in hp[0]]
    if not listen:
        raise ConfigError("dns.listen", "no address this host can listen on (IPv6 only?)")
    args = [a for host, port in listen for a in ("--listen", format_host_port(host, port))]
    zone = topology.zones[0].origin if topology.zones else "."
    metrics = format_host_port(*(topology.dns.obs.metrics_listen or DEMO_METRICS))
    services.append(Service(
        "geodns", "dns", "", geoedge_argv("dns", "--config", str(dns_config or config), *args,
                                          "--metrics-listen", metrics, "--log-level", "info"),
        " ".join(format_host_port(h, p) for h, p in listen) + " (udp+tcp)",
        Probe("dns", listen[0][0], listen[0][1], zone), f"http://{metrics}/metrics"))
    return services


def listen_addresses(topology: Topology, https_port: int) -> dict[tuple[str, int], str]:
    """Every (host, port) the demo's origins, edges and GeoDNS listen on -> whose it is."""
    taken: dict[tuple[str, int], str] = {}
    for origin in topology.cdn.origins:
        taken[(origin.host, origin.port)] = origin.name
    for edge in topology.edges:
        for host in filter(None, (edge.ipv4, edge.ipv6)):
            taken[(host, edge.port)] = edge.name
        if edge.ipv4:
            taken[(edge.ipv4, https_port)] = f"{edge.name} (HTTPS)"
        taken[admin_address(edge, topology)] = f"{edge.name} (admin)"
    for host, port in topology.dns.listen:
        taken[(host, port)] = "geodns"
    taken[topology.dns.obs.metrics_listen or DEMO_METRICS] = "geodns (metrics)"
    return taken


def _cluster_nodes(topology: Topology, binary: str, data_dir: Path,
                   https_port: int) -> list[Service]:
    """Six cluster-enabled servers for each region with a standalone tier."""
    taken = listen_addresses(topology, https_port)
    out: list[Service] = []
    for index, rc in enumerate(topology.regions):
        if rc.redis is None or rc.redis.url is None:
            continue
        key = f"regions[{index}].redis.url"
        for number, (host, port) in enumerate(node_addresses(
                *redis_address(rc.redis.url, key), key), 1):
            name = f"redis-{rc.name}-{number}"
            for used in ((host, port), (host, port + BUS_OFFSET)):
                if used in taken:
                    raise ConfigError(key, f"--redis-cluster: {name} needs "
                                           f"{format_host_port(*used)}, which {taken[used]} "
                                           "listens on")
                taken[used] = name
            out.append(Service(
                name, "redis", rc.name,
                cluster_argv(binary, host, port, str(data_dir / name)),
                format_host_port(host, port), Probe("redis", host, port), cluster=rc.name,
                also_ports=(port + BUS_OFFSET,)))
    return out


def select(services: list[Service], target: str) -> list[Service]:
    """The services a console command names: a service name, ``redis-<region>`` for all
    nodes of the region's Redis Cluster, or a region's edges."""
    exact = [s for s in services if s.name == target]
    if exact:
        return exact
    nodes = [s for s in services if s.cluster and f"redis-{s.cluster}" == target]
    if nodes:
        return nodes
    return [s for s in services if s.region == target and s.role == "edge"]
