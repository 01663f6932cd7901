"""Talking to the origin and streaming its answers: the header rules of a reverse proxy.

Rules (RFC 9110 §7.6, and nginx's proxy module):

- Request headers forwarded: all but hop-by-hop ones (and those listed in Connection) and
  ``Expect`` (already answered); ``Host`` is the normalised authority that was keyed
  (edge.policy.target); ``Via`` and ``X-Forwarded-For`` are appended to;
  ``X-Forwarded-Proto`` is set.
- Framing is never forwarded: the client's Content-Length and Transfer-Encoding are dropped
  and the upstream client frames the body that is actually sent (none for GET and HEAD, whose
  body the edge discards: a cached answer must not depend on content the key does not see).
- Unkeyed forwarding headers (``FORWARDING``: X-Forwarded-Host, Forwarded, X-Original-URL,
  X-Rewrite-URL and the like) are removed unless the edge is configured to trust them, and
  then they are part of the cache key (``trusted_key_suffix``): an origin that builds links
  or routes from them cannot be made to answer one client's value into everyone's cache.
- For a cache fill, the client's own conditionals and Range are dropped: the edge asks for the
  whole current representation and answers the client's conditionals itself.
- The headers a response was selected by (Vary) are those the origin saw: the forwarded set.
  For fills, Accept-Encoding and Accept-Language are rewritten to their normal forms
  (edge.policy.vary) before forwarding, so browsers that say the same thing share a variant.
- Streaming: the origin's status and headers (minus hop-by-hop) are sent with our Cache-Status
  and Via, then the body chunk by chunk as it arrives; the response is always released.
- A client conditional is answered 304 when If-None-Match matches the stored ETag (weak
  comparison, RFC 9110 §13.1.2), or, without If-None-Match, when Last-Modified is not later
  than If-Modified-Since (§13.1.3).
"""

from __future__ import annotations

from edge.httpserver import Request, ResponseWriter
from edge.metrics import Metrics
from edge.policy.cachestatus import append_cache_status
from edge.policy.freshness import StoredMeta
from edge.policy.headers import get_all, get_first, split_list
from edge.policy.hopbyhop import strip_hop_by_hop
from edge.policy.validation import etag_weak_match
from edge.policy.vary import normalise_accept_encoding, normalise_accept_language
from edge.respond import client_headers
from edge.upstream import UpstreamError, UpstreamResponse
from geoconfig.httpdate import parse_http_date

CLIENT_CONDITIONALS = frozenset({"if-none-match", "if-modified-since", "if-match",
                                 "if-unmodified-since", "if-range", "range"})
NOT_FORWARDED = frozenset({"expect", "via", "x-forwarded-for", "x-forwarded-proto",
                           "content-length", "transfer-encoding", "host"})
# request headers that some origins and frameworks trust to rewrite the URL, host or method
FORWARDING = frozenset({"forwarded", "x-forwarded-host", "x-forwarded-server",
                        "x-forwarded-port", "x-forwarded-scheme", "x-forwarded-prefix",
                        "x-forwarded-ssl", "x-host", "x-original-host", "x-original-url",
                        "x-rewrite-url", "x-http-method-override", "x-http-method",
                        "x-method-override"})
HEADERS_304 = frozenset({"cache-control", "content-location", "date", "etag", "expires", "vary",
                         "last-modified"})
CHUNK = 64 * 1024


def forward_headers(request: Request, via: str, for_cache: bool,
                    trusted: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """The request headers the origin gets; ``trusted``: lower-case FORWARDING names kept."""
    headers = strip_hop_by_hop(tuple(request.headers))
    drop = NOT_FORWARDED | (FORWARDING - trusted)
    if for_cache:
        drop |= CLIENT_CONDITIONALS
    out = [(n, v) for n, v in headers if n.lower() not in drop]
    if for_cache:  # few values for the origin to vary on (edge.policy.vary)
        out = _normalised(out)
    out.insert(0, ("Host", request.host))  # the normalised authority that was keyed
    prior_via = get_all(headers, "via")
    out.append(("Via", ", ".join([*prior_via, via])))
    prior_xff = get_all(headers, "x-forwarded-for")
    out.append(("X-Forwarded-For", ", ".join([*prior_xff, request.client_ip])))
    out.append(("X-Forwarded-Proto", request.scheme))
    if "forwarded" not in trusted:  # RFC 7239: ours alone (a trusted one is kept as sent)
        node = f'"[{request.client_ip}]"' if ":" in request.client_ip else request.client_ip
        out.append(("Forwarded", f'for={node};proto={request.scheme}'))
    return out


def _normalised(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name, rewrite in (("Accept-Encoding", normalise_accept_encoding),
                          ("Accept-Language", normalise_accept_language)):
        lower = name.lower()
        lines = [v for n, v in headers if n.lower() == lower]
        if lines:
            headers = [(n, v) for n, v in headers if n.lower() != lower]
            value = rewrite(lines)
            if value is not None:
                out.append((name, value))
    return headers + out


def conditional_304(request: Request, meta: StoredMeta) -> list[tuple[str, str]] | None:
    """The headers of a 304 for this client's conditional request, or None to send it all."""
    if request.method not in ("GET", "HEAD") or not 200 <= meta.status < 300:
        return None
    inm = request.header("if-none-match")
    if inm is not None:
        etag = get_first(meta.headers, "etag")
        tags = [t.strip() for t in split_list(inm)]
        matched = etag is not None and any(t == "*" or etag_weak_match(t, etag) for t in tags)
    else:
        ims = parse_http_date(request.header("if-modified-since"))
        last = parse_http_date(get_first(meta.headers, "last-modified"))
        matched = ims is not None and last is not None and last <= ims
    if not matched:
        return None
    return [(n, v) for n, v in meta.headers if n.lower() in HEADERS_304 and n.lower() != "date"]


async def read_up_to(resp: UpstreamResponse, limit: int) -> tuple[list[bytes], bool]:
    """Read the body until it ends (True) or passes ``limit`` bytes (False, partly read)."""
    chunks: list[bytes] = []
    total = 0
    async for chunk in resp.iter_chunks(CHUNK):
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            return chunks, False
    resp.release()
    return chunks, True


async def stream_response(writer: ResponseWriter, resp: UpstreamResponse, member: str, via: str,
                          metrics: Metrics, prefix: list[bytes] | None = None, *,
                          date: str) -> None:
    """Send an origin response through without storing it (its Date kept, or ours added)."""
    try:
        origin_headers = tuple(resp.headers)
        headers = client_headers(origin_headers, via)
        upstream_status = get_all(origin_headers, "cache-status")
        headers = [(n, v) for n, v in headers if n.lower() != "cache-status"]
        headers.append(("Date", get_first(origin_headers, "date") or date))
        headers.append(("Cache-Status", append_cache_status(upstream_status, member)))
        writer.status = resp.status
        await writer.start(resp.status, headers, resp.content_length)
        sent = 0
        if writer.request.method != "HEAD":
            for chunk in prefix or ():
                await writer.write(chunk)
                sent += len(chunk)
            async for chunk in resp.iter_chunks(CHUNK):
                await writer.write(chunk)
                sent += len(chunk)
        await writer.finish()
        metrics.inc("bytes_sent", sent)
    except (ConnectionError, TimeoutError, OSError, UpstreamError):
        writer.abort()  # the client or the origin went away mid-body: cut the connection
    finally:
        resp.release()


def trusted_key_suffix(request: Request, trusted: tuple[str, ...]) -> str:
    """The part of the primary key that trusted forwarding headers add ("" when none is
    present): `` name=value`` per header, in configuration order. A normalised URL has no
    space, so ``key + " "`` is the prefix of exactly this URL's keyed variants."""
    parts = []
    for name in trusted:
        value = request.header(name)
        if value is not None:
            parts.append(f" {name}={value.strip()}")
    return "".join(parts)
