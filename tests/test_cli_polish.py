"""The ``geoedge`` command's manners: ``--version``, help on every subcommand and option, a
quiet exit when its reader goes away, and error messages without Python reprs."""

from __future__ import annotations

import argparse
import errno
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path

import pytest

from geoedge.cli import EXIT_SIGPIPE, build_parser, describe_os_error, main

GEOEDGE = str(Path(sys.executable).parent / "geoedge")
DEMO = str(Path(__file__).resolve().parent.parent / "examples" / "demo.toml")
BIG = 1 << 20  # far more than a pipe buffer, so the writer is still writing when it closes


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"geoedge {metadata.version('geoedge')}"


def test_every_subcommand_has_a_description_and_every_option_a_help() -> None:
    parser = build_parser()
    subs = _subparsers(parser)
    assert set(subs) >= {"dns", "explain", "edge", "origin", "fetch", "purge", "demo"}
    missing = [f"geoedge {a.option_strings or a.dest}" for a in parser._actions if not a.help]
    for name, sub in subs.items():
        if not (sub.description or "").strip():
            missing.append(f"geoedge {name}: no description")
        missing += [f"geoedge {name} {'/'.join(a.option_strings) or a.dest}: no help"
                    for a in sub._actions if not (a.help or "").strip()]
    assert missing == []


def test_each_subcommand_help_runs(capsys: pytest.CaptureFixture[str]) -> None:
    for name in _subparsers(build_parser()):
        with pytest.raises(SystemExit) as exited:
            main([name, "--help"])
        assert exited.value.code == 0
        assert f"usage: geoedge {name}" in capsys.readouterr().out


# -- a reader that goes away ------------------------------------------------------------------
class _Big(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(BIG))
        self.end_headers()
        self.wfile.write(b"x" * BIG)

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass


@pytest.fixture
def big_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Big)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_into_a_pipe_closed_early_exits_quietly(big_server: int, tmp_path: Path) -> None:
    """``geoedge fetch URL --body | head -1``: the reader takes one line and leaves."""
    proc = subprocess.Popen(
        [GEOEDGE, "fetch", f"http://127.0.0.1:{big_server}/big", "--body", "--repeat", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=30)
    proc.stderr.close()
    assert first.startswith(b"127.0.0.1: an IP address")
    assert err == ""
    assert code == EXIT_SIGPIPE


# -- error messages ---------------------------------------------------------------------------
def test_describe_os_error_never_shows_the_arguments() -> None:
    uvloop_style = OSError(errno.EADDRINUSE, "error while attempting to bind on address "
                                             "('127.0.0.1', 80): address already in use")
    assert describe_os_error(uvloop_style) == "[Errno 98] Address already in use"
    assert describe_os_error(OSError("just text")) == "OSError"
    assert describe_os_error(PermissionError(errno.EACCES, "x")) == "[Errno 13] Permission denied"


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GEOEDGE, *args], capture_output=True, text=True, timeout=60)


def _assert_clean(stderr: str) -> None:
    assert "Traceback" not in stderr
    assert "('" not in stderr and "OSError(" not in stderr


def test_origin_on_a_busy_port_says_so_plainly(busy_port: int) -> None:
    done = _run("origin", "--config", DEMO, "--name", "origin-1",
                "--listen", f"127.0.0.1:{busy_port}")
    assert done.returncode == 1
    _assert_clean(done.stderr)
    assert (f"geoedge origin: cannot listen for origin origin-1 on 127.0.0.1:{busy_port}: "
            "[Errno 98] Address already in use") in done.stderr


def test_dns_on_a_busy_port_says_so_plainly() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        done = _run("dns", "--config", DEMO, "--listen", f"127.0.0.1:{port}")
    assert done.returncode == 2
    _assert_clean(done.stderr)
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in done.stderr


def test_edge_on_a_busy_port_says_so_plainly(busy_port: int) -> None:
    done = _run("edge", "--config", DEMO, "--name", "us-east-1",
                "--listen", f"127.0.0.1:{busy_port}")
    assert done.returncode == 2
    _assert_clean(done.stderr)
