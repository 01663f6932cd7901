"""Test helpers: the real ``geoedge demo`` as a subprocess, on free ports.

``demo_config`` rewrites examples/demo.toml so every process listens on ports nobody uses
(the addresses stay the demo's 127.0.N.M ones); ``DemoProcess`` runs ``geoedge demo`` with a
pipe on stdin for its console and collects its output lines on a thread.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "demo.toml"


def free_port() -> int:
    """A TCP and UDP port free on every address (bound on the wildcard address)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("0.0.0.0", 0))
            port = s.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                u.bind(("0.0.0.0", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port")


@dataclass(frozen=True)
class DemoPorts:
    dns: int
    edge: int
    origin: int
    redis: int
    https: int = 0  # the edges' HTTPS listeners
    metrics: int = 0  # GeoDNS's /metrics on 127.0.0.1
    admin: int = 0  # every edge's admin listener (/metrics) on its own address


def demo_config(tmp_path: Path) -> tuple[Path, DemoPorts]:
    """examples/demo.toml on free ports (IPv4 DNS only), written into ``tmp_path``."""
    ports = DemoPorts(*(free_port() for _ in range(7)))
    text = DEMO.read_text()
    text = text.replace("\n[dns]\n", f'\n[dns]\nmetrics_listen = "127.0.0.1:{ports.metrics}"\n', 1)
    text = text.replace("\n[edge]\n", f'\n[edge]\nadmin_listen = "127.0.0.1:{ports.admin}"\n', 1)
    text = text.replace('listen = ["127.0.0.1:5353", "[::1]:5353"]',
                        f'listen = ["127.0.0.1:{ports.dns}"]')
    text = re.sub(r'(ipv6 = "[^"]+", port = )8080', rf"\g<1>{ports.edge}", text)
    text = re.sub(r"(\[\[origins\]\]\nname = \"[^\"]+\"\nhost = \"[^\"]+\"\nport = )8080",
                  rf"\g<1>{ports.origin}", text)
    text = text.replace(":6379/0", f":{ports.redis}/0")
    text = text.replace("\n[edge]\n", f'\n[edge]\ntls_listen = ":{ports.https}"\n', 1)
    text = text.replace('root = "content"', f'root = "{ROOT / "examples" / "content"}"')
    path = tmp_path / "demo.toml"
    path.write_text(text)
    data = tomllib.loads(text)  # the rewrite really moved every port
    assert data["dns"]["listen"] == [f"127.0.0.1:{ports.dns}"]
    assert data["dns"]["metrics_listen"] == f"127.0.0.1:{ports.metrics}"
    assert data["edge"]["admin_listen"] == f"127.0.0.1:{ports.admin}"
    assert {e["port"] for r in data["regions"] for e in r["edges"]} == {ports.edge}
    assert {o["port"] for o in data["origins"]} == {ports.origin}
    assert all(r["redis"]["url"].endswith(f":{ports.redis}/0") for r in data["regions"])
    assert data["edge"]["tls_listen"] == f":{ports.https}"
    return path, ports


class DemoProcess:
    """``geoedge demo --config PATH`` with its console on a pipe."""

    def __init__(self, config: Path, stdin: int = subprocess.PIPE,
                 args: tuple[str, ...] = ()) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "geoedge.cli", "demo", "--config", str(config), *args],
            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1)
        self.lines: list[str] = []
        self.ended = False
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.ended = True
            self._cond.notify_all()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float, since: int = 0) -> re.Match[str]:
        """The first output line from line ``since`` on matching ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        checked = since
        with self._cond:
            while True:
                for line in self.lines[checked:]:
                    if m := regex.search(line):
                        return m
                checked = len(self.lines)
                left = deadline - time.monotonic()
                if self.ended or left <= 0:
                    break
                self._cond.wait(left)
        raise AssertionError(f"no line matching {pattern!r} within {timeout} s; "
                             f"output:\n{self.output}")

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def pids(self) -> dict[str, int]:
        """name -> pid, from the table the demo prints for ``status``."""
        mark = len(self.lines)
        self.send("status")
        self.wait_for(r"\bgeodns\b.*\bup\b", 10, since=mark)
        table: dict[str, int] = {}
        for line in self.lines[mark:]:
            cols = line.split()
            if len(cols) >= 5 and cols[-1].isdigit():
                table[cols[2]] = int(cols[-1])
        return table

    def interrupt(self, timeout: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout)

    def close(self) -> None:
        """Stop it as a user would (Ctrl-C), killing it only if that does not work."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(5)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


def fetch(address: str, port: int, path: str = "/index.html",
          timeout: float = 5.0) -> tuple[int, str]:
    """GET through one edge with the demo zone's Host; (status, Via)."""
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": f"www.example.test:{port}"})
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.getheader("Via", "")
    finally:
        conn.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (OSError, IndexError):
        return True
    return state != "Z"
