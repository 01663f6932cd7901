"""The edge's request flow: look up, decide, fetch, store, deliver (Varnish builtin.vcl style).

Rules:

- recv: ``/healthz`` and the admin path are answered by the edge itself (``/metrics`` and
  the stats only on the admin listener, see admin.py);
  ``PURGE`` purges; GET and HEAD go through the cache; passed methods go to the origin with
  their body and, on a 2xx/3xx, invalidate the target URI and its same-origin
  Location/Content-Location (RFC 9111 §4.4).
- hash: the primary key is the normalised absolute URI that the server layer built from the
  validated target and Host (edge.policy.target; the origin receives exactly that Host and
  target), plus the trusted forwarding headers when some are configured; variants are chosen
  by Vary (store.py) over the request headers as forwarded to the origin
  (``origin_view``), never over what the client sent but the origin did not see.
- lookup (``edge.policy.request.on_hit``): fresh → deliver; stale within
  stale-while-revalidate → deliver and refresh once in the background; otherwise validate with
  a conditional request; only-if-cached with nothing usable → 504. A soft-purged entry is
  always validated. A request with ``no-store`` bypasses the cache.
- miss (``_fetch``, in small steps): join an in-flight fill for the key (coalesce.py), else
  the region's tier or its fill lease, else the origin. What the origin's answer means --
  store, freshen on 304 (a bare 304 validates the one response it was asked about), stale on
  error, pass with or without a hit-for-miss marker, 502 for a status outside 200-599 or a
  304 nobody asked for -- is ``edge.policy.response.on_response``'s decision; a failed fill
  is ``on_error``'s (serve what is stored unless it must be validated first: no-cache,
  must-revalidate, proxy-revalidate, s-maxage; else 502, or 504 on a timeout).
- store: responses ``storable`` allows, up to ``max_object_bytes``; bigger ones (or ones with
  no length that grow past it) stream through without buffering. Nothing that one request
  provokes evicts what other requests stored; markers are per variant.
- ownership: the fetch that gets an upstream response releases it in a ``finally`` unless it
  hands it to the Outcome, and ``_deliver`` releases an Outcome's response whatever happens
  (client gone, error mid-body, cancellation).
- methods: GET/HEAD cached; POST, PUT, DELETE, PATCH, OPTIONS passed; TRACE 405; any other
  501 (CONNECT is refused by the server layer). With "POST" in ``edge.cacheable_methods``, a
  passed POST's answer that ``post_store_uri`` allows (explicit freshness, Content-Location =
  the target) is stored, after the invalidation, as the URI's response for later GETs/HEADs.
- GET and HEAD bodies are discarded (never forwarded, nor their framing headers).
- 1xx: an origin's ``103 Early Hints`` on the request's own fetch (miss, validation, pass) is
  relayed at once to an HTTP/1.1 client (``Request.interim``), minus hop-by-hop fields; it is
  never stored nor merged into the final response; other 1xx are dropped.
- deliver: Age, Date, Via and a Cache-Status member on every response; client conditionals
  (If-None-Match, If-Modified-Since) are answered 304 from the chosen response, then a GET's
  Range with a 206 or 416 from it (edge/ranged.py); a Range or a HEAD for a hit-for-miss URL,
  or a Range for a fill announced over ``max_object_bytes``, is passed to the origin as is.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from edge.admin import Admin
from edge.coalesce import Coalescer
from edge.compress import Compressor
from edge.disk.tiered import TieredStore, builder_id, open_store
from edge.forward import (
    conditional_304,
    forward_headers,
    read_up_to,
    stream_response,
    trusted_key_suffix,
)
from edge.httpserver import Request, ResponseWriter
from edge.metrics import Metrics
from edge.policy import PolicyConfig, cache_status
from edge.policy.cachecontrol import request_directives, response_directives
from edge.policy.freshness import StoredMeta, current_age, stored_lifetime
from edge.policy.headers import Headers, get_all, get_first
from edge.policy.hopbyhop import headers_to_store, strip_hop_by_hop
from edge.policy.invalidation import invalidation_targets, is_unsafe
from edge.policy.request import Lookup, conditional_headers, on_hit, on_miss, post_store_uri
from edge.policy.response import Action, after_soft_purge, on_error, on_response, retention
from edge.policy.tiering import PurgeHistory
from edge.policy.vary import vary_fields, vary_key
from edge.ranged import range_pass_wanted, ranged_response
from edge.respond import DateCache, hit_bytes, serialize_stored_head, with_date
from edge.shield import Shield
from edge.store import SWEEP_LIMIT, Entry, MemoryStore
from edge.tier.region import RegionTier
from edge.upstream import OriginPool, UpstreamError, UpstreamResponse, UpstreamTimeout
from geoconfig.cdnconfig import EdgeSettings

log = logging.getLogger("geoedge.edge")

MAX_FLIGHTS = 4  # coalescing rounds a request joins before it fetches on its own (variants)
ALLOW = "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, PURGE"
PASSED = frozenset({"POST", "PUT", "DELETE", "PATCH", "OPTIONS"})  # sent to the origin as is
STALE_KEEP = 3600.0  # seconds a stale entry is kept for revalidation and disconnected serving
# Request headers that send a GET/HEAD down the full path (the parser flags them).
SLOW_HEADERS = frozenset({b"cache-control", b"pragma", b"if-none-match", b"if-modified-since",
                          b"if-match", b"if-unmodified-since", b"if-range", b"range"})
USABLE = (Lookup.FRESH, Lookup.STALE, Lookup.STALE_WHILE_REVALIDATE)  # served as stored
BODYLESS = ("GET", "HEAD")  # methods whose request body is discarded
NO_TAGS: frozenset[str] = frozenset()


@dataclass(slots=True)
class Outcome:
    """What a fetch produced: an entry to deliver, or an open response to stream, or an error."""

    member: str  # our Cache-Status member
    entry: Entry | None = None
    response: UpstreamResponse | None = None
    prefix: list[bytes] | None = None  # body bytes of ``response`` already read
    head: bytes | None = None  # the head to send instead of ``entry.head`` (the fetcher's,
    # when the origin's fields differ from the stored ones)
    stored: bool = False  # ``entry`` was (re)stored by this fetch
    error: int | None = None
    refetch: bool = False  # the validation failed: fetch again unconditionally
    since: str | None = None  # the region's purge log position when the fill started

    @property
    def shareable(self) -> Entry | None:
        """What coalesced waiters may look for: a stored (or freshened) entry."""
        if self.response is None and self.error is None:
            return self.entry
        return None

    def close(self) -> None:
        """Release the upstream response this outcome carries (idempotent)."""
        if self.response is not None:
            self.response.release()


class EdgeApp:
    def __init__(self, name: str, settings: EdgeSettings, pool: OriginPool,
                 clock: Callable[[], float]) -> None:
        self.name = name
        self.cache_name = f"geoedge-{name}"
        self.via = f"1.1 geoedge-{name}"
        self.settings = settings
        self.pool = pool
        self.clock = clock
        self.policy = PolicyConfig(
            targeted_fields=settings.targeted_cache_control,
            honour_request_cache_control=settings.request_cache_control == "honour",
            store_cookie_requests=settings.cache_cookie_requests,
            ignored_cookies=frozenset(settings.ignored_cookies),
            default_ttl=settings.default_ttl, heuristic_fraction=settings.heuristic_fraction,
            heuristic_max=settings.heuristic_max, store_set_cookie=settings.store_set_cookie,
            cacheable_methods=frozenset(settings.cacheable_methods))
        self.compressor = Compressor(settings.compression, self.via)  # make_entry uses it
        self.store = open_store(MemoryStore(settings.cache_max_bytes, settings.max_variants),
                                settings.disk_path, settings.disk_max_bytes, self.make_entry,
                                builder_id(self.via, self.policy, settings.compression))
        self.trusted = settings.trusted_forwarding_headers
        self._trusted_set = frozenset(self.trusted)
        self.coalescer: Coalescer[Entry] = Coalescer(settings.coalesce_max_waiters,
                                                     settings.coalesce_timeout)
        self.metrics = Metrics()
        self.dates = DateCache()
        self.admin = Admin(name, settings, self.store, self.metrics, self.key_for, pool,
                           tier=lambda: self.tier)
        self.tier: RegionTier | None = None  # the region's shared tier, set by start_edge
        self.shield: Shield | None = None  # the parent region (edge/shield.py), set by start_edge
        # purges applied here (a fill that a purge overtook is not stored, edge/policy/tiering)
        self.purges = PurgeHistory()
        self.admin.applied = self.purges.record
        # memory hits are served unvalidated only while the purge log follower is in sync:
        # until this time.monotonic() value (edge/tier/purgelog.py moves it on; no log: always)
        self.trust_until = math.inf
        self.background: set[asyncio.Task[None]] = set()
        self._hit_member = f"{self.cache_name}; hit; ttl=".encode()
        self.flag_headers = SLOW_HEADERS

    async def housekeeping(self, interval: float = 5.0) -> None:
        """Drop expired entries now and then (lookups drop the ones they meet), a bounded
        batch at a time (edge/store.py, SWEEP_LIMIT) with the loop free in between."""
        while True:
            await asyncio.sleep(interval)
            now = self.clock()
            while self.store.sweep(now) >= SWEEP_LIMIT:
                await asyncio.sleep(0)

    def _untrusted(self) -> bool:
        """The purge log follower is behind: what is stored may have been purged since."""
        return self.trust_until != math.inf and time.monotonic() >= self.trust_until

    # -- keys -----------------------------------------------------------------------------------
    def key_for(self, request: Request) -> str:
        if not self.trusted:
            return request.key
        return request.key + trusted_key_suffix(request, self.trusted)

    def origin_view(self, request: Request) -> Headers:
        """The request headers as a cache fill forwards them: what responses vary on."""
        view = request.origin_view
        if view is None:
            view = request.origin_view = tuple(
                forward_headers(request, self.via, for_cache=True, trusted=self._trusted_set))
        return view

    # -- the fast path: fresh hits, no request directives ----------------------------------------
    def fast(self, request: Request) -> bytes | None:
        """The complete response to a plain fresh hit, or None: the full path decides."""
        parts = self.fast_parts(request)
        return None if parts is None else parts[0] + parts[1]

    def fast_parts(self, request: Request) -> tuple[bytes, bytes] | None:
        """``fast()`` as the response head (blank line included) and its body (b"" for HEAD):
        what the HTTP/1.1 server writes without joining them. The last response of a
        connection says Connection: close, as the full path's does."""
        target = request.target
        if (request.flagged or request.method not in BODYLESS
                or request.version not in ("1.1", "2")
                or (target.startswith(("/healthz", "/metrics", self.admin.path))
                    and self.admin.owns(target))):
            return None
        now = self.clock()
        entry = self.store.get(self.key_for(request), lambda: self.origin_view(request), now)
        if entry is None or now >= entry.fast_until or entry.soft_purged:
            return None
        trust = self.trust_until
        if trust != math.inf and time.monotonic() >= trust:  # _untrusted(), inline
            return None
        age = entry.initial_age + max(0.0, now - entry.meta.response_time)  # entry.age(now)
        if entry.encoded is not None:  # the compressed variant it accepts (edge/compress.py)
            entry = self.compressor.pick(request, entry)
        metrics = self.metrics.counts
        metrics["requests"] += 1
        metrics["hits"] += 1
        self.metrics.status[entry.meta.status] += 1
        # hit_bytes(), inline: Age and our member, then the body (none for HEAD)
        head = b"%b%bAge: %d\r\nCache-Status: %b%d\r\n\r\n" % (
            entry.head, b"" if request.keep_alive else b"Connection: close\r\n", int(age),
            self._hit_member, int(entry.lifetime - age))
        if request.method == "GET":
            metrics["bytes_sent"] += len(entry.body)
            return head, entry.body
        return head, b""

    # -- the full path ----------------------------------------------------------------------------
    async def handle(self, request: Request, writer: ResponseWriter) -> None:
        self.metrics.inc("requests")
        request.interim = partial(_early_hints, writer)
        if request.target == "*":  # OPTIONS * (RFC 9110 §9.3.7): about the server itself
            writer.status = 200 if request.method == "OPTIONS" else 400
            await writer.send(writer.status, [("Allow", ALLOW), ("Date", self._date())])
        elif self.admin.owns(request.target) or request.method == "PURGE":
            await self.admin.handle(request, writer)
        elif request.method in ("GET", "HEAD"):
            await self._cacheable(request, writer)
        elif request.method in PASSED:
            await self._pass(request, writer, "method")
        else:  # TRACE (RFC 9110 §9.3.8: may echo credentials) or a method we do not know
            writer.status = 405 if request.method == "TRACE" else 501
            await writer.send(writer.status, [("Allow", ALLOW), ("Date", self._date()),
                                              ("Cache-Control", "no-store")])
        self.metrics.status[writer.status] += 1

    async def _cacheable(self, request: Request, writer: ResponseWriter) -> None:
        key = self.key_for(request)
        headers: Headers = tuple(request.headers)
        if request_directives(headers, self.policy).no_store:
            await self._pass(request, writer, "bypass", detail="request-no-store")
            return
        now = self.clock()
        entry = await self._stored(key, lambda: self.origin_view(request), now)
        if entry is not None and entry.hit_for_miss:
            if request.method == "HEAD" or request.header("range") is not None:
                # known uncacheable: HEAD goes as HEAD, a Range with it (edge/ranged.py)
                await self._pass(request, writer, "uri-miss", detail="hit-for-miss")
                return
            # Varnish's hit-for-miss: fetch without queueing behind others, but still store
            # the answer if it has become cacheable
            self.metrics.inc("passes")
            outcome, _ = await self._origin(request, key, None, "uri-miss")
            if outcome.response is not None:  # still not storable
                outcome.member = self._member(fwd="uri-miss", fwd_status=outcome.response.status,
                                              detail="hit-for-miss")
            await self._deliver(request, writer, outcome)
            return
        if entry is None:
            if on_miss(headers, self.policy).action is Lookup.GATEWAY_TIMEOUT:
                await self._error(writer, 504, self._member(fwd="miss", detail="only-if-cached"))
                return
            fwd = "vary-miss" if self.store.peek_any(key) else "uri-miss"
            self.metrics.inc("misses")
            await self._deliver(request, writer, await self._fetch(request, key, None, fwd))
            return
        decision = on_hit(headers, entry.meta, now, self.policy)
        action = after_soft_purge(decision.action, entry.soft_purged or self._untrusted())
        if action is Lookup.GATEWAY_TIMEOUT:
            await self._error(writer, 504, self._member(fwd="miss", detail="only-if-cached"))
        elif action in USABLE:
            self.metrics.inc("hits" if action is Lookup.FRESH else "stale")
            detail = None if action is Lookup.FRESH else decision.reason
            member = self._member(hit=True, ttl=decision.ttl, detail=detail)
            await self._deliver(request, writer, Outcome(member, entry=entry))
            if action is Lookup.STALE_WHILE_REVALIDATE:
                self._refresh_later(request, key, entry)
        else:
            self.metrics.inc("revalidations")
            by_request = decision.reason.startswith("request-") and decision.ttl > 0
            fwd = "request" if by_request else "stale"
            await self._deliver(request, writer, await self._fetch(request, key, entry, fwd))

    async def _stored(self, key: str, view: Callable[[], Headers], now: float) -> Entry | None:
        """What the store holds for this request: memory, else the disk (read off the event
        loop, edge/disk/tiered.py)."""
        store = self.store
        entry = store.get(key, view, now)
        if entry is None and isinstance(store, TieredStore):
            entry = await store.from_disk(key, view, now)
        return entry

    # -- fetching: join an in-flight fill, then the tier or its lease, then the origin ----------
    async def _fetch(self, request: Request, key: str, stale: Entry | None, fwd: str) -> Outcome:
        flight, joined = await self._join(request, key, stale, fwd)
        if joined is not None:
            return joined
        try:
            outcome, error = await self._fill(request, key, stale, fwd)
        except BaseException as exc:  # cancelled, or a bug: the waiters must not hang
            if flight is not None:
                self.coalescer.fail(key, flight, UpstreamError(f"leader failed: {exc!r}", []))
            raise
        if flight is not None:
            if error is not None:
                self.coalescer.fail(key, flight, error)
            else:
                self.coalescer.publish(key, flight, outcome.shareable)
        return outcome

    async def _join(self, request: Request, key: str, stale: Entry | None,
                    fwd: str) -> tuple[object | None, Outcome | None]:
        """Lead this key's fill (the flight token), or wait for the one in flight and use what
        it stored (an Outcome). (None, None): fetch alone."""
        # a request with credentials fetches alone: its answer is rarely shareable, and
        # queueing such requests behind each other would serialise them
        rounds = 0 if request.header("authorization") is not None else MAX_FLIGHTS
        view = partial(self.origin_view, request)
        for _ in range(rounds):  # a waiter for another variant leads (or joins) the next
            flight = self.coalescer.lead(key)
            if flight is not None:
                return flight, None
            try:
                waited, entry = await self.coalescer.wait(key)
            except UpstreamError as exc:
                return None, self._failed(request, stale, fwd, exc, collapsed=True)
            if not waited:
                break
            mine = await self._stored(key, view, self.clock())
            if entry is not None and mine is not None and not mine.hit_for_miss:
                self.metrics.inc("coalesced")
                return None, Outcome(self._member(fwd=fwd, collapsed=True), entry=mine)
            if mine is not None:
                break  # hit-for-miss (or an error) for this key: fetch alone
        return None, None

    async def _fill(self, request: Request, key: str, stale: Entry | None,
                    fwd: str) -> tuple[Outcome, UpstreamError | None]:
        leased = False
        if self.tier is not None and stale is None:
            found, stale, leased = await self._from_tier_or_lease(request, key, fwd)
            if found is not None:
                return found, None
        handed = False  # the lease went with the stored entry to the tier's fill
        try:
            outcome, error = await self._origin(request, key, stale, fwd, leased)
            handed = outcome.stored and outcome.entry is not None
            return outcome, error
        finally:
            if leased and not handed and self.tier is not None:
                self.tier.release(key)

    async def _from_tier_or_lease(self, request: Request, key: str,
                                  fwd: str) -> tuple[Outcome | None, Entry | None, bool]:
        """The region's tier: (an answer, or None; a stored entry to validate; leased)."""
        assert self.tier is not None
        found = await self._from_tier(request, key, fwd)
        if isinstance(found, Outcome) or found is not None:
            return (found, None, False) if isinstance(found, Outcome) else (None, found, False)
        leased = await self.tier.lease(key)
        if not leased and await self.tier.wait_filled(key):  # another edge filled it
            found = await self._from_tier(request, key, fwd, collapsed=True)
            if isinstance(found, Outcome):
                return found, None, False
            return None, found, False
        return None, None, leased

    async def _from_tier(self, request: Request, key: str, fwd: str,
                         collapsed: bool = False) -> Outcome | Entry | None:
        """The shared tier's entry as an answer (usable as it is), as a stale entry to
        validate, or None (not there). ``collapsed``: we waited for another edge's fill."""
        assert self.tier is not None
        headers: Headers = tuple(request.headers)
        mark = self.purges.mark()
        entry = await self.tier.lookup(key, self.origin_view(request))
        if entry is None or self.purges.purged_since(mark, key, entry.surrogate_keys):
            return None
        now = self.clock()
        self.store.put(entry, now)
        decision = on_hit(headers, entry.meta, now, self.policy)
        action = after_soft_purge(decision.action, entry.soft_purged)
        if action not in USABLE:
            return entry
        self.metrics.inc("coalesced" if collapsed else "shared_hits")
        if action is Lookup.STALE_WHILE_REVALIDATE:
            self._refresh_later(request, key, entry)
        detail = None if action is Lookup.FRESH else decision.reason
        member = self._member(fwd=fwd, collapsed=collapsed, detail=detail)
        return Outcome(f"{self.tier.member(now, entry)}, {member}", entry=entry)

    def _failed(self, request: Request, stale: Entry | None, fwd: str, exc: UpstreamError,
                collapsed: bool = False) -> Outcome:
        self.metrics.inc("origin_errors")
        usable = stale is not None and not stale.hit_for_miss
        decision = on_error(stale.meta if stale is not None else None, usable,
                            isinstance(exc, UpstreamTimeout), self.policy)
        if decision.serve_stored:
            self.metrics.inc("stale")
            return Outcome(self._member(fwd="stale", collapsed=collapsed,
                                        detail=decision.reason), entry=stale)
        log.warning("%s %s: %s", request.method, request.target, exc)
        return Outcome(self._member(fwd=fwd, collapsed=collapsed, detail=decision.reason),
                       error=decision.status)

    async def _origin(self, request: Request, key: str, stale: Entry | None, fwd: str,
                      leased: bool = False) -> tuple[Outcome, UpstreamError | None]:
        """Fetch from the origin and store; ``leased``: we hold the region's fill lease, which
        a stored answer hands to the tier's fill. Origin errors become an Outcome."""
        try:
            outcome = await self._fetch_origin(request, key, stale, fwd)
        except UpstreamError as exc:
            return self._failed(request, stale, fwd, exc), exc
        if self.tier is not None and outcome.stored and outcome.entry is not None:
            self.tier.fill(outcome.entry, leased, outcome.since)
        return outcome, None

    async def _fetch_origin(self, request: Request, key: str, stale: Entry | None,
                            fwd: str) -> Outcome:
        """One origin exchange, decided by ``on_response``. The response is released here on
        every path except when the Outcome carries it (then ``_deliver`` releases it)."""
        view = self.origin_view(request)  # what the origin sees decides storing and variant
        validating = stale is not None and not stale.hit_for_miss
        headers = list(view)
        if stale is not None and validating:
            headers += list(conditional_headers(stale.meta))
        request_time = self.clock()
        mark = self.purges.mark()
        if self.shield is not None:  # the parent region's edges (or the origin)
            resp = await self.shield.fetch(request.target, headers, key=key,
                                           client_ip=request.client_ip,
                                           on_informational=request.interim)
        else:
            resp = await self.pool.fetch("GET", request.target, headers, None, key=key,
                                         client_ip=request.client_ip,
                                         on_informational=request.interim)
        request.origin = resp.origin  # the access log's
        outcome: Outcome | None = None
        try:
            outcome = await self._on_origin_response(request, key, stale, validating, resp,
                                                     view, request_time, fwd)
        finally:
            if outcome is None or outcome.response is not resp:
                resp.release()
        if outcome.refetch:  # the 304 does not select what we have: fetch it whole
            return await self._fetch_origin(request, key, None, fwd)
        entry = outcome.entry
        if outcome.stored and entry is not None:
            outcome.since = mark.cursor
            if self.purges.purged_since(mark, key, entry.surrogate_keys):
                self.store.purge_key(key)  # a purge overtook this fill: keep nothing
                outcome.stored = False
        return outcome

    async def _on_origin_response(self, request: Request, key: str, stale: Entry | None,
                                  validating: bool, resp: UpstreamResponse, view: Headers,
                                  request_time: float, fwd: str) -> Outcome:
        response_time = self.clock()
        status, resp_headers = resp.status, tuple(resp.headers)
        limit = self.settings.max_object_bytes
        d = on_response(status, resp_headers, view, tuple(request.headers),
                        stale.meta if stale is not None else None, validating,
                        resp.content_length, limit, request_time, response_time, self.policy)
        fwd_status = status if d.valid_status else None
        if d.action is Action.FRESHEN:
            assert stale is not None and d.meta is not None
            fresh = self.make_entry(key, d.meta, stale.body, stale.surrogate_keys, stale)
            stored = self.store.put(fresh, response_time)
            return Outcome(self._member(fwd=fwd, fwd_status=304), entry=fresh, stored=stored)
        if d.action is Action.REFETCH:
            return Outcome("", refetch=True)
        if d.action is Action.STALE:
            self.metrics.inc("stale")
            return Outcome(self._member(fwd=fwd, fwd_status=status, detail=d.reason),
                           entry=stale)
        if d.action is Action.BAD_GATEWAY:
            self.metrics.inc("origin_errors")
            log.warning("origin %s answered %s %s with status %d (%s): 502", resp.origin,
                        request.method, key, status, d.reason)
            return Outcome(self._member(fwd=fwd, fwd_status=fwd_status, detail=d.reason),
                           error=502)
        if d.action is Action.STORE:
            chunks, complete = await read_up_to(resp, limit)
            if complete:
                return self._store(request, key, resp, view, b"".join(chunks), request_time,
                                   response_time, fwd)
            self._hit_for_miss(key, resp_headers, view)
            member = self._member(fwd=fwd, fwd_status=status, detail="too-large")
            return Outcome(member, response=resp, prefix=chunks)
        if d.mark:
            self._hit_for_miss(key, resp_headers, view)
        return Outcome(self._member(fwd=fwd, fwd_status=status, detail=d.reason), response=resp)

    def _store(self, request: Request, key: str, resp: UpstreamResponse, view: Headers,
               body: bytes, request_time: float, response_time: float, fwd: str) -> Outcome:
        status, resp_headers = resp.status, with_date(tuple(resp.headers), response_time)
        entry = self._entry_from_response(key, view, status, resp_headers, body, request_time,
                                          response_time)
        # this client gets the response as the origin sent it (Set-Cookie, qualified
        # private fields included); later ones get the stored copy
        own_head = self.compressor.own_head(request, entry.encoded, status, resp_headers)
        if own_head is None and entry.meta.headers != resp_headers:  # else: the stored head
            own_head = serialize_stored_head(status, resp_headers, self.via, len(body))
        stored = entry.variant != "*" and self.store.put(entry, response_time)
        if stored:
            self.metrics.inc("stored")
        member = self._member(fwd=fwd, fwd_status=status, stored=stored)
        return Outcome(member, entry=entry, head=own_head, stored=stored)

    def _hit_for_miss(self, key: str, response_headers: Headers, view: Headers) -> None:
        """Mark this variant (the response's Vary over what the origin saw) as uncacheable
        for a while; a live stored response for it is kept (store.put refuses the marker)."""
        vary = get_all(tuple(response_headers), "vary")
        if vary_fields(vary) is None:  # Vary: * matches no request: mark the URL, but only
            if self.store.peek_any(key):  # when that shadows nothing stored for it
                return
            vary = ()
        variant = vary_key(vary, view) or ""
        now = self.clock()
        meta = StoredMeta(0, (), now, now)
        marker = Entry(key, variant, vary, meta, b"", b"", 0.0, 0.0,
                       now + self.settings.hit_for_miss_ttl, hit_for_miss=True)
        self.store.put(marker, now)

    def _entry_from_response(self, key: str, req_headers: Headers, status: int,
                             headers: Headers, body: bytes, request_time: float,
                             response_time: float) -> Entry:
        directives = response_directives(headers, self.policy)
        stored_headers = headers_to_store(headers, directives, self.policy)
        variant = vary_key(get_all(stored_headers, "vary"), req_headers)
        if variant is None:  # Vary: * -- delivered once, never stored
            variant = "*"
        meta = StoredMeta(status, stored_headers, request_time, response_time, "GET", variant)
        tags = frozenset(t for v in get_all(headers, "surrogate-key") for t in v.split())
        tags |= {t.strip() for v in get_all(headers, "cache-tag") for t in v.split(",")
                 if t.strip()}
        tags = tags or NO_TAGS  # one object for every untagged entry (each is GC-tracked)
        return self.make_entry(key, meta, body, tags)

    def make_entry(self, key: str, meta: StoredMeta, body: bytes,
                    tags: frozenset[str], freshens: Entry | None = None) -> Entry:
        directives = meta.directives(self.policy)
        lifetime = stored_lifetime(meta, self.policy)
        initial_age = current_age(meta, meta.response_time)
        fresh_until = meta.response_time + lifetime - initial_age
        head = serialize_stored_head(meta.status, with_date(meta.headers, meta.response_time),
                                     self.via, len(body))
        keep = retention(directives, fresh_until, STALE_KEEP)
        encoded = self.compressor.variants(key, meta, body, lifetime, initial_age, keep,
                                           freshens.encoded if freshens is not None else None)
        entry = Entry(key, meta.vary_key, get_all(meta.headers, "vary"), meta, body, head,
                      lifetime, initial_age, keep, tags, encoded=encoded)
        entry.fast_until = 0.0 if directives.no_cache else fresh_until
        return entry

    def _refresh_later(self, request: Request, key: str, entry: Entry) -> None:
        """One background revalidation (RFC 5861 §3), not tied to the client's request."""
        if self.coalescer.in_flight(key):
            return

        async def refresh() -> None:
            flight = self.coalescer.lead(key)
            if flight is None:
                return
            outcome: Outcome | None = None
            try:
                outcome, error = await self._origin(request, key, entry, "stale")
            except BaseException as exc:
                self.coalescer.fail(key, flight, UpstreamError(f"refresh failed: {exc!r}", []))
                raise
            finally:
                if outcome is not None:
                    outcome.close()
            if error is not None:
                self.coalescer.fail(key, flight, error)
                log.warning("background refresh of %s failed: %s", key, error)
            else:
                self.coalescer.publish(key, flight, outcome.shareable)

        task = asyncio.get_running_loop().create_task(refresh())
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    # -- pass -------------------------------------------------------------------------------------
    async def _pass(self, request: Request, writer: ResponseWriter, fwd: str,
                    detail: str | None = None) -> None:
        self.metrics.inc("passes")
        headers = forward_headers(request, self.via, for_cache=False, trusted=self._trusted_set)
        body = None if request.method in BODYLESS else request.body
        request_time = self.clock()
        try:
            resp = await self.pool.fetch(request.method, request.target, headers,
                                         body, key=self.key_for(request),
                                         client_ip=request.client_ip,
                                         on_informational=request.interim)
        except UpstreamError as exc:
            self.metrics.inc("origin_errors")
            status = 504 if isinstance(exc, UpstreamTimeout) else 502
            await self._error(writer, status, self._member(fwd=fwd, detail="origin-unreachable"))
            return
        request.origin = resp.origin  # the access log's
        try:
            if not 200 <= resp.status <= 599:
                self.metrics.inc("origin_errors")
                log.warning("origin %s answered %s %s with status %d: 502", resp.origin,
                            request.method, request.key, resp.status)
                await self._error(writer, 502, self._member(fwd=fwd, detail="invalid-status"))
                return
            if is_unsafe(request.method):
                for uri in invalidation_targets(request.method, self.key_for(request),
                                                resp.status, tuple(resp.headers)):
                    self.store.remove(uri)
            if request.method == "POST" and await self._store_post(request, writer, resp,
                                                                   fwd, request_time):
                return
            member = request.cache_status = self._member(fwd=fwd, fwd_status=resp.status,
                                                         detail=detail)
            await stream_response(writer, resp, member, self.via, self.metrics,
                                  date=self._date())
        finally:
            resp.release()

    async def _store_post(self, request: Request, writer: ResponseWriter,
                          resp: UpstreamResponse, fwd: str, request_time: float) -> bool:
        """Store a POST answer for later GETs of its URI when ``post_store_uri`` allows, and
        send it; False: not storable (nothing was read, the caller streams it)."""
        if post_store_uri(request.key, resp.status, tuple(request.headers),
                          tuple(resp.headers), self.policy) is None:
            return False
        chunks, complete = await read_up_to(resp, self.settings.max_object_bytes)
        if not complete:
            member = self._member(fwd=fwd, fwd_status=resp.status, detail="too-large")
            await stream_response(writer, resp, member, self.via, self.metrics, chunks,
                                  date=self._date())
            return True
        body = b"".join(chunks)
        key = self.key_for(request)
        outcome = self._store(request, key, resp, self.origin_view(request), body,
                              request_time, self.clock(), fwd)
        if self.tier is not None and outcome.stored and outcome.entry is not None:
            self.tier.fill(outcome.entry)
        writer.status = resp.status
        self.metrics.inc("bytes_sent", len(body))
        assert outcome.entry is not None
        head = (outcome.head or outcome.entry.head) + (
            b"Connection: close\r\n" if writer.close else b"")
        writer.send_raw(hit_bytes(head, 0, outcome.member.encode("latin-1"), body, True))
        await writer.finish()
        return True

    # -- delivery ---------------------------------------------------------------------------------
    async def _deliver(self, request: Request, writer: ResponseWriter, outcome: Outcome) -> None:
        """Send an outcome; its upstream response, if any, is released whatever happens."""
        request.cache_status = outcome.member  # the access log's
        try:
            await self._send_outcome(request, writer, outcome)
        finally:
            outcome.close()

    async def _send_outcome(self, request: Request, writer: ResponseWriter,
                            outcome: Outcome) -> None:
        if outcome.error is not None:
            await self._error(writer, outcome.error, outcome.member)
            return
        if outcome.response is not None:
            resp = outcome.response
            if range_pass_wanted(request, resp.status, resp.content_length,
                                 self.settings.max_object_bytes):  # too large to fill
                outcome.close()
                await self._pass(request, writer, "miss", detail="too-large")
                return
            await stream_response(writer, outcome.response, outcome.member, self.via,
                                  self.metrics, outcome.prefix, date=self._date())
            return
        assert outcome.entry is not None
        entry = self.compressor.pick(request, outcome.entry)  # what is sent: a variant
        now = self.clock()
        age = int(entry.age(now))
        not_modified = conditional_304(request, entry.meta)
        if not_modified is not None:
            writer.status = 304
            await writer.send(304, [*not_modified, ("Date", self._date()), ("Age", str(age)),
                                    ("Cache-Status", outcome.member), ("Via", self.via)])
            return
        if request.header("range") is not None and await self._send_ranged(
                request, writer, outcome, entry, age, now):
            return
        head = outcome.head or entry.head
        if writer.close:
            head += b"Connection: close\r\n"
        with_body = request.method == "GET"
        writer.status = entry.meta.status
        if with_body:
            self.metrics.inc("bytes_sent", len(entry.body))
        writer.send_raw(hit_bytes(head, age,
                                  outcome.member.encode("latin-1"), entry.body, with_body))
        await writer.finish()

    async def _send_ranged(self, request: Request, writer: ResponseWriter, outcome: Outcome,
                           entry: Entry, age: int, now: float) -> bool:
        """A 206 or 416 from the stored response (edge/ranged.py); False: send it whole."""
        date = get_first(entry.meta.headers, "date") or self.dates.value(now).decode("latin-1")
        per_response = [("Age", str(age)), ("Date", date),  # the stored Date, as on full hits
                        ("Cache-Status", outcome.member)]
        if writer.close:
            per_response.append(("Connection", "close"))
        ranged = ranged_response(request, entry.meta.status, entry.meta.headers, entry.body,
                                 outcome.head, self.via, per_response)
        if ranged is None:
            return False
        writer.status = ranged.status
        self.metrics.inc("bytes_sent", ranged.body_bytes)
        writer.send_raw(ranged.data)
        await writer.finish()
        return True

    async def _error(self, writer: ResponseWriter, status: int, member: str) -> None:
        body = f"{status} {'Gateway Timeout' if status == 504 else 'Bad Gateway'}\n".encode()
        writer.status = status
        writer.request.cache_status = member  # the access log's
        await writer.send(status, [("Content-Type", "text/plain; charset=utf-8"),
                                   ("Cache-Control", "no-store"), ("Date", self._date()),
                                   ("Cache-Status", member), ("Via", self.via)], body)

    def _date(self) -> str:
        return self.dates.value(self.clock()).decode("latin-1")

    def _member(self, *, hit: bool = False, fwd: str | None = None,
                fwd_status: int | None = None, ttl: float | None = None, stored: bool = False,
                collapsed: bool = False, detail: str | None = None) -> str:
        """This edge's Cache-Status member (RFC 9211), parameters in the RFC's order."""
        return cache_status(self.cache_name, hit=hit, fwd=fwd, fwd_status=fwd_status,
                            ttl=None if ttl is None else math.floor(ttl), stored=stored,
                            collapsed=collapsed, detail=detail)


def _early_hints(writer: ResponseWriter, status: int, headers: list[tuple[str, str]]) -> None:
    """Relay an origin's 103 (minus hop-by-hop fields); other 1xx are dropped."""
    interim = getattr(writer, "interim", None)  # a writer of another protocol may have none
    if status == 103 and interim is not None:
        interim(103, list(strip_hop_by_hop(tuple(headers))))


__all__ = ["EdgeApp", "Outcome"]
