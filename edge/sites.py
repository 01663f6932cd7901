"""Many sites on one edge: the request handler that picks a site by Host and its per-site apps.

- Each ``[[sites]]`` entry gets its own origin pool and an ``EdgeApp`` with its own knobs
  (``SiteApp``); all of them share the edge's one cache, coalescer, metrics, region tier and
  purge listeners, so a reload never empties the cache. Keys are absolute URIs (scheme and
  host included), so sites never share entries; a site's cache key rules
  (edge.policy.site.site_key) shape its keys further.
- ``/healthz``, the admin path and ``OPTIONS *`` are the edge's own, whatever the Host.
  ``PURGE`` goes to the Host's site and is authorised by that site's ``purge_token``.
- A Host that no site has goes to the default site (top-level ``[[origins]]``), or, without
  one, is answered ``unknown_host_status`` (421 Misdirected Request or 404) by the edge and
  never forwarded.
- Plain-HTTP requests to a site with ``tls.redirect_http`` get ``308`` to the https URL (the
  edge's own paths excepted: the GeoDNS prober and operators use plain HTTP); answers over
  HTTPS for a site with ``tls.hsts`` carry ``Strict-Transport-Security``.
- ``apply`` swaps in a new configuration: sites whose settings did not change keep their
  app and pool; the pools no longer used are stopped after ``read_timeout`` seconds, so
  requests in flight on them finish.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from edge.admin import Admin
from edge.httpserver import Request, ResponseWriter
from edge.policy.site import SiteTable, redirect_location, site_key, with_header
from edge.proxy import EdgeApp
from edge.upstream import OriginPool
from geoconfig.cdnconfig import CdnSettings, EdgeSettings
from geoconfig.sites import CacheKeyRules, Site

log = logging.getLogger("geoedge.edge.sites")


class SiteApp(EdgeApp):
    """An EdgeApp for one site, over the base app's cache, metrics and tier."""

    def __init__(self, base: EdgeApp, settings: EdgeSettings, pool: OriginPool,
                 rules: CacheKeyRules) -> None:
        super().__init__(base.name, settings, pool, base.clock)
        self.store = base.store
        self.metrics = base.metrics
        self.coalescer = base.coalescer
        self.dates = base.dates
        self.background = base.background
        self.tier = base.tier
        self.rules = rules
        self.admin = Admin(base.name, settings, base.store, base.metrics, self.key_for, pool,
                           tier=lambda: base.tier)
        self.admin.listeners = base.admin.listeners

    def key_for(self, request: Request) -> str:
        key = super().key_for(request)
        if self.rules.default:
            return key
        return site_key(key, self.rules, request.header)


@dataclass(slots=True)
class Route:
    name: str
    app: EdgeApp
    site: Site | None  # None: the default site
    redirect: bool = False
    hsts: bytes = b""  # the header line, CRLF included

    @property
    def pool(self) -> OriginPool:
        return self.app.pool


class HeaderWriter:
    """A ResponseWriter that adds header lines to the one response it writes."""

    def __init__(self, inner: ResponseWriter, extra: list[tuple[str, str]]) -> None:
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_extra", extra)
        line = "".join(f"{n}: {v}\r\n" for n, v in extra).encode("latin-1")
        object.__setattr__(self, "_line", line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._inner, name, value)

    async def send(self, status: int, headers: list[tuple[str, str]], body: bytes = b"") -> None:
        await self._inner.send(status, [*headers, *self._extra], body)

    async def start(self, status: int, headers: list[tuple[str, str]],
                    content_length: int | None) -> None:
        await self._inner.start(status, [*headers, *self._extra], content_length)

    def send_raw(self, data: bytes) -> None:
        self._inner.send_raw(with_header(data, self._line))


class SiteRouter:
    """The public listeners' handler: site selection in front of the per-site apps."""

    def __init__(self, base: EdgeApp, https_port: int | None) -> None:
        self.base = base
        self.flag_headers = base.flag_headers
        self.https_port = https_port
        self.unknown_status = 421
        self.routes: list[Route] = []
        self.table: SiteTable[Route] = SiteTable()
        self._retired: dict[asyncio.Task[None], OriginPool] = {}

    # -- configuration --------------------------------------------------------------------------
    async def apply(self, cdn: CdnSettings) -> None:
        """Use ``cdn``'s sites from now on (start new pools first; retire unused ones)."""
        old = {r.name: r for r in self.routes}
        routes: list[Route] = []
        started: list[OriginPool] = []
        try:
            for site in cdn.sites:
                prior = old.get(site.name)
                if prior is not None and prior.site == site:
                    routes.append(prior)
                    continue
                pool = OriginPool(site.origins, site.edge)
                await pool.start()
                started.append(pool)
                app = SiteApp(self.base, site.edge, pool, site.cache_key)
                hsts = (f"Strict-Transport-Security: {site.tls.hsts}\r\n".encode("latin-1")
                        if site.tls.hsts else b"")
                routes.append(Route(site.name, app, site, site.tls.redirect_http, hsts))
            default = await self._default(cdn, old.get(""), started)
        except BaseException:
            for pool in started:
                await pool.stop()
            raise
        if default is not None:
            routes.append(default)
        self.table = SiteTable.build(((r.site.hosts, r) for r in routes if r.site is not None),
                                     default=default)
        self.unknown_status = cdn.tls.unknown_host_status
        kept = {id(r.app) for r in routes}
        retired = [r for r in self.routes if id(r.app) not in kept and r.app is not self.base]
        self.routes = routes
        # no [[sites]]: every request is the default site's, which neither redirects nor adds
        # HSTS, so its app answers fast() itself (one call less per hit); else fast() below
        if default is not None and not self.table.exact and not self.table.wildcards:
            self.fast = default.app.fast  # type: ignore[method-assign]
            self.fast_parts = default.app.fast_parts  # type: ignore[method-assign]
        else:
            self.__dict__.pop("fast", None)
            self.__dict__.pop("fast_parts", None)
        for route in retired:
            self._retire(route.pool, route.app.settings.read_timeout)

    async def _default(self, cdn: CdnSettings, prior: Route | None,
                       started: list[OriginPool]) -> Route | None:
        if not cdn.origins:
            return None
        base = self.base
        if prior is not None and prior.app.pool.origins == cdn.origins and (
                prior.app.settings == cdn.edge):
            return prior
        if base.pool.origins == cdn.origins and base.settings == cdn.edge:
            app: EdgeApp = base
        else:
            pool = OriginPool(cdn.origins, cdn.edge)
            await pool.start()
            started.append(pool)
            app = SiteApp(base, cdn.edge, pool, CacheKeyRules())
        base.admin.pool = app.pool  # the stats show the default site's origins
        return Route("", app, None)

    def _retire(self, pool: OriginPool, grace: float) -> None:
        async def later() -> None:
            await asyncio.sleep(grace)
            await pool.stop()

        task = asyncio.get_running_loop().create_task(later())
        self._retired[task] = pool
        task.add_done_callback(lambda t: self._retired.pop(t, None))

    async def stop(self) -> None:
        pools = {id(r.pool): r.pool for r in self.routes if r.app is not self.base}
        for task, pool in list(self._retired.items()):  # retired, not yet stopped: now
            task.cancel()
            pools[id(pool)] = pool
        for route in self.routes:
            for task in list(route.app.background):
                task.cancel()
        for pool in pools.values():
            await pool.stop()

    @property
    def pools(self) -> list[OriginPool]:
        return [r.pool for r in self.routes]

    # -- requests -------------------------------------------------------------------------------
    def fast(self, request: Request) -> bytes | None:
        route = self.table.select(request.host)
        if route is None or (route.redirect and request.scheme == "http"):
            return None
        data = route.app.fast(request)
        if data is not None and route.hsts and request.scheme == "https":
            return with_header(data, route.hsts)
        return data

    def fast_parts(self, request: Request) -> tuple[bytes, bytes] | None:
        """``fast()`` as head and body (EdgeApp.fast_parts)."""
        route = self.table.select(request.host)
        if route is None or (route.redirect and request.scheme == "http"):
            return None
        parts = route.app.fast_parts(request)
        if parts is not None and route.hsts and request.scheme == "https":
            return with_header(parts[0], route.hsts), parts[1]
        return parts

    async def handle(self, request: Request, writer: ResponseWriter) -> None:
        base = self.base
        if request.target == "*" or (base.admin.owns(request.target)
                                     and request.method != "PURGE"):
            await base.handle(request, writer)
            return
        route = self.table.select(request.host)
        if route is None:
            await self._unknown(request, writer)
            return
        if route.redirect and request.scheme == "http" and self.https_port:
            location = redirect_location(request.host, request.target, self.https_port)
            writer.status = 308
            base.metrics.inc("requests")
            base.metrics.status[308] += 1
            await writer.send(308, [("Location", location), ("Date", base._date()),
                                    ("Content-Type", "text/plain; charset=utf-8")],
                              f"308 Permanent Redirect to {location}\n".encode())
            return
        if route.hsts and route.site is not None and request.scheme == "https":
            extra = [("Strict-Transport-Security", route.site.tls.hsts)]
            writer = HeaderWriter(writer, extra)  # type: ignore[assignment]
        await route.app.handle(request, writer)

    async def _unknown(self, request: Request, writer: ResponseWriter) -> None:
        base = self.base
        status = self.unknown_status
        base.metrics.inc("requests")
        base.metrics.status[status] += 1
        writer.status = status
        text = "Misdirected Request" if status == 421 else "Not Found"
        await writer.send(status, [("Content-Type", "text/plain; charset=utf-8"),
                                   ("Cache-Control", "no-store"), ("Date", base._date()),
                                   ("Via", base.via)],
                          f"{status} {text}: this edge serves no site named "
                          f"{request.host or '(none)'}\n".encode("latin-1", "replace"))
