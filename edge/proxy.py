"""The edge's request flow: look up, decide, fetch, store, deliver (Varnish builtin.vcl style).

Rules:

- recv: ``/healthz`` and ``/metrics`` and the admin path are answered by the edge itself;
  ``PURGE`` purges; GET and HEAD go through the cache; every other method is passed to the
  origin with its body and, on a 2xx/3xx, invalidates the target URI and its same-origin
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
- miss: one origin request per key at a time (coalesce.py); HEAD misses fetch GET so the cache
  fills. A 304 freshens the stored entry (RFC 9111 §4.3.4).
- errors: origin unreachable → stale content unless a directive forbids it (RFC 9111 §4.2.4,
  "disconnected"); origin 5xx → stale only under stale-if-error (RFC 5861 §4); else 502, or
  504 on a timeout. An error page is stored only when its own headers allow it.
- store: responses ``storable`` allows, up to ``max_object_bytes``; bigger ones (or ones with
  no length that grow past it) stream through without buffering. Not storable because of the
  response (no-store, private, too large, an error status...) → a hit-for-miss marker for
  this variant for ``hit_for_miss_ttl`` seconds so later requests are not serialised; not
  storable because of the request (Authorization, request no-store) → nothing is marked.
  Nothing that one request provokes evicts what other requests stored.
- GET and HEAD bodies are discarded (never forwarded, nor their framing headers).
- deliver: Age, Date, Via and a Cache-Status member on every response; client conditionals
  (If-None-Match, If-Modified-Since) are answered 304 from the chosen response.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from edge.admin import Admin
from edge.coalesce import Coalescer
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
from edge.policy.freshness import StoredMeta, current_age, storable, stored_lifetime
from edge.policy.headers import Headers, get_all
from edge.policy.hopbyhop import headers_to_store
from edge.policy.invalidation import invalidation_targets, is_unsafe
from edge.policy.request import (
    Lookup,
    can_serve_stale_on_error,
    conditional_headers,
    on_hit,
    on_miss,
    stale_forbidden,
)
from edge.policy.validation import freshen_on_304
from edge.policy.vary import vary_fields, vary_key
from edge.respond import DateCache, hit_bytes, serialize_stored_head
from edge.store import Entry, MemoryStore
from edge.tier.region import RegionTier
from edge.upstream import OriginPool, UpstreamError, UpstreamResponse, UpstreamTimeout
from geoconfig.cdnconfig import EdgeSettings

log = logging.getLogger("geoedge.edge")

MAX_FLIGHTS = 4  # coalescing rounds a request joins before it fetches on its own (variants)
ALLOW = "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, PURGE"
STALE_KEEP = 3600.0  # seconds a stale entry is kept for revalidation and disconnected serving
# Request headers that send a GET/HEAD down the full path (the parser flags them).
SLOW_HEADERS = frozenset({b"cache-control", b"pragma", b"if-none-match", b"if-modified-since",
                          b"if-match", b"if-unmodified-since", b"if-range", b"range"})
# storable() reasons that come from the request, not the response: no hit-for-miss marker
REQUEST_REASONS = frozenset({"method", "request-no-store", "authorization"})
BODYLESS = ("GET", "HEAD")  # methods whose request body is discarded


@dataclass(slots=True)
class Outcome:
    """What a fetch produced: an entry to deliver, or an open response to stream, or an error."""

    member: str  # our Cache-Status member
    entry: Entry | None = None
    response: UpstreamResponse | None = None
    prefix: list[bytes] | None = None  # body bytes of ``response`` already read
    head: bytes | None = None  # the head to send instead of ``entry.head`` (the fetcher's)
    stored: bool = False  # ``entry`` was (re)stored by this fetch
    error: int | None = None


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
            honour_request_cache_control=settings.request_cache_control == "honour")
        self.store = MemoryStore(settings.cache_max_bytes, settings.max_variants)
        self.trusted = settings.trusted_forwarding_headers
        self._trusted_set = frozenset(self.trusted)
        self.coalescer: Coalescer[Entry] = Coalescer(settings.coalesce_max_waiters,
                                                     settings.coalesce_timeout)
        self.metrics = Metrics()
        self.dates = DateCache()
        self.admin = Admin(name, settings, self.store, self.metrics, self.key_for, pool,
                           tier=lambda: self.tier)
        self.tier: RegionTier | None = None  # the region's shared tier, set by start_edge
        self.background: set[asyncio.Task[None]] = set()
        self._hit_member = f"{self.cache_name}; hit; ttl=".encode()
        self.flag_headers = SLOW_HEADERS

    async def housekeeping(self, interval: float = 5.0) -> None:
        """Drop expired entries now and then (lookups drop the ones they meet)."""
        while True:
            await asyncio.sleep(interval)
            self.store.sweep(self.clock())

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
        if (request.method not in ("GET", "HEAD") or request.version != "1.1"
                or request.flagged or self.admin.owns(request.target)):
            return None
        now = self.clock()
        entry = self.store.get(self.key_for(request), lambda: self.origin_view(request), now)
        if entry is None or now >= entry.fast_until or entry.soft_purged:
            return None
        age = entry.age(now)
        member = self._hit_member + b"%d" % int(entry.lifetime - age)
        metrics = self.metrics.counts
        metrics["requests"] += 1
        metrics["hits"] += 1
        with_body = request.method == "GET"
        if with_body:
            metrics["bytes_sent"] += len(entry.body)
        self.metrics.status[entry.meta.status] += 1
        return hit_bytes(entry.head, int(age), self.dates.value(now), member, entry.body,
                         with_body)

    # -- the full path ----------------------------------------------------------------------------
    async def handle(self, request: Request, writer: ResponseWriter) -> None:
        self.metrics.inc("requests")
        if request.target == "*":  # OPTIONS * (RFC 9110 §9.3.7): about the server itself
            writer.status = 200 if request.method == "OPTIONS" else 400
            await writer.send(writer.status, [("Allow", ALLOW), ("Date", self._date())])
        elif self.admin.owns(request.target) or request.method == "PURGE":
            await self.admin.handle(request, writer)
        elif request.method in ("GET", "HEAD"):
            await self._cacheable(request, writer)
        else:
            await self._pass(request, writer, "method")
        self.metrics.status[writer.status] += 1

    async def _cacheable(self, request: Request, writer: ResponseWriter) -> None:
        key = self.key_for(request)
        headers: Headers = tuple(request.headers)
        if request_directives(headers, self.policy).no_store:
            await self._pass(request, writer, "bypass", detail="request-no-store")
            return
        now = self.clock()
        entry = self.store.get(key, lambda: self.origin_view(request), now)
        if entry is not None and entry.hit_for_miss:
            # Varnish's hit-for-miss: fetch without queueing behind others, but still store
            # the answer if it has become cacheable
            self.metrics.inc("passes")
            try:
                outcome = await self._from_origin(request, key, None, "uri-miss")
            except UpstreamError as exc:
                outcome = self._failed(request, None, "uri-miss", exc)
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
        action = decision.action
        if entry.soft_purged and action in (Lookup.FRESH, Lookup.STALE_WHILE_REVALIDATE):
            action = Lookup.MUST_VALIDATE
        if action is Lookup.GATEWAY_TIMEOUT:
            await self._error(writer, 504, self._member(fwd="miss", detail="only-if-cached"))
        elif action in (Lookup.FRESH, Lookup.STALE, Lookup.STALE_WHILE_REVALIDATE):
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

    # -- fetching ---------------------------------------------------------------------------------
    async def _fetch(self, request: Request, key: str, stale: Entry | None, fwd: str) -> Outcome:
        headers = self.origin_view(request)
        flight = None
        # a request with credentials fetches alone: its answer is rarely shareable, and
        # queueing such requests behind each other would serialise them
        rounds = 0 if request.header("authorization") is not None else MAX_FLIGHTS
        for _ in range(rounds):  # a waiter for another variant leads (or joins) the next
            flight = self.coalescer.lead(key)
            if flight is not None:
                break
            try:
                waited, entry = await self.coalescer.wait(key)
            except UpstreamError as exc:
                return self._failed(request, stale, fwd, exc, collapsed=True)
            if not waited:
                break
            if entry is not None:
                mine = self.store.get(key, headers, self.clock())
                if mine is not None and not mine.hit_for_miss:
                    self.metrics.inc("coalesced")
                    return Outcome(self._member(fwd=fwd, collapsed=True), entry=mine)
            if self.store.get(key, headers, self.clock()) is not None:
                break  # hit-for-miss (or an error) for this key: fetch alone
        leased = False
        if self.tier is not None and stale is None:  # the region's tier, then one fetch
            found = await self._from_tier(request, key, fwd)
            if isinstance(found, Outcome):
                if flight is not None:
                    self.coalescer.publish(key, flight, found.entry)
                return found
            stale = found
        if self.tier is not None and stale is None:
            leased = await self.tier.lease(key)
            if not leased and await self.tier.wait_filled(key):  # another edge filled it
                found = await self._from_tier(request, key, fwd, collapsed=True)
                if isinstance(found, Outcome):
                    if flight is not None:
                        self.coalescer.publish(key, flight, found.entry)
                    return found
                stale = found
        try:
            outcome = await self._from_origin(request, key, stale, fwd, leased=leased)
        except UpstreamError as exc:
            if flight is not None:
                self.coalescer.fail(key, flight, exc)
            if leased and self.tier is not None:
                self.tier.release(key)
            return self._failed(request, stale, fwd, exc)
        except BaseException as exc:
            if flight is not None:
                self.coalescer.fail(key, flight, UpstreamError(f"leader failed: {exc!r}", []))
            if leased and self.tier is not None:
                self.tier.release(key)
            raise
        if flight is not None:
            self.coalescer.publish(key, flight, outcome.entry if outcome.response is None
                                   and outcome.error is None else None)
        return outcome

    async def _from_tier(self, request: Request, key: str, fwd: str,
                         collapsed: bool = False) -> Outcome | Entry | None:
        """The shared tier's entry as an answer (usable as it is), as a stale entry to
        validate, or None (not there). ``collapsed``: we waited for another edge's fill."""
        assert self.tier is not None
        headers: Headers = tuple(request.headers)
        entry = await self.tier.lookup(key, self.origin_view(request))
        if entry is None:
            return None
        now = self.clock()
        self.store.put(entry, now)
        decision = on_hit(headers, entry.meta, now, self.policy)
        if entry.soft_purged or decision.action not in (
                Lookup.FRESH, Lookup.STALE, Lookup.STALE_WHILE_REVALIDATE):
            return entry
        self.metrics.inc("coalesced" if collapsed else "shared_hits")
        if decision.action is Lookup.STALE_WHILE_REVALIDATE:
            self._refresh_later(request, key, entry)
        detail = None if decision.action is Lookup.FRESH else decision.reason
        member = self._member(fwd=fwd, collapsed=collapsed, detail=detail)
        return Outcome(f"{self.tier.member(now, entry)}, {member}", entry=entry)

    def _failed(self, request: Request, stale: Entry | None, fwd: str, exc: UpstreamError,
                collapsed: bool = False) -> Outcome:
        self.metrics.inc("origin_errors")
        if stale is not None and not stale.hit_for_miss and stale_forbidden(
                stale.meta.directives(self.policy), self.policy) is None:
            self.metrics.inc("stale")
            return Outcome(self._member(fwd="stale", collapsed=collapsed,
                                        detail="origin-unreachable"), entry=stale)
        status = 504 if isinstance(exc, UpstreamTimeout) else 502
        log.warning("%s %s: %s", request.method, request.target, exc)
        return Outcome(self._member(fwd=fwd, collapsed=collapsed, detail="origin-unreachable"),
                       error=status)

    async def _from_origin(self, request: Request, key: str, stale: Entry | None,
                           fwd: str, leased: bool = False) -> Outcome:
        """Fetch from the origin and store; ``leased``: we hold the region's fill lease."""
        outcome = await self._fetch_origin(request, key, stale, fwd)
        tier = self.tier
        if tier is not None:
            if outcome.stored and outcome.entry is not None:
                tier.fill(outcome.entry, leased)
            elif leased:
                tier.release(key)
        return outcome

    async def _fetch_origin(self, request: Request, key: str, stale: Entry | None,
                            fwd: str) -> Outcome:
        req_headers: Headers = tuple(request.headers)
        view = self.origin_view(request)  # what the origin sees decides storing and variant
        headers = list(view)
        if stale is not None and not stale.hit_for_miss:
            headers += list(conditional_headers(stale.meta))
        request_time = self.clock()
        resp = await self.pool.fetch("GET", request.target, headers, None, key=key,
                                     client_ip=request.client_ip)
        response_time = self.clock()
        status = resp.status
        if status == 304 and stale is not None:
            resp.release()
            meta = freshen_on_304(stale.meta, resp.headers, request_time, response_time,
                                  self.policy)
            if meta is None:  # the 304 does not select what we have: fetch it whole
                return await self._fetch_origin(request, key, None, fwd)
            fresh = self.make_entry(key, meta, stale.body, stale.surrogate_keys)
            stored = self.store.put(fresh, response_time)
            return Outcome(self._member(fwd=fwd, fwd_status=304), entry=fresh, stored=stored)
        if status >= 500 and stale is not None and can_serve_stale_on_error(
                stale.meta, req_headers, response_time, self.policy):
            resp.release()
            self.metrics.inc("stale")
            return Outcome(self._member(fwd=fwd, fwd_status=status, detail="stale-if-error"),
                           entry=stale)
        decision = storable("GET", view, status, tuple(resp.headers), self.policy)
        limit = self.settings.max_object_bytes
        if decision and (resp.content_length is None or resp.content_length <= limit):
            chunks, complete = await read_up_to(resp, limit)
            if complete:
                body = b"".join(chunks)
                entry = self._entry_from_response(key, view, status, tuple(resp.headers),
                                                  body, request_time, response_time)
                # this client gets the response as the origin sent it (Set-Cookie, qualified
                # private fields included); later ones get the stored copy
                own_head = serialize_stored_head(status, tuple(resp.headers), self.via,
                                                 len(body))
                stored = entry.variant != "*" and self.store.put(entry, response_time)
                if stored:
                    self.metrics.inc("stored")
                member = self._member(fwd=fwd, fwd_status=status, stored=stored)
                return Outcome(member, entry=entry, head=own_head, stored=stored)
            self._hit_for_miss(key, resp.headers, view)
            member = self._member(fwd=fwd, fwd_status=status, detail="too-large")
            return Outcome(member, response=resp, prefix=chunks)
        if decision.reason not in REQUEST_REASONS:
            self._hit_for_miss(key, resp.headers, view)
        reason = "too-large" if decision else decision.reason
        return Outcome(self._member(fwd=fwd, fwd_status=status, detail=reason), response=resp)

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
        return self.make_entry(key, meta, body, tags)

    def make_entry(self, key: str, meta: StoredMeta, body: bytes,
                    tags: frozenset[str]) -> Entry:
        directives = meta.directives(self.policy)
        lifetime = stored_lifetime(meta, self.policy)
        initial_age = current_age(meta, meta.response_time)
        windows = max(directives.stale_while_revalidate or 0, directives.stale_if_error or 0)
        fresh_until = meta.response_time + lifetime - initial_age
        head = serialize_stored_head(meta.status, meta.headers, self.via, len(body))
        entry = Entry(key, meta.vary_key, get_all(meta.headers, "vary"), meta, body, head,
                      lifetime, initial_age, fresh_until + max(windows, STALE_KEEP), tags)
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
            try:
                outcome = await self._from_origin(request, key, entry, "stale")
            except UpstreamError as exc:
                self.coalescer.fail(key, flight, exc)
                log.warning("background refresh of %s failed: %s", key, exc)
                return
            self.coalescer.publish(key, flight, outcome.entry)
            if outcome.response is not None:
                outcome.response.release()

        task = asyncio.get_running_loop().create_task(refresh())
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    # -- pass -------------------------------------------------------------------------------------
    async def _pass(self, request: Request, writer: ResponseWriter, fwd: str,
                    detail: str | None = None) -> None:
        self.metrics.inc("passes")
        headers = forward_headers(request, self.via, for_cache=False, trusted=self._trusted_set)
        body = None if request.method in BODYLESS else request.body
        try:
            resp = await self.pool.fetch(request.method, request.target, headers,
                                         body, key=self.key_for(request),
                                         client_ip=request.client_ip)
        except UpstreamError as exc:
            self.metrics.inc("origin_errors")
            status = 504 if isinstance(exc, UpstreamTimeout) else 502
            await self._error(writer, status, self._member(fwd=fwd, detail="origin-unreachable"))
            return
        if is_unsafe(request.method):
            for uri in invalidation_targets(request.method, self.key_for(request), resp.status,
                                            tuple(resp.headers)):
                self.store.remove(uri)
        member = self._member(fwd=fwd, fwd_status=resp.status, detail=detail)
        await stream_response(writer, resp, member, self.via, self.metrics, date=self._date())

    # -- delivery ---------------------------------------------------------------------------------
    async def _deliver(self, request: Request, writer: ResponseWriter, outcome: Outcome) -> None:
        if outcome.error is not None:
            await self._error(writer, outcome.error, outcome.member)
            return
        if outcome.response is not None:
            await stream_response(writer, outcome.response, outcome.member, self.via,
                                  self.metrics, outcome.prefix, date=self._date())
            return
        entry = outcome.entry
        assert entry is not None
        now = self.clock()
        age = int(entry.age(now))
        not_modified = conditional_304(request, entry.meta)
        if not_modified is not None:
            writer.status = 304
            await writer.send(304, [*not_modified, ("Date", self._date()), ("Age", str(age)),
                                    ("Cache-Status", outcome.member), ("Via", self.via)])
            return
        head = outcome.head or entry.head
        if writer.close:
            head += b"Connection: close\r\n"
        with_body = request.method == "GET"
        writer.status = entry.meta.status
        if with_body:
            self.metrics.inc("bytes_sent", len(entry.body))
        writer.send_raw(hit_bytes(head, age, self.dates.value(now),
                                  outcome.member.encode("latin-1"), entry.body, with_body))
        await writer.finish()

    async def _error(self, writer: ResponseWriter, status: int, member: str) -> None:
        body = f"{status} {'Gateway Timeout' if status == 504 else 'Bad Gateway'}\n".encode()
        writer.status = status
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


__all__ = ["EdgeApp", "Outcome"]
