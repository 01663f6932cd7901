"""The dynamic endpoints of the demo origin (none of them reads or writes files).

Rules (every JSON body includes ``"origin": NAME``):

* ``GET /api/time``       server time; ``Cache-Control: public, max-age=2``.
* ``GET /api/slow?ms=N``  answers after N ms (0 <= N, capped at ``SLOW_MAX_MS``; not an
                           integer -> 400); ``public, max-age=60``: shows request coalescing.
* ``GET /api/stats``      ``{"requests": {path: n}, "requests_by_url": {path?query: n},
                           "dropped": n}`` for this origin process (see state.py); ``no-store``.
* ``GET /api/private``    ``Cache-Control: private`` and a fresh ``Set-Cookie: session=...``.
* ``/api/echo``           GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS: echoes method, path,
                           query (name -> list of values), the ``ECHO_HEADERS`` and any
                           ``X-*`` header (values of repeated fields joined with ", ";
                           Authorization and Proxy-Authorization only as "[redacted]"), and
                           the body's length and SHA-256 (streamed, never buffered);
                           ``no-store``.
* ``GET /api/status?code=N[&max_age=M][&cc=VALUE]``  status N (200-599, else 400), a JSON
                           body except for 204 and 304; Cache-Control is ``cc`` verbatim
                           (printable ASCII only) or ``public, max-age=M``; neither -> none.
* ``GET /api/vary``       greeting chosen by Accept-Language (en, fr, de, es, ja; default
                           en); ``Vary: Accept-Language``, Content-Language, ``public,
                           max-age=60``.
* ``GET /api/gzip``       a text body, gzip-encoded when Accept-Encoding allows it;
                           ``Vary: Accept-Encoding``, ``public, max-age=60``.
* ``GET /metrics``        Prometheus text: this origin's requests (``geoedge_origin_server_
                           requests_total``, the ``/api/stats`` count), the ones not counted
                           per URL (``..._uncounted_total``) and its health; ``no-store``.
* ``GET /healthz``        200 "ok" or, after ``POST /healthz/down``, 503 "down" until
                           ``POST /healthz/up``; all ``no-store``. The toggles are
                           deliberately unauthenticated: this is a demo/test origin -- never
                           expose it beyond a test network.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from aiohttp import web

from origin.negotiate import accepts_gzip, pick_language
from origin.state import STATE

__all__ = ["ECHO_HEADERS", "SLOW_MAX_MS", "add_api_routes"]

SLOW_MAX_MS = 10_000
NO_STORE = "no-store"
ECHO_HEADERS = (
    "Host", "User-Agent", "Accept", "Accept-Encoding", "Accept-Language", "Content-Type",
    "Content-Length", "Content-Encoding", "Transfer-Encoding", "Expect", "Cookie",
    "Cache-Control", "Pragma", "If-Match", "If-None-Match", "If-Modified-Since",
    "If-Unmodified-Since", "If-Range", "Range", "Via", "Forwarded", "Connection", "Keep-Alive",
    "TE", "Trailer", "Upgrade", "Proxy-Connection",
)
_ECHOED = frozenset(h.lower() for h in ECHO_HEADERS)
_REDACTED = frozenset({"authorization", "proxy-authorization"})
_INT = re.compile(r"-?[0-9]{1,9}")
GREETINGS = {"en": "hello", "fr": "bonjour", "de": "hallo", "es": "hola", "ja": "konnichiwa"}
GZIP_TEXT = "geoedge origin says hello. " * 40 + "\n"


def _json(request: web.Request, data: dict[str, object], cache_control: str | None,
          status: int = 200) -> web.Response:
    body = {"origin": request.app[STATE].name, **data}
    response = web.json_response(body, status=status)
    if cache_control is not None:
        response.headers["Cache-Control"] = cache_control
    return response


def _bad_request(request: web.Request, message: str) -> web.Response:
    return _json(request, {"error": message}, NO_STORE, status=400)


def _int_param(request: web.Request, name: str) -> int | None:
    """The query parameter as an int; None if absent; raises ValueError if not an integer."""
    text = request.query.get(name)
    if text is None:
        return None
    if not _INT.fullmatch(text):
        raise ValueError(f"{name} must be an integer, got {text!r}")
    return int(text)


async def time_now(request: web.Request) -> web.Response:
    now = time.time()
    iso = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
    return _json(request, {"time": now, "iso": iso.replace("+00:00", "Z")},
                 "public, max-age=2")


async def slow(request: web.Request) -> web.Response:
    try:
        ms = _int_param(request, "ms")
    except ValueError as exc:
        return _bad_request(request, str(exc))
    ms = min(max(ms or 0, 0), SLOW_MAX_MS)
    await asyncio.sleep(ms / 1000)
    return _json(request, {"slept_ms": ms, "time": time.time()}, "public, max-age=60")


async def stats(request: web.Request) -> web.Response:
    return _json(request, request.app[STATE].stats.snapshot(), NO_STORE)


async def private(request: web.Request) -> web.Response:
    response = _json(request, {"user": "demo"}, "private")
    response.set_cookie("session", secrets.token_hex(16), path="/", httponly=True,
                        samesite="Lax")
    return response


async def echo(request: web.Request) -> web.Response:
    digest = hashlib.sha256()
    length = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        digest.update(chunk)
        length += len(chunk)
    headers: dict[str, str] = {}
    for name in request.headers:
        key = name.lower()
        if key in _REDACTED:
            headers[key] = "[redacted]"
        elif key in _ECHOED or key.startswith("x-"):
            headers[key] = ", ".join(request.headers.getall(name))
    query: dict[str, list[str]] = {}
    for key, value in request.query.items():
        query.setdefault(key, []).append(value)
    return _json(request, {
        "method": request.method, "path": request.path, "query": query, "headers": headers,
        "body_length": length, "body_sha256": digest.hexdigest(),
    }, NO_STORE)


async def status(request: web.Request) -> web.Response:
    try:
        code = _int_param(request, "code")
        max_age = _int_param(request, "max_age")
    except ValueError as exc:
        return _bad_request(request, str(exc))
    if code is None or not 200 <= code <= 599:
        return _bad_request(request, "code must be an integer from 200 to 599")
    cc = request.query.get("cc")
    if cc is not None and not (cc and all(" " <= c <= "~" for c in cc)):
        return _bad_request(request, "cc must be printable ASCII")
    if cc is None and max_age is not None:
        if max_age < 0:
            return _bad_request(request, "max_age must not be negative")
        cc = f"public, max-age={max_age}"
    if code in (204, 304):
        response = web.Response(status=code)
        if cc is not None:
            response.headers["Cache-Control"] = cc
        return response
    return _json(request, {"status": code}, cc, status=code)


async def vary(request: web.Request) -> web.Response:
    lang = pick_language(request.headers.get("Accept-Language"), tuple(GREETINGS), "en")
    response = _json(request, {"language": lang, "greeting": GREETINGS[lang]},
                     "public, max-age=60")
    response.headers["Vary"] = "Accept-Language"
    response.headers["Content-Language"] = lang
    return response


async def gzipped(request: web.Request) -> web.Response:
    body = GZIP_TEXT.encode()
    headers = {"Vary": "Accept-Encoding", "Cache-Control": "public, max-age=60"}
    if accepts_gzip(request.headers.get("Accept-Encoding")):
        body = gzip.compress(body, mtime=0)
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=body, content_type="text/plain", charset="utf-8", headers=headers)


async def healthz(request: web.Request) -> web.Response:
    healthy = request.app[STATE].healthy
    return web.Response(status=200 if healthy else 503, text="ok\n" if healthy else "down\n",
                        headers={"Cache-Control": NO_STORE})


def _set_health(up: bool) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        request.app[STATE].healthy = up
        return _json(request, {"healthy": up}, NO_STORE)

    return handler


async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    label = f'origin="{_label(state.name)}"'
    total = sum(state.stats.by_path.values()) + state.stats.dropped
    lines = [
        "# HELP geoedge_origin_server_requests_total Requests this origin received",
        "# TYPE geoedge_origin_server_requests_total counter",
        f"geoedge_origin_server_requests_total{{{label}}} {total}",
        "# HELP geoedge_origin_server_uncounted_total Requests past the per-URL bound",
        "# TYPE geoedge_origin_server_uncounted_total counter",
        f"geoedge_origin_server_uncounted_total{{{label}}} {state.stats.dropped}",
        "# HELP geoedge_origin_server_healthy 1 while /healthz answers 200",
        "# TYPE geoedge_origin_server_healthy gauge",
        f"geoedge_origin_server_healthy{{{label}}} {1 if state.healthy else 0}",
    ]
    return web.Response(text="\n".join(lines) + "\n", headers={"Cache-Control": NO_STORE},
                        content_type="text/plain", charset="utf-8")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def add_api_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/metrics", metrics)
    router.add_get("/api/time", time_now)
    router.add_get("/api/slow", slow)
    router.add_get("/api/stats", stats)
    router.add_get("/api/private", private)
    router.add_get("/api/echo", echo)
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        router.add_route(method, "/api/echo", echo)
    router.add_get("/api/status", status)
    router.add_get("/api/vary", vary)
    router.add_get("/api/gzip", gzipped)
    router.add_get("/healthz", healthz)
    router.add_post("/healthz/down", _set_health(False))
    router.add_post("/healthz/up", _set_health(True))
