"""Edge cache misses per second: every request a new URL, fetched from the origin and stored.

    .venv/bin/python bench/edge_miss.py            # see docs/benchmarks.md, "Edge misses"

A static nginx origin (bench/edge/origin-nginx.conf.in, on the client CPU) serves /1k.bin with
Cache-Control: max-age=3600. In front of it, pinned to the server CPU (taskset): nginx
proxy_cache with one worker and a keep-alive upstream (bench/edge/cache-nginx.conf.in), and
one `geoedge edge` process (bench/edge/topology.toml.in, [edge] at its defaults) -- the
working tree's, and optionally the code of another commit (EDGE_MISS_BEFORE=<commit>: its
tree is extracted to the temp dir and put first on PYTHONPATH) to compare origin clients.
wrk (-t1, EDGE_MISS_CONNECTIONS connections, on the client CPU) asks for
/1k.bin?n=<round>-<counter>: every request is a miss that the cache fetches and stores. The
servers are measured alternately, EDGE_MISS_ROUNDS times; the median round is printed, the
ratio to nginx of the same round, and misses per CPU-second of the server (its process tree,
from /proc), which is steadier than misses/s on a shared machine. The origin's access log
must count one request per response (every request was a miss); `uptime` is printed before
and after.

Environment: EDGE_MISS_DURATION=10, EDGE_MISS_ROUNDS=3, EDGE_MISS_CONNECTIONS=32,
EDGE_MISS_BEFORE="" (a commit), EDGE_MISS_SERVER_CPU=0, EDGE_MISS_CLIENT_CPU=1.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "bench" / "edge"
DURATION = int(os.environ.get("EDGE_MISS_DURATION", "10"))
ROUNDS = int(os.environ.get("EDGE_MISS_ROUNDS", "3"))
CONNECTIONS = int(os.environ.get("EDGE_MISS_CONNECTIONS", "32"))
BEFORE = os.environ.get("EDGE_MISS_BEFORE", "")
SERVER_CPU = os.environ.get("EDGE_MISS_SERVER_CPU", "0")
CLIENT_CPU = os.environ.get("EDGE_MISS_CLIENT_CPU", "1")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
WRK_SCRIPT = """
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/1k.bin?n=@ROUND@-" .. counter)
end
"""


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def render(template: Path, out: Path, work: Path, **values: str) -> None:
    text = template.read_text()
    opts = subprocess.run([NGINX, "-V"], capture_output=True, text=True).stderr
    temp = [f"    client_body_temp_path {work}/tmp/body;"] + [
        f"    {m}_temp_path {work}/tmp/{m};" for m in ("proxy", "fastcgi", "uwsgi", "scgi")
        if f"--without-http_{m}_module" not in opts]
    values = {"USER": "user root;" if os.geteuid() == 0 else "", "DIR": str(work),
              "TEMP_PATHS": "\n".join(temp), "SENDFILE": "on", **values}
    for name, value in values.items():
        text = text.replace(f"@{name}@", value)
    left = re.findall(r"@[A-Z_]+@", "".join(ln.split("#")[0] for ln in text.splitlines()))
    if left:
        raise SystemExit(f"unreplaced markers {left} in {out}")
    out.write_text(text)


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                resp.read()
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"no answer from {url}")


def start(argv: list[str], cpu: str, log: Path, env: dict[str, str] | None = None,
          ) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["taskset", "-c", cpu, *argv], stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its children, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat.parent.name) == pid or int(fields[1]) == pid:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def wrk(port: int, round_tag: str, work: Path) -> dict[str, float]:
    script = work / f"wrk-{round_tag}.lua"
    script.write_text(WRK_SCRIPT.replace("@ROUND@", round_tag))
    out = subprocess.run(
        ["taskset", "-c", CLIENT_CPU, "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{DURATION}s",
         "--timeout", "5s", "--latency", "-s", str(script), f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)

    def latency(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)\b", out)
        if m is None:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    return {"rps": rps, "total": total, "bad": int(bad.group(1)) if bad else 0,
            "errors": 1 if errors else 0, "p50": latency("50"), "p99": latency("99")}


def main() -> int:
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed (apt-get install wrk util-linux)")
    work = Path(tempfile.mkdtemp(prefix="edge-miss-"))
    (work / "www").mkdir()
    (work / "tmp").mkdir()
    (work / "nginx-cache").mkdir()
    (work / "www" / "1k.bin").write_bytes(os.urandom(1024))
    origin_port, cache_port, closed_port = free_ports(3)
    render(HERE / "origin-nginx.conf.in", work / "origin.conf", work, PORT=str(origin_port))
    render(HERE / "cache-nginx.conf.in", work / "cache.conf", work, PORT=str(cache_port),
           STATIC_PORT=str(origin_port), API_PORT=str(closed_port),
           ACCESS_LOG="access_log off;")  # as the edge: bench/edge.sh's default
    topology = work / "topology.toml"
    topology.write_text((HERE / "topology.toml.in").read_text()
                        .replace("@ORIGIN_NAME@", "static").replace("@ORIGIN_HOST@", "127.0.0.1")
                        .replace("@ORIGIN_PORT@", str(origin_port)))
    procs: list[subprocess.Popen[bytes]] = []
    servers: dict[str, int] = {}
    pids: dict[str, int] = {}
    try:
        origin = start([NGINX, "-c", str(work / "origin.conf")], CLIENT_CPU, work / "o.log")
        procs.append(origin)
        wait_http(f"http://127.0.0.1:{origin_port}/healthz", origin)
        cache = start([NGINX, "-c", str(work / "cache.conf")], SERVER_CPU, work / "n.log")
        procs.append(cache)
        wait_http(f"http://127.0.0.1:{cache_port}/healthz", cache)
        servers["nginx"] = cache_port
        pids["nginx"] = cache.pid
        trees = [("geoedge", None)]
        if BEFORE:
            tree = work / "before"
            tree.mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", BEFORE],
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
            trees.append((f"geoedge@{BEFORE[:7]}", tree))
        for name, tree in trees:
            port = free_ports(1)[0]
            env = dict(os.environ)
            if tree is not None:
                env["PYTHONPATH"] = str(tree)
            proc = start([sys.executable, "-m", "geoedge.cli", "edge", "--config",
                          str(topology), "--name", "us-east-1", "--listen",
                          f"127.0.0.1:{port}"], SERVER_CPU, work / f"{name}.log", env)
            procs.append(proc)
            wait_http(f"http://127.0.0.1:{port}/healthz", proc)
            servers[name] = port
            pids[name] = proc.pid
        load_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        results: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
        access = work / "origin-nginx.access.log"
        for r in range(ROUNDS):
            for name, port in servers.items():
                seen = access.stat().st_size and len(access.read_bytes().splitlines())
                cpu = cpu_seconds(pids[name])
                run = wrk(port, f"{name}-{r}-{os.getpid()}", work)
                run["per_cpu"] = run["total"] / max(cpu_seconds(pids[name]) - cpu, 0.01)
                fetched = len(access.read_bytes().splitlines()) - seen
                run["origin"] = fetched
                results[name].append(run)
                print(f"round {r + 1} {name:>18}: {run['rps']:9.0f} misses/s "
                      f"({run['per_cpu']:.0f} per CPU-s), p50 "
                      f"{run['p50']:.2f} ms, p99 {run['p99']:.2f} ms, non-2xx {run['bad']}, "
                      f"origin requests {fetched} for {run['total']} responses", flush=True)
        load_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        print(f"\nload before: {load_before}\nload after:  {load_after}")
        print(f"\n{'server':>18} {'misses/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'x nginx':>8} "
              f"{'per CPU-s':>9} {'x nginx':>8}")
        for name, runs in results.items():
            base = results["nginx"]
            ratios = [run["rps"] / b["rps"] for run, b in zip(runs, base, strict=True)]
            cpu_ratios = [run["per_cpu"] / b["per_cpu"] for run, b in zip(runs, base,
                                                                          strict=True)]
            med = sorted(runs, key=lambda x: x["rps"])[len(runs) // 2]
            per_cpu = statistics.median(run["per_cpu"] for run in runs)
            print(f"{name:>18} {med['rps']:9.0f} {med['p50']:7.2f} {med['p99']:7.2f} "
                  f"{statistics.median(ratios):8.2f} {per_cpu:9.0f} "
                  f"{statistics.median(cpu_ratios):8.2f}")
        return 0
    finally:
        for proc in reversed(procs):
            stop(proc, signal.SIGQUIT if proc.args[3] == NGINX else signal.SIGINT)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
