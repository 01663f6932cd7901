"""Helpers the Python edge benches share (bench/edge_restart.py, bench/edge_workers.py): a free
port, the bench topology (bench/edge/topology.toml.in) with extra settings, and waiting for a
real `geoedge edge` process to answer /healthz."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
GEOEDGE = str(Path(sys.executable).with_name("geoedge"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def topology(origin_port: int, edge: str = "", us_east: str = "") -> str:
    """The bench topology with one origin on 127.0.0.1:``origin_port``; ``edge``: lines added
    to [edge] (drain_timeout = 0.1 always); ``us_east``: lines added to region us-east."""
    text = (HERE / "edge" / "topology.toml.in").read_text()
    text = (text.replace("@ORIGIN_NAME@", "origin-1").replace("@ORIGIN_HOST@", "127.0.0.1")
            .replace("@ORIGIN_PORT@", str(origin_port)))
    marker = 'continents = ["NA", "SA"]\n'
    text = text.replace(marker, marker + us_east, 1)
    return text.replace("[edge]\n", f"[edge]\n{edge}drain_timeout = 0.1\n", 1)


async def wait_healthy(port: int, timeout: float = 60.0) -> float:
    """Seconds until the edge on ``port`` answered /healthz with 200 (SystemExit after
    ``timeout``)."""
    start = time.monotonic()
    async with aiohttp.ClientSession() as s:
        while time.monotonic() - start < timeout:
            try:
                async with s.get(f"http://127.0.0.1:{port}/healthz") as r:
                    if r.status == 200:
                        return time.monotonic() - start
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise SystemExit(f"the edge did not answer /healthz within {timeout} s")
