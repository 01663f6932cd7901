"""The per-application state of one origin, stored in the app under ``STATE``.

Rules:

* Everything mutable lives here, one instance per ``web.Application`` (no module globals), so
  several origins can run in one process (tests do).
* ``RequestStats`` counts every request that reaches the app, keyed by URL path and by path
  plus query, *except* requests for ``/api/stats`` and ``/metrics``. Counting happens when the
  request arrives (before the handler), so a slow request is counted while it is still in
  flight.
  Each map holds at most ``max_keys`` keys; requests for further keys are counted only in
  ``dropped`` (a bounded demo server must not grow without limit under a URL scan).
* ``healthy`` is what ``/healthz`` reports; ``POST /healthz/down`` and ``/healthz/up`` set it.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from geoconfig.cdnconfig import OriginSettings
from origin.store import EtagCache, MemoryFile

__all__ = ["STATE", "OriginState", "RequestStats"]


class RequestStats:
    def __init__(self, max_keys: int = 10_000) -> None:
        self._max = max_keys
        self.by_path: dict[str, int] = {}
        self.by_url: dict[str, int] = {}
        self.dropped = 0

    def _bump(self, counts: dict[str, int], key: str) -> None:
        if key in counts or len(counts) < self._max:
            counts[key] = counts.get(key, 0) + 1
        else:
            self.dropped += 1

    def hit(self, path: str, path_qs: str) -> None:
        self._bump(self.by_path, path)
        self._bump(self.by_url, path_qs)

    def snapshot(self) -> dict[str, object]:
        return {"requests": dict(self.by_path), "requests_by_url": dict(self.by_url),
                "dropped": self.dropped}


@dataclass
class OriginState:
    name: str
    settings: OriginSettings
    root: Path | None  # resolved content root; None serves only virtual files and the API
    types: mimetypes.MimeTypes
    etags: EtagCache = field(default_factory=EtagCache)
    stats: RequestStats = field(default_factory=RequestStats)
    virtual: dict[str, MemoryFile] = field(default_factory=dict)  # filled at start-up
    healthy: bool = True


STATE = web.AppKey("origin_state", OriginState)
