"""The demo's live dashboard: one page and a small JSON API, served by the demo process.

Rules:

- ``GET /`` is the page (static/index.html: plain HTML, CSS and JavaScript, no build step);
  ``/static/...`` its files, including the vendored map library and data (static/vendor/,
  with their licences). Nothing is fetched from elsewhere: the page works offline.
- ``GET /api/state``: the collector's snapshot (collector.py), polled by the page each second.
- ``GET /api/explain?ip=ADDR``: where GeoDNS sends that client -- ``geoedge explain`` run as a
  child process for the why (location, ranking, scope), and the live answer of the running
  GeoDNS server for that client as ECS. A bad address is a 400.
- ``POST /api/control`` with JSON ``{"command": "stop"|"start", "target": NAME}`` runs the
  demo console's command (a process or a region's edges); answered 202 at once, the command
  runs on. Only JSON is accepted, and a request whose ``Origin`` is not this server is 403
  (another site's page cannot press the buttons).
- Listens on ``127.0.0.1`` unless told otherwise: the buttons stop processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from geoedge.demo.dashboard import model
from geoedge.demo.dashboard.collector import Collector, ask, ecs_query

STATIC = Path(__file__).resolve().parent / "static"
Command = Callable[[str, str], Awaitable[None]]  # (command, target)
Known = Callable[[str], bool]  # is the target a process or a region


class Dashboard:
    def __init__(self, collector: Collector, config: Path, run: Command, known: Known) -> None:
        self.collector = collector
        self.config = config
        self.run = run
        self.known = known
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.tasks: set[asyncio.Task[None]] = set()
        self.explaining = asyncio.Semaphore(2)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/api/state", self._state)
        app.router.add_get("/api/explain", self._explain)
        app.router.add_post("/api/control", self._control)
        app.router.add_static("/static/", STATIC, follow_symlinks=False)
        return app

    async def start(self, host: str, port: int) -> str:
        """Start polling and serving; returns the page's URL. OSError when it cannot bind."""
        await self.collector.start()
        self.runner = web.AppRunner(self.app(), access_log=None)
        await self.runner.setup()
        try:
            site = web.TCPSite(self.runner, host, port)
            await site.start()
        except OSError:
            await self.stop()
            raise
        bound = self.runner.addresses[0]
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        self.url = f"http://{shown}:{bound[1]}/"
        return self.url

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.collector.stop()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    # -- handlers -----------------------------------------------------------------------------
    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(self.collector.snapshot(),
                                 headers={"Cache-Control": "no-store"})

    async def _explain(self, request: web.Request) -> web.Response:
        text = request.query.get("ip", "").strip()
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            return web.json_response({"error": f"not an IP address: {text!r}"}, status=400)
        async with self.explaining:
            lines, (answer, scope, error) = await asyncio.gather(
                self._explain_lines(str(ip)), self._live(str(ip)))
        region, explained_scope = model.parse_explain(lines)
        live_region = model.answer_region(answer, self.collector.by_address)
        return web.json_response({
            "ip": str(ip), "region": live_region or region, "scope": scope,
            "answer": answer, "explain_region": region, "explain_scope": explained_scope,
            "dns_error": error, "lines": lines}, headers={"Cache-Control": "no-store"})

    async def _explain_lines(self, ip: str) -> list[str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "geoedge.cli", "explain", "--config", str(self.config), ip,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        try:
            async with asyncio.timeout(60):
                out, _ = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return ["geoedge explain did not answer within 60 s"]
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        return out.decode(errors="replace").splitlines()

    async def _live(self, ip: str) -> tuple[list[str], int | None, str]:
        c = self.collector
        try:
            answer, scope = await ask(c.dns_server, ecs_query(c.name, ip), 2.0)
        except (OSError, TimeoutError, ValueError) as exc:
            return [], None, str(exc) or exc.__class__.__name__
        return answer, scope, ""

    async def _control(self, request: web.Request) -> web.Response:
        origin = request.headers.get("Origin")
        if origin is not None and origin.rstrip("/") != f"{request.scheme}://{request.host}":
            return web.json_response({"error": "cross-origin request refused"}, status=403)
        if request.content_type != "application/json":
            return web.json_response({"error": "send JSON"}, status=415)
        try:
            doc: Any = await request.json()
        except ValueError:
            return web.json_response({"error": "body is not JSON"}, status=400)
        command = doc.get("command") if isinstance(doc, dict) else None
        target = doc.get("target") if isinstance(doc, dict) else None
        if command not in ("stop", "start") or not isinstance(target, str):
            return web.json_response({"error": 'give {"command": "stop"|"start", '
                                               '"target": NAME}'}, status=400)
        if not self.known(target):
            return web.json_response({"error": f"no process or region named {target!r}"},
                                     status=404)
        message = f"{command} {target} (from the dashboard)"
        self.collector.messages.append(message)
        print(f"dashboard: {command} {target}", flush=True)
        task = asyncio.get_running_loop().create_task(self.run(command, target))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return web.json_response({"accepted": message}, status=202)


__all__ = ["Dashboard"]
