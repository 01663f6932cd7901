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
- A purge on this edge is logged in the region's purge log first (edge/tier/purgelog.py),
  then applied to the tier; the other edges apply it to their in-process stores from the log
  (catching up on what they missed while away) and acknowledge it; ``region_purge`` can wait
  for those acknowledgements (``geoedge purge`` does).
- A fill that started before a purge must not leave the purged version in the tier: after
  storing, the fill reads the purges logged since it started (``since``, the log position
  then) and removes what it stored when one of them covers it
  (edge/policy/tiering.py ``purge_matches``).
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
from edge.policy.tiering import purge_matches
from edge.store import Entry
from edge.tier.entrycodec import decode_entry, encode_entry
from edge.tier.keys import SharedSettings
from edge.tier.protocol import SharedTier
from edge.tier.purgelog import PurgeLog
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
        self.region = region
        self.config = config
        self.clock = clock
        self.build = build
        self.shared = SharedTier(shared_settings(config), node, clock)
        self.log: PurgeLog | None = None  # set by start_edge before start()
        self.peers: tuple[str, ...] = ()  # every edge of the region (acknowledgements)
        self.pending: list[tuple[str, str]] = []  # purges whose tier purge is under way
        self.background: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.shared.start()
        if self.log is not None:
            await self.log.start()

    async def stop(self) -> None:
        for task in list(self.background):
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        if self.log is not None:
            await self.log.stop()
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
        if any(purge_matches(kind, value, key, decoded.surrogate_keys)
               for kind, value in self.pending):
            return None  # purged here, and the tier's purge is still on its way
        entry = self.build(key, decoded.meta, decoded.body, decoded.surrogate_keys)
        entry.soft_purged = decoded.soft_purged or hit.soft
        return entry

    def fill(self, entry: Entry, leased: bool = False, since: str | None = None) -> None:
        """Store ``entry`` in the tier in the background (then notify, if under a lease);
        ``since``: the purge log position when the fill started (checked after storing)."""
        if entry.hit_for_miss or entry.variant == "*":
            return
        self._spawn(self._fill(entry, leased, since))

    async def _fill(self, entry: Entry, leased: bool, since: str | None = None) -> None:
        done = False  # stored, with the lease released and the others notified in one go
        try:
            ttl = entry.keep_until - self.clock()
            if ttl > 0:
                store = self.shared.store_filled if leased else self.shared.store
                done = await store(entry.key, entry.variant, entry.vary, encode_entry(entry),
                                   ttl, entry.surrogate_keys)
                await self._overtaken(entry, since)
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

    async def _overtaken(self, entry: Entry, since: str | None) -> None:
        """Remove what a fill stored when a purge logged since the fill started covers it."""
        if self.log is None or since is None:
            return
        purges = await self.log.purges_since(since)
        for delay in (0.1, 0.3):  # a tier just back (a cluster electing) may fail a read
            if purges is not None:
                break
            await asyncio.sleep(delay)
            purges = await self.log.purges_since(since)
        if purges is None:
            purges = [("url", entry.key)]  # still unknown: assume the worst
        if any(purge_matches(kind, value, entry.key, entry.surrogate_keys)
               for kind, value in purges):
            self.shared.counts["purged"] += await self.shared.remove(entry.key)

    def purge(self, kind: str, value: str, soft: bool) -> None:
        """Apply a local purge to the region: its log and its tier (in the background)."""
        pending = (kind, value)
        self.pending.append(pending)  # now: a lookup right after this must not see it

        async def run() -> None:
            try:
                await self.region_purge(kind, value, soft, 0.0)
            finally:
                self.pending.remove(pending)

        self._spawn(run())

    async def region_purge(self, kind: str, value: str, soft: bool, wait: float,
                           purge_id: str | None = None) -> dict[str, object]:
        """Log the purge (already applied here), purge the tier, then wait up to ``wait``
        seconds for every edge of the region to acknowledge it. Until the tier's purge is
        done, this edge's tier lookups treat what it covers as a miss (``pending``)."""
        entry_id = None
        pending = (kind, value)
        self.pending.append(pending)
        try:
            if self.log is not None:
                entry_id = await self.log.append(kind, value, soft, purge_id)
            call = {"url": self.shared.purge_url, "prefix": self.shared.purge_prefix,
                    "key": self.shared.purge_tag}[kind]
            await call(value, soft)
        finally:
            self.pending.remove(pending)
        report: dict[str, object] = {"logged": entry_id}
        if entry_id is not None and self.log is not None and wait > 0:
            report["edges"] = await self.log.wait_acks(entry_id, self.peers, wait)
        return report

    def _spawn(self, coro: object) -> None:
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self.background.add(task)
        task.add_done_callback(self.background.discard)
