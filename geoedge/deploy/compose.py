"""The container deployment, generated from the topology file so the two cannot drift.

``python -m geoedge.deploy.compose [--config examples/demo.toml] [--out-dir .] [--check]
[--redis-cluster]`` writes ``docker-compose.yml``, ``deploy/topology.toml`` and
``deploy/prometheus/prometheus.yml`` under ``--out-dir``; with ``--check`` it writes nothing
and exits 1 (printing a diff) when the files there differ from what it would write. The tests
run the same comparison, so an edit to the topology file without regenerating fails the suite.

Rules:

* Input: the topology file, loaded and validated with ``load_topology`` (the order and names of
  regions, edges and origins come from it) and read again as raw TOML, so every other setting
  (zones, coordinates, health, ``[edge]``, ``[origin]`` rules, ...) is carried over verbatim.
* Addresses (loopback addresses cannot be used between containers), with N the region's
  1-based position in the file, M the edge's 1-based position in its region and K the
  origin's 1-based position in ``[[origins]]``:

  - network ``backbone``       172.30.0.0/24: GeoDNS 172.30.0.2, origin K 172.30.0.(10+K)
  - network ``region-<name>``  172.30.N.0/24: edge M 172.30.N.(10+M)
  - every other container address (edges on the backbone, GeoDNS and the client on the region
    networks, Redis) is assigned by Docker from the upper half, 172.30.x.128/25, so it never
    takes a fixed one. Hence at most 254 regions and 117 edges per region or origins.

* The container topology differs from the input only in: ``[dns] listen = ["0.0.0.0:53"]``;
  each edge's ``ipv4`` (``ipv6`` and ``check_address`` dropped: the networks are IPv4 only);
  each region's ``redis`` (``url = "redis://redis-<region>:6379/0"``, any other redis key kept);
  each origin's ``host``; ``[origin] root`` (where the image keeps the content); and zone
  records on loopback addresses (A records point at GeoDNS's backbone address, AAAA records
  are dropped); ``[dns] metrics_listen`` and ``[edge] admin_listen`` (geoedge/deploy/monitoring.py).
  It is validated with ``parse_topology`` before anything is written.
* HTTPS: a one-shot ``certs`` service makes a local CA and a certificate for the zones' names
  in the ``certs`` volume; edges serve HTTPS on 8443 with it, the client has ``/certs/ca.pem``.
* Services: ``geodns`` (53/udp and 53/tcp published on the host's 127.0.0.1), ``redis-<region>``,
  the origins by name, ``edge-<name>``, and ``client`` (sleeps; for ``docker compose exec``).
  Every service but the client has a healthcheck; edges wait for healthy origins and Redis.
  ``prometheus`` and ``grafana`` (geoedge/deploy/monitoring.py) watch them all.
* ``--redis-cluster``: each region's tier is a Redis Cluster of ``CLUSTER_MASTERS`` masters
  with one replica each (services ``redis-<region>-1`` .. ``-6``, cluster-enabled, on the
  region's network) created by a one-shot ``redis-<region>-init`` service (``redis-cli
  --cluster create ... --cluster-replicas 1``, skipped when the cluster is already up); the
  region's ``redis`` becomes ``cluster = ["redis-<region>-1:6379", ...]`` and the edges wait
  for the init service to complete. Without it (the default, and the committed files) each
  region has one standalone ``redis-<region>``.
* Output is deterministic: services, networks and keys in a fixed order, values in the order
  of the input file, written by the small TOML and YAML emitters of ``writers.py`` (stdlib
  only).
"""

from __future__ import annotations

import argparse
import copy
import difflib
import ipaddress
import math
import re
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from geoconfig.topology import Topology, load_topology, parse_topology
from geoconfig.validate import ConfigError
from geoedge.deploy import monitoring
from geoedge.deploy.writers import dump_toml, dump_yaml

COMPOSE_FILE = "docker-compose.yml"
TOPOLOGY_FILE = "deploy/topology.toml"
IMAGE = "geoedge:local"
HTTPS_PORT = 8443  # every edge's HTTPS listener (certificates from the certs job)
CERTS_VOLUME = "certs"
CERTS_DIR = "/certs"  # the Dockerfile creates it, owned by the image's user
REDIS_IMAGE = "redis:7-alpine"
REDIS_PORT = 6379
CLUSTER_MASTERS = 3  # per region with --redis-cluster, each with one replica
DNS_PORT = 53
DNS_PUBLISH_HOST = "127.0.0.1"
CONTAINER_CONFIG = "/etc/geoedge/topology.toml"  # where the Dockerfile copies TOPOLOGY_FILE
CONTAINER_CONTENT = "/srv/geoedge/content"  # where the Dockerfile copies examples/content
BACKBONE = "backbone"
PREFIX = "172.30"
FIRST_HOST = 10  # edge M / origin K is .(FIRST_HOST + M)
LAST_FIXED_HOST = 127  # .128/25 is Docker's
DNS_HOST = 2
HEALTHCHECK = {"interval": "5s", "timeout": "3s", "retries": 3, "start_period": "5s"}
_SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


# ---- addresses --------------------------------------------------------------------------------

def subnet(network: int) -> str:
    """The /24 of network ``network`` (0: the backbone, N: the Nth region)."""
    return f"{PREFIX}.{network}.0/24"


def dynamic_range(network: int) -> str:
    return f"{PREFIX}.{network}.128/25"


def host_address(network: int, host: int) -> str:
    return f"{PREFIX}.{network}.{host}"


def dns_address() -> str:
    return host_address(0, DNS_HOST)


def _fixed_host(position: int, key: str) -> int:
    host = FIRST_HOST + position
    if host > LAST_FIXED_HOST:
        raise ConfigError(key, f"too many for the container address scheme (at most "
                               f"{LAST_FIXED_HOST - FIRST_HOST})")
    return host


def region_network(name: str) -> str:
    return f"region-{name}"


# ---- the container topology -------------------------------------------------------------------

def cluster_nodes(region: str) -> list[str]:
    """The Redis Cluster services of a region (``--redis-cluster``), as HOST:PORT."""
    return [f"redis-{region}-{i}:{REDIS_PORT}" for i in range(1, 2 * CLUSTER_MASTERS + 1)]


def container_topology(raw: dict[str, Any], topology: Topology,
                       redis_cluster: bool = False) -> dict[str, Any]:
    """The input's raw TOML with container addresses (see the module rules)."""
    if len(topology.regions) > 254:
        raise ConfigError("regions", "at most 254 regions fit the container address scheme")
    out = copy.deepcopy(raw)
    out["dns"] = {**out.get("dns", {}), "listen": [f"0.0.0.0:{DNS_PORT}"]}
    for n, (table, rc) in enumerate(zip(out["regions"], topology.regions, strict=True), 1):
        for m, edge in enumerate(table["edges"], 1):
            edge.pop("ipv6", None)
            edge.pop("check_address", None)
            key = f"regions[{n - 1}].edges"
            edge["ipv4"] = host_address(n, _fixed_host(m, key))
        redis = {k: v for k, v in table.get("redis", {}).items() if k not in ("url", "cluster")}
        where: dict[str, Any] = ({"cluster": cluster_nodes(rc.name)} if redis_cluster else
                                 {"url": f"redis://redis-{rc.name}:{REDIS_PORT}/0"})
        table["redis"] = {**where, **redis}
        table["edges"] = table.pop("edges")  # after redis, as in the input's comments
    for k, origin in enumerate(out.get("origins", []), 1):
        origin["host"] = host_address(0, _fixed_host(k, "origins"))
    out["origin"] = {**out.get("origin", {}), "root": CONTAINER_CONTENT}
    monitoring.container_settings(out)  # metrics_listen, admin_listen
    for zone in out["zones"]:
        zone["records"] = [r for r in (_container_record(r) for r in zone.get("records", []))
                           if r is not None]
    return out


def _container_record(record: dict[str, Any]) -> dict[str, Any] | None:
    kind = str(record.get("type", "")).upper()
    if kind not in ("A", "AAAA"):
        return record
    try:
        loopback = ipaddress.ip_address(str(record.get("value", ""))).is_loopback
    except ValueError:
        return record  # parse_topology reports it
    if not loopback:
        return record
    return {**record, "value": dns_address()} if kind == "A" else None


# ---- the compose file -------------------------------------------------------------------------

def _geoedge_service(command: list[str]) -> dict[str, Any]:
    return {
        "build": {"context": ".", "dockerfile": "Dockerfile"},
        "image": IMAGE,
        "command": command,
    }


def _http_check(port: int, path: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}{path}"
    return {"test": ["CMD", "curl", "-fsS", "-o", "/dev/null", url], **HEALTHCHECK}


def _service_name(name: str, key: str) -> str:
    if not _SERVICE_NAME.fullmatch(name):
        raise ConfigError(key, f"{name!r} cannot be a compose service name (letters, digits, "
                               f"'.', '_' or '-')")
    return name


def build_compose(topology: Topology) -> dict[str, Any]:
    """The compose document for a container topology (the output of container_topology)."""
    regions = [region_network(rc.name) for rc in topology.regions]
    zone = topology.zones[0].origin
    services: dict[str, Any] = {}

    geodns = _geoedge_service(["dns", "--config", CONTAINER_CONFIG])
    geodns["ports"] = [f"{DNS_PUBLISH_HOST}:{DNS_PORT}:{DNS_PORT}/{proto}"
                       for proto in ("udp", "tcp")]
    # Port 53 as a non-root user: allowed inside this container's network namespace only.
    geodns["sysctls"] = {"net.ipv4.ip_unprivileged_port_start": "0"}
    geodns["networks"] = {BACKBONE: {"ipv4_address": dns_address()}, **{r: {} for r in regions}}
    # dig prints its errors as ';;' lines (and a pipe hides its status): require an answer line.
    dig = f"dig +short +time=1 +tries=1 @127.0.0.1 {zone} SOA | grep -q '^[^;]'"
    geodns["healthcheck"] = {"test": ["CMD-SHELL", dig], **HEALTHCHECK}
    services["geodns"] = geodns
    services["certs"] = _certs_service(topology)

    for rc, network in zip(topology.regions, regions, strict=True):
        if rc.redis is not None and rc.redis.cluster:
            services.update(_cluster_services(rc.name, network))
            continue
        services[f"redis-{rc.name}"] = {
            "image": REDIS_IMAGE,
            "command": ["redis-server", "--save", "", "--appendonly", "no"],
            "networks": {network: {}},
            "healthcheck": {"test": ["CMD", "redis-cli", "ping"], **HEALTHCHECK},
        }

    origin_path = topology.cdn.edge.origin_health_path
    for i, origin in enumerate(topology.cdn.origins):
        name = _service_name(origin.name, f"origins[{i}].name")
        service = _geoedge_service(["origin", "--config", CONTAINER_CONFIG, "--name",
                                    origin.name, "--listen", f"0.0.0.0:{origin.port}"])
        service["networks"] = {BACKBONE: {"ipv4_address": origin.host}}
        service["healthcheck"] = _http_check(origin.port, origin_path)
        services[name] = service

    grace = f"{math.ceil(topology.cdn.edge.drain_timeout) + 5}s"
    for rc, network in zip(topology.regions, regions, strict=True):
        for edge in rc.edges:
            name = _service_name(f"edge-{edge.name}", f"edge {edge.name!r}")
            service = _geoedge_service(["edge", "--config", CONTAINER_CONFIG, "--name",
                                        edge.name, "--listen", f"0.0.0.0:{edge.port}",
                                        *_tls_args()])
            service["networks"] = {network: {"ipv4_address": edge.ipv4}, BACKBONE: {}}
            service["volumes"] = [f"{CERTS_VOLUME}:{CERTS_DIR}:ro"]
            depends = [o.name for o in topology.cdn.origins]
            clustered = rc.redis is not None and bool(rc.redis.cluster)
            if not clustered:
                depends.append(f"redis-{rc.name}")
            service["depends_on"] = {d: {"condition": "service_healthy"} for d in depends}
            service["depends_on"]["certs"] = {"condition": "service_completed_successfully"}
            if clustered:
                service["depends_on"][f"redis-{rc.name}-init"] = {
                    "condition": "service_completed_successfully"}
            service["healthcheck"] = _http_check(edge.port, topology.health.path)
            service["stop_grace_period"] = grace
            services[name] = service

    client = _geoedge_service([])
    del client["command"]
    client["entrypoint"] = ["sleep", "infinity"]
    client["init"] = True
    client["networks"] = {BACKBONE: {}, **{r: {} for r in regions}}
    client["depends_on"] = {"geodns": {"condition": "service_healthy"}}
    client["volumes"] = [f"{CERTS_VOLUME}:{CERTS_DIR}:ro"]  # curl --cacert /certs/ca.pem
    services["client"] = client
    services.update(monitoring.monitoring_services(BACKBONE))

    clusters = sum(1 for rc in topology.regions if rc.redis is not None and rc.redis.cluster)
    expected = (5 + len(topology.regions) + len(topology.cdn.origins) + len(topology.edges)
                + clusters * 2 * CLUSTER_MASTERS)
    if len(services) != expected:
        raise ConfigError("origins", "an origin's name clashes with another service's name "
                                     f"({', '.join(services)})")
    networks = {BACKBONE: _network(0)}
    networks.update((r, _network(n)) for n, r in enumerate(regions, 1))
    return {"services": services, "networks": networks, "volumes": {CERTS_VOLUME: {}}}


def _certs_service(topology: Topology) -> dict[str, Any]:
    """A one-shot job: a local CA and a certificate for the zones' names (geoedge.demo.certs)
    in the ``certs`` volume, which the edges (HTTPS on HTTPS_PORT) and the client mount."""
    names = []
    for zone in topology.zones:
        origin = zone.origin.rstrip(".")
        names += [origin, f"*.{origin}"]
    service = _geoedge_service(["--out", CERTS_DIR, *names])
    service["entrypoint"] = ["python", "-m", "geoedge.demo.certs"]
    service["volumes"] = [f"{CERTS_VOLUME}:{CERTS_DIR}"]
    service["network_mode"] = "none"
    return service


def _tls_args() -> list[str]:
    return ["--tls-listen", f"0.0.0.0:{HTTPS_PORT}", "--tls-cert", f"{CERTS_DIR}/edge.pem",
            "--tls-key", f"{CERTS_DIR}/edge.key"]


def _cluster_services(region: str, network: str) -> dict[str, Any]:
    """Six cluster-enabled nodes and the one-shot service that joins them (3 + 3 replicas)."""
    out: dict[str, Any] = {}
    nodes = cluster_nodes(region)
    for node in nodes:
        out[node.rpartition(":")[0]] = {
            "image": REDIS_IMAGE,
            "command": ["redis-server", "--cluster-enabled", "yes", "--cluster-config-file",
                        "nodes.conf", "--cluster-node-timeout", "5000",
                        # a replica always stands for election (a cache: its copy beats none)
                        "--cluster-replica-validity-factor", "0", "--save", "",
                        "--appendonly", "no"],
            "networks": {network: {}},
            "healthcheck": {"test": ["CMD", "redis-cli", "ping"], **HEALTHCHECK},
        }
    # CLUSTER MEET needs addresses: resolve the service names first (musl's getent)
    addresses = " ".join(f"$$(getent hosts {n.rpartition(':')[0]} | cut -d' ' -f1):{REDIS_PORT}"
                         for n in nodes)
    first = nodes[0].rpartition(":")[0]
    script = (f"redis-cli -h {first} cluster info | grep -q cluster_state:ok || "
              f"redis-cli --cluster create {addresses} --cluster-replicas 1 --cluster-yes")
    out[f"redis-{region}-init"] = {
        "image": REDIS_IMAGE,
        "command": ["sh", "-c", script],
        "networks": {network: {}},
        "depends_on": {n.rpartition(":")[0]: {"condition": "service_healthy"} for n in nodes},
        "restart": "on-failure",
    }
    return out


def _network(n: int) -> dict[str, Any]:
    return {"ipam": {"config": [{"subnet": subnet(n), "ip_range": dynamic_range(n)}]}}


# ---- generation and the command ---------------------------------------------------------------

def _header(source: str) -> list[str]:
    return [
        f"generated by `python -m geoedge.deploy.compose` from {source}; do not edit",
        "(regenerate after changing the topology; the tests fail when this file is stale).",
        f"Addresses: network {BACKBONE} {subnet(0)} (GeoDNS .{DNS_HOST}, "
        f"origin K .{FIRST_HOST}+K); network region-<name>",
        f"{PREFIX}.N.0/24 for the Nth region (edge M .{FIRST_HOST}+M); Docker assigns "
        "every other address from .128/25.",
    ]


def generate(config: Path, source: str, redis_cluster: bool = False) -> dict[str, str]:
    """The generated files' text by path relative to the output directory.

    ``source`` is how the header names the input (e.g. ``examples/demo.toml``).
    """
    topology = load_topology(config)
    with config.open("rb") as f:
        raw = tomllib.load(f)
    container = container_topology(raw, topology, redis_cluster)
    parsed = parse_topology(container, source=CONTAINER_CONFIG)
    header = _header(source)
    return {
        COMPOSE_FILE: dump_yaml(build_compose(parsed), header),
        TOPOLOGY_FILE: dump_toml(container, header),
        monitoring.PROMETHEUS_FILE: monitoring.dump_config(
            monitoring.container_prometheus(parsed), header),
    }


def _source_name(config: Path, out_dir: Path) -> str:
    try:
        return PurePosixPath(config.resolve().relative_to(out_dir.resolve())).as_posix()
    except ValueError:
        return config.as_posix()


def check(files: dict[str, str], out_dir: Path) -> list[str]:
    """Unified diffs (committed -> generated) of the files that differ; empty when none do."""
    diffs = []
    for name, text in files.items():
        path = out_dir / name
        try:
            current = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = ""
        if current != text:
            diffs.append("".join(difflib.unified_diff(
                current.splitlines(keepends=True), text.splitlines(keepends=True),
                fromfile=f"{name} (on disk)", tofile=f"{name} (generated)")))
    return diffs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m geoedge.deploy.compose",
        description=f"write {COMPOSE_FILE} and {TOPOLOGY_FILE} from a topology file")
    parser.add_argument("--config", default="examples/demo.toml", type=Path,
                        help="topology file (default: examples/demo.toml)")
    parser.add_argument("--out-dir", default=Path("."), type=Path,
                        help="directory to write into (default: the current one)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when the files differ from the generated ones")
    parser.add_argument("--redis-cluster", action="store_true",
                        help="run each region's tier as a Redis Cluster, 3 masters + 3 "
                             "replicas (default: one standalone Redis per region)")
    args = parser.parse_args(argv)
    try:
        files = generate(args.config, _source_name(args.config, args.out_dir),
                         args.redis_cluster)
    except ConfigError as exc:
        print(f"geoedge.deploy.compose: config error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        diffs = check(files, args.out_dir)
        for diff in diffs:
            sys.stderr.write(diff)
        if diffs:
            print(f"geoedge.deploy.compose: {len(diffs)} file(s) out of date; run "
                  f"`python -m geoedge.deploy.compose --config {args.config}`", file=sys.stderr)
            return 1
        return 0
    for name, text in files.items():
        path = args.out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
