"""``[edge] workers``: one edge as N processes on the same port, supervised.

Rules:

- N worker processes (``python -m edge.worker``) each run a whole edge, bound with
  ``SO_REUSEPORT`` to the same address, so the kernel spreads new connections over them (nginx
  ``listen ... reuseport``). A port of 0 is resolved once by the supervisor (it holds a bound,
  non-listening socket on it), so every worker gets the same one.
- The workers share what they store, their fill leases (coalescing) and their purges through
  the region's shared tier (Redis): each is a tier node of its own (``NAME/wI``), so a purge
  sent to one worker reaches the others, and one origin fetch serves them all. Hence more than
  one worker needs the region's ``redis`` (checked at start, the key named). With
  ``disk_path`` each worker keeps its disk cache in ``disk_path/wI``.
- Admin listener: worker I serves it on the configured port + I (port 0: a free one each);
  each shows its own metrics.
- Supervision: a worker that exits without being asked to is logged and started again, after
  a delay that doubles while it keeps dying young (``restart_delay``); SIGTERM and SIGINT are
  passed to every worker (SIGTERM drains, SIGINT stops) and the supervisor exits when all have
  (a worker still running ``drain_timeout`` + 10 s later is killed);
  SIGHUP (reload) and SIGUSR1 (reopen the access log) are passed on. A worker whose
  supervisor is gone stops by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from geoconfig.topology import Topology

__all__ = ["WorkerRole", "cpu_count", "for_worker", "orphaned", "restart_delay", "supervise",
           "workers_problem"]

log = logging.getLogger("geoedge.edge.workers")

FIRST_DELAY = 0.1
MAX_DELAY = 10.0
YOUNG = 10.0  # a worker that dies sooner than this after its start counts as crash-looping


def cpu_count() -> int:
    """The CPUs this process may run on (``workers = "auto"``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def restart_delay(previous: float, lived: float) -> float:
    """Seconds to wait before starting a worker again that lived ``lived`` seconds; the delay
    before its previous restart was ``previous`` (0: none yet)."""
    if lived >= YOUNG or previous <= 0:
        return FIRST_DELAY
    return min(MAX_DELAY, previous * 2)


def workers_problem(topology: Topology, name: str, workers: int) -> str | None:
    """Why these workers cannot share a cache, or None."""
    if workers <= 1:
        return None
    edge = topology.find_edge(name)
    if topology.region(edge.region).redis is None:
        return (f"edge.workers = {workers}: more than one worker needs region {edge.region!r}'s "
                "redis (the workers share stored objects, fill leases and purges through it)")
    return None


@dataclass(frozen=True)
class WorkerRole:
    """What a worker process is told by its supervisor (``python -m edge.worker``)."""

    index: int
    count: int
    channel_fd: int | None = None  # its end of the purge channel
    discard_disk: bool = False  # purges happened while it was down: its disk cache is stale


def for_worker(topology: Topology, role: WorkerRole) -> Topology:
    """The topology as a worker runs it: its own disk cache directory (emptied first when it
    missed purges while it was down)."""
    edge = topology.cdn.edge
    if not edge.disk_path:
        return topology
    disk = os.path.join(edge.disk_path, f"w{role.index}")
    if role.discard_disk:
        log.warning("edge worker %d: purges were sent while it was down; its disk cache %s "
                    "is emptied", role.index, disk)
        shutil.rmtree(disk, ignore_errors=True)
    cdn = dataclasses.replace(topology.cdn, edge=dataclasses.replace(edge, disk_path=disk))
    return dataclasses.replace(topology, cdn=cdn)


async def orphaned(parent: int, stop: asyncio.Event, interval: float = 1.0) -> None:
    """Set ``stop`` once the process's parent (the supervisor) is no longer ``parent``."""
    while os.getppid() == parent:
        await asyncio.sleep(interval)
    log.warning("edge worker: the supervisor (pid %d) is gone; stopping", parent)
    stop.set()


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes]
    sock: socket.socket
    started: float
    delay: float = 0.0
    buffer: bytes = b""


@dataclass
class _Relay:
    """A purge sent by ``origin`` (its id ``ident``) that ``waiting`` workers still have to
    confirm."""

    origin: int
    ident: int
    waiting: set[int]


@dataclass
class _State:
    stopping: bool = False
    workers: dict[int, _Worker] = field(default_factory=dict)
    relays: dict[int, _Relay] = field(default_factory=dict)
    next_relay: int = 0
    missed: set[int] = field(default_factory=set)  # down while a purge went round
    due: dict[int, tuple[float, float]] = field(default_factory=dict)  # index: (at, delay)


def _hold_port(host: str, port: int) -> tuple[socket.socket, int]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock, int(sock.getsockname()[1])


class _Supervisor:
    def __init__(self, config: str, name: str, listen: tuple[str, int], port: int,
                 count: int, log_level: str, admin_listen: tuple[str, int] | None,
                 grace: float, extra: list[str]) -> None:
        self.extra = extra  # passed on to every worker (the TLS options)
        self.config, self.name, self.listen, self.port = config, name, listen, port
        self.grace = grace  # seconds the workers get to stop before they are killed
        self.kill_at = float("inf")
        self.count, self.log_level, self.admin_listen = count, log_level, admin_listen
        self.state = _State()
        self.selector = selectors.DefaultSelector()
        self.worst = 0  # the highest exit status of a worker asked to stop

    def command(self, index: int, fd: int, discard: bool) -> list[str]:
        argv = [sys.executable, "-m", "edge.worker", "--config", self.config, "--name",
                self.name, "--listen", f"{_fmt(self.listen[0])}:{self.port}", "--log-level",
                self.log_level, "--worker-index", str(index), "--workers", str(self.count),
                "--channel-fd", str(fd), *self.extra]
        if discard:
            argv.append("--discard-disk")
        if self.admin_listen is not None:
            admin_port = self.admin_listen[1] + index if self.admin_listen[1] else 0
            argv += ["--admin-listen", f"{_fmt(self.admin_listen[0])}:{admin_port}"]
        return argv

    def spawn(self, index: int, delay: float = 0.0) -> None:
        ours, theirs = socket.socketpair()
        discard = index in self.state.missed
        try:
            proc = subprocess.Popen(self.command(index, theirs.fileno(), discard),
                                    pass_fds=(theirs.fileno(),))
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        self.state.missed.discard(index)
        ours.setblocking(False)
        self.state.workers[index] = _Worker(index, proc, ours, time.monotonic(), delay)
        self.selector.register(ours, selectors.EVENT_READ, index)

    def signal(self, signum: int) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            if not self.state.stopping:
                self.kill_at = time.monotonic() + self.grace
            self.state.stopping = True
            self.state.due.clear()
        for w in list(self.state.workers.values()):
            with contextlib.suppress(ProcessLookupError):
                w.proc.send_signal(signum)

    # -- the purge channel --------------------------------------------------------------------
    def send(self, index: int, doc: dict[str, object]) -> None:
        worker = self.state.workers.get(index)
        if worker is None:
            return
        try:  # small messages on a local socket: a full buffer means the worker is stuck
            worker.sock.send(json.dumps(doc).encode() + b"\n")
        except OSError as exc:
            log.warning("edge worker %d: purge channel: %s", index, exc)

    def receive(self, index: int) -> None:
        worker = self.state.workers[index]
        try:
            data = worker.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.selector.unregister(worker.sock)
            return
        worker.buffer += data
        *lines, worker.buffer = worker.buffer.split(b"\n")
        for line in lines:
            try:
                doc = json.loads(line)
                self.on_message(index, doc)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("edge worker %d: bad purge channel message: %s", index, exc)

    def on_message(self, index: int, doc: dict[str, object]) -> None:
        state = self.state
        if doc["op"] == "purge":
            rid = state.next_relay = state.next_relay + 1
            others = set(state.workers) - {index}
            state.missed |= set(range(self.count)) - set(state.workers)
            state.relays[rid] = _Relay(index, int(doc["id"]), others)  # type: ignore[arg-type]
            for other in others:
                self.send(other, {"op": "purge", "id": rid, "kind": doc["kind"],
                                  "value": doc["value"], "soft": bool(doc["soft"])})
            self.settle(rid)
        elif doc["op"] == "ack":
            relay = state.relays.get(int(doc["id"]))  # type: ignore[arg-type]
            if relay is not None:
                relay.waiting.discard(index)
                self.settle(int(doc["id"]))  # type: ignore[arg-type]

    def settle(self, rid: int) -> None:
        relay = self.state.relays[rid]
        if not relay.waiting:
            del self.state.relays[rid]
            self.send(relay.origin, {"op": "done", "id": relay.ident})

    # -- processes ----------------------------------------------------------------------------
    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = next((w for w in self.state.workers.values() if w.proc.pid == pid), None)
            if worker is not None:
                worker.proc.returncode = os.waitstatus_to_exitcode(status)
                self.exited(worker)

    def exited(self, worker: _Worker) -> None:
        state = self.state
        del state.workers[worker.index]
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(worker.sock)
        worker.sock.close()
        for rid, relay in list(state.relays.items()):
            if worker.index in relay.waiting:
                relay.waiting.discard(worker.index)
                state.missed.add(worker.index)
                self.settle(rid)
        code = worker.proc.returncode or 0
        if state.stopping:
            self.worst = max(self.worst, code if code > 0 else 0)
            return
        lived = time.monotonic() - worker.started
        delay = restart_delay(worker.delay, lived)
        log.warning("edge worker %d (pid %d) exited with %s after %.1f s; starting it again "
                    "in %.1f s", worker.index, worker.proc.pid, _describe(code), lived, delay)
        state.due[worker.index] = (time.monotonic() + delay, delay)

    def run(self) -> int:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        self.selector.register(wake_r, selectors.EVENT_READ, None)
        old_fd = signal.set_wakeup_fd(wake_w)
        handlers = {s: signal.signal(s, lambda n, _f: self.signal(n))
                    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)}
        handlers[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, lambda _n, _f: None)
        try:
            for i in range(self.count):
                self.spawn(i)
            log.info("edge %s: %d workers on %s port %d", self.name, self.count,
                     self.listen[0], self.port)
            while self.state.workers or self.state.due:
                for key, _ in self.selector.select(timeout=0.2):
                    if key.data is None:
                        with contextlib.suppress(BlockingIOError):
                            os.read(wake_r, 4096)
                    elif key.data in self.state.workers:
                        self.receive(key.data)
                self.reap()
                now = time.monotonic()
                if self.state.stopping and now > self.kill_at:  # stuck (SIGSTOP, a hang)
                    for w in self.state.workers.values():
                        log.warning("edge worker %d (pid %d) did not stop in %.0f s: killed",
                                    w.index, w.proc.pid, self.grace)
                        with contextlib.suppress(ProcessLookupError):
                            w.proc.kill()
                    self.kill_at = float("inf")
                for index, (at, delay) in list(self.state.due.items()):
                    if at <= now:
                        del self.state.due[index]
                        self.spawn(index, delay)
            return self.worst
        finally:
            signal.set_wakeup_fd(old_fd)
            for s, handler in handlers.items():
                signal.signal(s, handler)
            for w in list(self.state.workers.values()):  # only after an unexpected error
                with contextlib.suppress(ProcessLookupError):
                    w.proc.kill()
                w.proc.wait()
                w.sock.close()
            self.selector.close()
            os.close(wake_r)
            os.close(wake_w)


def supervise(config: str, name: str, listen: tuple[str, int], workers: int,
              log_level: str, admin_listen: tuple[str, int] | None,
              grace: float = 15.0, extra: list[str] | None = None) -> int:
    """Run ``workers`` edge processes until SIGTERM/SIGINT; the exit status. Workers that
    have not stopped ``grace`` seconds after the signal are killed."""
    held, port = _hold_port(*listen)
    try:
        return _Supervisor(config, name, listen, port, workers, log_level, admin_listen,
                           grace, list(extra or [])).run()
    finally:
        held.close()


def _describe(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"status {code}"


def _fmt(host: str) -> str:
    return f"[{host}]" if ":" in host else host
