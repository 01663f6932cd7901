"""``geoedge origin``: run one origin of the topology's ``[[origins]]`` pool.

Rules:

* The topology is loaded with ``load_topology``; a ``ConfigError`` propagates (the CLI prints
  it and exits 2). An unknown ``--name`` prints the known names to stderr and returns 2; so
  does a configured ``[origin] root`` that is not a directory. No root at all is allowed (only
  the virtual files and the API are served) and logged as a warning.
* Listens on ``--listen`` or the origin's ``host:port``; port 0 picks a free port. Once
  listening it logs ``serving origin NAME on HOST port PORT`` (one line per bound socket, at
  WARNING so it shows at every --log-level) -- tests read the port from it.
* uvloop is used when installed. SIGTERM and SIGINT stop the server: the listener closes,
  in-flight requests get up to ``SHUTDOWN_TIMEOUT`` seconds, and 0 is returned.
* The access log is written only at ``--log-level debug`` (it would dominate benchmarks).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from geoconfig.cdnconfig import OriginServer
from geoconfig.topology import load_topology
from origin.app import create_app

__all__ = ["SHUTDOWN_TIMEOUT", "run_origin"]

log = logging.getLogger("geoedge.origin")
SHUTDOWN_TIMEOUT = 5.0


async def serve(app: web.Application, name: str, host: str, port: int,
                access_log: bool) -> None:
    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_TIMEOUT,
                           access_log=logging.getLogger("aiohttp.access") if access_log
                           else None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):  # before "serving": it may be signalled
            loop.add_signal_handler(sig, stop.set)
        for address in runner.addresses:
            log.info("serving origin %s on %s port %d", name, address[0], address[1])
        await stop.wait()
        log.info("origin %s stopping", name)
    finally:
        await runner.cleanup()


def _run(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # uvloop is optional on platforms without it
        asyncio.run(main)
    else:
        uvloop.run(main)


def _find(origins: tuple[OriginServer, ...], name: str) -> OriginServer | None:
    return next((o for o in origins if o.name == name), None)


def run_origin(config: str, name: str, listen: tuple[str, int] | None,
               log_level: str = "info") -> int:
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    topology = load_topology(config)
    origin = _find(topology.cdn.origins, name)
    if origin is None:
        known = ", ".join(o.name for o in topology.cdn.origins) or "(none)"
        print(f"geoedge: no origin named {name!r} in {config}; known origins: {known}",
              file=sys.stderr)
        return 2
    settings = topology.cdn.origin
    if settings.root is None:
        log.warning("no [origin] root configured: serving only virtual files and the API")
    elif not settings.root.is_dir():
        print(f"geoedge: origin root {settings.root} is not a directory", file=sys.stderr)
        return 2
    host, port = listen or (origin.host, origin.port)
    app = create_app(name, settings)
    _run(serve(app, name, host, port, access_log=log_level == "debug"))
    return 0
