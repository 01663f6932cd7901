"""Compressed variants of stored entries (the rules are edge.policy.compress's).

- When an entry is made (a fill from the origin, a 304 that freshens it, a copy from the
  region's tier), ``variants`` compresses its body once per coding that
  ``codings_for`` allows and returns the variants to deliver, identity included, each a
  complete ``Entry`` (own headers, ETag, pre-serialised head, body), keyed by coding. They
  live inside the stored entry (``Entry.encoded``), so they are looked up, counted, evicted
  and purged with it; the tier keeps only the identity body. A freshened entry reuses the
  compressed bodies of the one it replaces (the 304 said the body is unchanged).
- A coding whose output is not smaller than the identity body is not kept.
- ``pick``: the variant a request gets (``choose`` over its Accept-Encoding, cached per
  distinct header value, so a hit costs one dictionary look-up).
"""

from __future__ import annotations

import dataclasses
import zlib

import brotli

from edge.httpserver import Request
from edge.policy.compress import IDENTITY, choose, codings_for, encoded_headers
from edge.policy.freshness import StoredMeta
from edge.policy.headers import Headers, split_list
from edge.respond import serialize_stored_head, with_date
from edge.store import Entry
from geoconfig.compressconfig import CompressionSettings

__all__ = ["Compressor"]

CHOICE_CACHE = 1024  # distinct Accept-Encoding values remembered


class Compressor:
    def __init__(self, settings: CompressionSettings, via: str) -> None:
        self.settings = settings
        self.via = via
        self._choices: dict[tuple[str | None, tuple[str, ...]], str] = {}

    def compress(self, coding: str, body: bytes) -> bytes:
        if coding == "br":
            return bytes(brotli.compress(body, quality=self.settings.brotli_quality))
        # gzip framing with a zero mtime: the same body always gives the same bytes
        c = zlib.compressobj(self.settings.gzip_level, zlib.DEFLATED, 31)
        return c.compress(body) + c.flush()

    def variants(self, key: str, meta: StoredMeta, body: bytes, lifetime: float,
                 initial_age: float, keep_until: float,
                 reuse: dict[str, Entry] | None = None) -> dict[str, Entry] | None:
        """The deliverable variants of a stored response, or None when it is not
        compressed; ``reuse``: the variants of the entry this one freshens."""
        codings = codings_for(meta.status, meta.headers, len(body), self.settings)
        if not codings:
            return None
        out: dict[str, Entry] = {}
        for coding in codings:
            old = reuse.get(coding) if reuse else None
            data = old.body if old is not None else self.compress(coding, body)
            if len(data) < len(body):
                out[coding] = self._variant(key, meta, coding, data, lifetime, initial_age,
                                            keep_until)
        if not out:
            return None
        out[IDENTITY] = self._variant(key, meta, IDENTITY, body, lifetime, initial_age,
                                      keep_until)
        return out

    def _variant(self, key: str, meta: StoredMeta, coding: str, body: bytes, lifetime: float,
                 initial_age: float, keep_until: float) -> Entry:
        headers = encoded_headers(meta.headers, coding)
        variant_meta = dataclasses.replace(meta, headers=headers)
        head = serialize_stored_head(meta.status, with_date(headers, meta.response_time),
                                     self.via, len(body))
        return Entry(key, meta.vary_key, (), variant_meta, body, head, lifetime, initial_age,
                     keep_until)

    def pick(self, request: Request, entry: Entry) -> Entry:
        """The variant of ``entry`` this request gets (the entry itself when uncompressed)."""
        encoded = entry.encoded
        if encoded is None:
            return entry
        return encoded[self.coding(request, tuple(encoded))]

    def coding(self, request: Request, available: tuple[str, ...]) -> str:
        no_transform = request.flagged and _no_transform(request.header("cache-control"))
        if no_transform:
            return IDENTITY
        ae = request.header("accept-encoding")
        k = (ae, available)
        got = self._choices.get(k)
        if got is None:
            if len(self._choices) >= CHOICE_CACHE:
                self._choices.clear()
            got = self._choices[k] = choose(ae, available)
        return got

    def own_head(self, request: Request, encoded: dict[str, Entry] | None, status: int,
                 headers: Headers) -> bytes | None:
        """The filling client's head (the origin's headers, Set-Cookie included) for the
        variant it gets; None when the entry is not compressed."""
        if not encoded:
            return None
        coding = self.coding(request, tuple(encoded))
        body = encoded[coding].body
        return serialize_stored_head(status, encoded_headers(headers, coding), self.via,
                                     len(body))


def _no_transform(cache_control: str | None) -> bool:
    return cache_control is not None and any(
        m.split("=", 1)[0].strip().lower() == "no-transform" for m in split_list(cache_control))

