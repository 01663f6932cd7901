"""The demo's shared tiers: the line saying their mode, and with ``--redis-cluster`` the
supervisor's hooks for the clusters, the edges' copy of the topology and the tour's lines.

Rules:

- ``group_ready``: once the Redis group is up, every region's cluster is joined at once
  (``geoedge.demo.clusterjoin.create``, with ``redis-cli`` when it is on PATH) within
  ``CLUSTER_WAIT`` s; a cluster that does not form is a StartError (the demo stops).
- ``before_restart``: a crashed cluster node is restarted only once the other nodes serve
  all its slots (its replica promoted), or after ``HANDOVER_WAIT`` s: restarted earlier, a
  master without persistence would come back empty with its old slots and its replica
  would copy the emptiness, instead of the replica taking over.
- The edges' copy is ``geoedge.demo.cluster.edge_topology_text`` of the file, checked with
  ``check_edge_topology`` (ConfigError).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

from geoconfig.topology import Topology, load_topology
from geoedge.demo import cluster as rcluster
from geoedge.demo import clusterjoin
from geoedge.demo.services import Service
from geoedge.demo.supervisor import StartError

CLUSTER_WAIT = 30.0  # seconds for a region's Redis Cluster to be joined and healthy
HANDOVER_WAIT = 30.0  # seconds a crashed cluster node waits for its replica to take over


def tier_mode(services: list[Service], redis_cluster: bool) -> str:
    """The line saying how the regions' shared tiers run."""
    nodes = [s for s in services if s.role == "redis"]
    if not nodes:
        return "Shared tier: no Redis started by the demo"
    if not redis_cluster:
        return (f"Shared tier: one standalone Redis per region ({len(nodes)} redis-server; "
                f"--redis-cluster: a Redis Cluster of {rcluster.MASTERS} masters + "
                f"{rcluster.MASTERS} replicas each)")
    return (f"Shared tier: a Redis Cluster per region, {rcluster.MASTERS} masters + "
            f"{rcluster.MASTERS} replicas each ({len(nodes)} redis-server)")


def clusters(services: list[Service]) -> dict[str, list[Service]]:
    """The Redis Cluster nodes of the plan, by cluster (region)."""
    out: dict[str, list[Service]] = {}
    for s in services:
        if s.cluster:
            out.setdefault(s.cluster, []).append(s)
    return out


def _address(service: Service) -> rcluster.Address:
    return service.probe.host, service.probe.port


def cluster_hooks(services: list[Service], report: Callable[[str], None]) -> tuple[
        Callable[[list[Service]], Awaitable[None]], Callable[[Service], Awaitable[None]]]:
    """The supervisor's hooks for the plan's clusters: join them once their nodes are up,
    and restart a crashed node only once its replica has its slots."""
    by_name = clusters(services)
    cli = shutil.which("redis-cli")

    async def join(name: str, nodes: list[Service]) -> None:
        began = loop_time()
        try:
            await clusterjoin.create([_address(n) for n in nodes], cli, CLUSTER_WAIT)
        except clusterjoin.ClusterError as exc:
            raise StartError(f"redis-{name}: the cluster did not form: {exc}") from exc
        report(f"  ok  redis-{name} cluster: {rcluster.MASTERS} masters + {rcluster.MASTERS} "
               f"replicas, {rcluster.SLOTS} slots ({loop_time() - began:.1f} s, "
               f"{'redis-cli --cluster create' if cli else 'joined through redis-py'})")

    async def group_ready(group: list[Service]) -> None:
        if any(s.cluster for s in group):
            await asyncio.gather(*(join(name, nodes) for name, nodes in by_name.items()))

    async def before_restart(service: Service) -> None:
        if not service.cluster:
            return
        peers = [_address(n) for n in by_name[service.cluster] if n is not service]
        report(f"    {service.name}: waiting for the cluster to hand its slots over first")
        if await clusterjoin.wait_handed_over(_address(service), peers, HANDOVER_WAIT):
            report(f"    {service.name}: the other nodes serve all slots (its replica was "
                   f"promoted, or it was a replica); it rejoins as a replica")
        else:
            report(f"!!  {service.name}: its slots were not taken over within "
                   f"{HANDOVER_WAIT:.0f} s; restarting it anyway")

    return group_ready, before_restart


def loop_time() -> float:
    return asyncio.get_running_loop().time()


def edge_topology(topology: Topology, config: Path, services: list[Service],
                  path: Path) -> None:
    """Write the edges' copy of the topology (regions on their clusters); ConfigError."""
    nodes = {name: [_address(n) for n in group] for name, group in clusters(services).items()}
    path.write_text(rcluster.edge_topology_text(config.read_text(), topology, nodes))
    rcluster.check_edge_topology(topology, load_topology(path), nodes)


def cluster_tour(services: list[Service]) -> str:
    """The tour's lines for the Redis Clusters ("" without them)."""
    by_name = clusters(services)
    if not by_name:
        return ""
    name, nodes = next(iter(by_name.items()))
    host, port = _address(nodes[0])
    return f"""

Redis Cluster (each region's tier: 3 masters + 3 replicas):
  redis-cli -c -h {host} -p {port} cluster nodes    # who is master, who replicates whom
Type `kill redis-{name}-N` below (N a master's number): no request fails, its replica is
promoted within a few seconds, and the supervisor brings the node back as a replica
(`redis-{name}` names all six nodes: `stop redis-{name}` takes the region's tier away)."""
