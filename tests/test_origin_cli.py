"""``geoedge origin`` as a real process: start on port 0, answer, stop on SIGTERM; bad names."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "examples" / "demo.toml"
SERVING = re.compile(r"serving origin (\S+) on (\S+) port (\d+)")


def command() -> list[str]:
    beside = Path(sys.executable).parent / "geoedge"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("geoedge")
    return [found] if found else [sys.executable, "-m", "geoedge.cli"]


async def test_origin_serves_and_stops_on_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        *command(), "origin", "--config", str(DEMO), "--name", "origin-1",
        "--listen", "127.0.0.1:0", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    try:
        lines = []
        while True:
            line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
            assert line, "origin exited early:\n" + "".join(lines)
            lines.append(line)
            if m := SERVING.search(line):
                break
        assert (m[1], m[2]) == ("origin-1", "127.0.0.1")
        base = f"http://127.0.0.1:{m[3]}"
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/healthz") as r:
                assert (r.status, await r.text()) == (200, "ok\n")
                assert r.headers["X-Origin"] == "origin-1"
            async with session.get(base + "/static/logo.png") as r:
                assert r.status == 200 and r.headers["Content-Type"] == "image/png"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*command(), "origin", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60, check=False)


def test_unknown_name_exits_2_and_lists_the_origins() -> None:
    result = run("--config", str(DEMO), "--name", "origin-9", "--listen", "127.0.0.1:0")
    assert result.returncode == 2
    assert "origin-9" in result.stderr
    assert "origin-1, origin-2" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_error_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(DEMO.read_text().replace('name = "origin-2"', 'name = "origin-1"'))
    result = run("--config", str(bad), "--name", "origin-1")
    assert result.returncode == 2
    assert "config error" in result.stderr and "origins[1].name" in result.stderr


def test_missing_root_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "demo.toml"
    text = DEMO.read_text()
    assert text.count('root = "content"') == 1
    config.write_text(text.replace('root = "content"', 'root = "no-such-dir"'))
    result = run("--config", str(config), "--name", "origin-1", "--listen", "127.0.0.1:0")
    assert result.returncode == 2
    assert "no-such-dir" in result.stderr and "not a directory" in result.stderr


@pytest.mark.parametrize("listen", ["nonsense", "127.0.0.1:99999"])
def test_bad_listen_is_a_usage_error(listen: str) -> None:
    assert run("--config", str(DEMO), "--name", "origin-1", "--listen", listen).returncode == 2
