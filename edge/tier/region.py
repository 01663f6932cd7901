"""The edge's use of its region's shared tier (edge/tier/protocol.py): lookups, fills, purges,
leases.

Rules:

- Lookup order is in-process store, then this tier, then the origin. A tier hit is decoded
  (edge/tier/entrycodec.py) and rebuilt with the proxy's own entry builder, so its Age and
  freshness are exactly what they would have been in memory; it then fills the in-process
  store.
- Every stored response goes to the tier too, in the background (a request never waits for
  Redis), with a Redis expiry of the entry's ``keep_until`` (freshness plus stale windows). A
  fill made under a cross-node lease is followed by a "filled" notice and the lease's release.
- A purge on this edge is applied to the tier and published; purges published by the other
  edges are applied to this edge's in-process store only (no echo).
- The tier never fails a request: protocol.py turns every Redis problem into a miss, and a
  malformed blob (decode error) is a miss too.
- Cache-Status names the tier as its own cache, ``geoedge-<region>-redis``, before the edge's
  member (RFC 9211 §2: members run from the origin towards the user).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

from edge.policy.cachestatus import cache_status
from edge.policy.freshness import StoredMeta
from edge.policy.headers import Headers
from edge.store import Entry
from edge.tier.entrycodec import decode_entry, encode_entry
from edge.tier.keys import SharedSettings
from edge.tier.protocol import SharedTier
from geoconfig.cdnconfig import RedisConfig

log = logging.getLogger("geoedge.edge.tier")

EntryBuilder = Callable[[str, StoredMeta, bytes, frozenset[str]], Entry]


def shared_settings(config: RedisConfig) -> SharedSettings:
    return SharedSettings(url=config.url, cluster_nodes=config.cluster, prefix=config.prefix,
                          timeout=config.timeout, max_object_bytes=config.max_object_bytes)


class RegionTier:
    def __init__(self, region: str, config: RedisConfig, node: str,
                 clock: Callable[[], float], build: EntryBuilder) -> None:
        self.name = f"geoedge-{region}-redis"
        self.clock = clock
        self.build = build
        self.shared = SharedTier(shared_settings(config), node, clock)
        self.background: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.shared.start()

    async def stop(self) -> None:
        for task in list(self.background):
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        await self.shared.stop()

    def member(self, now: float, entry: Entry) -> str:
        """Our tier's Cache-Status member for a hit on ``entry``."""
        return cache_status(self.name, hit=True,
                            ttl=math.floor(entry.lifetime - entry.age(now)))

    async def lookup(self, key: str, headers: Headers) -> Entry | None:
        hit = await self.shared.lookup(key, headers)
        if hit is None:
            return None
        try:
            decoded = decode_entry(hit.blob)
        except ValueError as exc:
            log.warning("shared tier: unreadable entry for %s: %s", key, exc)
            return None
        if decoded.key != key:
            return None
        entry = self.build(key, decoded.meta, decoded.body, decoded.surrogate_keys)
        entry.soft_purged = decoded.soft_purged or hit.soft
        return entry

    def fill(self, entry: Entry, leased: bool = False) -> None:
        """Store ``entry`` in the tier in the background (then notify, if under a lease)."""
        if entry.hit_for_miss or entry.variant == "*":
            return
        self._spawn(self._fill(entry, leased))

    async def _fill(self, entry: Entry, leased: bool) -> None:
        done = False  # stored, with the lease released and the others notified in one go
        try:
            ttl = entry.keep_until - self.clock()
            if ttl > 0:
                store = self.shared.store_filled if leased else self.shared.store
                done = await store(entry.key, entry.variant, entry.vary, encode_entry(entry),
                                   ttl, entry.surrogate_keys)
        except ValueError as exc:  # not encodable: the other edges fetch for themselves
            log.warning("shared tier: cannot store %s: %s", entry.key, exc)
        finally:
            if leased and not done:  # cluster mode, or nothing stored
                await self._release(entry.key)

    async def lease(self, key: str) -> bool:
        return await self.shared.try_lease(key)

    def release(self, key: str) -> None:
        """Give the lease up without a fill: the waiting edges wake and fetch themselves."""
        self._spawn(self._release(key))

    async def _release(self, key: str) -> None:
        await self.shared.release_lease(key)
        await self.shared.notify_filled(key)

    async def wait_filled(self, key: str) -> bool:
        return await self.shared.wait_filled(key)

    def purge(self, kind: str, value: str, soft: bool) -> None:
        """Apply a local purge to the tier (which publishes it to the other edges)."""
        call = {"url": self.shared.purge_url, "prefix": self.shared.purge_prefix,
                "key": self.shared.purge_tag}[kind]
        self._spawn(call(value, soft))

    def _spawn(self, coro: object) -> None:
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self.background.add(task)
        task.add_done_callback(self.background.discard)
