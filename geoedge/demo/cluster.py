"""``geoedge demo --redis-cluster``: each region's tier as a Redis Cluster, the pure part.

Rules:

- A region whose ``redis`` is a standalone ``url = "redis://HOST:PORT/..."`` gets, instead of
  that one server, ``NODES`` (6) cluster-enabled servers on HOST at PORT, PORT+1 .. PORT+5
  (:func:`node_addresses`); each one's cluster bus is on its port + ``BUS_OFFSET`` (10000).
  The first ``MASTERS`` (3) are joined as masters, each of the others as one master's
  replica (``redis-cli --cluster create ... --cluster-replicas 1``, or by hand:
  :func:`slot_ranges`). A region with a ``cluster`` of its own (run by the operator) or no
  ``redis`` gets none.
- The edges read a copy of the topology in which each such region's ``url = "..."`` is
  replaced by ``cluster = ["HOST:PORT", ...]`` (:func:`edge_topology_text`); every other
  byte of the file is kept. The copy must load to the same topology apart from the regions'
  tiers (and the origins' ``root``, which edges do not use): a path relative to the file's
  directory cannot be carried into the demo's state directory, and is refused by the caller.
- :func:`parse_nodes` reads ``CLUSTER NODES``; :func:`problem` says what keeps a cluster
  from being "3 masters + 3 replicas, all 16384 slots covered, every link up" ("" when
  nothing does), :func:`replication_problem` what keeps a replica from holding its master's
  copy (its link down, its first copy in progress); :func:`handed_over` says whether a
  node's slots belong to others now (its replica was promoted), which is when a crashed
  master may be restarted: it then rejoins as the new master's replica instead of coming
  back empty with its old slots.
- Pure: text in, values out; no sockets, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from geoconfig.topology import Topology
from geoconfig.validate import ConfigError

MASTERS = 3
NODES = 2 * MASTERS  # one replica per master
SLOTS = 16384
BUS_OFFSET = 10000  # Redis Cluster's bus port is the client port + 10000
NODE_TIMEOUT_MS = 2000  # cluster-node-timeout: a master silent this long is failed over
# cluster-replica-validity-factor: 0, a replica always stands for election. With Redis's default
# (10) a replica whose link to its master has been down for more than node-timeout x 10 +
# repl-ping-replica-period (32 s here) never fails over, so one slow election on a loaded
# machine left the slots unserved for good. The tier is a cache: serving the replica's copy,
# however old, beats serving nothing (its entries still carry their own freshness).
REPLICA_VALIDITY_FACTOR = 0
# So a cluster counts as healthy only once each replica holds its master's copy
# (replication_problem; repl-diskless-sync-delay 0: the first copy starts at once instead of
# waiting 5 s for more replicas, of which each master has one).

Address = tuple[str, int]


def node_addresses(host: str, port: int, key: str = "redis.url") -> list[Address]:
    """The cluster nodes of a region whose standalone Redis would be at ``host:port``."""
    last = port + NODES - 1
    if last + BUS_OFFSET > 65535:
        raise ConfigError(key, f"--redis-cluster: ports {port}..{last} and their cluster bus "
                               f"ports (+{BUS_OFFSET}) must be below 65536")
    return [(host, port + i) for i in range(NODES)]


def cluster_argv(binary: str, host: str, port: int, workdir: str) -> tuple[str, ...]:
    """A cluster-enabled redis-server on ``host:port`` keeping ``nodes.conf`` in workdir. It
    announces ``host``: its bus connections leave from 127.0.0.1, where it does not listen."""
    return (binary, "--bind", host, "--port", str(port), "--save", "", "--appendonly", "no",
            "--dir", workdir, "--loglevel", "notice", "--protected-mode", "no",
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--cluster-replica-validity-factor", str(REPLICA_VALIDITY_FACTOR),
            "--repl-diskless-sync-delay", "0", "--cluster-announce-ip", host)


def slot_ranges(masters: int = MASTERS) -> list[tuple[int, int]]:
    """Contiguous, inclusive slot ranges covering all slots, as redis-cli splits them."""
    bounds = [round(i * SLOTS / masters) for i in range(masters + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(masters)]


# --- the edges' topology -------------------------------------------------------------------------

def edge_topology_text(text: str, topology: Topology,
                       nodes: dict[str, list[Address]]) -> str:
    """``text`` (the topology file) with each region of ``nodes`` using its cluster."""
    for index, rc in enumerate(topology.regions):
        if rc.name not in nodes:
            continue
        assert rc.redis is not None and rc.redis.url is not None
        pattern = re.compile(r"\burl\s*=\s*([\"'])" + re.escape(rc.redis.url) + r"\1")
        found = list(pattern.finditer(text))
        key = f"regions[{index}].redis.url"
        if len(found) != 1:
            raise ConfigError(key, f"--redis-cluster: cannot find url = {rc.redis.url!r} "
                                   "exactly once in the file to replace it")
        listed = ", ".join(f'"{h}:{p}"' for h, p in nodes[rc.name])
        text = f"{text[:found[0].start()]}cluster = [{listed}]{text[found[0].end():]}"
    return text


def check_edge_topology(original: Topology, copy: Topology,
                        nodes: dict[str, list[Address]]) -> None:
    """ConfigError unless ``copy`` is ``original`` with the regions of ``nodes`` on their
    clusters (the origins' root aside: relative to the file, and no edge reads it)."""
    for index, (was, now) in enumerate(zip(original.regions, copy.regions, strict=True)):
        want = was.redis
        if was.name in nodes and want is not None:
            want = replace(want, url=None, cluster=tuple(f"{h}:{p}" for h, p in nodes[was.name]))
        if now.redis != want:
            raise ConfigError(f"regions[{index}].redis", "--redis-cluster: the edges' copy of "
                                                         "the topology does not use the cluster")
    same = replace(copy, source=original.source, regions=original.regions,
                   cdn=replace(copy.cdn, origin=original.cdn.origin))
    if same != original:
        raise ConfigError("", "--redis-cluster: the edges read a copy of the topology in the "
                              "demo's state directory, where the file's relative paths (TLS "
                              "files, ...) point elsewhere: make them absolute")


# --- CLUSTER NODES -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Node:
    id: str
    address: Address
    flags: frozenset[str]
    master: str  # the master's id for a replica, "-" for a master
    connected: bool
    slots: int  # how many slots it serves

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "handshake", "noaddr"})


def _slot_count(fields: list[str]) -> int:
    count = 0
    for item in fields:
        if item.startswith("["):  # a slot being migrated or imported: counted where it is
            continue
        lo, _, hi = item.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


def parse_nodes(text: str) -> list[Node]:
    """The nodes a ``CLUSTER NODES`` reply lists (ValueError when it is not one)."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 8:
            raise ValueError(f"not a CLUSTER NODES line: {line!r}")
        address = fields[1].split("@", 1)[0].split(",", 1)[0]
        host, _, port = address.rpartition(":")
        out.append(Node(fields[0], (host, int(port)), frozenset(fields[2].split(",")),
                        fields[3], fields[7] == "connected", _slot_count(fields[8:])))
    return out


def problem(nodes: list[Node], expected: list[Address]) -> str:
    """What keeps ``nodes`` (one node's view) from being the healthy cluster of ``expected``:
    3 masters with one replica each, all slots served, no node failed or unreachable."""
    known = sorted(n.address for n in nodes)
    if known != sorted(expected):
        return f"knows {len(nodes)} nodes, not the {len(expected)} expected"
    bad = [n for n in nodes if n.failed or not n.connected]
    if bad:
        return "not reachable or failed: " + ", ".join(f"{h}:{p}" for h, p in
                                                      (n.address for n in bad))
    masters = {n.id: n for n in nodes if n.is_master}
    served = sum(n.slots for n in masters.values())
    if len(masters) != MASTERS:
        return f"{len(masters)} masters, not {MASTERS}"
    if served != SLOTS:
        return f"{served} of {SLOTS} slots served"
    replicas = [n.master for n in nodes if not n.is_master]
    if sorted(replicas) != sorted(masters):
        return "not one replica per master"
    return ""


def replication_problem(fields: Mapping[str, object]) -> str:
    """What ``INFO replication`` (its fields) says keeps a node from being ready: a replica
    whose link to its master is not up, or that is still loading its first copy (a replica
    promoted then would take over its master's slots without the data). "" when ready."""
    if fields.get("role") != "slave":
        return ""
    if fields.get("master_link_status") != "up":
        return "replica not linked to its master"
    if str(fields.get("master_sync_in_progress", 0)) != "0":
        return "replica still copying its master"
    return ""


def handed_over(nodes: list[Node], address: Address) -> bool:
    """True when, in this view, the node at ``address`` serves no slot and the others serve
    them all (its replica has been promoted, or it was a replica)."""
    others = sum(n.slots for n in nodes if n.is_master and not n.failed
                 and n.address != address)
    mine = next((n for n in nodes if n.address == address), None)
    return (mine is None or mine.slots == 0) and others == SLOTS
