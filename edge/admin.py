"""What the edge answers itself: health, metrics, purge and drain.

Rules:

- Reserved paths are matched on the path alone (the query is ignored): ``/healthz?x`` and
  ``/metrics?x=1`` are the edge's own, never forwarded to the origin nor cached.
- ``GET /healthz``: 200 ``ok`` while serving, 503 ``draining`` once draining (so GeoDNS moves
  clients away before the process stops); served on every listener.
- ``GET /metrics`` (Prometheus text) and ``GET <admin_path>/stats`` (JSON) show origin
  addresses and state: they are served only on the admin listener (``edge.admin_listen``,
  e.g. ``127.0.0.1:9180``; ``serve_private``), and answer 404 on the public one. The admin
  listener also answers everything the public one does here (health, purge, drain).
- Purge needs ``Authorization: Bearer <edge.purge_token>`` (compared in constant time); without
  a configured token purging is disabled (403). Wrong or missing token: 401.
- ``PURGE /path`` purges every variant of that URL on the request's Host; ``PURGE /prefix*``
  purges every URL starting with the prefix. ``X-Purge-Soft: 1`` marks entries stale instead
  (the next request revalidates). The answer is JSON ``{"purged": N}``.
- ``POST <admin_path>/purge`` with a JSON body ``{"url"|"prefix"|"key": "...", "soft": bool}``
  does the same by absolute URL, URL prefix, or surrogate key (``Surrogate-Key`` /
  ``Cache-Tag`` response headers). ``POST <admin_path>/drain`` and ``/undrain`` switch
  draining.
- Every purge is also handed to ``on_purge`` listeners (the shared tier uses this), and to
  ``applied`` (the fill guard, edge/policy/tiering.py). With a region purge log
  (``region_purge``, edge/tier/region.py) the purge API logs the purge, purges the tier and,
  given ``"wait": seconds`` (0-60), waits for every edge of the region to acknowledge it
  (``"id"``: the purge's id, so that the same purge sent to several edges is logged once);
  with ``wait`` given the answer has ``"region": {"logged": id | null, "edges": {name: bool}}``.
- A purge is answered only once it holds everywhere this edge can reach: the local store,
  then the region's tier (when it has a purge log), then the edge's other workers (in that
  order: a worker that has dropped its copy would otherwise refill it from the tier's old one).
- The admin API is given what it reports on and purges (the edge's name and settings, its
  store, metrics, key function, origin pool, and its shared tier when there is one), never the
  proxy itself: this module does not import edge/proxy.py.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from edge.httpserver import Request, ResponseWriter
from edge.metrics import Metrics
from edge.policy.invalidation import normalise_uri
from edge.policy.target import url_key
from edge.store import MemoryStore
from edge.tier.region import RegionTier
from edge.upstream import OriginPool
from geoconfig.cdnconfig import EdgeSettings

PurgeListener = Callable[[str, str, bool], None]  # (kind, value, soft)
# (kind, value, soft, wait, purge id) -> the region's report (edge/tier/region.py region_purge)
RegionPurge = Callable[[str, str, bool, float, str | None], Awaitable[dict[str, Any]]]
MAX_PURGE_WAIT = 60.0  # seconds a purge request may ask to wait for the region's edges


class Admin:
    def __init__(self, name: str, settings: EdgeSettings, store: MemoryStore, metrics: Metrics,
                 key_for: Callable[[Request], str], pool: OriginPool,
                 tier: Callable[[], RegionTier | None] = lambda: None) -> None:
        """``tier`` returns the region's shared tier (None without one); a function because
        the tier is attached after the admin API is built."""
        self.name = name
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.key_for = key_for
        self.pool = pool
        self.tier = tier
        self.path = settings.admin_path.rstrip("/")
        self.draining = False
        self.listeners: list[PurgeListener] = []
        # awaited after a purge asked of this edge, before it is answered (the other workers
        # of a multi-worker edge, edge/workerchannel.py)
        self.confirmers: list[Callable[[str, str, bool], Awaitable[None]]] = []
        self.applied: PurgeListener = lambda kind, value, soft: None  # every purge applied here
        self.region_purge: RegionPurge | None = None  # the region's purge log, when it has one

    def owns(self, target: str) -> bool:
        path = target.split("?", 1)[0]
        return (path in ("/healthz", "/metrics") or path == self.path
                or path.startswith(self.path + "/"))

    def _private(self, path: str) -> bool:
        return path in ("/metrics", f"{self.path}/stats")

    async def serve_private(self, request: Request, writer: ResponseWriter) -> None:
        """The admin listener: metrics and stats, and everything ``handle`` answers."""
        path = request.path
        if request.method in ("GET", "HEAD") and path == "/metrics":
            await self._send(writer, 200, self.metrics_text().encode(),
                             "text/plain; version=0.0.4; charset=utf-8")
        elif request.method in ("GET", "HEAD") and path == f"{self.path}/stats":
            await self._json(writer, 200, self.stats())
        elif request.method == "PURGE" or self.owns(request.target):
            await self.handle(request, writer)
        else:
            await self._json(writer, 404, {"error": "the admin listener serves /healthz, "
                                                    "/metrics and the admin API only"})

    async def handle(self, request: Request, writer: ResponseWriter) -> None:
        target = request.path
        if request.method == "PURGE":
            await self._purge_method(request, writer)
        elif target == "/healthz":
            status, text = (503, "draining\n") if self.draining else (200, "ok\n")
            await self._send(writer, status, text.encode(), "text/plain; charset=utf-8")
        elif self._private(target):
            await self._json(writer, 404, {"error": f"{target} is served on the admin "
                                                    "listener (edge.admin_listen)"})
        elif request.method != "POST":
            await self._json(writer, 405, {"error": "use POST"})
        elif not self._authorized(request):
            await self._unauthorized(writer)
        elif target == f"{self.path}/purge":
            await self._purge_api(request, writer)
        elif target in (f"{self.path}/drain", f"{self.path}/undrain"):
            self.draining = target.endswith("/drain")
            await self._json(writer, 200, {"draining": self.draining})
        else:
            await self._json(writer, 404, {"error": f"unknown admin path {target}"})

    # -- purge ------------------------------------------------------------------------------------
    def purge(self, kind: str, value: str, soft: bool, notify: bool = True) -> int:
        store = self.store
        if kind == "url":
            value = normalise_uri(value)
            n = store.purge_key(value, soft)
            if self.settings.trusted_forwarding_headers:  # variants keyed by trusted headers
                n += store.purge_prefix(value + " ", soft)
        elif kind == "prefix":
            n = store.purge_prefix(value, soft)
        else:
            n = store.purge_tag(value, soft)
        self.metrics.inc("purges", n)
        self.applied(kind, value, soft)
        if notify:
            for listener in self.listeners:
                listener(kind, value, soft)
        return n

    async def purge_confirmed(self, kind: str, value: str, soft: bool) -> int:
        """``purge``, then wait until every confirmer has applied it too. With a region
        purge log the region's tier is purged (and the purge logged) before that, and before
        the answer: a sibling worker that has dropped its copy must not refill it from the
        tier's old one after the client was told it is gone."""
        region = self.region_purge
        n = self.purge(kind, value, soft, notify=region is None)
        key = normalise_uri(value) if kind == "url" else value
        if region is not None:
            await region(kind, key, soft, 0.0, None)
        for confirm in self.confirmers:
            await confirm(kind, key, soft)
        return n

    async def _purge_method(self, request: Request, writer: ResponseWriter) -> None:
        if not self._authorized(request):
            await self._unauthorized(writer)
            return
        soft = (request.header("x-purge-soft") or "").strip() in ("1", "true", "yes")
        key = self.key_for(request)
        if key.endswith("*"):
            n = await self.purge_confirmed("prefix", key[:-1], soft)
        else:
            n = await self.purge_confirmed("url", key, soft)
        await self._json(writer, 200, {"purged": n, "soft": soft})

    async def _purge_api(self, request: Request, writer: ResponseWriter) -> None:
        try:
            doc = json.loads(request.body or b"{}")
        except ValueError:
            await self._json(writer, 400, {"error": "body is not JSON"})
            return
        kinds = [k for k in ("url", "prefix", "key") if isinstance(doc, dict) and k in doc]
        if len(kinds) != 1 or not isinstance(doc[kinds[0]], str) or not doc[kinds[0]]:
            await self._json(writer, 400, {"error": 'give exactly one of "url", "prefix", '
                                                    '"key" as a non-empty string'})
            return
        kind, value = kinds[0], doc[kinds[0]]
        if kind in ("url", "prefix") and value.startswith("/"):
            value = url_key(value, request.host, request.scheme) or value
        wait = doc.get("wait", 0)
        if type(wait) not in (int, float) or not 0 <= wait <= MAX_PURGE_WAIT:
            await self._json(writer, 400, {"error": f'"wait" must be a number of seconds, '
                                                    f"0 to {MAX_PURGE_WAIT:g}"})
            return
        purge_id = doc.get("id")
        if purge_id is not None and (not isinstance(purge_id, str)
                                     or not 0 < len(purge_id) <= 64):
            await self._json(writer, 400, {"error": '"id" must be a string of 1-64 characters'})
            return
        soft = bool(doc.get("soft", False))
        if self.region_purge is None:
            n = await self.purge_confirmed(kind, value, soft)
            await self._json(writer, 200, {"purged": n, "soft": soft})
            return
        n = self.purge(kind, value, soft, notify=False)
        if kind == "url":
            value = normalise_uri(value)  # as purge() applied it
        # the region's tier first (see purge_confirmed), then the other workers of this edge
        region = await self.region_purge(kind, value, soft, float(wait), purge_id)
        for confirm in self.confirmers:
            await confirm(kind, value, soft)
        answer: dict[str, Any] = {"purged": n, "soft": soft}
        if "wait" in doc:
            answer["region"] = region
        await self._json(writer, 200, answer)

    def _authorized(self, request: Request) -> bool:
        token = self.settings.purge_token
        if not token:
            return False
        scheme, _, value = (request.header("authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(),
                                                                  token.encode())

    async def _unauthorized(self, writer: ResponseWriter) -> None:
        if not self.settings.purge_token:
            await self._json(writer, 403, {"error": "purging is disabled (no edge.purge_token)"})
            return
        writer.status = 401
        body = b'{"error": "a valid bearer token is required"}\n'
        await writer.send(401, [("Content-Type", "application/json"),
                                ("WWW-Authenticate", 'Bearer realm="geoedge"'),
                                ("Cache-Control", "no-store")], body)

    # -- reporting --------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        tier = self.tier()
        return {"edge": self.name, "draining": self.draining,
                "objects": len(self.store), "bytes": self.store.size_bytes,
                "counters": dict(self.metrics.counts), "origins": self.pool.snapshot(),
                "shared": tier.shared.snapshot() if tier is not None else None}

    def metrics_text(self) -> str:
        store, tier = self.store, self.tier()
        gauges = {
            "store_bytes": ("Bytes held by the in-process cache", store.size_bytes),
            "store_objects": ("Objects held by the in-process cache", len(store)),
            "store_max_bytes": ("Byte limit of the in-process cache", store.max_bytes),
            "draining": ("1 while the edge is draining", 1 if self.draining else 0),
        }
        if tier is not None:
            shared = tier.shared.snapshot()
            for name in ("hits", "misses", "errors", "timeouts", "short_circuits", "stores"):
                gauges[f"shared_{name}_total"] = (f"Shared tier {name.replace('_', ' ')}",
                                                  shared.get(name, 0))
            latency = shared.get("latency_ms", {})
            gauges["shared_latency_ms_sum"] = ("Shared tier operation time, ms (sum)",
                                               latency.get("sum_ms", 0.0))
            gauges["shared_latency_ms_count"] = ("Shared tier operations timed",
                                                 latency.get("count", 0))
            state = str(shared.get("breaker", {}).get("state", "closed")).lower()
            gauges["shared_breaker_open"] = ("1 while the shared tier's breaker is not closed",
                                             0 if state.endswith("closed") else 1)
        return self.metrics.render(gauges, self.pool.snapshot(), self.name)

    async def _send(self, writer: ResponseWriter, status: int, body: bytes, ctype: str) -> None:
        writer.status = status
        await writer.send(status, [("Content-Type", ctype), ("Cache-Control", "no-store")],
                          body)

    async def _json(self, writer: ResponseWriter, status: int, doc: Any) -> None:
        await self._send(writer, status, (json.dumps(doc) + "\n").encode(), "application/json")
