"""Joining, checking and repairing the demo's Redis Clusters (``--redis-cluster``): the I/O.

Rules:

- :func:`create` joins six running, empty cluster-enabled servers into 3 masters + 3
  replicas: with ``redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes`` when
  a ``redis-cli`` is given, otherwise by hand through redis-py (every node MEETs the first,
  the first three ADDSLOTS one range each, then each of the last three REPLICATEs one of
  them). Then it waits for :func:`wait_healthy`. Everything is bounded by ``timeout``; a
  failure raises :class:`ClusterError` saying what is wrong.
- :func:`wait_healthy` polls every node until each one's view is healthy
  (``cluster_state:ok`` and ``geoedge.demo.cluster.problem`` finds nothing).
- :func:`wait_handed_over` polls the surviving nodes until one of them sees the crashed node's
  slots served by the others (its replica promoted); False when ``timeout`` passes first.
- Every connection is closed again; every command has a socket timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from geoedge.demo.cluster import (
    Address,
    handed_over,
    parse_nodes,
    problem,
    replication_problem,
    slot_ranges,
)

POLL = 0.1  # seconds between looks at the cluster
SOCKET_TIMEOUT = 2.0


class ClusterError(Exception):
    """A cluster could not be joined or did not become healthy in time."""


def _name(address: Address) -> str:
    return f"{address[0]}:{address[1]}"


def _client(address: Address) -> aioredis.Redis:
    return aioredis.Redis(host=address[0], port=address[1], socket_timeout=SOCKET_TIMEOUT,
                          socket_connect_timeout=SOCKET_TIMEOUT, decode_responses=True)


async def _view(address: Address) -> tuple[str, str, dict[str, object]]:
    """(CLUSTER INFO, CLUSTER NODES, INFO replication) as this node sees them."""
    client = _client(address)
    try:
        info = await client.execute_command("CLUSTER", "INFO")
        nodes = await client.execute_command("CLUSTER", "NODES")
        replication = await client.info("replication")
    finally:
        await client.aclose()
    return str(info), str(nodes), dict(replication)


async def health(nodes: list[Address]) -> str:
    """"" when every node sees a healthy cluster, else what the first unhappy one sees."""
    for address in nodes:
        try:
            info, listed, replication = await _view(address)
            seen = problem(parse_nodes(listed), nodes) or replication_problem(replication)
        except (RedisError, OSError, ValueError) as exc:
            return f"{_name(address)}: {exc}"
        if "cluster_state:ok" not in info:
            return f"{_name(address)}: cluster_state is not ok"
        if seen:
            return f"{_name(address)}: {seen}"
    return ""


async def wait_healthy(nodes: list[Address], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while seen := await health(nodes):
        if time.monotonic() > deadline:
            raise ClusterError(f"not healthy after {timeout:.0f} s: {seen}")
        await asyncio.sleep(POLL)


async def create(nodes: list[Address], redis_cli: str | None, timeout: float) -> None:
    """Join ``nodes`` (masters first) into a cluster of masters with one replica each."""
    deadline = time.monotonic() + timeout
    if redis_cli is not None:
        await _create_with_cli(nodes, redis_cli, timeout)
    else:
        await _create_by_hand(nodes, deadline)
    await wait_healthy(nodes, max(deadline - time.monotonic(), 1.0))


async def _create_with_cli(nodes: list[Address], redis_cli: str, timeout: float) -> None:
    proc = await asyncio.create_subprocess_exec(
        redis_cli, "--cluster", "create", *map(_name, nodes), "--cluster-replicas", "1",
        "--cluster-yes", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    try:
        async with asyncio.timeout(timeout):
            out, _ = await proc.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise ClusterError(f"redis-cli --cluster create took over {timeout:.0f} s") from None
    if proc.returncode != 0:
        tail = "\n".join(out.decode(errors="replace").splitlines()[-5:])
        raise ClusterError(f"redis-cli --cluster create failed ({proc.returncode}): {tail}")


async def _create_by_hand(nodes: list[Address], deadline: float) -> None:
    masters, replicas = nodes[:len(nodes) // 2], nodes[len(nodes) // 2:]
    clients = {a: _client(a) for a in nodes}
    try:
        first = nodes[0]
        for address in nodes[1:]:
            await clients[address].execute_command("CLUSTER", "MEET", first[0], first[1])
        for address, (lo, hi) in zip(masters, slot_ranges(len(masters)), strict=True):
            await clients[address].execute_command("CLUSTER", "ADDSLOTS", *range(lo, hi + 1))
        ids = [await clients[a].execute_command("CLUSTER", "MYID") for a in masters]
        for address, master in zip(replicas, ids, strict=True):
            # REPLICATE needs the master known to this node: gossip takes a moment
            while True:
                try:
                    await clients[address].execute_command("CLUSTER", "REPLICATE", master)
                    break
                except RedisError as exc:
                    if time.monotonic() > deadline:
                        raise ClusterError(f"{_name(address)}: CLUSTER REPLICATE: {exc}") from exc
                await asyncio.sleep(POLL)
    except (RedisError, OSError) as exc:
        raise ClusterError(f"joining the cluster by hand: {exc}") from exc
    finally:
        for client in clients.values():
            await client.aclose()


async def wait_handed_over(address: Address, peers: list[Address], timeout: float) -> bool:
    """Wait until a surviving peer sees ``address``'s slots served by the others."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for peer in peers:
            try:
                _, listed, _ = await _view(peer)
                if handed_over(parse_nodes(listed), address):
                    return True
            except (RedisError, OSError, ValueError):
                continue
        await asyncio.sleep(POLL)
    return False
