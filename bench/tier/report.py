"""Markdown tables for bench/tier.sh from its results file (one row per wrk run).

Usage::

    python bench/tier/report.py RESULTS.tsv --objects 10000 --connections 64

Columns of the file (tab-separated, with a header): part (mix, cost or fill), label,
conns, requests, duration_us, p50_us, p99_us, errors, then the Cache-Status tally of
bench/tier/load.lua (mem, tier, miss, collapsed, other, non200; all zero for the hot-URL runs,
which skip parsing), origin_fetches (the origin's access log), server_cpu_s (the caches
measured, with their children), redis_cpu_s, wrk_cpu_s, redis_commands (Redis's own count)
and the shared-tier counters of the edges measured: tier_errors (failed Redis calls) and
tier_short_circuits (calls skipped while the circuit breaker was open).
"""

from __future__ import annotations

import argparse
import csv
import sys

MIX = {"shared": "2 edges + Redis (timeout {timeout} s)",
       "default": "2 edges + Redis (geoedge defaults: timeout 50 ms)",
       "private": "2 edges, no shared tier", "nginx": "nginx proxy_cache (1 cache)"}
COST = {"geoedge-hit": "geoedge in-process hit", "geoedge-tier-hit": "geoedge shared-tier hit",
        "geoedge-miss": "geoedge miss (with tier)", "geoedge-miss-private":
        "geoedge miss (no tier)", "nginx-hit": "nginx hit", "nginx-miss": "nginx miss"}
EXPECT = {"geoedge-tier-hit": "tier", "geoedge-miss": "miss", "geoedge-miss-private": "miss",
          "nginx-miss": "miss"}
KINDS = ("mem", "tier", "miss", "collapsed", "other")


def rps(r: dict[str, str]) -> float:
    d = int(r["duration_us"])
    return int(r["requests"]) * 1e6 / d if d else 0.0


def tallied(r: dict[str, str]) -> int:
    return sum(int(r[k]) for k in KINDS)


def pct(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%" if total else "-"


def ms(us: str) -> str:
    return f"{int(us) / 1000:.2f}"


def per_req(r: dict[str, str], key: str, scale: float = 1.0, digits: int = 0) -> str:
    reqs = int(r["requests"])
    return f"{float(r[key]) * scale / reqs:,.{digits}f}" if reqs else "-"


def tier_failures(r: dict[str, str]) -> str:
    return f"{int(r['tier_errors']):,} / {int(r['tier_short_circuits']):,}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("results")
    parser.add_argument("--objects", type=int, required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--timeout", default="1.0", help="the shared pair's redis timeout")
    args = parser.parse_args(argv)
    with open(args.results, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    problems: list[str] = []
    for r in rows:
        if int(r["errors"]) or int(r["non200"]):
            problems.append(f"{r['part']} {r['label']} -c{r['conns']}: {r['errors']} socket "
                            f"errors, {r['non200']} non-200 responses")

    mix = {r["label"]: r for r in rows if r["part"] == "mix"}
    print(f"Hit rate, cold caches: uniform over {args.objects:,} objects, wrk -t2 "
          f"-c{args.connections} (one thread per edge, the same request sequences for every "
          "cache; nginx's HIT counts as in-process):")
    print()
    print("| caches | requests | req/s | in-process hits | shared-tier hits | misses | collapsed "
          "| hit rate | origin fetches | caches' CPU s | req per CPU-s | Redis CPU s "
          "| Redis commands/req | tier errors / short-circuited |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, name in MIX.items():
        r = mix.get(label)
        if r is None:
            continue
        n, cpu = tallied(r), float(r["server_cpu_s"])
        hits = int(r["mem"]) + int(r["tier"])
        name = name.format(timeout=args.timeout)
        print(f"| {name} | {int(r['requests']):,} | {rps(r):,.0f} | {pct(int(r['mem']), n)} "
              f"| {pct(int(r['tier']), n)} | {pct(int(r['miss']), n)} "
              f"| {pct(int(r['collapsed']), n)} | **{pct(hits, n)}** "
              f"| {int(r['origin_fetches']):,} | {cpu:.2f} "
              f"| {int(r['requests']) / cpu if cpu else 0:,.0f} "
              f"| {float(r['redis_cpu_s']):.2f} | {per_req(r, 'redis_commands', digits=1)} "
              f"| {tier_failures(r)} |")
    print()

    cost: dict[tuple[str, int], dict[str, str]] = {
        (r["label"], int(r["conns"])): r for r in rows if r["part"] == "cost"}
    c = args.connections
    print(f"Per-request cost: latency at 1 connection, throughput at {c} (the cache's CPU time "
          f"per request from /proc, and Redis's, at -c{c}; Redis commands (those run by scripts "
          f"included), origin fetches and tier failures: the -c1 run + the -c{c} run):")
    print()
    print(f"| request | -c1 p50 / p99 ms | -c1 req/s | -c{c} req/s | -c{c} p50 / p99 ms "
          "| cache CPU us/req | Redis CPU us/req | Redis commands/req | origin fetches "
          "| tier errors / short-circuited | check |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for label, name in COST.items():
        one, many = cost.get((label, 1)), cost.get((label, c))
        if one is None and many is None:
            continue
        cells = [name]
        cells.append(f"{ms(one['p50_us'])} / {ms(one['p99_us'])}" if one else "-")
        cells.append(f"{rps(one):,.0f}" if one else "-")
        if many:
            cells += [f"{rps(many):,.0f}", f"{ms(many['p50_us'])} / {ms(many['p99_us'])}",
                      per_req(many, "server_cpu_s", 1e6), per_req(many, "redis_cpu_s", 1e6, 1)]
        else:
            cells += ["-"] * 4
        both = [r for r in (one, many) if r]
        cells.append(" + ".join(per_req(r, "redis_commands", digits=1) for r in both))
        cells.append(" + ".join(f"{int(r['origin_fetches']):,}" for r in both))
        cells.append(" + ".join(tier_failures(r) for r in both))
        want = EXPECT.get(label)
        checks = []
        for r in (one, many):
            if r is None or want is None:
                continue
            n = tallied(r)
            checks.append(f"{int(r[want]):,}/{n:,} {want}")
            if int(r[want]) != n:
                problems.append(f"{label} -c{r['conns']}: {int(r[want])} of {n} responses "
                                f"were '{want}' (" + ", ".join(
                                    f"{k} {r[k]}" for k in KINDS if int(r[k])) + ")")
        cells.append(", ".join(checks) or "hot URL (checked before/after)")
        print("| " + " | ".join(cells) + " |")
    print()
    fill = next((r for r in rows if r["part"] == "fill"), None)
    if fill:
        print(f"- Filling Redis through edge 1 (every request a miss with the tier, "
              f"-c{fill['conns']}): {int(fill['requests']):,} URLs at {rps(fill):,.0f} req/s, "
              f"p50 / p99 {ms(fill['p50_us'])} / {ms(fill['p99_us'])} ms, "
              f"{per_req(fill, 'server_cpu_s', 1e6)} us of edge CPU and "
              f"{per_req(fill, 'redis_commands', digits=1)} Redis commands per request, "
              f"{int(fill['origin_fetches']):,} origin fetches, tier errors / short-circuited "
              f"{tier_failures(fill)}")
    for r in rows:
        if int(r["tier_short_circuits"]) or int(r["tier_errors"]):
            print(f"- Note: {r['part']} {r['label']} -c{r['conns']}: {int(r['tier_errors']):,} "
                  f"shared-tier calls failed and {int(r['tier_short_circuits']):,} were skipped "
                  "by the open circuit breaker: part of these requests went without the tier")
    hot = [cost.get((k, n)) for k in ("geoedge-hit", "nginx-hit") for n in (1, c)]
    if any(r and int(r["origin_fetches"]) for r in hot):
        problems.append("the origin saw requests during a hot-URL run (not all hits)")
    for p in problems:
        print(f"- PROBLEM: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
