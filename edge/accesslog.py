"""The edge's access log: one line per response, combined log format or JSON lines.

Rules:

- ``[edge] access_log`` names the file ("" = no access log; ``{edge}`` in it is replaced by
  the edge's name, so one topology serves every edge); ``access_log_format`` is
  ``"combined"`` (Apache/nginx combined, then ``key=value`` fields) or ``"json"`` (one JSON
  object per line).
- Every line has the client address, time, request line, status, bytes sent (head and body,
  as nginx's ``$bytes_sent``), Referer, User-Agent, the cache outcome (:func:`outcome`), the
  edge and its region, the origin that answered (``-`` when none did), the time to first byte
  and the total time in seconds (from the request being handed to the handler), the Host and
  this edge's Cache-Status member.
- The cache outcome is a function of this edge's Cache-Status member (RFC 9211) and the
  status: ``hit`` (fresh), ``stale`` (served stale: stale-while-revalidate, stale-if-error,
  origin unreachable), ``revalidated`` (a 304 freshened it), ``miss`` (fetched: not stored,
  expired, collapsed into another fill), ``shared`` (the region's Redis tier had it),
  ``pass`` (the cache was not used: methods, request no-store, hit-for-miss), ``error``
  (502/504 from a failed fill) and ``-`` for the edge's own answers (health, admin).
- Writes are buffered: lines are appended in memory and written every ``FLUSH_INTERVAL``
  seconds, or sooner once ``FLUSH_BYTES`` are waiting, by one writer thread; the event loop
  never writes to the file. While a write is slow, at most ``MAX_PENDING`` bytes wait;
  lines past that are dropped and counted (one warning per episode), never blocking serving.
- ``reopen()`` (the edge calls it on SIGUSR1) writes what is buffered to the old file and
  reopens the path, for log rotation (``mv access.log access.log.1; kill -USR1 PID``).
- ``close()`` writes everything buffered and closes the file.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable
from json.encoder import encode_basestring_ascii as _js  # the C encoder
from typing import Any

from edge.httpserver import Request, ResponseWriter

log = logging.getLogger("geoedge.edge.access")

FORMATS = ("combined", "json")
FLUSH_INTERVAL = 1.0
FLUSH_BYTES = 64 * 1024
MAX_PENDING = 16 * 1024 * 1024


def _params(member: str) -> tuple[str, dict[str, str]]:
    """(cache name, parameters) of one Cache-Status member (bare keys map to "1")."""
    name, *rest = (part.strip() for part in member.split(";"))
    params: dict[str, str] = {}
    for part in rest:
        key, _, value = part.partition("=")
        params[key.strip()] = value.strip().strip('"') if value else "1"
    return name, params


def outcome(cache_status: str, status: int) -> str:
    """The cache outcome of a response (see the module rules) from the Cache-Status members
    the edge sent (the tier's, then this edge's own: the last one)."""
    if not cache_status:
        return "-"
    members = [m for m in cache_status.split(",") if m.strip()]
    _, p = _params(members[-1])
    detail = p.get("detail", "")
    if "hit" in p:
        return "stale" if int(p.get("ttl", "0") or 0) < 0 else "hit"
    fwd, fwd_status = p.get("fwd", ""), p.get("fwd-status", "")
    if status in (502, 504) and fwd_status != str(status):  # ours, not the origin's
        return "error"
    if detail in ("origin-unreachable", "stale-if-error"):
        return "stale"
    if fwd_status == "304":
        return "revalidated"
    if fwd in ("bypass", "method") or detail == "hit-for-miss":
        return "pass"
    if len(members) > 1 and "hit" in _params(members[-2])[1]:
        return "shared"
    return "miss"


def _status_of(raw: bytes) -> int:
    """The status code of a serialised response (``HTTP/1.1 200 OK...``)."""
    try:
        return int(raw[9:12])
    except ValueError:
        return 0


def _member_of(raw: bytes) -> str:
    """The Cache-Status value of a serialised response head ("" when it has none)."""
    head_end = raw.find(b"\r\n\r\n")
    at = raw.rfind(b"\r\nCache-Status: ", 0, head_end + 2)  # ours is the last field
    if at < 0 or head_end < 0:
        return ""
    end = raw.find(b"\r\n", at + 16)
    return raw[at + 16:end].decode("latin-1")


_PLAIN = frozenset(chr(c) for c in range(0x20, 0x7F)) - {'"', "\\"}


def _jn(value: str | None) -> str:
    """A JSON string, or null for None and ""."""
    return _js(value) if value else "null"


def _plain(value: str) -> bool:
    """Nothing to escape in a combined-format field: ``_PLAIN.issuperset(value)``, in four C
    scans."""
    return value.isascii() and value.isprintable() and '"' not in value and "\\" not in value


def _q(value: str | None) -> str:
    """A quoted combined-format field ("-" when absent), quotes and controls escaped."""
    if not value:
        return '"-"'
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'  # the usual case (_plain, inline)
    text = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if " " <= c < "\x7f" else f"\\x{ord(c):02x}" for c in text) + '"'


class AccessLog:
    """Formats and buffers the lines; one writer thread writes them (see the module rules)."""

    def __init__(self, path: str, fmt: str, edge: str, region: str,
                 clock: Callable[[], float] = time.time) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown access log format {fmt!r} (one of {FORMATS})")
        self.path = path
        self.fmt = fmt
        self.edge = edge
        self.region = region
        self.clock = clock
        self.dropped = 0
        self.written = 0
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._pending = 0  # bytes handed to the writer thread, not yet written
        self._lock = threading.Lock()  # guards _pending (the writer thread lowers it)
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="accesslog")
        self._fd = self._open()
        self._timer: asyncio.TimerHandle | None = None
        self._second = -1
        self._stamp = ""

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    # -- recording ----------------------------------------------------------------------------
    def record(self, request: Request, status: int, sent: int, cache_status: str,
               origin: str, ttfb: float, duration: float, cache: str = "") -> None:
        """One line; ``cache``: the outcome when the caller knows it (else from
        ``cache_status``)."""
        now = self.clock()
        cache = cache or outcome(cache_status, status)
        if self.fmt == "json":  # by hand: json.dumps of a dict costs twice as much
            line = (f'{{"time":"{self._time(now, iso=True)}","client":{_js(request.client_ip)},'
                    f'"method":{_js(request.method)},"target":{_js(request.target)},'
                    f'"protocol":"HTTP/{request.version}","host":{_js(request.host)},'
                    f'"status":{status},"bytes":{sent},'
                    f'"referer":{_jn(request.header("referer"))},'
                    f'"user_agent":{_jn(request.header("user-agent"))},"cache":"{cache}",'
                    f'"cache_status":{_jn(cache_status)},"edge":{_js(self.edge)},'
                    f'"region":{_js(self.region)},"origin":{_jn(origin)},'
                    f'"ttfb":{round(ttfb, 6)},"time_taken":{round(duration, 6)}}}')
        else:
            line = (f"{request.client_ip} - - [{self._time(now)}] "
                    f"{_q(f'{request.method} {request.target} HTTP/{request.version}')} "
                    f"{status} {sent} {_q(request.header('referer'))} "
                    f"{_q(request.header('user-agent'))} cache={cache} edge={self.edge} "
                    f"region={self.region} origin={origin or '-'} ttfb={ttfb:.6f} "
                    f"time={duration:.6f} host={_q(request.host)} "
                    f"cache_status={_q(cache_status)}")
        self._add((line + "\n").encode("utf-8", "replace"))

    def hit(self, request: Request, status: int, sent: int, cache_status: str,
            took: float) -> None:
        """``record(request, status, sent, cache_status, "", took, took, "hit")``: the same
        line, made with one escaping check for all its quoted fields (the fast path's)."""
        ref = request.header("referer") or ""
        agent = request.header("user-agent") or ""
        line = f"{request.method} {request.target} HTTP/{request.version}"
        if self.fmt != "combined" or not _plain(line + ref + agent + request.host
                                                + cache_status):
            self.record(request, status, sent, cache_status, "", took, took, "hit")
            return
        t = f"{took:.6f}"
        self._add((f'{request.client_ip} - - [{self._time(self.clock())}] "{line}" {status} '
                   f'{sent} "{ref or "-"}" "{agent or "-"}" cache=hit edge={self.edge} '
                   f"region={self.region} origin=- ttfb={t} time={t} "
                   f'host="{request.host or "-"}" cache_status="{cache_status or "-"}"\n'
                   ).encode("utf-8", "replace"))

    def _time(self, now: float, iso: bool = False) -> str:
        if iso:
            return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + \
                f".{int(now * 1000) % 1000:03d}Z"
        second = int(now)
        if second != self._second:  # one strftime per second, not per line
            self._second, self._stamp = second, time.strftime(
                "%d/%b/%Y:%H:%M:%S +0000", time.gmtime(second))
        return self._stamp

    def _add(self, data: bytes) -> None:
        if self._pending + self._buffered + len(data) > MAX_PENDING:
            if not self.dropped:
                log.warning("access log %s: writes are not keeping up; dropping lines",
                            self.path)
            self.dropped += 1
            return
        if self.dropped and not self._pending:
            log.warning("access log %s: %d lines dropped while writes were slow", self.path,
                        self.dropped)
            self.dropped = 0
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered >= FLUSH_BYTES:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_INTERVAL, self.flush)

    # -- writing (in the writer thread) ------------------------------------------------------
    def flush(self) -> concurrent.futures.Future[None] | None:
        """Hand what is buffered to the writer thread; returns its future (None: nothing)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._buffer:
            return None
        data, size = b"".join(self._buffer), self._buffered
        self._buffer, self._buffered = [], 0
        with self._lock:
            self._pending += size
        future = self._pool.submit(self._write, data)
        future.add_done_callback(lambda _f: self._done(size))
        return future

    def _done(self, size: int) -> None:
        with self._lock:
            self._pending -= size

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
            self.written += len(data)
        except OSError as exc:
            log.warning("access log %s: write failed: %s", self.path, exc)

    def _reopen(self) -> None:
        try:
            fd = self._open()
        except OSError as exc:
            log.warning("access log %s: cannot reopen (%s); still writing the old file",
                        self.path, exc)
            return
        old, self._fd = self._fd, fd
        os.close(old)
        log.info("access log %s reopened", self.path)

    def reopen(self) -> concurrent.futures.Future[None]:
        """Write what is buffered to the current file, then reopen the path (SIGUSR1)."""
        self.flush()
        return self._pool.submit(self._reopen)

    def close(self) -> None:
        """Write everything buffered (waits for the writer thread) and close the file."""
        self.flush()
        self._pool.shutdown(wait=True)
        os.close(self._fd)


class LoggedHandler:
    """A Handler (edge/httpserver.py) that answers with ``app`` and logs each response."""

    def __init__(self, app: Any, access: AccessLog) -> None:
        self.app = app
        self.access = access
        self.flag_headers = app.flag_headers

    def fast(self, request: Request) -> bytes | None:
        began = time.perf_counter()
        raw = self.app.fast(request)
        if raw is not None:
            took = time.perf_counter() - began
            self.access.hit(request, _status_of(raw), len(raw), _member_of(raw), took)
        return raw

    def fast_parts(self, request: Request) -> tuple[bytes, bytes] | None:
        """``fast()`` as head and body (the app's ``fast_parts``), logged the same."""
        began = time.perf_counter()
        parts = self.app.fast_parts(request)
        if parts is not None:
            took = time.perf_counter() - began
            head = parts[0]
            self.access.hit(request, _status_of(head), len(head) + len(parts[1]),
                            _member_of(head), took)
        return parts

    async def handle(self, request: Request, writer: ResponseWriter) -> None:
        began = time.perf_counter()
        status = 0  # nothing sent: 499 when the client went away, else the server's 500
        try:
            await self.app.handle(request, writer)
        except ConnectionError:
            status = 499
            raise
        except BaseException:
            status = 500
            raise
        finally:
            first = getattr(writer, "first_byte", 0.0)
            ended = time.perf_counter()
            if writer.started or not status:
                status = writer.status
            self.access.record(request, status, getattr(writer, "bytes_sent", 0),
                               request.cache_status, request.origin,
                               (first or ended) - began, ended - began)


def open_access_log(path: str, fmt: str, edge: str, region: str,
                    clock: Callable[[], float] = time.time) -> AccessLog | None:
    """The edge's access log from its settings (None when ``path`` is empty); OSError when
    the file cannot be opened."""
    if not path:
        return None
    return AccessLog(path.replace("{edge}", edge), fmt, edge, region, clock)


__all__ = ["FORMATS", "AccessLog", "LoggedHandler", "open_access_log", "outcome"]
