"""The static-content handler: virtual files, then files under the root; GET and HEAD only.

Rules:

* Lookup order: a virtual file at exactly the URL path (virtual.py), then the content root
  (store.py). Nothing found, or a refused path -> 404 ``text/plain``. Other methods never get
  here: the router answers 405 with ``Allow: GET, HEAD``.
* The status comes from ``conditional.select`` (pure): 200, 206, 304, 412 or 416.
* 200 and 206 carry ETag, Last-Modified, Content-Type, Content-Length, ``Accept-Ranges:
  bytes`` and the rule headers (Cache-Control, CDN-Cache-Control, Surrogate-Key); 206 adds
  ``Content-Range: bytes a-b/len``. HEAD gets the same headers as GET's 200, without a body
  (Range is ignored for HEAD, RFC 9110 §14.2).
* 304 carries what §15.4.5 asks for that a 200 would have had -- ETag, Cache-Control (and
  CDN-Cache-Control, Surrogate-Key) -- plus Last-Modified, which guides cache updates; Date is
  always added. No Content-Type, Content-Length or body. No Vary and no Expires, since the 200
  has neither.
* 412 and 416 are short text bodies with no caching headers (so no cache stores them); 416
  carries ``Content-Range: bytes */len``.
* Disk files are streamed in 256 KiB chunks read in a worker thread from the descriptor that
  was hashed; if the file turns out shorter than its fstat size, the connection is aborted
  rather than sending a body shorter than Content-Length.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time

from aiohttp import web

from geoconfig.httpdate import format_http_date
from origin.conditional import Conditions, Decision, Validators, select
from origin.headers import content_type, rule_headers
from origin.ranges import unsatisfied_content_range
from origin.state import STATE, OriginState
from origin.store import CHUNK, DiskFile, hash_fd, open_in_root

__all__ = ["not_found", "serve_content"]


def not_found() -> web.Response:
    return web.Response(status=404, text="not found\n")


def _validator_headers(state: OriginState, url_path: str, v: Validators) -> dict[str, str]:
    headers = {"ETag": v.etag, "Last-Modified": format_http_date(v.last_modified)}
    headers.update(rule_headers(state.settings.rules, url_path))
    return headers


def _plan(request: web.Request, state: OriginState, url_path: str, v: Validators,
          length: int) -> tuple[Decision, web.Response | None, dict[str, str]]:
    """The decision, a finished response if there is no body to send, and the 200/206 headers."""
    decision = select(request.method, Conditions.from_headers(request.headers), v, length,
                      time.time())
    if decision.status == 304:
        return decision, web.Response(status=304,
                                      headers=_validator_headers(state, url_path, v)), {}
    if decision.status == 412:
        return decision, web.Response(status=412, text="precondition failed\n"), {}
    if decision.status == 416:
        return decision, web.Response(
            status=416, text="range not satisfiable\n",
            headers={"Content-Range": unsatisfied_content_range(length)}), {}
    headers = _validator_headers(state, url_path, v)
    headers["Content-Type"] = content_type(state.types, url_path)
    headers["Accept-Ranges"] = "bytes"
    if decision.range is not None:
        headers["Content-Range"] = decision.range.content_range(length)
    return decision, None, headers


async def serve_content(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    memory = state.virtual.get(request.path)
    if memory is not None:
        v = Validators(memory.etag, memory.last_modified)
        decision, done, headers = _plan(request, state, memory.url_path, v, len(memory.data))
        if done is not None:
            return done
        body = memory.data
        if decision.range is not None:
            body = body[decision.range.start:decision.range.end + 1]
        return web.Response(status=decision.status, body=body, headers=headers)
    if state.root is None:
        return not_found()
    f = await asyncio.to_thread(open_in_root, state.root, request.path)
    if f is None:
        return not_found()
    try:
        return await _serve_disk(request, state, f)
    finally:
        os.close(f.fd)


async def _serve_disk(request: web.Request, state: OriginState,
                      f: DiskFile) -> web.StreamResponse:
    etag = state.etags.get(f)
    if etag is None:
        etag = await asyncio.to_thread(hash_fd, f.fd, f.size)
        state.etags.put(f, etag)
    decision, done, headers = _plan(request, state, f.url_path, Validators(etag, f.last_modified),
                                    f.size)
    if done is not None:
        return done
    start, end = (0, f.size - 1) if decision.range is None else (decision.range.start,
                                                                 decision.range.end)
    response = web.StreamResponse(status=decision.status, headers=headers)
    response.content_length = end - start + 1
    await response.prepare(request)
    if request.method != "HEAD":
        offset = start
        while offset <= end:
            chunk = await asyncio.to_thread(os.pread, f.fd, min(CHUNK, end + 1 - offset), offset)
            if not chunk:
                raise OSError(errno.EIO, f"{f.path} shrank while being sent")
            await response.write(chunk)
            offset += len(chunk)
    await response.write_eof()
    return response
