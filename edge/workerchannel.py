"""A worker's end of its supervisor's purge channel (edge/workers.py).

Rules:

- JSON lines on a Unix socket pair inherited from the supervisor. A purge this worker
  received (PURGE or the admin API) is sent as ``{"op": "purge", "id", "kind", "value",
  "soft"}``; the supervisor passes it to every other worker, each applies it to its own stores
  and answers ``{"op": "ack", "id"}``, and once all have (or died) the supervisor answers
  ``{"op": "done", "id"}``. Only then does the purging request get its answer, so no worker
  serves a purged object after the client was told it is gone.
- ``confirm`` waits at most ``timeout`` seconds: a stuck sibling delays a purge, it never
  hangs it (logged; the supervisor still relays it).
- A lost channel (the supervisor gone) confirms nothing more; the worker stops by itself
  (``workers.orphaned``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable

__all__ = ["WorkerChannel", "open_channel"]

log = logging.getLogger("geoedge.edge.workers")
Apply = Callable[[str, str, bool], object]


class WorkerChannel(asyncio.Protocol):
    def __init__(self, apply: Apply, timeout: float = 2.0) -> None:
        self.apply = apply
        self.timeout = timeout
        self.transport: asyncio.Transport | None = None
        self._buffer = b""
        self._next = 0
        self._waiting: dict[int, asyncio.Future[None]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        for future in self._waiting.values():
            if not future.done():
                future.set_result(None)
        self._waiting.clear()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            try:
                doc = json.loads(line)
                op, ident = doc["op"], int(doc["id"])
                if op == "purge":
                    self.apply(str(doc["kind"]), str(doc["value"]), bool(doc["soft"]))
                    self._send({"op": "ack", "id": ident})
                elif (op == "done" and (future := self._waiting.pop(ident, None)) is not None
                      and not future.done()):
                    future.set_result(None)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("purge channel: bad message from the supervisor: %s", exc)

    def _send(self, doc: dict[str, object]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(json.dumps(doc).encode() + b"\n")

    async def confirm(self, kind: str, value: str, soft: bool) -> None:
        """Have every other worker apply this purge (already applied here)."""
        if self.transport is None:
            return
        self._next += 1
        ident = self._next
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        self._send({"op": "purge", "id": ident, "kind": kind, "value": value, "soft": soft})
        try:
            await asyncio.wait_for(future, self.timeout)
        except TimeoutError:
            log.warning("purge %s %r: not confirmed by every worker within %.1f s", kind,
                        value, self.timeout)
        finally:
            self._waiting.pop(ident, None)


async def open_channel(fd: int, apply: Apply) -> WorkerChannel:
    sock = socket.socket(fileno=fd)
    channel = WorkerChannel(apply)
    await asyncio.get_running_loop().connect_accepted_socket(lambda: channel, sock)
    return channel
