"""Start, watch, restart and stop the demo's processes.

Rules:

- Processes start in the plan's order, one role at a time (Redis, origins, edges, GeoDNS);
  a role's processes start together and the next role starts once all of them pass their
  readiness probe. Each process's stdout and stderr go to ``<log_dir>/<name>.log``.
- Before a process starts, its address must be free: a port someone else holds (another
  demo, say) is a StartError naming it, not a probe answered by the wrong process. A process
  counts as ready when its probe answers *and* it is still running.
- Every process runs in its own process group (a terminal's Ctrl-C reaches only the
  supervisor, which then stops them in order) and through ``geoedge.demo._child`` so it gets
  SIGINT (stop now) if the supervisor dies without stopping it.
- A process that exits before it was ready fails its start (:class:`StartError` with the end
  of its log) and is not restarted. A process that exits later, without being asked to, is
  reported and restarted after a backoff (``backoff`` seconds doubling to 30 s; reset once it
  has run for a minute). Each spawn has one watcher; a watcher whose process has been
  replaced meanwhile (a console ``start`` during the backoff) does nothing more.
- Two hooks (both optional): ``group_ready(services)`` runs after each role's processes have
  all passed their probes in ``start_all`` (the demo joins its Redis Clusters there; a
  StartError from it fails the start), and ``before_restart(service)`` runs before a crashed
  process's backoff (the demo waits there until a crashed cluster master's replica took over).
- ``stop`` sends SIGTERM when ``graceful`` (edges then finish their in-flight requests;
  geoedge.demo.drain moves clients away before), SIGINT otherwise; a process still
  running after its grace period gets SIGKILL. Stopped processes are not restarted until
  ``start`` is called for them again. ``stop_all`` stops everything in reverse order and
  waits for every watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from geoedge.demo.probes import ready
from geoedge.demo.services import Service

Report = Callable[[str], None]
Hook = Callable[[list[Service]], Awaitable[None]]
RestartHook = Callable[[Service], Awaitable[None]]

READY_POLL = 0.1      # seconds between readiness probes while starting
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0   # a process that ran this long restarts without backoff
KILL_AFTER = 5.0      # seconds after SIGINT before SIGKILL


class StartError(Exception):
    """A process did not come up; the message says which and shows the end of its log."""


@dataclass
class Running:
    service: Service
    proc: asyncio.subprocess.Process | None = None
    started: float = 0.0
    wanted: bool = False       # False once asked to stop: its exit is not a failure
    was_ready: bool = False    # the current process passed its probe
    restarts: int = 0
    backoff: float = 0.5


def next_backoff(current: float, lived: float, initial: float) -> tuple[float, float]:
    """(delay before this restart, the delay after the next crash)."""
    delay = initial if lived >= STABLE_AFTER else current
    return delay, min(delay * 2, BACKOFF_MAX)


def address_in_use(service: Service) -> bool:
    """True when another process holds the service's port on its address (TCP, and UDP for
    DNS), or one of its ``also_ports`` (TCP: a cluster node's bus port). An address this host
    does not have here is not "in use": the process will say."""
    probe = service.probe
    family = socket.AF_INET6 if ":" in probe.host else socket.AF_INET
    kinds = (socket.SOCK_STREAM, socket.SOCK_DGRAM) if probe.kind == "dns" else (
        socket.SOCK_STREAM,)
    wanted = [(kind, probe.port) for kind in kinds]
    wanted += [(socket.SOCK_STREAM, port) for port in service.also_ports]
    for kind, port in wanted:
        with socket.socket(family, kind) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
            try:
                s.bind((probe.host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


def log_tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join("    | " + line for line in text.splitlines()[-lines:])


class Supervisor:
    def __init__(self, services: list[Service], log_dir: Path, report: Report,
                 ready_timeout: float = 30.0, grace: float = 10.0,
                 backoff: float = 0.5, group_ready: Hook | None = None,
                 before_restart: RestartHook | None = None) -> None:
        self.services = services
        self.log_dir = log_dir
        self.report = report
        self.ready_timeout = ready_timeout
        self.grace = grace  # seconds a graceful stop may take (in-flight requests) before SIGKILL
        self.backoff = backoff
        self.group_ready = group_ready
        self.before_restart = before_restart
        self.running = {s.name: Running(s, backoff=backoff) for s in services}
        self.stopping = False
        self.watchers: set[asyncio.Task[None]] = set()

    def log_path(self, service: Service) -> Path:
        return self.log_dir / f"{service.name}.log"

    def pid(self, name: str) -> int | None:
        proc = self.running[name].proc
        return proc.pid if proc is not None and proc.returncode is None else None

    def _groups(self) -> list[list[Service]]:
        """The services by role, roles in the order they first appear in the plan."""
        groups: dict[str, list[Service]] = {}
        for s in self.services:
            groups.setdefault(s.role, []).append(s)
        return list(groups.values())

    # --- starting ---------------------------------------------------------------------------

    async def start_all(self) -> None:
        """Start every service, role by role; raises StartError (after stopping them all).
        Nothing starts while any address is taken."""
        taken = [s for s in self.services if address_in_use(s)]
        if taken:
            raise StartError("in use by another process (another demo still running?): "
                             + ", ".join(f"{s.address} ({s.name})" for s in taken))
        try:
            for group in self._groups():
                await asyncio.gather(*(self.start(s) for s in group))
                if self.group_ready is not None:
                    await self.group_ready(group)
        except StartError:
            await self.stop_all()
            raise

    async def start(self, service: Service) -> None:
        """Start one service and wait until it is ready (StartError if it is not)."""
        run = self.running[service.name]
        if run.proc is not None and run.proc.returncode is None:
            return
        if address_in_use(service):
            raise StartError(f"{service.name}: {service.address} is in use by another "
                             f"process (another demo still running?)")
        run.wanted = True
        began = time.monotonic()
        try:
            proc = await self._spawn(run)
        except OSError as exc:
            raise StartError(f"{service.name}: cannot start: {exc}") from exc
        await self._wait_ready(run, proc)
        self.report(f"  ok  {service.name:<18} {service.address}  "
                    f"({time.monotonic() - began:.1f} s)")

    async def _spawn(self, run: Running) -> asyncio.subprocess.Process:
        service = run.service
        run.was_ready = False
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if service.role == "redis":
            workdir = service.argv[service.argv.index("--dir") + 1]
            Path(workdir).mkdir(parents=True, exist_ok=True)
        with self.log_path(service).open("ab") as log:
            log.write(f"---- {time.strftime('%Y-%m-%d %H:%M:%S')} starting "
                      f"{service.name}\n".encode())
            log.flush()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "geoedge.demo._child", str(os.getpid()), *service.argv,
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
                process_group=0)
        run.proc = proc
        run.started = time.monotonic()
        watcher = asyncio.get_running_loop().create_task(self._watch(run, proc))
        self.watchers.add(watcher)
        watcher.add_done_callback(self.watchers.discard)
        return proc

    async def _wait_ready(self, run: Running, proc: asyncio.subprocess.Process) -> None:
        service = run.service
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if await ready(service.probe) and proc.returncode is None:
                run.was_ready = True
                return
            if proc.returncode is not None:
                raise StartError(f"{service.name} exited with code {proc.returncode} while "
                                 f"starting; end of {self.log_path(service)}:\n"
                                 f"{log_tail(self.log_path(service))}")
            if time.monotonic() > deadline:
                raise StartError(f"{service.name} not ready on {service.address} after "
                                 f"{self.ready_timeout:.0f} s; end of "
                                 f"{self.log_path(service)}:\n"
                                 f"{log_tail(self.log_path(service))}")
            await asyncio.sleep(READY_POLL)

    # --- watching -----------------------------------------------------------------------------

    def _current(self, run: Running, proc: asyncio.subprocess.Process) -> bool:
        """Whether ``proc`` is still the one to look after (not stopped, not replaced)."""
        return not self.stopping and run.wanted and run.proc is proc

    async def _watch(self, run: Running, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        if not self._current(run, proc) or not run.was_ready:
            return  # asked to stop, replaced, or a failed start (its starter reports it)
        service = run.service
        lived = time.monotonic() - run.started
        delay, run.backoff = next_backoff(run.backoff, lived, self.backoff)
        run.restarts += 1
        self.report(f"!!  {service.name} exited with code {code} after {lived:.1f} s; "
                    f"restarting in {delay:.1f} s (restart #{run.restarts})\n"
                    f"{log_tail(self.log_path(service))}")
        if self.before_restart is not None:
            await self.before_restart(service)
        await asyncio.sleep(delay)
        if not self._current(run, proc):
            return
        try:
            fresh = await self._spawn(run)
        except OSError as exc:
            self.report(f"!!  {service.name} could not be restarted: {exc}")
            return
        try:
            await self._wait_ready(run, fresh)
        except StartError as exc:
            if self._current(run, fresh):
                self.report(f"!!  {exc}\n    not restarting it again: type "
                            f"`start {service.name}` when it is fixed")
            return
        self.report(f"  ok  {service.name} is back on {service.address}")

    # --- stopping -----------------------------------------------------------------------------

    async def stop(self, service: Service, graceful: bool = True) -> int | None:
        """Stop one service; returns its exit code (None if it was not running)."""
        run = self.running[service.name]
        run.wanted = False
        proc = run.proc
        if proc is None or proc.returncode is not None:
            return None
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM if graceful else signal.SIGINT)
        try:
            async with asyncio.timeout(self.grace if graceful else KILL_AFTER):
                return await proc.wait()
        except TimeoutError:
            self.report(f"!!  {service.name} did not stop; killing it")
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            return await proc.wait()

    async def stop_all(self) -> None:
        """Stop everything, one role at a time in reverse start order; nothing survives."""
        self.stopping = True
        for group in reversed(self._groups()):
            await asyncio.gather(*(self.stop(s, graceful=False) for s in group))
        for watcher in list(self.watchers):
            watcher.cancel()
        await asyncio.gather(*self.watchers, return_exceptions=True)
        for run in self.running.values():
            if run.proc is not None and run.proc.returncode is None:  # spawned meanwhile
                run.proc.kill()
                await run.proc.wait()
