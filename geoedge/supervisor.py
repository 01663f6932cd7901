"""Start, watch, restart and stop the demo's processes.

Rules:

- Processes start in the plan's order, one role at a time (Redis, origins, edges, GeoDNS);
  a role's processes start together and the next role starts once all of them pass their
  readiness probe. Each process's stdout and stderr go to ``<log_dir>/<name>.log``.
- Every process runs in its own process group (a terminal's Ctrl-C reaches only the
  supervisor, which then stops them in order) and through ``geoedge._child`` so it gets
  SIGTERM if the supervisor dies without stopping it.
- A process that exits before it was ever ready fails the start (:class:`StartError` with
  the end of its log). A process that exits later, without being asked to, is reported and
  restarted after a backoff (0.5 s doubling to 30 s; reset once it has run for a minute).
- ``stop`` sends SIGTERM when ``graceful`` (edges then drain: ``/healthz`` turns 503 while
  they keep serving, so GeoDNS moves clients away first), SIGINT otherwise; a process still
  running after its grace period gets SIGKILL. Stopped processes are not restarted until
  ``start`` is called for them again. ``stop_all`` stops everything in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from geoedge.probes import ready
from geoedge.services import Service

Report = Callable[[str], None]

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
    was_ready: bool = False
    restarts: int = 0
    backoff: float = 0.5
    watcher: asyncio.Task[None] | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)


def log_tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join("    | " + line for line in text.splitlines()[-lines:])


class Supervisor:
    def __init__(self, services: list[Service], log_dir: Path, report: Report,
                 ready_timeout: float = 30.0, grace: float = 10.0) -> None:
        self.services = services
        self.log_dir = log_dir
        self.report = report
        self.ready_timeout = ready_timeout
        self.grace = grace  # seconds a graceful stop may take (edges drain) before SIGKILL
        self.running = {s.name: Running(s) for s in services}
        self.stopping = False

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
        """Start every service, role by role; raises StartError (after stopping them all)."""
        try:
            for group in self._groups():
                await asyncio.gather(*(self.start(s) for s in group))
        except StartError:
            await self.stop_all()
            raise

    async def start(self, service: Service) -> None:
        """Start one service and wait until it is ready (StartError if it is not)."""
        run = self.running[service.name]
        if run.proc is not None and run.proc.returncode is None:
            return
        run.wanted = True
        await self._spawn(run)
        began = time.monotonic()
        await self._wait_ready(run)
        run.was_ready = True
        self.report(f"  ok  {service.name:<18} {service.address}  "
                    f"({time.monotonic() - began:.1f} s)")

    async def _spawn(self, run: Running) -> None:
        service = run.service
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if service.role == "redis":
            workdir = service.argv[service.argv.index("--dir") + 1]
            Path(workdir).mkdir(parents=True, exist_ok=True)
        with self.log_path(service).open("ab") as log:
            run.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "geoedge._child", str(os.getpid()), *service.argv,
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
                process_group=0)
        run.started = time.monotonic()
        run.exited = asyncio.Event()
        run.watcher = asyncio.get_running_loop().create_task(self._watch(run, run.proc))

    async def _wait_ready(self, run: Running) -> None:
        service = run.service
        deadline = time.monotonic() + self.ready_timeout
        while not await ready(service.probe):
            if run.exited.is_set():
                code = run.proc.returncode if run.proc else None
                raise StartError(f"{service.name} exited with code {code} while starting; "
                                 f"end of {self.log_path(service)}:\n"
                                 f"{log_tail(self.log_path(service))}")
            if time.monotonic() > deadline:
                raise StartError(f"{service.name} not ready on {service.address} after "
                                 f"{self.ready_timeout:.0f} s; end of "
                                 f"{self.log_path(service)}:\n"
                                 f"{log_tail(self.log_path(service))}")
            await asyncio.sleep(READY_POLL)

    # --- watching -----------------------------------------------------------------------------

    async def _watch(self, run: Running, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        run.exited.set()
        if self.stopping or not run.wanted or not run.was_ready:
            return
        service = run.service
        lived = time.monotonic() - run.started
        if lived >= STABLE_AFTER:
            run.backoff = 0.5
        delay = run.backoff
        run.backoff = min(run.backoff * 2, BACKOFF_MAX)
        run.restarts += 1
        self.report(f"!!  {service.name} exited with code {code} after {lived:.1f} s; "
                    f"restarting in {delay:.1f} s (restart #{run.restarts})\n"
                    f"{log_tail(self.log_path(service))}")
        await asyncio.sleep(delay)
        if self.stopping or not run.wanted:
            return
        await self._spawn(run)
        try:
            await self._wait_ready(run)
        except StartError as exc:
            self.report(f"!!  {exc}")
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
        for run in self.running.values():
            if run.watcher is not None:
                run.watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await run.watcher
            if run.proc is not None and run.proc.returncode is None:  # spawned meanwhile
                run.proc.kill()
                await run.proc.wait()
