"""What the local demo runs: every process of a topology, as plain values.

Rules:

- ``plan(topology, config)`` lists the processes in start order: one Redis per region that
  has a standalone ``redis = { url = ... }`` (Redis Cluster regions are the operator's to run),
  the ``[[origins]]``, every edge, then the GeoDNS server. Stop order is the reverse.
- Each :class:`Service` says how to start it (``argv``), where it listens and how to tell it
  is ready (``probe``): Redis answers ``PING``, origins and edges answer ``GET /healthz`` (the
  edge's health path from ``[health]``) with 200, GeoDNS answers the zone's SOA.
- Every service gets an ``--config`` pointing at the same file, so what runs is exactly what
  the topology says; only GeoDNS's IPv6 listeners are dropped where the host has no IPv6
  loopback (``ipv6`` argument), so the demo still starts on such machines.
- Pure: no processes, no sockets; the redis binary and data directory are arguments.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from geoconfig.topology import Topology
from geoconfig.validate import ConfigError, format_host_port


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


def geoedge_argv(*args: str) -> tuple[str, ...]:
    """Run a geoedge subcommand with this interpreter (the venv the demo runs from)."""
    return (sys.executable, "-m", "geoedge.cli", *args)


def plan(topology: Topology, config: Path, redis_binary: str | None, data_dir: Path,
         ipv6: bool = True, edge_ipv6: dict[str, str] | None = None,
         dns_config: Path | None = None) -> list[Service]:
    """The demo's processes for ``topology`` (loaded from ``config``), in start order.
    ``edge_ipv6``: edge name -> ``[V6]:PORT`` for edges to listen on as well as their ipv4
    (``geoedge.demo.ipv6``). ``dns_config``: the topology GeoDNS serves, when not ``config``
    (the copy with example.test signed, ``geoedge.demo.signing``)."""
    cfg = str(config)
    services: list[Service] = []
    if redis_binary is not None:
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
                                                    origin.name, "--log-level", "warning"),
            format_host_port(origin.host, origin.port),
            Probe("http", origin.host, origin.port, "/healthz")))
    for rc in topology.regions:
        for edge in rc.edges:
            host = edge.ipv4 or edge.ipv6 or "127.0.0.1"
            also = (edge_ipv6 or {}).get(edge.name)
            listen_args = ("--listen", format_host_port(host, edge.port), "--listen", also) \
                if also else ()
            services.append(Service(
                edge.name, "edge", rc.name,
                geoedge_argv("edge", "--config", cfg, "--name", edge.name, *listen_args,
                             "--log-level", "warning"),
                format_host_port(host, edge.port),
                Probe("http", edge.check_address, edge.port, topology.health.path)))
    listen = [hp for hp in topology.dns.listen if ipv6 or ":" not in hp[0]]
    if not listen:
        raise ConfigError("dns.listen", "no address this host can listen on (IPv6 only?)")
    args = [a for host, port in listen for a in ("--listen", format_host_port(host, port))]
    zone = topology.zones[0].origin if topology.zones else "."
    services.append(Service(
        "geodns", "dns", "", geoedge_argv("dns", "--config", str(dns_config or config), *args,
                                          "--log-level", "warning"),
        " ".join(format_host_port(h, p) for h, p in listen) + " (udp+tcp)",
        Probe("dns", listen[0][0], listen[0][1], zone)))
    return services


def select(services: list[Service], target: str) -> list[Service]:
    """The services a console command names: a service name, or a region's edges."""
    exact = [s for s in services if s.name == target]
    if exact:
        return exact
    return [s for s in services if s.region == target and s.role == "edge"]
