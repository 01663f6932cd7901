"""Compression of stored responses: which to compress, their headers, which variant to send.

Rules (RFC 9110 §8.4, §12.5.3; what nginx's gzip module, Caddy's encode and the CDNs do):

- ``codings_for``: a stored response is compressed (once, when it is stored) only when all of
  these hold, else it is stored and served as it came:
  - compression is enabled and the status is 200;
  - the origin sent it unencoded: no Content-Encoding, or only ``identity`` (never
    compressed twice), and it is not a part (no Content-Range);
  - it does not say ``Cache-Control: no-transform`` (RFC 9111 §5.2.2.6);
  - its media type is listed (``type/*`` lists a family; a response without Content-Type
    is not compressed);
  - its body is between ``min_bytes`` and ``max_bytes``.
- ``encoded_headers``: a compressed variant has ``Content-Encoding: <coding>``; its ETag is
  the stored one with ``-<coding>`` inside the quotes (``"abc"`` -> ``"abc-br"``, ``W/"abc"``
  -> ``W/"abc-br"``), so a strong validator stays strong (If-Range and Range work on the
  compressed bytes, which are stored and so always the same) and never matches the identity
  representation; a malformed ETag is dropped. ``Vary: Accept-Encoding`` is added to every
  variant, identity included, unless Vary already lists it; Content-Length and Content-MD5
  describe the identity body and are dropped.
- ``choose``: the variant for a request, by its Accept-Encoding with q-values honoured: the
  available coding with the highest q above 0 (``*`` gives its q to codings not listed;
  ``x-gzip`` is ``gzip``); ties go to the edge's order of preference (``codings``).
  ``identity`` wins when listed with a higher q than every coding, when no coding is
  acceptable, when Accept-Encoding is absent (RFC 9110 §12.5.3: any coding is acceptable
  then, but a client that does not ask may not decode it: nginx and the CDNs send identity),
  and when the request says ``Cache-Control: no-transform``. Identity is sent even when the
  client refuses it (``identity;q=0``) and nothing else matches: the RFC allows that rather
  than a 406, and it is what nginx does.
"""

from __future__ import annotations

from collections.abc import Iterable

from edge.policy.headers import Headers, get_all, get_first, split_list, weighted_members
from geoconfig.compressconfig import CompressionSettings

__all__ = ["IDENTITY", "choose", "codings_for", "encoded_headers", "media_type_listed",
           "parse_accept_encoding", "suffixed_etag"]

IDENTITY = "identity"
_ALIASES = {"x-gzip": "gzip"}
_DROPPED = frozenset({"content-length", "content-md5", "content-encoding", "etag"})


def media_type_listed(content_type: str | None, types: Iterable[str]) -> bool:
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    family = media.split("/", 1)[0] + "/*"
    return any(t in (media, family) for t in types)


def _has_token(headers: Headers, name: str, token: str) -> bool:
    return any(m.split("=", 1)[0].strip().lower() == token
               for v in get_all(headers, name) for m in split_list(v))


def codings_for(status: int, headers: Headers, body_length: int,
                settings: CompressionSettings) -> tuple[str, ...]:
    """The codings to store this response in besides identity; () for none."""
    if not settings.enabled or status != 200 or not settings.codings:
        return ()
    encodings = [m.lower() for v in get_all(headers, "content-encoding") for m in split_list(v)]
    if any(e != IDENTITY for e in encodings) or get_first(headers, "content-range"):
        return ()
    if _has_token(headers, "cache-control", "no-transform"):
        return ()
    if not settings.min_bytes <= body_length <= settings.max_bytes:
        return ()
    if not media_type_listed(get_first(headers, "content-type"), settings.types):
        return ()
    return settings.codings


def suffixed_etag(etag: str, coding: str) -> str | None:
    """``"abc"`` -> ``"abc-gzip"``; None for a malformed entity-tag."""
    weak = etag.startswith("W/")
    tag = etag[2:] if weak else etag
    if len(tag) < 2 or tag[0] != '"' or tag[-1] != '"' or '"' in tag[1:-1]:
        return None
    return f'{"W/" if weak else ""}"{tag[1:-1]}-{coding}"'


def encoded_headers(headers: Headers, coding: str) -> Headers:
    """The stored headers of the ``coding`` variant (``identity``: Vary added only)."""
    if coding == IDENTITY:
        out = list(headers)
    else:
        out = [(n, v) for n, v in headers if n.lower() not in _DROPPED]
        out.append(("Content-Encoding", coding))
        etag = get_first(headers, "etag")
        tagged = suffixed_etag(etag.strip(), coding) if etag is not None else None
        if tagged is not None:
            out.append(("ETag", tagged))
    if not _has_token(headers, "vary", "accept-encoding"):
        out.append(("Vary", "Accept-Encoding"))
    return tuple(out)


def parse_accept_encoding(value: str) -> dict[str, float]:
    """Coding (lower case, aliases resolved) -> q; a bad or out-of-range q counts as 0."""
    out: dict[str, float] = {}
    for name, q in weighted_members(value):
        name = _ALIASES.get(name, name)
        out[name] = max(q, out[name]) if name in out else q
    return out


def choose(accept_encoding: str | None, available: Iterable[str],
           no_transform: bool = False) -> str:
    """The coding to send: one of ``available`` (in preference order) or ``identity``."""
    if accept_encoding is None or no_transform:
        return IDENTITY
    q = parse_accept_encoding(accept_encoding)
    star = q.get("*")
    best, best_q = IDENTITY, 0.0
    for coding in available:
        if coding == IDENTITY:
            continue
        weight = q.get(coding, star if star is not None else 0.0)
        if weight > best_q:
            best, best_q = coding, weight
    if best != IDENTITY and IDENTITY in q and q[IDENTITY] > best_q:
        return IDENTITY
    return best
