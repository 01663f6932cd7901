"""``geoedge demo --redis-cluster``: each region's tier as a Redis Cluster, 3 masters + 3 replicas.

The pure parts (the plan's process list, the edges' copy of the topology, reading CLUSTER
NODES) are table-driven; the cluster join by hand (no redis-cli) runs on six real servers;
the end-to-end tests run the real demo with the flag: 27 processes (18 redis-server), a
request stored in its region's cluster, one master killed under requests that all succeed
while its replica is promoted, and nothing left running afterwards.
"""

from __future__ import annotations

import asyncio
import http.client
import random
import re
import signal
import socket
import subprocess
import threading
import time
import tomllib
from pathlib import Path

import pytest
import redis
from demoutil import DEMO, DemoPorts, DemoProcess, alive, demo_config
from redisutil import RedisServer, free_port, redis_binary

from geoconfig.topology import load_topology, parse_topology
from geoconfig.validate import ConfigError
from geoedge.demo import cluster, clusterjoin
from geoedge.demo.services import plan, select
from geoedge.demo.supervisor import address_in_use
from geoedge.demo.tiers import tier_mode

REGIONS = ("us-east", "eu-west", "ap-southeast")
WAIT = 30.0  # seconds: bounded waits on the demo and on the clusters


# --- the plan (pure) ----------------------------------------------------------------------------

def test_plan_with_the_flag_runs_six_cluster_nodes_per_region() -> None:
    edges_toml = Path("/tmp/d/edges.toml")
    services = plan(load_topology(DEMO), DEMO, "/usr/bin/redis-server", Path("/tmp/d"),
                    redis_cluster=True, edge_config=edges_toml)
    redis_nodes = [s for s in services if s.role == "redis"]
    assert [(s.name, s.region, s.cluster, s.address) for s in redis_nodes] == [
        (f"redis-{region}-{i + 1}", region, region, f"127.0.{n}.10:{6379 + i}")
        for n, region in enumerate(REGIONS, 1) for i in range(6)]
    assert [s.role for s in services[18:]] == ["origin"] * 2 + ["edge"] * 6 + ["dns"]
    node = redis_nodes[7]  # redis-eu-west-2
    assert node.argv == (
        "/usr/bin/redis-server", "--bind", "127.0.2.10", "--port", "6380", "--save", "",
        "--appendonly", "no", "--dir", "/tmp/d/redis-eu-west-2", "--loglevel", "notice",
        "--protected-mode", "no", "--cluster-enabled", "yes", "--cluster-config-file",
        "nodes.conf", "--cluster-node-timeout", "2000", "--cluster-replica-validity-factor",
        "0", "--repl-diskless-sync-delay", "0", "--cluster-announce-ip", "127.0.2.10")
    assert (node.probe.kind, node.probe.host, node.probe.port) == ("redis", "127.0.2.10", 6380)
    configs = {s.role: s.argv[s.argv.index("--config") + 1] for s in services
               if s.role != "redis"}
    assert configs == {"origin": str(DEMO), "edge": str(edges_toml), "dns": str(DEMO)}
    # no two processes share a port: client ports and cluster bus ports (+10000)
    used = [(s.probe.host, s.probe.port) for s in services if s.role != "dns"]
    used += [(s.probe.host, s.probe.port + cluster.BUS_OFFSET) for s in redis_nodes]
    assert len(used) == len(set(used)) == 18 * 2 + 2 + 6


def test_plan_without_the_flag_is_unchanged() -> None:
    topology = load_topology(DEMO)
    plain = plan(topology, DEMO, "redis-server", Path("/tmp/d"))
    assert plain == plan(topology, DEMO, "redis-server", Path("/tmp/d"), redis_cluster=False)
    assert [s.name for s in plain if s.role == "redis"] == [f"redis-{r}" for r in REGIONS]
    assert not any(s.cluster for s in plain)
    no_binary = plan(topology, DEMO, None, Path("/tmp/d"), redis_cluster=True)
    assert [s.role for s in no_binary].count("redis") == 0


@pytest.mark.parametrize(("target", "names"), [
    ("redis-eu-west", [f"redis-eu-west-{i}" for i in range(1, 7)]),  # the whole cluster
    ("redis-eu-west-2", ["redis-eu-west-2"]),
    ("eu-west", ["eu-west-1", "eu-west-2"]),
])
def test_select_with_the_flag(target: str, names: list[str]) -> None:
    services = plan(load_topology(DEMO), DEMO, "redis-server", Path("/tmp/d"),
                    redis_cluster=True)
    assert [s.name for s in select(services, target)] == names


def _demo_with(old: str, new: str) -> str:
    text = DEMO.read_text()
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize(("old", "new", "key", "message"), [
    ('host = "127.0.1.11"\nport = 8080', 'host = "127.0.1.10"\nport = 6381',
     "regions[0].redis.url", "redis-us-east-3 needs 127.0.1.10:6381, which origin-1"),
    ('host = "127.0.1.11"\nport = 8080', 'host = "127.0.1.10"\nport = 16384',
     "regions[0].redis.url", "redis-us-east-6 needs 127.0.1.10:16384, which origin-1"),
    ("redis://127.0.2.10:6379/0", "redis://127.0.2.10:60000/0",
     "regions[1].redis.url", "must be below 65536"),
])
def test_plan_refuses_cluster_ports_that_collide(old: str, new: str, key: str,
                                                  message: str) -> None:
    topology = parse_topology(tomllib.loads(_demo_with(old, new)), str(DEMO))
    with pytest.raises(ConfigError) as caught:
        plan(topology, DEMO, "redis-server", Path("/tmp/d"), redis_cluster=True)
    assert caught.value.key == key and message in str(caught.value)


def test_a_taken_bus_port_is_in_use(tmp_path: Path) -> None:
    base = cluster_base_port()
    topology = parse_topology(tomllib.loads(DEMO.read_text().replace(":6379/0", f":{base}/0")),
                              str(DEMO))
    node = plan(topology, DEMO, "redis-server", tmp_path, redis_cluster=True)[8]  # eu-west-3
    assert node.also_ports == (base + 2 + cluster.BUS_OFFSET,)
    assert not address_in_use(node)
    with socket.socket() as taken:
        taken.bind(("127.0.2.10", base + 2 + cluster.BUS_OFFSET))
        taken.listen()
        assert address_in_use(node)


def test_tier_mode_lines() -> None:
    topology = load_topology(DEMO)
    assert tier_mode(plan(topology, DEMO, "redis-server", Path("/d")), False) == (
        "Shared tier: one standalone Redis per region (3 redis-server; --redis-cluster: a "
        "Redis Cluster of 3 masters + 3 replicas each)")
    assert tier_mode(plan(topology, DEMO, "redis-server", Path("/d"), redis_cluster=True),
                     True) == ("Shared tier: a Redis Cluster per region, 3 masters + 3 "
                               "replicas each (18 redis-server)")
    assert tier_mode(plan(topology, DEMO, None, Path("/d")), False) == (
        "Shared tier: no Redis started by the demo")


# --- the edges' copy of the topology (pure) -----------------------------------------------------

def _nodes(topology) -> dict[str, list[cluster.Address]]:
    return {rc.name: cluster.node_addresses(f"127.0.{i}.10", 6379)
            for i, rc in enumerate(topology.regions, 1)}


def test_edges_topology_replaces_each_url_and_keeps_the_rest(tmp_path: Path) -> None:
    topology = load_topology(DEMO)
    text = cluster.edge_topology_text(DEMO.read_text(), topology, _nodes(topology))
    assert "redis://" not in text.split("# ---- CDN")[0].replace(
        "# redis = { cluster", "").replace('redis = { url = "redis://', "")  # no url left
    assert text.count('redis = { cluster = ["127.0.2.10:6379", "127.0.2.10:6380", '
                      '"127.0.2.10:6381", "127.0.2.10:6382", "127.0.2.10:6383", '
                      '"127.0.2.10:6384"] }') == 1
    copy = tmp_path / "edges.toml"
    copy.write_text(text)
    loaded = load_topology(copy)
    cluster.check_edge_topology(topology, loaded, _nodes(topology))  # raises when not
    assert [rc.redis.cluster[0] for rc in loaded.regions] == [
        "127.0.1.10:6379", "127.0.2.10:6379", "127.0.3.10:6379"]
    assert [rc.redis.prefix for rc in loaded.regions] == [
        rc.redis.prefix for rc in topology.regions]  # the region's own keys, as before


def test_edges_topology_refuses_what_it_cannot_carry(tmp_path: Path) -> None:
    topology = load_topology(DEMO)
    twice = DEMO.read_text() + '\n# url = "redis://127.0.2.10:6379/0"\n'
    with pytest.raises(ConfigError, match=r"exactly once"):
        cluster.edge_topology_text(twice, topology, _nodes(topology))
    # a copy in another directory that would not be the same topology (a relative path)
    tls = tmp_path / "tls"
    tls.mkdir()
    for name in ("cert.pem", "key.pem"):
        (tls / name).write_text("x")
    original = tmp_path / "demo.toml"
    original.write_text(DEMO.read_text().replace(
        "\n[edge]\n", '\n[edge]\ntls_cert = "tls/cert.pem"\ntls_key = "tls/key.pem"\n', 1))
    topology = load_topology(original)
    elsewhere = tmp_path / "state"
    elsewhere.mkdir()
    copy = elsewhere / "edges.toml"
    copy.write_text(cluster.edge_topology_text(original.read_text(), topology,
                                               _nodes(topology)))
    with pytest.raises(ConfigError, match=r"make them absolute"):
        cluster.check_edge_topology(topology, load_topology(copy), _nodes(topology))


# --- CLUSTER NODES (pure) -----------------------------------------------------------------------

A, B, C, D, E, F = (f"{c * 40}" for c in "abcdef")
HEALTHY = f"""\
{A} 127.0.2.10:6379@16379 myself,master - 0 0 1 connected 0-5460
{B} 127.0.2.10:6380@16380 master - 0 1 2 connected 5461-10922
{C} 127.0.2.10:6381@16381 master - 0 1 3 connected 10923-16383
{D} 127.0.2.10:6382@16382 slave {C} 0 1 3 connected
{E} 127.0.2.10:6383@16383 slave {A} 0 1 1 connected
{F} 127.0.2.10:6384@16384 slave {B} 0 1 2 connected
"""
EXPECTED = cluster.node_addresses("127.0.2.10", 6379)
B_FAILING = HEALTHY.replace(f"{B} 127.0.2.10:6380@16380 master - 0 1 2 connected",
                            f"{B} 127.0.2.10:6380@16380 master,fail? - 0 1 2 disconnected")
# F promoted: it serves B's slots; B is failed and serves none
PROMOTED = (HEALTHY.replace(f"{B} 127.0.2.10:6380@16380 master - 0 1 2 connected 5461-10922",
                            f"{B} 127.0.2.10:6380@16380 master,fail - 0 1 2 disconnected")
            .replace(f"{F} 127.0.2.10:6384@16384 slave {B} 0 1 2 connected",
                     f"{F} 127.0.2.10:6384@16384 master - 0 1 7 connected 5461-10922"))
# B back, as F's replica
REJOINED = PROMOTED.replace(f"{B} 127.0.2.10:6380@16380 master,fail - 0 1 2 disconnected",
                            f"{B} 127.0.2.10:6380@16380 slave {F} 0 1 7 connected")


@pytest.mark.parametrize(("text", "problem"), [
    (HEALTHY, ""),
    (REJOINED, ""),
    ("\n".join(HEALTHY.splitlines()[:5]), "knows 5 nodes, not the 6 expected"),
    (B_FAILING, "not reachable or failed: 127.0.2.10:6380"),
    (PROMOTED, "not reachable or failed: 127.0.2.10:6380"),
    (HEALTHY.replace(" 10923-16383", " 10923-16000"), "16001 of 16384 slots served"),
    (HEALTHY.replace(f"slave {C}", "master -"), "4 masters, not 3"),
    (HEALTHY.replace(f"slave {C}", f"slave {A}"), "not one replica per master"),
    # a slot on its way elsewhere is still counted where it is served
    (HEALTHY.replace(" 0-5460\n", f" 0-5459 5460 [5460->-{B}]\n"), ""),
])
def test_cluster_problem(text: str, problem: str) -> None:
    assert cluster.problem(cluster.parse_nodes(text), EXPECTED) == problem


@pytest.mark.parametrize(("text", "address", "done"), [
    (HEALTHY, ("127.0.2.10", 6380), False),     # B still serves its slots
    (B_FAILING, ("127.0.2.10", 6380), False),   # suspected, not yet failed over
    (PROMOTED, ("127.0.2.10", 6380), True),     # F serves them now
    (HEALTHY, ("127.0.2.10", 6384), True),      # a replica: nothing to hand over
    (PROMOTED.replace(" 5461-10922", ""), ("127.0.2.10", 6380), False),  # slots uncovered
])
def test_handed_over(text: str, address: cluster.Address, done: bool) -> None:
    assert cluster.handed_over(cluster.parse_nodes(text), address) is done


@pytest.mark.parametrize(("fields", "problem"), [
    ({"role": "master", "connected_slaves": 1}, ""),
    ({"role": "master", "connected_slaves": 0}, ""),  # its replica's own view says why
    ({"role": "slave", "master_link_status": "up", "master_sync_in_progress": 0}, ""),
    ({"role": "slave", "master_link_status": "down", "master_sync_in_progress": 0},
     "replica not linked to its master"),
    ({"role": "slave", "master_link_status": "down", "master_sync_in_progress": 1},
     "replica not linked to its master"),
    ({"role": "slave", "master_link_status": "up", "master_sync_in_progress": 1},
     "replica still copying its master"),
    ({"role": "slave"}, "replica not linked to its master"),
])
def test_replication_problem(fields: dict, problem: str) -> None:
    assert cluster.replication_problem(fields) == problem


def test_slot_ranges_cover_every_slot_once() -> None:
    ranges = cluster.slot_ranges()
    assert ranges == [(0, 5460), (5461, 10922), (10923, 16383)]
    assert sum(hi - lo + 1 for lo, hi in ranges) == cluster.SLOTS


def test_parse_nodes_refuses_what_is_not_cluster_nodes() -> None:
    with pytest.raises(ValueError):
        cluster.parse_nodes("ERR This instance has cluster support disabled")


# --- joining by hand, on real servers -----------------------------------------------------------

def test_join_by_hand_without_redis_cli() -> None:
    servers = [RedisServer(cluster=True) for _ in range(cluster.NODES)]
    try:
        for s in servers:
            s.start()
        nodes = [("127.0.0.1", s.port) for s in servers]
        asyncio.run(clusterjoin.create(nodes, None, WAIT))
        assert asyncio.run(clusterjoin.health(nodes)) == ""
        with servers[0].client() as c:
            info = c.execute_command("CLUSTER NODES")
        masters = [a for a, n in info.items() if "master" in n["flags"]]
        assert sorted(masters) == sorted(f"127.0.0.1:{s.port}" for s in servers[:3])
        replicas = {a: n["master_id"] for a, n in info.items() if "slave" in n["flags"]}
        assert sorted(replicas) == sorted(f"127.0.0.1:{s.port}" for s in servers[3:])
        assert sorted(replicas.values()) == sorted(info[a]["node_id"] for a in masters)
    finally:
        for s in servers:
            s.cleanup()


def test_a_replica_is_promoted_however_long_its_master_has_been_gone(tmp_path: Path) -> None:
    """The demo's nodes (cluster_argv) with the timings shrunk: node-timeout 0.5 s and a replica
    ping every second put Redis's default validity window at 0.5 x 10 + 1 = 6 s. A master is
    killed while one of the two others is stopped (no majority: no election can win), and
    only once the replica's link has been down for longer than that window is the stopped
    master resumed. The replica must still be promoted (cluster-replica-validity-factor 0);
    with the default it never is, and the killed master's slots stay unserved."""
    binary = redis_binary()
    ports = []
    while len(ports) < cluster.NODES:
        if (port := free_port()) not in ports:
            ports.append(port)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            workdir = tmp_path / str(port)
            workdir.mkdir()
            argv = cluster.cluster_argv(binary, "127.0.0.1", port, str(workdir))
            procs.append(subprocess.Popen(
                [*argv, "--cluster-node-timeout", "500", "--repl-ping-replica-period", "1"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir))
        nodes = [("127.0.0.1", p) for p in ports]
        assert poll(lambda: all(_pings(a) for a in nodes), 10)
        asyncio.run(clusterjoin.create(nodes, None, WAIT))
        assert asyncio.run(clusterjoin.health(nodes)) == ""
        # nodes[0..2] are the masters, nodes[3 + i] is nodes[i]'s replica (clusterjoin)
        victim, stopped, voter, replica = procs[0], procs[1], nodes[2], nodes[3]

        def link() -> dict:
            with _client(replica) as c:
                return c.info("replication")

        assert poll(lambda: link().get("master_link_status") == "up", 10), link()
        stopped.send_signal(signal.SIGSTOP)
        victim.kill()
        victim.wait(10)

        assert poll(lambda: link().get("master_link_down_since_seconds", 0) > 8, 20), link()
        stopped.send_signal(signal.SIGCONT)

        assert poll(lambda: link()["role"] == "master", 20, step=0.2), link()

        def state() -> str:
            with _client(voter) as c:
                return c.execute_command("CLUSTER INFO")["cluster_state"]

        assert poll(lambda: state() == "ok", 10), state()  # every slot served again
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait(10)


def _client(address: cluster.Address) -> redis.Redis:
    return redis.Redis(host=address[0], port=address[1], socket_timeout=2.0,
                       socket_connect_timeout=2.0, decode_responses=True)


def _pings(address: cluster.Address) -> bool:
    try:
        with _client(address) as c:
            return bool(c.ping())
    except (redis.RedisError, OSError):
        return False


# --- the real demo ------------------------------------------------------------------------------

def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as redis-server binds
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def cluster_base_port() -> int:
    """A port p with p .. p+5 and their bus ports free on every address, all below the
    ephemeral range (32768 up), so no outgoing connection of the busy machine takes one."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(10000, 32768 - cluster.BUS_OFFSET - cluster.NODES)
        if all(_free(base + i) and _free(base + i + cluster.BUS_OFFSET)
               for i in range(cluster.NODES)):
            return base
    raise RuntimeError("no free run of ports for the cluster nodes")


def cluster_demo_config(tmp_path: Path) -> tuple[Path, DemoPorts, int]:
    """(the demo's config on free ports, its ports, the clusters' first port). The tier's
    timeout is 1 s, not 0.05: on this busy 2-core machine an edge's first command to a
    master (a new connection) can take longer, and the edge then rightly asks the origin."""
    config, ports = demo_config(tmp_path)
    base = cluster_base_port()
    config.write_text(config.read_text().replace(f':{ports.redis}/0" }}',
                                                 f':{base}/0", timeout = 1.0 }}'))
    assert load_topology(config).regions[1].redis.timeout == 1.0
    return config, ports, base


def edge_stats(address: str, admin_port: int) -> str:
    """The edge's /.geoedge/stats, for an assertion's message."""
    conn = http.client.HTTPConnection(address, admin_port, timeout=5)
    try:
        conn.request("GET", "/.geoedge/stats")
        return conn.getresponse().read().decode(errors="replace")
    except (OSError, http.client.HTTPException) as exc:
        return f"no stats: {exc}"
    finally:
        conn.close()


def region_client(region: int, port: int) -> redis.Redis:
    return redis.Redis(host=f"127.0.{region}.10", port=port, socket_timeout=2.0,
                       socket_connect_timeout=2.0, decode_responses=True)


def nodes_of(region: int, base: int, skip: int | None = None) -> dict[str, dict]:
    """CLUSTER NODES as redis-py reads it, from the first node of the region that answers."""
    for port in range(base, base + cluster.NODES):
        if port == skip:
            continue
        try:
            with region_client(region, port) as c:
                return c.execute_command("CLUSTER NODES")
        except (redis.RedisError, OSError):
            continue
    raise AssertionError(f"no node of region {region} answers")


def roles(nodes: dict[str, dict]) -> tuple[set[str], dict[str, str]]:
    """(live masters serving slots, replica address -> its master's address)."""
    by_id = {n["node_id"]: a for a, n in nodes.items()}
    masters = {a for a, n in nodes.items() if "master" in n["flags"] and "fail" not in
               n["flags"] and n["slots"]}
    replicas = {a: by_id.get(n["master_id"], "?") for a, n in nodes.items()
                if "slave" in n["flags"]}
    return masters, replicas


def slots_served(nodes: dict[str, dict], masters: set[str]) -> int:
    return sum(int(hi) - int(lo) + 1 for a in masters
               for lo, hi in (r if len(r) == 2 else (r[0], r[0]) for r in nodes[a]["slots"]))


def healthy(region: int, base: int) -> bool:
    nodes = nodes_of(region, base)
    masters, replicas = roles(nodes)
    with region_client(region, base) as c:
        state = c.execute_command("CLUSTER INFO")["cluster_state"]
    return (state == "ok" and len(masters) == 3 and len(replicas) == 3
            and set(replicas.values()) == masters and slots_served(nodes, masters) == 16384
            and all(n["connected"] for n in nodes.values()))


def poll(check, timeout: float = WAIT, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        if result := check():
            return result
        if time.monotonic() > deadline:
            return result
        time.sleep(step)


def get(address: str, port: int, path: str) -> tuple[int, str]:
    """(status, Cache-Status) of a GET through one edge."""
    conn = http.client.HTTPConnection(address, port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": f"www.example.test:{port}"})
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.getheader("Cache-Status", "")
    finally:
        conn.close()


def entry_keys(region: int, base: int, region_name: str) -> dict[str, int]:
    """Cached entries' keys in the region's cluster -> the port of the master holding it."""
    nodes = nodes_of(region, base)
    found: dict[str, int] = {}
    for address in roles(nodes)[0]:
        port = int(address.rsplit(":", 1)[1])
        with region_client(region, port) as c:
            for key in c.scan_iter(match=f"geoedge:{region_name}:{{*}}:e:*", count=1000):
                found[key] = port
    return found


def failover_report(proc: DemoProcess, region: int, base: int, skip: int) -> str:
    """What a failed failover left: the region's view of its nodes and its nodes' logs."""
    logs = Path(re.search(r"\(logs in (\S+)\)", proc.output)[1])
    name = REGIONS[region - 1]
    parts = [f"CLUSTER NODES: {nodes_of(region, base, skip=skip)}"]
    for i in range(cluster.NODES):
        log = logs / f"redis-{name}-{i + 1}.log"
        tail = log.read_text(errors="replace").splitlines()[-25:] if log.exists() else []
        parts.append(f"--- {log}:\n" + "\n".join(tail))
    return "\n".join(parts)


@pytest.fixture
def cluster_demo(tmp_path: Path):
    config, ports, base = cluster_demo_config(tmp_path)
    proc = DemoProcess(config, args=("--redis-cluster", "--dashboard", "off"))
    try:
        proc.wait_for(r"All 27 processes are up", 180)
        yield proc, ports, base
    finally:
        proc.close()


def test_cluster_demo_end_to_end(cluster_demo) -> None:
    proc, ports, base = cluster_demo
    edge_port = ports.edge
    out = proc.output
    assert ("Shared tier: a Redis Cluster per region, 3 masters + 3 replicas each "
            "(18 redis-server)") in out
    for name in REGIONS:
        assert re.search(rf"ok  redis-{name} cluster: 3 masters \+ 3 replicas, 16384 slots",
                         out), out
    pids = proc.pids()
    assert len(pids) == 27 and len([n for n in pids if n.startswith("redis-")]) == 18
    for region in (1, 2, 3):
        assert healthy(region, base), nodes_of(region, base)

    # stored in its region's cluster: a tier hit from the region's other edge
    status, cs = get("127.0.2.1", edge_port, "/index.html")
    assert (status, cs) == (200, "geoedge-eu-west-1; fwd=uri-miss; fwd-status=200; stored")
    stored = poll(lambda: entry_keys(2, base, "eu-west"))
    assert stored, "nothing of eu-west-1's in the eu-west cluster"
    assert entry_keys(1, base, "eu-west") == entry_keys(3, base, "eu-west") == {}
    status, cs = get("127.0.2.2", edge_port, "/index.html")
    assert status == 200 and cs.startswith("geoedge-eu-west-redis; hit; "), (
        cs, edge_stats("127.0.2.2", ports.admin))

    # a master holding an entry is killed while both edges serve: no request fails, its
    # replica is promoted (with the entry), the supervisor brings the node back as a replica
    key, port = next(iter(stored.items()))
    victim = f"redis-eu-west-{port - base + 1}"
    before = nodes_of(2, base)
    victim_id = before[f"127.0.2.10:{port}"]["node_id"]
    replica = next(a for a, n in before.items() if n["master_id"] == victim_id)

    def replica_holds_it() -> bool:  # replication is asynchronous: the kill comes after it
        with region_client(2, int(replica.rsplit(":", 1)[1])) as c:
            c.execute_command("READONLY")
            return bool(c.exists(key))

    assert poll(replica_holds_it), "the replica never got the entry"
    failures: list[str] = []
    served = [0]
    done = threading.Event()

    def client() -> None:
        n = 0
        while not done.is_set():
            n += 1
            edge = ("127.0.2.1", "127.0.2.2")[n % 2]
            try:
                status, _ = get(edge, edge_port, f"/index.html?n={n % 50}")
            except (OSError, http.client.HTTPException) as exc:
                failures.append(f"{edge}: {type(exc).__name__}: {exc}")
                continue
            if status != 200:
                failures.append(f"{edge}: status {status}")
            served[0] += 1

    worker = threading.Thread(target=client, daemon=True)
    worker.start()
    try:
        assert poll(lambda: served[0] > 10, 10), failures
        mark = len(proc.lines)
        proc.send(f"kill {victim}")
        proc.wait_for(rf"{victim} exited with code -9", 10, since=mark)
        proc.wait_for(rf"{victim}: waiting for the cluster to hand its slots over", 10,
                      since=mark)

        def promoted() -> bool:
            nodes = nodes_of(2, base, skip=port)
            return replica in roles(nodes)[0]

        assert poll(promoted, 60), failover_report(proc, 2, base, port)
        proc.wait_for(rf"{victim}: the other nodes serve all slots", WAIT, since=mark)
        proc.wait_for(rf"ok  {victim} is back on", WAIT, since=mark)
        assert poll(lambda: healthy(2, base)), nodes_of(2, base)
        _, replicas = roles(nodes_of(2, base))
        assert replicas[f"127.0.2.10:{port}"] == replica  # back as the new master's replica
        at = served[0]
        assert poll(lambda: served[0] > at + 10, 10), failures
    finally:
        done.set()
        worker.join(10)
    assert not failures, failures[:5]
    with region_client(2, int(replica.rsplit(":", 1)[1])) as c:
        assert c.exists(key)  # the replica had the entry: promoted with it
    # and the tier is shared again once the edges' clients know the new master
    fresh = iter(range(1000, 2000))

    def shared_again() -> bool:
        path = f"/index.html?fresh={next(fresh)}"
        held = len(entry_keys(2, base, "eu-west"))
        get("127.0.2.1", edge_port, path)
        # the fill reaches the tier after the response (or not, while the breaker is open)
        if not poll(lambda: len(entry_keys(2, base, "eu-west")) > held, 2.0, step=0.05):
            return False
        return get("127.0.2.2", edge_port, path)[1].startswith("geoedge-eu-west-redis; hit")

    assert poll(shared_again, WAIT, step=0.2)

    pids = proc.pids()
    assert proc.interrupt() == 0
    assert "geoedge demo: stopped" in proc.output
    assert [n for n, pid in pids.items() if alive(pid)] == []


def test_killing_the_cluster_demo_leaves_nothing_running(cluster_demo) -> None:
    proc = cluster_demo[0]
    pids = proc.pids()
    assert len(pids) == 27
    proc.proc.send_signal(signal.SIGKILL)
    proc.proc.wait(10)
    assert poll(lambda: not [p for p in pids.values() if alive(p)], 15)
    assert [n for n, pid in pids.items() if alive(pid)] == []
