"""The shared tier's connection adapters: every aiocache and redis import of the project.

Rules:

- Standalone Redis goes through aiocache 0.12's ``RedisCache`` (raw bytes:
  ``NullSerializer(encoding=None)``, never pickle; aiocache HEAD drops its Redis backend, so pin
  ``aiocache[redis]>=0.12,<0.13``); aiocache has no cluster backend, so Redis Cluster uses
  redis-py's ``redis.asyncio.cluster.RedisCluster`` directly. Both sit behind ``Conn``:
  single-key calls (GET, SET NX PX, compare-and-delete) plus the redis-py client for
  pipelines, EVAL, SCAN and PUBLISH, which aiocache's API lacks.
- Sockets time out after ``settings.timeout`` and redis-py never retries by itself: the
  caller (edge/tier/protocol.py) times, counts and retries.
- Nothing here counts, logs or swallows errors: a Redis problem raises one of ``FAILURES``.
- A task waiting on the Redis client is stopped with :func:`cancel_until_done`: a cancel can
  be lost inside the client's read (seen under load with redis-py 8.2 on Python 3.11: the
  task stayed "cancelling" in a new blocking read and the edge never stopped), so it is
  cancelled again every ``CANCEL_AGAIN`` seconds until it has ended; the loops it runs also
  check a stopping flag of their owner, which ends them after their current call.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from aiocache import Cache
from aiocache.backends.redis import RedisBackend
from aiocache.serializers import NullSerializer
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeout

from edge.tier.keys import SharedSettings

FAILURES = (RedisError, RedisClusterException, OSError, TimeoutError)
CANCEL_AGAIN = 0.5  # seconds between two cancels of a task that has not ended
TIMEOUTS = (TimeoutError, RedisTimeout)
RELEASE_SCRIPT = RedisBackend.RELEASE_SCRIPT  # delete the key only while it holds the token
POOL_SIZE = 64  # connections per edge to a standalone Redis


def connect(settings: SharedSettings) -> Conn:
    """The adapter for ``settings`` (no network traffic yet)."""
    return Cluster(settings) if settings.cluster_nodes else Standalone(settings)


class Conn:
    """A deployment: a redis-py command client plus the few calls done differently per mode."""

    client: Any  # redis.asyncio.Redis (aiocache's) or RedisCluster
    cluster = False  # Redis Cluster: a pipeline may only touch keys of one slot

    def __init__(self, settings: SharedSettings) -> None:
        self.settings = settings

    async def get(self, key: str) -> bytes | None:
        return await self.client.get(key)

    async def add(self, key: str, value: str, ttl_ms: int) -> bool:
        return bool(await self.client.set(key, value, nx=True, px=ttl_ms))

    async def release(self, key: str, token: str) -> bool:
        return bool(await self.client.eval(RELEASE_SCRIPT, 1, key, token))

    async def initialize(self) -> None:
        """Connect ahead of the first call where the client needs it (cluster: the slot map)."""

    async def scan_targets(self) -> list[Any]:
        return [None]

    async def get_all(self, names: list[bytes]) -> list[bytes | None]:
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.get(name)
        return await pipe.execute()

    async def publish(self, channel: str, message: str) -> bool:
        await self.client.publish(channel, message)
        return True

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    def listener_client(self, attempt: int) -> aioredis.Redis:
        raise NotImplementedError

    async def close(self) -> None:
        await self.client.aclose()


class Standalone(Conn):
    """One Redis through aiocache's RedisCache (aiocache owns the connection pool)."""

    def __init__(self, settings: SharedSettings) -> None:
        super().__init__(settings)
        u = urlsplit(settings.url or "")
        self.where = {"host": u.hostname or "127.0.0.1", "port": u.port or 6379,
                      "db": int(u.path.strip("/") or 0),
                      "password": unquote(u.password) if u.password else None,
                      "username": unquote(u.username) if u.username else None,
                      "ssl": u.scheme == "rediss"}
        # a bounded pool that makes callers wait (within the operation timeout) for a free
        # connection, instead of failing with MaxConnectionsError under a burst of misses
        pool_kwargs: dict[str, Any] = {"socket_timeout": settings.timeout,
                                       "timeout": settings.timeout}
        if self.where["username"]:
            pool_kwargs["username"] = self.where["username"]
        self.cache = Cache(Cache.REDIS, endpoint=self.where["host"], port=self.where["port"],
                           db=self.where["db"], password=self.where["password"],
                           ssl=self.where["ssl"], serializer=NullSerializer(encoding=None),
                           timeout=None, create_connection_timeout=settings.timeout,
                           connection_pool_class=aioredis.BlockingConnectionPool,
                           pool_max_size=POOL_SIZE, connection_pool_kwargs=pool_kwargs)
        self.client = self.cache.client

    async def get(self, key: str) -> bytes | None:
        return await self.cache.get(key)

    async def add(self, key: str, value: str, ttl_ms: int) -> bool:
        try:
            return bool(await self.cache.add(key, value, ttl=ttl_ms / 1000.0))  # float: PX
        except ValueError:  # aiocache: the key already exists
            return False

    async def release(self, key: str, token: str) -> bool:
        return bool(await self.cache.raw("eval", RELEASE_SCRIPT, 1, key, token))

    def listener_client(self, attempt: int) -> aioredis.Redis:
        w = self.where
        return aioredis.Redis(host=w["host"], port=w["port"], db=w["db"], ssl=w["ssl"],
                              username=w["username"], password=w["password"],
                              socket_connect_timeout=max(self.settings.timeout, 0.5),
                              retry=Retry(NoBackoff(), 0))  # the listener loop retries itself

    async def close(self) -> None:
        # aiocache's close() calls the client's deprecated close(); aclose() is the same thing
        await self.client.aclose()


class Cluster(Conn):
    """Redis Cluster through redis-py's cluster client (aiocache 0.12 has no cluster backend)."""

    cluster = True

    def __init__(self, settings: SharedSettings) -> None:
        super().__init__(settings)
        parts = (node.rpartition(":") for node in settings.cluster_nodes)
        self.nodes = [(host, int(port)) for host, _, port in parts]
        self.client = RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in self.nodes],
            socket_timeout=settings.timeout, socket_connect_timeout=settings.timeout,
            retry=Retry(NoBackoff(), 0))

    async def initialize(self) -> None:
        await self.client.initialize()

    async def ping(self) -> bool:
        return bool(await self.client.ping(target_nodes=RedisCluster.PRIMARIES))

    async def scan_targets(self) -> list[Any]:
        if not self.client.get_primaries():
            await self.client.initialize()  # Redis was down when we started
        return list(self.client.get_primaries())

    def listener_client(self, attempt: int) -> aioredis.Redis:
        host, port = self.nodes[attempt % len(self.nodes)]  # classic pub/sub is cluster-wide
        return aioredis.Redis(host=host, port=port,
                              socket_connect_timeout=max(self.settings.timeout, 0.5),
                              retry=Retry(NoBackoff(), 0))  # the listener loop retries itself


def log_client(settings: SharedSettings, socket_timeout: float) -> Any:
    """A redis-py client for the purge log (edge/tier/purgelog.py): blocking XREAD needs a
    socket timeout longer than the block, so it gets a client (and connections) of its own."""
    if settings.cluster_nodes:
        parts = (node.rpartition(":") for node in settings.cluster_nodes)
        return RedisCluster(startup_nodes=[ClusterNode(h, int(p)) for h, _, p in parts],
                            socket_timeout=socket_timeout,
                            socket_connect_timeout=max(settings.timeout, 0.5),
                            retry=Retry(NoBackoff(), 0))
    u = urlsplit(settings.url or "")
    return aioredis.Redis(host=u.hostname or "127.0.0.1", port=u.port or 6379,
                          db=int(u.path.strip("/") or 0),
                          username=unquote(u.username) if u.username else None,
                          password=unquote(u.password) if u.password else None,
                          ssl=u.scheme == "rediss", socket_timeout=socket_timeout,
                          socket_connect_timeout=max(settings.timeout, 0.5),
                          retry=Retry(NoBackoff(), 0))


async def cancel_until_done(task: asyncio.Task[Any]) -> BaseException | None:
    """Cancel ``task`` (again every ``CANCEL_AGAIN`` s) until it has ended; what it raised
    other than the cancel, if anything."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=CANCEL_AGAIN)
    return None if task.cancelled() else task.exception()
