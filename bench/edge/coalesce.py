"""Request-coalescing probe for bench/edge.sh: N concurrent GETs for one cold object.

Usage (run with the project's venv Python; bench/edge.sh pins it to the client CPU)::

    python bench/edge/coalesce.py --target http://127.0.0.1:8080 --origin http://127.0.0.1:8081

1. Opens ``--count`` keep-alive connections to the target first (``GET /healthz`` on each,
   answered by the cache itself), so the measured burst is not a connect storm from one
   Python process: it measures the cache, not the client.
2. Reads the origin's ``/api/stats`` (directly, not through the cache).
3. Fires ``--count`` concurrent ``GET /api/slow?ms=MS&n=RANDOM`` (a URL nobody asked for
   before) through the cache, one per connection, and waits for all of them.
4. Reads ``/api/stats`` again: the delta for that URL is the number of origin requests.
5. Sends the same burst once more, now all cache hits: its wall time is the floor that the
   client and the cache need for that many requests without waiting on the origin.

Prints a summary and one machine-readable line::

    RESULT label=.. origin_requests=1 wall_s=0.512 p50_ms=.. p99_ms=.. max_ms=.. ok=1000
           errors=0 collapsed=999 hits=0 statuses=200:1000 client_cpu_s=.. hot_wall_s=..
           hot_p50_ms=.. hot_p99_ms=..

``collapsed`` counts responses whose ``Cache-Status`` has the ``collapsed`` parameter
(RFC 9211 section 2.7); ``--status-header`` picks another header to tally (nginx:
``X-Cache-Status``). Exit status: 0, or 1 with ``--expect-origin-requests N`` when the origin
saw another number of requests or a request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import sys
import time
from collections import Counter

import aiohttp

_TTL = re.compile(r";\s*ttl=-?\d+")


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 if empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * pct // 100))  # ceil(n * pct / 100)
    return sorted_values[int(rank) - 1]


async def origin_count(session: aiohttp.ClientSession, origin: str, url: str) -> int:
    async with session.get(origin + "/api/stats") as resp:
        resp.raise_for_status()
        stats = await resp.json()
    by_url = stats.get("requests_by_url")
    if isinstance(by_url, dict):
        return int(by_url.get(url, 0))
    path = url.split("?", 1)[0]  # an origin without per-URL counts: count the path
    return int(stats.get("requests", {}).get(path, 0))


async def open_connections(session: aiohttp.ClientSession, target: str, count: int) -> int:
    """Open ``count`` pooled keep-alive connections; returns how many requests succeeded."""

    async def one() -> bool:
        try:
            async with session.get(target + "/healthz") as resp:
                await resp.read()
                return resp.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False

    results = await asyncio.gather(*(one() for _ in range(count)))
    return sum(results)


async def run(args: argparse.Namespace) -> int:
    target = args.target.rstrip("/")
    origin = args.origin.rstrip("/")
    url = f"/api/slow?ms={args.ms}&n={secrets.token_hex(8)}"
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60.0,
                                     force_close=False)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     cookie_jar=aiohttp.DummyCookieJar()) as session:
        t = time.perf_counter()
        opened = await open_connections(session, target, args.count)
        print(f"[{args.label}] warm-up: {opened}/{args.count} connections opened in "
              f"{time.perf_counter() - t:.2f} s", flush=True)
        before = await origin_count(session, origin, url)

        statuses: Counter[str] = Counter()
        tally: Counter[str] = Counter()
        latencies: list[float] = []
        errors: Counter[str] = Counter()

        async def one(record: bool) -> None:
            start = time.perf_counter()
            try:
                async with session.get(target + url) as resp:
                    await resp.read()
                    if record:
                        statuses[str(resp.status)] += 1
                        value = resp.headers.get(args.status_header, "-")
                        tally[_TTL.sub("", value)] += 1
            except (TimeoutError, aiohttp.ClientError) as exc:
                if record:
                    errors[type(exc).__name__] += 1
                return
            latencies.append(time.perf_counter() - start)

        async def burst(record: bool) -> tuple[float, float]:
            """Wall time and this process's CPU time for ``count`` concurrent GETs of url."""
            c0, t0 = time.process_time(), time.perf_counter()
            await asyncio.gather(*(one(record) for _ in range(args.count)))
            return time.perf_counter() - t0, time.process_time() - c0

        wall, client_cpu = await burst(record=True)
        cold = sorted(latencies)
        after = await origin_count(session, origin, url)
        # The same burst again, now all cache hits: what 1,000 requests cost the client and
        # the cache without any waiting on the origin (the floor for the cold burst).
        latencies.clear()
        hot_wall, hot_cpu = await burst(record=False)
        hot = sorted(latencies)

    origin_requests = after - before
    latencies = cold
    collapsed = sum(n for value, n in tally.items() if "collapsed" in value)
    hits = sum(n for value, n in tally.items()
               if re.search(r";\s*hit\b", value) or value.upper() == "HIT")
    ok = sum(n for status, n in statuses.items() if status.startswith("2"))
    failed = sum(errors.values())
    print(f"[{args.label}] {args.count} concurrent GET {url} (origin answers after {args.ms} ms)")
    print(f"[{args.label}]   origin requests: {origin_requests}")
    print(f"[{args.label}]   wall time:       {wall:.3f} s")
    print(f"[{args.label}]   latency:         p50 {percentile(latencies, 50) * 1000:.1f} ms, "
          f"p99 {percentile(latencies, 99) * 1000:.1f} ms, "
          f"max {(latencies[-1] if latencies else 0) * 1000:.1f} ms")
    print(f"[{args.label}]   statuses:        "
          + (", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())) or "none"))
    print(f"[{args.label}]   client CPU:      {client_cpu:.3f} s (of {wall:.3f} s wall)")
    print(f"[{args.label}]   same burst again, all hits: wall {hot_wall:.3f} s, p50 "
          f"{percentile(hot, 50) * 1000:.1f} ms, p99 {percentile(hot, 99) * 1000:.1f} ms, "
          f"client CPU {hot_cpu:.3f} s")
    if errors:
        print(f"[{args.label}]   errors:          "
              + ", ".join(f"{k}: {v}" for k, v in errors.most_common()))
    print(f"[{args.label}]   {args.status_header}:")
    for value, n in tally.most_common():
        print(f"[{args.label}]     {n:5d}  {value}")
    print("RESULT " + " ".join([
        f"label={args.label}",
        f"origin_requests={origin_requests}",
        f"wall_s={wall:.3f}",
        f"p50_ms={percentile(latencies, 50) * 1000:.1f}",
        f"p99_ms={percentile(latencies, 99) * 1000:.1f}",
        f"max_ms={(latencies[-1] if latencies else 0) * 1000:.1f}",
        f"ok={ok}",
        f"errors={failed}",
        f"collapsed={collapsed}",
        f"hits={hits}",
        "statuses=" + (",".join(f"{k}:{v}" for k, v in sorted(statuses.items())) or "none"),
        f"client_cpu_s={client_cpu:.3f}",
        f"hot_wall_s={hot_wall:.3f}",
        f"hot_p50_ms={percentile(hot, 50) * 1000:.1f}",
        f"hot_p99_ms={percentile(hot, 99) * 1000:.1f}",
    ]), flush=True)
    if args.expect_origin_requests is not None and (
            origin_requests != args.expect_origin_requests or ok != args.count):
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--target", required=True, help="base URL of the cache under test")
    parser.add_argument("--origin", required=True,
                        help="base URL of the origin (for /api/stats, read directly)")
    parser.add_argument("--count", type=int, default=1000, help="concurrent requests")
    parser.add_argument("--ms", type=int, default=500, help="origin delay (/api/slow?ms=)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--label", default="coalesce", help="name in the output")
    parser.add_argument("--status-header", default="Cache-Status",
                        help="response header to tally (default Cache-Status)")
    parser.add_argument("--expect-origin-requests", type=int, default=None,
                        help="exit 1 unless the origin saw exactly this many requests")
    args = parser.parse_args(argv)
    if args.count < 1 or args.ms < 0 or args.timeout <= 0:
        parser.error("--count must be >= 1, --ms >= 0, --timeout > 0")
    try:
        import uvloop
    except ImportError:  # optional
        return asyncio.run(run(args))
    return uvloop.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
