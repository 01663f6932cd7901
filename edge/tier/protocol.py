"""The shared tier's protocol: lookup, store, purge and cross-node leases over Redis.

Rules:

- Redis is reached only through an adapter of edge/tier/conn.py (standalone or cluster; this
  module imports neither redis nor aiocache); the key layout and the Lua scripts are in
  edge/tier/keys.py.
- ``lookup`` returns ``SharedHit(blob, soft)`` or None: one round trip (pipeline: vary, the
  ""-variant entry, its soft flag) for responses without Vary, a second one for variants.
- Failures never fail a request: every call runs under ``asyncio.timeout(settings.timeout)``
  (and socket timeouts of the same size); a timeout or Redis/OS error counts an error, feeds
  the circuit breaker and yields the miss value (None / False / 0). While the breaker is open
  nothing is sent; a probe task PINGs once the breaker is half-open, so the tier comes back by
  itself. One breaker per tier: in cluster mode, consecutive failures against any master open
  it for every key.
- Purge steps get ``BULK_FACTOR`` times the timeout (they are admin calls, batched).
- Prefix purges SCAN ``P{*}:key`` on every master (O(keys in the tier) per purge) and compare
  the stored key text; tag purges read ``Ptag:<tag>``. Each purge is then published; the
  listener hands purges from other nodes to ``on_purge(kind, value, soft)`` (a plain function,
  run with ``loop.call_soon``) and ignores our own. Purges published while a listener is
  disconnected are lost (it reconnects with back-off; ``listening`` tells whether it is up).
- Coalescing: ``try_lease`` (SET NX PX), ``release_lease`` (delete only while the value is our
  node id), ``notify_filled`` (PUBLISH), ``wait_filled`` (True: notified, or no lease is held
  any more -- look up again; False: timed out, breaker open or listener down -- fetch yourself).
- The breaker reads ``clock``; latencies are measured with ``time.perf_counter``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from edge.breaker import BreakerState, CircuitBreaker
from edge.policy.headers import Headers
from edge.policy.vary import vary_key
from edge.tier import keys as layout
from edge.tier.conn import (
    FAILURES,
    RELEASE_SCRIPT,
    TIMEOUTS,
    Conn,
    cancel_until_done,
    connect,
)
from edge.tier.keys import (
    PURGE_SCRIPT,
    STORE_SCRIPT,
    TAG_SCRIPT,
    PurgeCallback,
    SharedHit,
    SharedSettings,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
BULK_FACTOR = 20  # purge steps (SCAN pages, 128 purge scripts, PUBLISH): 1 s at the default

class SharedTier:
    def __init__(self, settings: SharedSettings, node_id: str,
                 clock: Callable[[], float] = time.time,
                 on_purge: PurgeCallback | None = None) -> None:
        self.settings = settings
        self.node_id = node_id
        self.clock = clock
        self.on_purge = on_purge
        self.breaker = CircuitBreaker(settings.breaker_threshold, settings.breaker_reset)
        self.purge_channel = f"{settings.prefix}purge"
        self.filled_channel = f"{settings.prefix}filled"
        self.counts: dict[str, int] = dict.fromkeys(
            ("hits", "misses", "errors", "timeouts", "short_circuits", "stores", "store_skipped",
             "purges", "purged", "purges_received", "leases_won", "leases_lost",
             "waits_filled", "waits_timed_out"), 0)
        self.latency = {"count": 0, "sum_ms": 0.0, "max_ms": 0.0}
        self.listening = asyncio.Event()
        self._conn: Conn | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._waiters: dict[str, set[asyncio.Event]] = {}

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect and start the listener and probe tasks; never raises for a Redis outage."""
        self._stopping = False
        s = self.settings
        self._conn = connect(s)
        budget = max(s.timeout, 1.0)
        with contextlib.suppress(*FAILURES):
            async with asyncio.timeout(budget):
                await self._conn.initialize()
        self._tasks = [asyncio.create_task(self._listen(), name="shared-listener"),
                       asyncio.create_task(self._probe(), name="shared-probe")]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(budget):
                await self.listening.wait()

    async def stop(self) -> None:
        self._stopping = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            if (exc := await cancel_until_done(task)) is not None:
                log.warning("shared tier: %s ended with %r", task.get_name(), exc)
        if self._conn is not None:
            with contextlib.suppress(*FAILURES):
                await self._conn.close()
            self._conn = None

    # -- keys ---------------------------------------------------------------------------------
    def base(self, primary: str) -> str:
        return layout.key_base(self.settings.prefix, primary)

    def tag_key(self, tag: str) -> str:
        return layout.tag_key(self.settings.prefix, tag)

    # -- the guarded call ---------------------------------------------------------------------
    async def _op(self, call: Callable[[Conn], Awaitable[T]], default: T,
                  bulk: bool = False) -> T:
        """Run one Redis call under the breaker and the timeout (``bulk``: BULK_FACTOR times
        longer, for the purge steps, which are admin calls off the request path)."""
        conn = self._conn
        if conn is None or not self.breaker.allow(self.clock()):
            self.counts["short_circuits"] += 1
            return default
        ok = False
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(self.settings.timeout * (BULK_FACTOR if bulk else 1)):
                result = await call(conn)
            ok = True
        except FAILURES as exc:
            self.counts["errors"] += 1
            if isinstance(exc, TIMEOUTS):
                self.counts["timeouts"] += 1
            log.debug("shared tier: %r", exc)
            return default
        finally:  # a cancelled call is recorded as a failure (see breaker.py)
            if ok:
                self.breaker.record_success(self.clock())
                ms = (time.perf_counter() - t0) * 1000.0
                self.latency["count"] += 1
                self.latency["sum_ms"] += ms
                self.latency["max_ms"] = max(self.latency["max_ms"], ms)
            else:
                self.breaker.record_failure(self.clock())
        return result

    def _open(self) -> bool:
        return self.breaker.state(self.clock()) is BreakerState.OPEN

    # -- lookup / store -----------------------------------------------------------------------
    async def lookup(self, primary: str, request_headers: Headers) -> SharedHit | None:
        """The stored blob for this request and its soft-purge flag; None on miss or failure."""
        b = self.base(primary)

        async def first(c: Conn) -> list[Any]:
            pipe = c.client.pipeline(transaction=False)
            pipe.get(b + "vary").get(b + "e:").sismember(b + "soft", "")
            return await pipe.execute()

        got = await self._op(first, None)
        if got is None:
            return None
        raw_vary, blob, soft = got
        variant = None
        if raw_vary is not None:
            with contextlib.suppress(ValueError):
                spec = json.loads(raw_vary)
                variant = vary_key([str(v) for v in spec], request_headers)
        if variant:

            async def second(c: Conn) -> list[Any]:
                pipe = c.client.pipeline(transaction=False)
                pipe.get(b + "e:" + variant).sismember(b + "soft", variant)
                return await pipe.execute()

            got = await self._op(second, None)
            if got is None:
                return None
            blob, soft = got
        if variant is None or blob is None:
            self.counts["misses"] += 1
            return None
        self.counts["hits"] += 1
        return SharedHit(bytes(blob), bool(soft))

    async def store(self, primary: str, variant: str, vary: tuple[str, ...], blob: bytes,
                    ttl_s: float, tags: Iterable[str] = ()) -> bool:
        """Store one variant for ``ttl_s`` seconds (keep_until - now); False if skipped/failed."""
        return (await self._store(primary, variant, vary, blob, ttl_s, tags, False))[0]

    async def store_filled(self, primary: str, variant: str, vary: tuple[str, ...],
                           blob: bytes, ttl_s: float, tags: Iterable[str] = ()) -> bool:
        """Store a fill made under this node's lease and, in the same round trip, release the
        lease and notify the other nodes (standalone Redis). False when that did not all
        happen: the caller then releases and notifies itself."""
        stored, released = await self._store(primary, variant, vary, blob, ttl_s, tags, True)
        return stored and released

    async def _store(self, primary: str, variant: str, vary: tuple[str, ...], blob: bytes,
                     ttl_s: float, tags: Iterable[str], release: bool) -> tuple[bool, bool]:
        ttl_ms = int(ttl_s * 1000)
        if len(blob) > self.settings.max_object_bytes or ttl_ms <= 0:
            self.counts["store_skipped"] += 1
            return False, False
        b = self.base(primary)
        keys = (b + "e:" + variant, b + "vary", b + "variants", b + "key", b + "soft")
        tag_keys = sorted({self.tag_key(t) for t in tags})

        async def run(c: Conn) -> tuple[bool, bool]:
            pipe = c.client.pipeline(transaction=False)
            pipe.eval(STORE_SCRIPT, 5, *keys, blob, ttl_ms, json.dumps(list(vary)), variant,
                      primary)
            for tag_key in tag_keys:
                pipe.eval(TAG_SCRIPT, 1, tag_key, primary, ttl_ms)
            inline = release and not c.cluster  # cluster pipelines: one slot
            if inline:
                pipe.eval(RELEASE_SCRIPT, 1, b + "lease", self.node_id)
                pipe.publish(self.filled_channel, layout.key_hash(primary))
            await pipe.execute()
            return True, inline

        stored, released = await self._op(run, (False, False))
        self.counts["stores"] += stored
        return stored, released

    # -- purge --------------------------------------------------------------------------------
    async def _purge_many(self, primaries: Iterable[str], soft: bool) -> int:
        """Run the purge script for each key, pipelined 128 at a time; the entries affected."""
        todo, total, flag = list(primaries), 0, "1" if soft else "0"
        for i in range(0, len(todo), 128):

            async def run(c: Conn, chunk: list[str] = todo[i:i + 128]) -> int:
                pipe = c.client.pipeline(transaction=False)
                for b in map(self.base, chunk):
                    pipe.eval(PURGE_SCRIPT, 2, b + "variants", b + "soft", b, flag)
                return sum(int(n) for n in await pipe.execute())

            total += await self._op(run, 0, bulk=True)
        return total

    async def remove(self, primary: str) -> int:
        """Drop every variant of a primary key without publishing (a fill taking back what
        it stored); the number of entries."""
        return await self._purge_many([primary], False)

    async def _purged(self, kind: str, value: str, soft: bool, count: int) -> int:
        self.counts["purges"] += 1
        self.counts["purged"] += count
        await self.publish_purge(kind, value, soft)
        return count

    async def purge_url(self, primary: str, soft: bool = False) -> int:
        """Drop (soft: mark stale) every variant of a primary key; the number of entries."""
        return await self._purged("url", primary, soft, await self._purge_many([primary], soft))

    async def purge_tag(self, tag: str, soft: bool = False) -> int:
        tag_key = self.tag_key(tag)
        members = await self._op(lambda c: c.client.smembers(tag_key), set(), bulk=True)
        count = await self._purge_many((m.decode("utf-8", "surrogateescape") for m in members),
                                       soft)
        if not soft and members:
            await self._op(lambda c: c.client.delete(tag_key), 0, bulk=True)
        return await self._purged("tag", tag, soft, count)

    async def purge_prefix(self, prefix: str, soft: bool = False) -> int:
        """Purge every primary key starting with ``prefix``: SCANs the whole tier (see above)."""
        pattern = self.settings.prefix + "{*}:key"
        count = 0
        for target in await self._op(lambda c: c.scan_targets(), [], bulk=True):
            cursor: Any = 0
            while True:
                kw = {"target_nodes": target} if target is not None else {}
                page = await self._op(lambda c, cur=cursor, kw=kw: c.client.scan(
                    cur, match=pattern, count=1000, **kw), None, bulk=True)
                if page is None:
                    break
                cursor, names = page
                if isinstance(cursor, dict):  # the cluster client answers {node: cursor}
                    cursor = next(iter(cursor.values()), 0)
                if names:
                    texts = await self._op(lambda c, ns=names: c.get_all(ns), [], bulk=True)
                    hits = [t.decode("utf-8", "surrogateescape") for t in texts if t is not None]
                    count += await self._purge_many((t for t in hits if t.startswith(prefix)),
                                                    soft)
                if not cursor:
                    break
        return await self._purged("prefix", prefix, soft, count)

    async def publish_purge(self, kind: str, value: str, soft: bool) -> bool:
        msg = json.dumps({"kind": kind, "value": value, "soft": soft, "from": self.node_id})
        return await self._op(lambda c: c.publish(self.purge_channel, msg), False, bulk=True)

    # -- cross-node coalescing ----------------------------------------------------------------
    async def try_lease(self, primary: str) -> bool:
        """True: this node fetches from the origin (and then notifies); False otherwise."""
        key = self.base(primary) + "lease"
        won = await self._op(lambda c: c.add(key, self.node_id, self.settings.lease_ms), False)
        self.counts["leases_won" if won else "leases_lost"] += 1
        return won

    async def release_lease(self, primary: str) -> bool:
        key = self.base(primary) + "lease"
        return await self._op(lambda c: c.release(key, self.node_id), False)

    async def notify_filled(self, primary: str) -> bool:
        h = layout.key_hash(primary)
        return await self._op(lambda c: c.publish(self.filled_channel, h), False)

    async def wait_filled(self, primary: str, timeout: float | None = None) -> bool:
        """Wait (bounded) for another node's fill of ``primary``; see the rules above."""
        if self._open() or not self.listening.is_set():
            return False
        h, event = layout.key_hash(primary), asyncio.Event()
        self._waiters.setdefault(h, set()).add(event)
        try:
            key = self.base(primary) + "lease"
            held = await self._op(lambda c: c.client.exists(key), None)
            if held is None:
                return False
            if held:
                async with asyncio.timeout(self.settings.wait_timeout if timeout is None
                                           else timeout):
                    await event.wait()
        except TimeoutError:
            self.counts["waits_timed_out"] += 1
            return False
        finally:
            waiting = self._waiters.get(h)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._waiters[h]
        self.counts["waits_filled"] += 1
        return True

    # -- background tasks ---------------------------------------------------------------------
    async def _probe(self) -> None:
        """While the breaker is not closed, PING once it lets a trial through."""
        while not self._stopping:
            await asyncio.sleep(self.settings.breaker_reset / 4)
            if self.breaker.state(self.clock()) is BreakerState.HALF_OPEN:
                await self._op(lambda c: c.ping(), False)

    async def _listen(self) -> None:
        attempt = 0
        while not self._stopping:
            assert self._conn is not None
            client = self._conn.listener_client(attempt)
            pubsub = client.pubsub()
            try:
                async with asyncio.timeout(max(self.settings.timeout, 1.0)):
                    await pubsub.subscribe(self.purge_channel, self.filled_channel)
                async for msg in pubsub.listen():
                    if msg["type"] == "subscribe" and msg["data"] == 2:
                        self.listening.set()
                        attempt = 0
                    elif msg["type"] == "message":
                        self._dispatch(msg["channel"], msg["data"])
            except FAILURES as exc:
                log.debug("shared tier listener: %r", exc)
            finally:
                self.listening.clear()
                with contextlib.suppress(*FAILURES):
                    await pubsub.aclose()
                    await client.aclose()
            attempt += 1
            await asyncio.sleep(min(0.02 * 2 ** min(attempt, 8), self.settings.breaker_reset))

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        if channel.decode() == self.filled_channel:
            for event in self._waiters.pop(data.decode("ascii", "replace"), ()):
                event.set()
            return
        try:
            msg = json.loads(data)
            kind, value, soft, sender = msg["kind"], msg["value"], msg["soft"], msg["from"]
        except (ValueError, KeyError, TypeError):
            log.warning("shared tier: bad purge message %r", data[:200])
            return
        if sender == self.node_id or self.on_purge is None:
            return
        self.counts["purges_received"] += 1
        # call_soon: a callback that raises is reported by the loop and cannot kill the listener
        asyncio.get_running_loop().call_soon(self.on_purge, str(kind), str(value), bool(soft))

    # -- metrics ------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {**self.counts, "latency_ms": dict(self.latency),
                "listening": self.listening.is_set(),
                "breaker": self.breaker.snapshot(self.clock())}
