"""The edge access log (edge/accesslog.py): outcome table, JSON and combined lines for hit,
miss, stale, pass and error, and rotation with SIGUSR1 on a real ``geoedge edge`` process."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
from edgeutil import DEMO, EDGE_NAME, FakeClock, TestOrigin, edge_env
from test_origin_cli import command

from edge.accesslog import outcome
from geoconfig.topology import parse_topology
from geoconfig.validate import ConfigError

__all__ = ["edge_env"]

C = "geoedge-us-east-1"
TIER = "geoedge-shared-us-east"


@pytest.mark.parametrize(("cache_status", "status", "expected"), [
    ("", 200, "-"),
    (f"{C}; hit; ttl=59", 200, "hit"),
    (f"{C}; hit; ttl=-5; detail=stale-while-revalidate", 200, "stale"),
    (f"{C}; fwd=stale; detail=origin-unreachable", 200, "stale"),
    (f"{C}; fwd=stale; fwd-status=503; detail=stale-if-error", 200, "stale"),
    (f"{C}; fwd=stale; fwd-status=304", 200, "revalidated"),
    (f"{C}; fwd=uri-miss; fwd-status=200; stored", 200, "miss"),
    (f"{C}; fwd=vary-miss; fwd-status=200; stored", 200, "miss"),
    (f"{C}; fwd=stale; fwd-status=200; stored", 200, "miss"),
    (f"{C}; fwd=uri-miss; fwd-status=200; detail=private", 200, "miss"),
    (f"{C}; fwd=uri-miss; collapsed", 200, "miss"),
    (f"{C}; fwd=method; fwd-status=201", 201, "pass"),
    (f"{C}; fwd=bypass; fwd-status=200; detail=request-no-store", 200, "pass"),
    (f"{C}; fwd=uri-miss; fwd-status=200; detail=hit-for-miss", 200, "pass"),
    (f"{TIER}; hit; ttl=50, {C}; fwd=uri-miss", 200, "shared"),
    (f"{C}; fwd=uri-miss; detail=origin-unreachable", 502, "error"),
    (f"{C}; fwd=uri-miss; detail=invalid-status", 502, "error"),
    (f"{C}; fwd=uri-miss; fwd-status=304; detail=unexpected-304", 502, "error"),
    (f"{C}; fwd=uri-miss; fwd-status=502", 502, "miss"),  # the origin's own 502, relayed
    (f"upstream; hit, {C}; fwd=uri-miss; fwd-status=200", 200, "shared"),
])
def test_outcome_table(cache_status: str, status: int, expected: str) -> None:
    assert outcome(cache_status, status) == expected


def test_config_knobs() -> None:
    import tomllib

    with DEMO.open("rb") as f:
        data = tomllib.load(f)
    d = parse_topology(data).cdn.edge
    assert (d.access_log, d.access_log_format) == ("", "combined")
    data["edge"]["access_log_format"] = "apache"
    with pytest.raises(ConfigError, match=r"edge\.access_log_format"):
        parse_topology(data)


async def lines(env) -> list[str]:
    access = env.edge.access
    future = access.flush()
    if future is not None:
        await asyncio.wrap_future(future)
    return Path(access.path).read_text().splitlines()


async def test_json_lines_for_hit_miss_stale_pass_error(edge_env, tmp_path) -> None:
    env = await edge_env(access_log=str(tmp_path / "{edge}.log"), access_log_format="json")
    assert env.edge.access.path == str(tmp_path / f"{EDGE_NAME}.log")
    env.origin.route("/a", headers=[("Cache-Control", "max-age=10, stale-while-revalidate=60")],
                     body=b"A" * 100)
    env.origin.route("/p", body=b"posted")
    assert (await env.get("/a")).status == 200            # miss
    assert (await env.get("/a")).status == 200            # hit (the fast path)
    env.clock.advance(15)
    assert (await env.get("/a")).status == 200            # stale (while revalidating)
    await env.settle()
    assert (await env.request("POST", "/p", data=b"x")).status == 200  # pass
    await env.origin.stop()
    env.clock.advance(100)                                # beyond swr: must go to the origin
    got = await env.get("/gone")                          # nothing stored: 502
    assert got.status == 502
    assert (await env.get("/healthz")).status == 200      # the edge's own: "-"
    docs = [json.loads(line) for line in await lines(env)]
    assert [(d["target"], d["cache"], d["status"]) for d in docs] == [
        ("/a", "miss", 200), ("/a", "hit", 200), ("/a", "stale", 200), ("/p", "pass", 200),
        ("/gone", "error", 502), ("/healthz", "-", 200)]
    miss, hit = docs[0], docs[1]
    assert miss["origin"] == "origin-1" and hit["origin"] is None
    assert {d["edge"] for d in docs} == {EDGE_NAME} and {d["region"] for d in docs} == {"us-east"}
    assert miss["cache_status"] == f"{C}; fwd=uri-miss; fwd-status=200; stored"
    assert hit["bytes"] > 100 and miss["bytes"] > 100  # head and body
    for d in docs:
        assert 0 <= d["ttfb"] <= d["time_taken"]
        assert d["client"] == "127.0.0.1" and d["method"] in ("GET", "POST")
        assert d["protocol"] == "HTTP/1.1"
    assert miss["time"] == time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(FakeClock()()))


Q = r'"((?:[^"\\]|\\.)*)"'  # a quoted field, \" and \\ escaped
COMBINED = re.compile(
    rf'^(?P<client>\S+) - - \[(?P<time>[^\]]+)\] {Q} (?P<status>\d{{3}}) (?P<bytes>\d+) '
    rf'{Q} {Q} cache=(?P<cache>\S+) edge=(?P<edge>\S+) region=(?P<region>\S+) '
    rf'origin=(?P<origin>\S+) ttfb=(?P<ttfb>[\d.]+) time=(?P<took>[\d.]+) host={Q} '
    rf'cache_status={Q}$')


async def test_combined_lines(edge_env, tmp_path) -> None:
    env = await edge_env(access_log=str(tmp_path / "access.log"))
    env.origin.route("/c", headers=[("Cache-Control", "max-age=60")], body=b"C")
    agent = [("User-Agent", 'curl/8 "quoted"'), ("Referer", "http://r.example/")]
    await env.get("/c", agent)
    await env.get("/c", agent)
    got = [COMBINED.match(line) for line in await lines(env)]
    assert all(got), await lines(env)
    assert [(m[3], m["status"], m["cache"], m["origin"]) for m in got] == [
        ("GET /c HTTP/1.1", "200", "miss", "origin-1"), ("GET /c HTTP/1.1", "200", "hit", "-")]
    first = got[0]
    assert first[7] == 'curl/8 \\"quoted\\"' and first[6] == "http://r.example/"
    assert (first["edge"], first["region"], first[14]) == (EDGE_NAME, "us-east", env.host)
    assert first["time"] == time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(FakeClock()()))


async def test_lines_are_buffered_until_the_flush(edge_env, tmp_path) -> None:
    env = await edge_env(access_log=str(tmp_path / "access.log"))
    env.origin.route("/b", body=b"B")
    await env.get("/b")
    assert Path(env.edge.access.path).read_text() == ""  # in memory, not written per request
    assert len(await lines(env)) == 1


# -- a real process: rotation by SIGUSR1 ----------------------------------------------------------
def edge_config(tmp_path: Path, origin_port: int, access_log: Path) -> Path:
    text = DEMO.read_text()
    text = re.sub(r"(?m)^redis = .*\n", "", text)
    text = re.sub(r'\[\[origins\]\]\nname = "origin-2"\nhost = "[^"]+"\nport = \d+\n', "", text)
    text = text.replace('host = "127.0.1.11"\nport = 8080',
                        f'host = "127.0.0.1"\nport = {origin_port}')
    text = text.replace("[edge]\n", f'[edge]\naccess_log = "{access_log}"\n'
                                    'origin_health_interval = 3600.0\n')
    path = tmp_path / "topology.toml"
    path.write_text(text)
    return path


async def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def count_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


async def test_sigusr1_reopens_the_log_on_a_real_edge(tmp_path) -> None:
    origin = TestOrigin("origin-1", FakeClock(time.time()))
    await origin.start()
    origin.route("/r", headers=[("Cache-Control", "max-age=600")], body=b"R")
    log = tmp_path / "edge.access.log"
    config = edge_config(tmp_path, origin.port, log)
    proc = await asyncio.create_subprocess_exec(
        *command(), "edge", "--config", str(config), "--name", EDGE_NAME,
        "--listen", "127.0.0.1:0", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    try:
        seen: list[str] = []
        while not (m := re.search(r"INFO serving edge \S+ on 127\.0\.0\.1 port (\d+)",
                                  seen[-1] if seen else "")):
            line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
            assert line, "edge exited early:\n" + "".join(seen)
            seen.append(line)
        base = f"http://127.0.0.1:{m[1]}"
        async with aiohttp.ClientSession() as session:
            for _ in range(3):
                async with session.get(base + "/r") as r:
                    assert r.status == 200
            await wait_until(lambda: count_lines(log) == 3)  # the 1 s flush
            log.rename(tmp_path / "edge.access.log.1")
            proc.send_signal(signal.SIGUSR1)
            await wait_until(log.exists)  # reopened: a new file at the path
            async with session.get(base + "/r") as r:
                assert r.status == 200
            await wait_until(lambda: count_lines(log) == 1)
        old = (tmp_path / "edge.access.log.1").read_text().splitlines()
        assert [" cache=miss " in x for x in old] == [True, False, False]
        assert " cache=hit " in log.read_text()
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await origin.stop()


def test_unwritable_access_log_is_a_clear_error(tmp_path) -> None:
    missing = tmp_path / "no-such-dir" / "access.log"
    done = subprocess.run([*command(), "edge", "--config", str(DEMO), "--name", EDGE_NAME,
                           "--listen", "127.0.0.1:0", "--access-log", str(missing)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert (f"cannot open the access log of edge {EDGE_NAME} ({missing}): [Errno 2] "
            "No such file or directory") in done.stderr
    assert "Traceback" not in done.stderr


async def test_sigusr1_without_an_access_log_leaves_the_edge_running(tmp_path) -> None:
    proc = await asyncio.create_subprocess_exec(
        *command(), "edge", "--config", str(DEMO), "--name", EDGE_NAME,
        "--listen", "127.0.0.1:0", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    try:
        seen: list[str] = []
        while not (m := re.search(r"serving edge \S+ on 127\.0\.0\.1 port (\d+)",
                                  seen[-1] if seen else "")):
            line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
            assert line, "edge exited early:\n" + "".join(seen)
            seen.append(line)
        proc.send_signal(signal.SIGUSR1)
        while "no access log to reopen" not in seen[-1]:
            line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
            assert line, "edge exited after SIGUSR1:\n" + "".join(seen)
            seen.append(line)
        async with aiohttp.ClientSession() as session, session.get(
                f"http://127.0.0.1:{m[1]}/healthz") as r:
            assert r.status == 200
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
