"""The query log (``[dns.querylog]``): JSON lines or dnstap, written by a thread of its own.

Rules:

- Encoding happens where the query is answered, in C (geodns/_obs.h: the UDP fast path's
  datagrams in C, the TCP and Python paths' through ``obs_note``), into a buffer of
  ``buffer_size`` bytes: one query in ``sample``. A full buffer is handed over as one chunk;
  the writer thread writes chunks in order, and every ``flush_interval`` seconds also takes
  the partly filled buffer and flushes the file. The server never waits for the disk.
- When more than ``max_pending`` chunks wait (the disk is slower than the queries), further
  chunks are dropped, their records counted in :attr:`QueryLog.dropped`
  (``geoedge_dns_querylog_records_total{result="dropped"}``); :attr:`written` counts the rest.
- JSON lines: one object per query: time (Unix seconds), client, port, proto, id, qname
  (presentation form), qtype, rcode (null: not answered), ecs ("ADDRESS/SOURCE" or null),
  size (response bytes), answer (first A/AAAA address or null). Appended to the file.
- dnstap: a Frame Streams file (content type ``protobuf:dnstap.Dnstap``): a START control
  frame, one data frame per query (a dnstap ``Message`` of type AUTH_RESPONSE with the query
  and response messages, client address and port, times; AUTH_QUERY without a response when
  none was sent), a STOP frame when closed. A stream cannot be appended to, so an existing
  file is renamed to ``PATH.1`` first. ``dnstap-read PATH`` reads it.
- ``reopen()`` (SIGUSR1, for log rotation): the writer closes the file (a dnstap one with its
  STOP frame) and opens the path again.
"""

from __future__ import annotations

import logging
import os
import queue
import struct
import threading
import time
from typing import Any, BinaryIO

from geoconfig.dnsobs import QueryLogSettings

log = logging.getLogger("geoedge.dns")
CONTENT_TYPE = b"protobuf:dnstap.Dnstap"
_U32 = struct.Struct("!I")
_STOP, _REOPEN = object(), object()


def fstrm_start(content_type: bytes = CONTENT_TYPE) -> bytes:
    """A Frame Streams START control frame with one content type."""
    control = _U32.pack(2) + _U32.pack(1) + _U32.pack(len(content_type)) + content_type
    return _U32.pack(0) + _U32.pack(len(control)) + control


def fstrm_stop() -> bytes:
    return _U32.pack(0) + _U32.pack(4) + _U32.pack(3)


class QueryLog:
    """The file and the writer thread; ``obs`` (the C capsule) is set by the server."""

    def __init__(self, settings: QueryLogSettings) -> None:
        self.settings = settings
        self.dnstap = settings.format == "dnstap"
        self.obs: Any = None
        self.take: Any = None  # _fastudp.obs_take
        self.written = 0
        self.dropped = 0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._file: BinaryIO | None = None
        self._thread: threading.Thread | None = None

    def c_settings(self, identity: bytes, version: bytes) -> tuple:
        """The ``log`` argument of ``_fastudp.obs_new``."""
        s = self.settings
        return (1 if self.dnstap else 0, s.sample, s.buffer_size, self.on_chunk, identity,
                version)

    def open(self) -> None:
        """Open the file (OSError when it cannot be); then :meth:`start` the writer."""
        path = self.settings.path
        if self.dnstap:
            if os.path.exists(path) and os.path.getsize(path) > 0:
                os.replace(path, path + ".1")
            f = open(path, "wb")  # noqa: SIM115 -- closed by close()
            f.write(fstrm_start())
        else:
            f = open(path, "ab")  # noqa: SIM115 -- closed by close()
        self._file = f

    def start(self, obs: Any, take: Any) -> None:
        self.obs, self.take = obs, take
        self._thread = threading.Thread(target=self._run, name="dns-querylog", daemon=True)
        self._thread.start()

    def on_chunk(self, data: bytes, records: int) -> None:
        """Called by C (holding the GIL) with a full buffer: queued, or dropped when the
        writer is too far behind."""
        if self._queue.qsize() >= self.settings.max_pending:
            self.dropped += records
            return
        self._queue.put((data, records))

    def reopen(self) -> None:
        self._queue.put(_REOPEN)

    def stop(self) -> None:
        """Write what is buffered, close the file and end the thread."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None
        self._close()
        self.obs = None  # the capsule holds on_chunk (self): break the cycle

    def _close(self) -> None:
        f, self._file = self._file, None
        if f is None:
            return
        try:
            if self.obs is not None:
                self._write(f, *self.take(self.obs))
            if self.dnstap:
                f.write(fstrm_stop())
        finally:
            f.close()

    def _write(self, f: BinaryIO, data: bytes, records: int) -> None:
        if data:
            f.write(data)
            self.written += records

    def _run(self) -> None:
        interval = self.settings.flush_interval
        flushed = time.monotonic()
        while True:
            try:
                item = self._queue.get(timeout=interval)
            except queue.Empty:
                item = None
            f = self._file
            try:
                if item is _STOP:
                    return
                if item is _REOPEN:
                    self._close()
                    self.open()
                    continue
                if f is None:  # the file could not be reopened: lost, and counted
                    if item is not None:
                        self.dropped += item[1]
                    continue
                if item is not None:
                    self._write(f, *item)
                if item is None or time.monotonic() - flushed >= interval:
                    self._write(f, *self.take(self.obs))
                    f.flush()
                    flushed = time.monotonic()
            except OSError as exc:  # a full disk: records lost, counted, logging goes on
                log.error("query log %s: %s", self.settings.path, exc.strerror or exc)
                if item is not None and item not in (_STOP, _REOPEN):
                    self.dropped += item[1]


__all__ = ["QueryLog", "fstrm_start", "fstrm_stop"]
