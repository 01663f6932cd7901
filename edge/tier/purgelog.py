"""The region's purge log: every purge numbered in a Redis stream that every edge follows.

Rules:

- Layout (``P`` = the tier's prefix; one hash tag, so both keys share a cluster slot):
    P{purgelog}:log   stream, one entry per purge: kind, value, soft ("1"/"0"), from (node)
    P{purgelog}:acks  hash, node -> id of the last log entry that node has applied, and
                      node/workers -> how many processes the edge runs; an edge of N > 1
                      workers (edge/workers.py) acknowledges per worker, node/w0..node/wN-1
    P{purgelog}:id:I  the entry id of purge I (``geoedge purge`` sends one purge, with its
                      id, to every edge; the first to append it logs it), PX = ID_TTL_MS
  The stream id (``<ms>-<n>``) is the purge's sequence number. The log keeps the last
  ``MAX_LEN`` purges (approximate trimming).
- ``append`` (the edge a purge was sent to) adds the entry *before* the tier is purged, so a
  fill that stored into the tier after the tier's purge finds the entry when it checks the
  log afterwards (``purges_since``, edge/tier/region.py).
- Every edge follows the log with ``XREAD BLOCK`` from the last id it applied, applies each
  entry to its in-process store (``apply(kind, value, soft)``; entries it appended itself are
  already applied) and acknowledges with ``HSET acks``. ``wait_acks(id, timeout)`` tells which
  of the region's edges have acknowledged an id (polled, bounded by ``timeout``): an edge of
  several workers when every one of its workers has (``confirmed``, pure).
- Catching up: the follower's position survives a lost connection, so an edge whose Redis
  was away (or whose process was stopped) reads every purge it missed when it returns. An edge
  that starts without a position (a fresh process: its store is empty) starts at the log's
  end. When the position is unknown or older than the log's first entry (trimmed past), every
  entry held is marked stale (soft purge): nothing is known about the purges in between.
- In sync: after each XREAD round trip the follower calls ``on_sync(t + MAX_LAG)`` with the
  time ``t`` the round trip started (``time.monotonic``: it keeps running while the process
  is stopped, unlike the injected cache clock); until that time the edge may serve stored responses
  without revalidation (edge/proxy.py ``trust_until``). An edge that fell behind its log
  without losing it (its process was stopped, its loop stalled) revalidates every hit until it
  has caught up: it never serves what a purge it has not seen removed. The block is ``BLOCK``
  seconds, so in sync is at most about ``2 * BLOCK`` old, below ``MAX_LAG``. While the log is
  unreachable (two errors from Redis in a row: a single one may be a socket timeout that
  fired late because the process was stopped) the edge keeps serving (``on_sync(inf)``):
  nobody can log
  a purge in a Redis that is down, purges then reach the edges over HTTP only, and the
  follower catches up from its position when the log returns.
- Failures: log calls never raise to the caller (a failed ``append`` returns None and the
  purge client falls back to asking every edge); the follower reconnects with back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Callable
from typing import Any

from edge.tier.conn import FAILURES, cancel_until_done, log_client
from edge.tier.keys import SharedSettings

log = logging.getLogger("geoedge.edge.purgelog")

BLOCK = 1.0  # seconds an XREAD waits for new entries
MAX_LAG = 3.0  # seconds after an XREAD started during which the edge counts as in sync
MAX_LEN = 100_000  # purges kept in the log
ACK_POLL = 0.02  # seconds between acknowledgement checks while waiting
ID_TTL_MS = 600_000  # how long a purge id is remembered (the same purge sent to many edges)
# KEYS: the stream, the purge id's key. ARGV: maxlen, kind, value, soft, from, id ttl (ms).
APPEND_SCRIPT = """
local e = redis.call('GET', KEYS[2])
if e then return e end
e = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'kind', ARGV[2], 'value', ARGV[3],
               'soft', ARGV[4], 'from', ARGV[5])
redis.call('SET', KEYS[2], e, 'PX', ARGV[6])
return e
"""

Apply = Callable[[str, str, bool], object]


def parse_id(value: str | bytes) -> tuple[int, int]:
    """A stream id ``ms-n`` as a comparable pair (pure)."""
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, n = text.partition("-")
    return int(ms), int(n or 0)


def _text(value: Any) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


def confirmed(want: tuple[int, int], acks: dict[str, str], node: str) -> bool:
    """Has ``node`` (an edge's name) applied log entry ``want``, by the ``acks`` hash: the
    field ``node``, or with ``node/workers`` = N > 1 every one of ``node/w0``..``node/wN-1``
    (pure; a field that is not a stream id counts as not applied)."""
    try:
        workers = int(acks.get(f"{node}/workers") or 1)
    except ValueError:
        workers = 1
    fields = [node] if workers <= 1 else [f"{node}/w{i}" for i in range(workers)]
    for name in fields:
        try:
            if parse_id(acks[name]) < want:
                return False
        except (KeyError, ValueError):
            return False
    return True


class PurgeLog:
    def __init__(self, settings: SharedSettings, node: str, clock: Callable[[], float],
                 apply: Apply, on_sync: Callable[[float], None] | None = None,
                 on_cursor: Callable[[str], None] | None = None,
                 worker: tuple[int, int] | None = None) -> None:
        """``node``: the edge's name (the log's ``from``); ``worker``: (index, count) when
        the edge runs several worker processes, each acknowledging for itself."""
        self.settings = settings
        self.node = node
        # the field this process acknowledges in, and how many processes the edge runs
        self.ack_field, self.workers = node, 1
        if worker is not None and worker[1] > 1:
            self.ack_field, self.workers = f"{node}/w{worker[0]}", worker[1]
        self.clock = clock
        self.apply = apply
        self.on_sync = on_sync or (lambda until: None)
        self.on_cursor = on_cursor or (lambda cursor: None)
        self.stream = f"{settings.prefix}{{purgelog}}:log"
        self.acks = f"{settings.prefix}{{purgelog}}:acks"
        self.ids = f"{settings.prefix}{{purgelog}}:id:"
        self.cursor: str | None = None
        self.counts = {"appended": 0, "applied": 0, "resyncs": 0, "errors": 0}
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.synced = asyncio.Event()  # set after the first successful round trip

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Take the log's end as our position and start following; a Redis that is down is
        not an error (the follower keeps trying)."""
        self._stopping = False
        self._client = log_client(self.settings, BLOCK + max(self.settings.timeout, 1.0))
        try:
            async with asyncio.timeout(max(self.settings.timeout, 1.0)):
                started = time.monotonic()
                self._set_cursor(await self._last_id())
                await self._ack()
                self.on_sync(started + MAX_LAG)
        except FAILURES:  # Redis is down: nothing to serve yet, nothing can be logged
            self.on_sync(math.inf)
        self._task = asyncio.create_task(self._follow(), name="purge-log")

    async def stop(self) -> None:
        self._stopping = True
        task, self._task = self._task, None
        if task is not None and (exc := await cancel_until_done(task)) is not None:
            log.warning("purge log follower ended with %r", exc)
        if self._client is not None:
            with contextlib.suppress(*FAILURES):
                await self._client.aclose()
            self._client = None

    def _set_cursor(self, cursor: str) -> None:
        self.cursor = cursor
        self.on_cursor(cursor)

    # -- writing ------------------------------------------------------------------------------
    async def append(self, kind: str, value: str, soft: bool,
                     purge_id: str | None = None) -> str | None:
        """Log a purge this edge has applied; its entry id, or None when the log is
        unreachable. A ``purge_id`` is logged once however many edges append it (the
        others get the first one's entry id): ``geoedge purge`` sends it to every edge."""
        purge_id = purge_id or uuid.uuid4().hex
        try:
            async with asyncio.timeout(max(self.settings.timeout, 1.0)):
                entry_id = await self._client.eval(
                    APPEND_SCRIPT, 2, self.stream, f"{self.ids}{purge_id}", MAX_LEN, kind,
                    value, "1" if soft else "0", self.node, ID_TTL_MS)
        except FAILURES as exc:
            self.counts["errors"] += 1
            log.warning("purge log: cannot append %s %s: %r", kind, value, exc)
            return None
        self.counts["appended"] += 1
        return _text(entry_id)

    async def wait_acks(self, entry_id: str, nodes: tuple[str, ...],
                        timeout: float) -> dict[str, bool]:
        """Which of ``nodes`` have applied ``entry_id`` (waiting up to ``timeout`` seconds)."""
        want = parse_id(entry_id)
        done = dict.fromkeys(nodes, False)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            pending = [n for n, ok in done.items() if not ok]
            if not pending:
                return done
            with contextlib.suppress(*FAILURES):
                async with asyncio.timeout(max(self.settings.timeout, 1.0)):
                    acks = {_text(k): _text(v) for k, v in
                            (await self._client.hgetall(self.acks)).items()}
                for node in pending:
                    done[node] = confirmed(want, acks, node)
            if all(done.values()) or loop.time() >= deadline:
                return done
            await asyncio.sleep(ACK_POLL)

    async def purges_since(self, cursor: str | None) -> list[tuple[str, str]] | None:
        """(kind, value) of the purges logged after ``cursor``; None when unknown."""
        if cursor is None:
            return None
        try:
            async with asyncio.timeout(max(self.settings.timeout, 1.0)):
                rows = await self._client.xrange(self.stream, f"({cursor}", "+", count=10_000)
        except FAILURES:
            return None
        return [(_text(f.get(b"kind", b"")), _text(f.get(b"value", b""))) for _, f in rows]

    # -- following ----------------------------------------------------------------------------
    async def _last_id(self) -> str:
        rows = await self._client.xrevrange(self.stream, "+", "-", count=1)
        return _text(rows[0][0]) if rows else "0-0"

    async def _ack(self) -> None:
        if self.cursor is not None:
            await self._client.hset(self.acks, mapping={
                self.ack_field: self.cursor, f"{self.node}/workers": self.workers})

    async def _resync(self) -> None:
        """Before following again: a position the log no longer reaches back to (or none)
        means purges may have been missed: mark everything held stale."""
        if self.cursor is None:
            self._set_cursor(await self._last_id())
            self._mark_all_stale()
            return
        first = await self._client.xrange(self.stream, "-", "+", count=1)
        if first and self.cursor != "0-0" and parse_id(first[0][0]) > parse_id(self.cursor):
            missed = await self._client.xrange(self.stream, "-", f"({self.cursor}", count=1)
            if not missed:  # the entries right after our position were trimmed
                self._mark_all_stale()

    def _mark_all_stale(self) -> None:
        self.counts["resyncs"] += 1
        self.apply("prefix", "", True)

    async def _follow(self) -> None:
        attempt = 0
        while not self._stopping:
            try:
                await self._resync()
                await self._ack()
                while not self._stopping:
                    started = time.monotonic()
                    reply = await self._client.xread({self.stream: self.cursor}, count=512,
                                                     block=int(BLOCK * 1000))
                    applied = self._apply_all(reply)
                    if applied:
                        await self._ack()
                    self.on_sync(started + MAX_LAG)
                    self.synced.set()
                    attempt = 0
            except FAILURES as exc:
                if self._stopping:  # a lost cancel (edge/tier/conn.py cancel_until_done)
                    return
                self.counts["errors"] += 1
                log.debug("purge log follower: %r", exc)
                self.synced.clear()
                if attempt >= 1:
                    # a second failure in a row: the log is unreachable, so nothing can be
                    # logged there either; purges reach this edge over HTTP only (geoedge
                    # purge asks every edge): keep serving. (One failure may be a timeout
                    # that fired late because the process was stopped: retry first.)
                    self.on_sync(math.inf)
            attempt += 1
            await asyncio.sleep(min(0.02 * 2 ** min(attempt, 6), 1.0))

    def _apply_all(self, reply: Any) -> int:
        n = 0
        for _, entries in reply or ():
            for entry_id, fields in entries:
                kind = _text(fields.get(b"kind", b""))
                if _text(fields.get(b"from", b"")) != self.node and kind:
                    self.apply(kind, _text(fields.get(b"value", b"")),
                               fields.get(b"soft") == b"1")
                    self.counts["applied"] += 1
                self._set_cursor(_text(entry_id))
                n += 1
        return n

    def snapshot(self) -> dict[str, Any]:
        return {**self.counts, "cursor": self.cursor}


__all__ = ["BLOCK", "MAX_LAG", "PurgeLog", "parse_id"]
