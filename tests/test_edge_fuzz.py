"""Fuzz-style robustness: 10,000 random and mutated requests, and random origin answers.

The edge must stay up (``/healthz`` 200 at the end), answer each connection with a valid
status line or close it, log no traceback, and give back every origin slot. Under CI (the
``CI`` variable) the seed is fixed; elsewhere it is random and printed on failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from edgeutil import DEFAULT_EDGE, EDGE_NAME, FakeClock, edge_env, topology_dict

from edge.main import RunningEdge, start_edge
from geoconfig.topology import parse_topology

__all__ = ["edge_env"]

SEED = 11 if os.environ.get("CI") else random.randrange(2**32)
STATUS_LINE = re.compile(rb"HTTP/1\.[01] [1-5]\d\d ")
FAST = {"client_header_timeout": 0.3, "client_body_timeout": 0.3, "keepalive_timeout": 0.3,
        "max_connections_per_address": 100_000, "read_timeout": 2.0}
CONCURRENCY = 128

CORPUS = [
    b"GET /a HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n",
    b"GET /a?x=1&y=%41 HTTP/1.1\r\nHost: Edge.Test:80\r\nAccept: */*\r\nConnection: close\r\n\r\n",
    b"HEAD /b HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n",
    b"GET /b HTTP/1.0\r\nHost: edge.test\r\n\r\n",
    b"GET http://edge.test/a HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: edge.test\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    b"POST /p HTTP/1.1\r\nHost: edge.test\r\nTransfer-Encoding: chunked\r\nConnection: close"
    b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"PUT /p HTTP/1.1\r\nHost: edge.test\r\nExpect: 100-continue\r\nContent-Length: 2\r\n"
    b"Connection: close\r\n\r\nok",
    b"GET /v HTTP/1.1\r\nHost: edge.test\r\nAccept-Encoding: gzip\r\nUser-Agent: fuzz\r\n"
    b"Cookie: a=b\r\nConnection: close\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n",
    b"GET /healthz?x HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n",
    b"PURGE /a HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: edge.test\r\n\r\nGET /b HTTP/1.1\r\nHost: edge.test\r\n"
    b"Connection: close\r\n\r\n",
]
METHODS = [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"TRACE",
           b"CONNECT", b"PURGE", b"BREW", b"G\x00T", b"get", b""]


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to three random edits of a corpus request."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(10)
        i = rng.randrange(len(b) + 1)
        if op == 0 and b:  # flip a byte
            b[min(i, len(b) - 1)] = rng.randrange(256)
        elif op == 1:  # insert a troublesome byte
            b[i:i] = bytes([rng.choice(b"\r\n\x00 \t:;,\x7f\xff")])
        elif op == 2:  # delete a range
            del b[i:i + rng.randint(1, 8)]
        elif op == 3:  # truncate
            del b[i:]
        elif op == 4:  # duplicate a header line
            lines = bytes(b).split(b"\r\n")
            if len(lines) > 2:
                k = rng.randrange(1, len(lines) - 1)
                lines.insert(k, lines[k])
                b = bytearray(b"\r\n".join(lines))
        elif op == 5:  # another method
            b = bytearray(rng.choice(METHODS) + bytes(b[bytes(b).find(b" "):]))
        elif op == 6:  # a random target
            target = bytes(rng.randrange(33, 127) for _ in range(rng.randint(0, 40)))
            parts = bytes(b).split(b" ", 2)
            if len(parts) == 3:
                b = bytearray(parts[0] + b" " + rng.choice([b"/", b"", b"http://x"]) + target
                              + b" " + parts[2])
        elif op == 7:  # a random Host
            host = bytes(rng.choice(b"abc.:[]@/?#%09-_ \x00") for _ in range(rng.randint(0, 20)))
            b = bytearray(re.sub(rb"Host: [^\r\n]*", b"Host: " + host, bytes(b), count=1))
        elif op == 8:  # a framing header
            field = rng.choice([b"Content-Length: 3", b"Content-Length: -1", b"Content-Length: 9"
                                b"99999999999999999", b"Transfer-Encoding: chunked",
                                b"Transfer-Encoding: gzip, chunked", b"Content-Length: 1,1"])
            b[i:i] = field + b"\r\n"
        else:  # a long header
            b[i:i] = b"X-Long: " + b"a" * rng.randint(100, 20000) + b"\r\n"
    return bytes(b)


async def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` on a new connection; everything the edge answers until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(data)
            await writer.drain()
        async with asyncio.timeout(10):
            try:
                return await reader.read(-1)
            except ConnectionError:
                return b""  # reset: a closed connection
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def run_all(port: int, requests: list[bytes]) -> list[bytes]:
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(data: bytes) -> bytes:
        async with sem:
            return await exchange(port, data)

    return await asyncio.gather(*(one(r) for r in requests))


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records
            if r.name.startswith("geoedge") and r.levelno >= logging.ERROR and r.exc_info]


async def until(predicate: Callable[[], bool], within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def check_answers(answers: list[bytes], requests: list[bytes]) -> None:
    bad = [(r[:120], a[:120]) for r, a in zip(requests, answers, strict=True)
           if a and not STATUS_LINE.match(a)]
    assert not bad, f"seed {SEED}: invalid answers, e.g. {bad[:3]}"


# -- random client input --------------------------------------------------------------------------
async def test_random_and_mutated_requests(edge_env, caplog):
    caplog.set_level(logging.WARNING)
    env = await edge_env(**FAST)
    for path in ("/a", "/b", "/v", "/p"):
        env.origin.route(path, headers=[("Cache-Control", "max-age=60"),
                                        ("Vary", "Accept-Encoding")])
    rng = random.Random(SEED)
    requests = [mutate(rng, rng.choice(CORPUS)) if i % 10 else rng.choice(CORPUS)
                for i in range(9_000)]
    requests += [bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
                 for _ in range(1_000)]  # and plain noise
    answers = await run_all(env.edge.port, requests)
    check_answers(answers, requests)
    assert sum(a.startswith(b"HTTP/1.1 2") for a in answers) > 500  # the corpus got through
    assert (await env.get("/healthz")).status == 200
    assert await until(lambda: env.app.pool.snapshot()[0]["active"] == 0), SEED
    assert await until(lambda: env.edge.limiter.total <= 1), SEED  # only the test client's
    assert not tracebacks(caplog), f"seed {SEED}: {tracebacks(caplog)[:5]}"


# -- random origin answers ------------------------------------------------------------------------
def origin_answer(rng: random.Random, statuses: Callable[[random.Random], int]) -> bytes:
    """A random, often broken, HTTP/1.1 response."""
    if rng.random() < 0.05:
        return rng.choice([b"", b"garbage\r\n\r\n", b"HTTP/1.1\r\n\r\n", b"HTTP/9.9 200 OK\r\n",
                           bytes(rng.randrange(256) for _ in range(64))])
    status = statuses(rng)
    body = bytes(rng.randrange(97, 123) for _ in range(rng.randint(0, 300)))
    head = [b"HTTP/1.1 %d %s" % (status, rng.choice([b"OK", b"", b"Weird Reason"]))]
    for _ in range(rng.randint(0, 4)):
        head.append(rng.choice([
            b"Content-Length: %d" % len(body), b"Content-Length: %d" % (len(body) + 10),
            b"Content-Length: %d" % max(len(body) - 10, 0), b"Content-Length: -5",
            b"Content-Length: abc", b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip",
            b"Cache-Control: max-age=60", b"Cache-Control: no-store, private",
            b"Cache-Control: max-age=-1, s-maxage=abc", b"Vary: *", b"Vary: Accept-Encoding",
            b"ETag: \"x\"", b"Last-Modified: yesterday", b"Expires: 0", b"Age: -3",
            b"Content-Encoding: gzip", b"Connection: keep-alive, X-Drop", b"X-Drop: 1",
            b"Set-Cookie: a=b", b"Surrogate-Key: a b", b"Cache-Status: other; hit",
            b"Bad Header: x", b": empty-name", b"X-Bin: \x01\x7f",
        ]))
    chunked = b"Transfer-Encoding: chunked" in head
    if chunked and rng.random() < 0.7:
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if rng.random() < 0.7 else (
            b"zz\r\n" + body)
    if rng.random() < 0.2:
        body = body[:rng.randint(0, len(body))]  # truncated
    return b"\r\n".join(head) + b"\r\n\r\n" + body


@dataclass
class RawOrigin:
    """An origin that reads one request head per connection, answers it from the request's
    path (``/r/<n>``: answer n of a seeded sequence), and closes."""

    rng_for: Callable[[int], random.Random]
    statuses: Callable[[random.Random], int]
    server: asyncio.base_events.Server | None = None
    name: str = "origin-raw"
    port: int = 0
    answered: int = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1]
            if path == b"/healthz":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            else:
                n = int(path.rsplit(b"/", 1)[-1] or 0) if path.startswith(b"/r/") else 0
                writer.write(origin_answer(self.rng_for(n), self.statuses))
                self.answered += 1
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError,
                TimeoutError, ValueError, IndexError):
            pass
        finally:
            writer.close()


async def start_behind(origin: RawOrigin) -> RunningEdge:
    await origin.start()
    edge = {**DEFAULT_EDGE, **FAST, "retries": 0, "max_fails": 1000,
            "fail_window": 0.01}  # a broken answer must not eject the only origin
    topology = parse_topology(topology_dict([origin], edge))  # type: ignore[list-item]
    return await start_edge(topology, EDGE_NAME, listen=("127.0.0.1", 0), clock=FakeClock())


async def origin_fuzz(caplog: pytest.LogCaptureFixture, statuses: Callable[[random.Random], int],
                      count: int) -> None:
    caplog.set_level(logging.WARNING)
    origin = RawOrigin(lambda n: random.Random(SEED * 100_003 + n), statuses)
    running = await start_behind(origin)
    try:
        requests = [b"%s /r/%d HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n"
                    % (random.Random(SEED + n).choice([b"GET", b"HEAD", b"POST"]), n)
                    for n in range(count)]
        answers = await run_all(running.port, requests)
        check_answers(answers, requests)
        health = await exchange(running.port, b"GET /healthz HTTP/1.1\r\nHost: e\r\n"
                                              b"Connection: close\r\n\r\n")
        assert health.startswith(b"HTTP/1.1 200 "), SEED
        assert await until(lambda: running.pool.snapshot()[0]["active"] == 0), (
            f"seed {SEED}: origin slots leaked: {running.pool.snapshot()[0]['active']}")
        assert not tracebacks(caplog), f"seed {SEED}: {tracebacks(caplog)[:5]}"
    finally:
        await running.stop()
        assert origin.server is not None
        origin.server.close()


async def test_random_origin_answers(caplog):
    """1,000 random origin answers with statuses the edge must understand (100-599)."""
    await origin_fuzz(caplog, lambda rng: rng.randint(100, 599), 1_000)


async def test_origin_statuses_outside_100_599(caplog):
    """Statuses aiohttp parses but HTTP does not define: 502, no traceback, no leaked slot."""
    await origin_fuzz(caplog, lambda rng: rng.choice([0, 1, 99, 600, 999, 1000]), 200)
