"""The origin's aiohttp application factory: ``create_app(name, settings)``.

Rules:

* Routes: the dynamic endpoints of api.py, and a GET/HEAD route for static content
  (content.py) on every path *except* the reserved ``/api/...``, ``/healthz`` and
  ``/healthz/...`` (so ``GET /healthz/down`` is 405, ``/api/nope`` is 404, and files under
  ``ROOT/api/`` are never served). A method a route does not accept gets aiohttp's 405 with
  ``Allow``.
* Every response the app prepares -- including 304, 404, 405 and 500 -- carries
  ``X-Origin: NAME`` and ``Server: geoedge-origin``; aiohttp adds ``Date``. (Requests so
  malformed that aiohttp answers 400 before routing them do not reach the app.)
* Every request is counted in ``/api/stats`` on arrival (state.py), except ``/api/stats``
  and ``/metrics``.
* Start-up (``cleanup_ctx``) builds the virtual files in a worker thread; nothing is read or
  computed when the module is imported, and creating the app reads no files.
* The content root is resolved once, when the app is created; ``settings.root = None`` serves
  only virtual files and the API.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Handler

from geoconfig.cdnconfig import OriginSettings
from origin.api import add_api_routes
from origin.content import serve_content
from origin.headers import new_type_table
from origin.state import STATE, OriginState
from origin.virtual import build_virtual_files

__all__ = ["CONTENT_ROUTE", "SERVER", "create_app"]

SERVER = "geoedge-origin"
CONTENT_ROUTE = r"/{path:(?!api/|healthz(?:/|$)).*}"


@web.middleware
async def _count(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path not in ("/api/stats", "/metrics"):  # the observers are not counted
        request.app[STATE].stats.hit(request.path, request.path_qs)
    return await handler(request)


async def _identify(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["X-Origin"] = request.app[STATE].name
    response.headers["Server"] = SERVER


async def _virtual_files(app: web.Application) -> AsyncIterator[None]:
    app[STATE].virtual = await asyncio.to_thread(build_virtual_files)
    yield
    app[STATE].virtual = {}


def create_app(name: str, settings: OriginSettings) -> web.Application:
    """An origin serving ``settings.root``, the virtual files and the API as ``name``."""
    app = web.Application(middlewares=[_count])
    root = settings.root.resolve() if settings.root is not None else None
    app[STATE] = OriginState(name, settings, root, new_type_table())
    app.cleanup_ctx.append(_virtual_files)
    app.on_response_prepare.append(_identify)
    add_api_routes(app.router)
    app.router.add_get(CONTENT_ROUTE, serve_content)
    return app
