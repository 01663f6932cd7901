"""Edge health: the pure rise/fall machine, and the HTTP prober against real endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from dnsutil import HealthEndpoint, free_port

from geoconfig.topology import Edge, HealthSettings
from geodns.health import EdgeState, HealthChecker, observe

# --------------------------------------------------------------------------- observe: a table


def run(steps: str, rise: int, fall: int) -> str:
    """Feed '+' (success) / '-' (failure) results from "never probed" and return the state
    after each step as 'U' (up) / 'D' (down)."""
    state = EdgeState()
    out = []
    for step in steps:
        state = observe(state, step == "+", rise, fall)
        out.append("U" if state.up else "D")
    return "".join(out)


@pytest.mark.parametrize(
    ("rise", "fall", "steps", "expected"),
    [
        (2, 2, "", ""),
        (2, 2, "+", "U"),  # never probed counts as up, and stays up
        (2, 2, "++++", "UUUU"),
        (2, 2, "-", "U"),  # one failure is not enough
        (2, 2, "--", "UD"),
        (2, 2, "-+-+-+", "UUUUUU"),  # a success resets the failure count
        (2, 2, "-+--", "UUUD"),
        (2, 2, "---", "UDD"),
        (2, 2, "--+", "UDD"),  # one success is not enough to come back
        (2, 2, "--++", "UDDU"),
        (2, 2, "--+-++", "UDDDDU"),  # a failure while down resets the success count
        (2, 2, "--++--", "UDDUUD"),
        (1, 1, "-", "D"),
        (1, 1, "-+-+", "DUDU"),
        (1, 3, "--", "UU"),
        (1, 3, "---", "UUD"),
        (1, 3, "--+---", "UUUUUD"),
        (1, 3, "---+", "UUDU"),
        (3, 1, "-++", "DDD"),
        (3, 1, "-+++", "DDDU"),
        (3, 1, "-++-+++", "DDDDDDU"),
        (3, 2, "--+++-", "UDDDUU"),
        (3, 2, "--+++--", "UDDDUUD"),
        (5, 5, "-----+++++", "UUUUDDDDDU"),
    ],
)
def test_observe(rise, fall, steps, expected):
    assert run(steps, rise, fall) == expected


@pytest.mark.parametrize(
    ("before", "ok", "after"),
    [
        (EdgeState(), True, EdgeState(True, 0, 0)),
        (EdgeState(), False, EdgeState(True, 0, 1)),
        (EdgeState(True, 0, 1), True, EdgeState(True, 0, 0)),
        (EdgeState(True, 0, 1), False, EdgeState(False, 0, 0)),
        (EdgeState(False, 0, 0), True, EdgeState(False, 1, 0)),
        (EdgeState(False, 1, 0), False, EdgeState(False, 0, 0)),
        (EdgeState(False, 1, 0), True, EdgeState(True, 0, 0)),
    ],
)
def test_observe_counters(before, ok, after):
    assert observe(before, ok, rise=2, fall=2) == after


# -------------------------------------------------------------------- endpoints for the prober


class StatusServer:
    """An HTTP server on 127.0.0.1 answering every GET with a fixed status (e.g. 500)."""

    def __init__(self, status: int, port: int = 0) -> None:
        code = status

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(code)
                if 300 <= code < 400:
                    self.send_header("Location", "/healthz")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Silent:
    """Accepts TCP connections but never answers: probes time out. ``accepted`` counts the
    connections taken, so a test can wait until a probe is waiting for its answer."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # stop() closes the listening socket
            while True:
                conn, _ = self.sock.accept()
                self.conns.append(conn)  # held open, never answered
                self.accepted += 1

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() above
        self.sock.close()
        for conn in self.conns:
            conn.close()


def count_probes(checker: HealthChecker) -> Counter[str]:
    """Probe results recorded so far, by edge name (counted as ``record`` is called)."""
    counts: Counter[str] = Counter()
    record = checker.record

    def counting(name: str, ok: bool) -> None:
        counts[name] += 1
        record(name, ok)

    checker.record = counting  # type: ignore[method-assign]
    return counts


def make_edge(name: str, port: int, address: str = "127.0.0.1") -> Edge:
    return Edge(name, "r1", address, None, port, address)


FAST = HealthSettings(path="/healthz", interval=0.1, timeout=0.3, rise=2, fall=2)


@pytest.fixture
def cleanup() -> Iterator[list[Callable[[], None]]]:
    stops: list[Callable[[], None]] = []
    yield stops
    for stop in reversed(stops):
        stop()


def status_edge(cleanup, name: str, status: int) -> Edge:
    srv = StatusServer(status)
    cleanup.append(srv.stop)
    return make_edge(name, srv.port)


def healthy_edge(cleanup, name: str, address: str = "127.0.0.1") -> tuple[Edge, HealthEndpoint]:
    port = free_port(address)
    ep = HealthEndpoint(address, port).start()
    cleanup.append(ep.stop)
    return make_edge(name, port, address), ep


async def until(predicate: Callable[[], object], timeout: float = 5.0) -> float:
    """Poll ``predicate`` on the event loop; return the seconds it took (fail on timeout)."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def shutdown(checker: HealthChecker) -> None:
    """``checker.stop()``, bounded: a cancel that lands in the same loop iteration as a probe's
    timeout is swallowed (see test_cancel_at_probe_timeout_ends_the_prober), and stop() would
    then wait forever; cancel such a prober again instead of hanging the test run."""
    tasks = list(checker._tasks.values())
    stopping = asyncio.ensure_future(checker.stop())
    _, pending = await asyncio.wait({stopping}, timeout=3)
    if pending:
        for task in tasks:
            task.cancel()
    await stopping


# ---------------------------------------------------------------------------- probe: a table


@pytest.mark.parametrize(
    ("kind", "ok"),
    [
        (200, True),
        (204, True),
        (299, True),
        (301, False),  # redirects are not followed
        (302, False),
        (404, False),
        (500, False),
        (503, False),
        ("healthy", True),  # the shared HealthEndpoint: 200 on /healthz
        ("wrong-path", False),  # ...and 404 elsewhere
        ("refused", False),
        ("silent", False),  # connects, never answers: timeout
    ],
)
async def test_probe(cleanup, kind, ok):
    settings = FAST
    if isinstance(kind, int):
        edge = status_edge(cleanup, "e", kind)
    elif kind in ("healthy", "wrong-path"):
        edge, _ = healthy_edge(cleanup, "e")
        if kind == "wrong-path":
            settings = HealthSettings(path="/other", interval=0.1, timeout=0.3)
    elif kind == "refused":
        edge = make_edge("e", free_port())
    else:
        silent = Silent()
        cleanup.append(silent.stop)
        edge = make_edge("e", silent.port)
    checker = HealthChecker((), settings, lambda health: None)  # a session, no probers
    await checker.start()
    try:
        start = time.monotonic()
        assert await checker.probe(edge) is ok
        assert time.monotonic() - start < settings.timeout + 0.5
    finally:
        await shutdown(checker)


# -------------------------------------------------------------------- the checker, end to end


async def test_on_change_when_edges_go_down_and_come_back(cleanup):
    good, _ = healthy_edge(cleanup, "good")
    flap, flap_ep = healthy_edge(cleanup, "flap", "127.0.0.2")
    refused = make_edge("refused", free_port())
    error = status_edge(cleanup, "error500", 500)
    silent = Silent()
    cleanup.append(silent.stop)
    hung = make_edge("hung", silent.port)
    changes: list[dict[str, bool]] = []
    checker = HealthChecker((good, flap, refused, error, hung), FAST,
                            lambda health: changes.append(dict(health)))
    await checker.start()
    try:
        everyone_else_up = {"good": True, "flap": True}
        settled = {**everyone_else_up, "refused": False, "error500": False, "hung": False}
        await until(lambda: changes and changes[-1] == settled, 5)
        assert checker.snapshot() == settled
        # the healthy ones were never reported down (an edge not probed yet is absent from
        # a change's map: it counts as up)
        assert all(c.get("good", True) and c.get("flap", True) for c in changes)
        assert len(changes) == 3  # one call per edge that flipped

        flap_ep.stop()  # refuses connections now: down after `fall` (2) failures
        took = await until(lambda: changes[-1].get("flap") is False, 3)
        assert changes[-1] == {**settled, "flap": False}
        assert took < 1.5
        assert checker.states["flap"] == EdgeState(False, 0, 0)

        flap_ep.start()  # back after `rise` (2) successes
        took = await until(lambda: changes[-1].get("flap") is True, 3)
        assert changes[-1] == settled
        assert took < 1.5
        assert len(changes) == 5
    finally:
        await shutdown(checker)


async def test_never_probed_is_up_and_no_change_for_healthy(cleanup):
    good, _ = healthy_edge(cleanup, "good")
    changes: list[dict[str, bool]] = []
    checker = HealthChecker((good,), FAST, lambda health: changes.append(dict(health)))
    probes = count_probes(checker)
    assert checker.snapshot() == {}
    await checker.start()
    try:
        await until(lambda: "good" in checker.states, 3)
        await until(lambda: probes["good"] >= 4, 3)  # a few more probe rounds
        assert changes == []
        assert checker.snapshot() == {"good": True}
    finally:
        await shutdown(checker)
    assert checker._tasks == {}


async def test_reconfigure_keeps_unchanged_and_drops_removed(cleanup):
    good, _ = healthy_edge(cleanup, "good")
    dead = make_edge("dead", free_port())
    gone = make_edge("gone", free_port())
    changes: list[dict[str, bool]] = []
    checker = HealthChecker((good, dead, gone), FAST, lambda h: changes.append(dict(h)))
    probes = count_probes(checker)
    await checker.start()
    try:
        await until(lambda: checker.snapshot() == {"good": True, "dead": False,
                                                   "gone": False}, 5)
        newcomer, _ = healthy_edge(cleanup, "newcomer")
        moved = make_edge("good", free_port())  # same name, different port: a changed edge
        dead_task = checker._tasks["dead"]

        checker.reconfigure((dead, newcomer), FAST)
        # unchanged "dead" keeps its state (and its prober); "good" and "gone" are dropped
        assert checker.snapshot() == {"dead": False}
        assert checker._tasks["dead"] is dead_task
        assert set(checker._tasks) == {"dead", "newcomer"}
        await until(lambda: checker.snapshot() == {"dead": False, "newcomer": True}, 3)

        n = len(changes)
        checker.reconfigure((dead, newcomer, moved), FAST)
        # the changed edge starts from "never probed" and goes down on its own probes
        await until(lambda: checker.snapshot().get("good") is False, 3)
        assert checker.snapshot() == {"dead": False, "newcomer": True, "good": False}
        assert changes[n:] == [{"dead": False, "newcomer": True, "good": False}]
        dead_probes = probes["dead"]
        await until(lambda: probes["dead"] >= dead_probes + 2, 3)  # still probing "dead"
        assert checker._tasks["dead"] is dead_task and not dead_task.done()
    finally:
        await shutdown(checker)


async def test_reconfigure_with_new_settings_restarts_every_edge(cleanup):
    dead = make_edge("dead", free_port())
    checker = HealthChecker((dead,), FAST, lambda h: None)
    await checker.start()
    try:
        await until(lambda: checker.snapshot() == {"dead": False}, 3)
        old_task = checker._tasks["dead"]
        slower = HealthSettings(path="/healthz", interval=0.1, timeout=0.3, rise=2, fall=3)
        checker.reconfigure((dead,), slower)
        assert checker.snapshot() == {}  # state dropped: never probed again
        assert checker._tasks["dead"] is not old_task
        await until(lambda: old_task.done(), 1)
        assert old_task.cancelled()
        await until(lambda: checker.snapshot() == {"dead": False}, 3)
    finally:
        await shutdown(checker)


async def test_reconfigure_before_start_spawns_nothing(cleanup):
    good, _ = healthy_edge(cleanup, "good")
    checker = HealthChecker((), FAST, lambda h: None)
    checker.reconfigure((good,), FAST)
    assert checker._tasks == {} and checker.edges == (good,)
    await checker.start()
    try:
        await until(lambda: checker.snapshot() == {"good": True}, 3)
    finally:
        await shutdown(checker)


async def test_stop_cancels_probers_promptly(cleanup):
    silent = Silent()
    cleanup.append(silent.stop)
    slow = HealthSettings(path="/healthz", interval=0.1, timeout=5.0)
    checker = HealthChecker((make_edge("hung", silent.port),), slow, lambda h: None)
    await checker.start()
    await until(lambda: silent.accepted >= 1, 3)  # the probe waits for an answer, forever
    start = time.monotonic()
    await checker.stop()
    assert time.monotonic() - start < 1.0
    assert checker._tasks == {} and checker._session is None


async def test_cancel_at_probe_timeout_ends_the_prober(cleanup):
    silent = Silent()
    cleanup.append(silent.stop)
    settings = HealthSettings(path="/healthz", interval=0.1, timeout=0.3, rise=1, fall=1)
    changes: list[dict[str, bool]] = []
    checker = HealthChecker((make_edge("hung", silent.port),), settings, changes.append)
    await checker.start()
    await until(lambda: silent.accepted >= 1, 3)  # the first probe waits; it times out at 0.3 s
    task = checker._tasks["hung"]
    loop = asyncio.get_running_loop()
    # drop the edge at ~0.4 s, and block the loop past both deadlines so that the probe's
    # timeout and the reconfigure run in the same loop iteration (timeout first)
    loop.call_later(settings.timeout, checker.reconfigure, (), settings)
    time.sleep(settings.timeout + 0.2)
    try:
        await asyncio.wait({task}, timeout=1.0)
        assert task.done(), "the dropped edge's prober is still running"
        assert checker.snapshot() == {}
        assert changes == []
    finally:
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
        await shutdown(checker)
