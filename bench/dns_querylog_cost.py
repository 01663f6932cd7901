"""CPU cost per query of GeoDNS's counters and query log, measured in-process.

    .venv/bin/python bench/dns_querylog_cost.py [--records 2000000] [--cpu 0]

The UDP fast path calls the same C function for every datagram (geodns/_obs.h, obs_query)
that ``_fastudp.obs_note`` calls, so timing obs_note over the usual answers (the demo zone:
40% A, 40% AAAA for www with an ECS /24 or /48, 20% NXDOMAIN, the engine's real responses)
gives the cost each mode adds per query: counters only (metrics on), and counters plus a
complete (sample = 1) query log as dnstap and as JSON lines, written to a temporary file by the
real writer thread (geodns/querylog.py). CPU time is the process's (every thread: the writer's
write() calls count); each mode runs five times and the fastest counts. The report relates the
added cost to the server's own cost per answered query at full rate, ``--server-ns`` (default:
1 / 415,000 s, the answers per CPU-second of bench/dns.sh on this machine), i.e. the slowdown
at full rate the log would cause.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import dns.edns
import dns.message

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from geoconfig.dnsobs import QueryLogSettings  # noqa: E402
from geodns import _fastudp  # noqa: E402
from geodns.main import load_engine  # noqa: E402
from geodns.querylog import QueryLog  # noqa: E402


def workload(count: int) -> list[tuple[bytes, bytes]]:
    engine = load_engine(ROOT / "examples" / "demo.toml")
    rng = random.Random(1)
    out = []
    for i in range(count):
        kind = rng.random()
        if kind < 0.8:
            rdtype = "A" if kind < 0.4 else "AAAA"
            if rng.random() < 0.9:
                subnet = dns.edns.ECSOption(f"{rng.randrange(1, 224)}.{rng.randrange(256)}."
                                            f"{rng.randrange(256)}.0", 24)
            else:
                subnet = dns.edns.ECSOption(f"2a02:{rng.randrange(65536):x}:{i % 65536:x}::", 48)
            msg = dns.message.make_query("www.example.test", rdtype, use_edns=0,
                                         options=[subnet])
        else:
            msg = dns.message.make_query(f"nx{i}.example.test", "A", use_edns=0)
        msg.flags = 0
        wire = msg.to_wire()
        response = engine.respond(wire, "127.0.0.1")
        assert response is not None
        out.append((wire, response))
    return out


def run(mode: str, pairs: list[tuple[bytes, bytes]], records: int, tmp: str) -> float:
    """Process CPU seconds for ``records`` obs_note calls in ``mode``."""
    log = None
    if mode in ("dnstap", "json"):
        for stale in Path(tmp).glob(f"q.{mode}*"):  # JSON appends, dnstap renames: start anew
            stale.unlink()
        log = QueryLog(QueryLogSettings(os.path.join(tmp, f"q.{mode}"), mode))
        log.open()
        obs = _fastudp.obs_new(log=log.c_settings(b"ns1", b"geoedge bench"))
        log.start(obs, _fastudp.obs_take)
    else:
        obs = _fastudp.obs_new()
    note = _fastudp.obs_note
    n = len(pairs)
    start = time.process_time()
    for i in range(records):
        q, r = pairs[i % n]
        note(obs, q, r, 0, 0.0001, "192.0.2.1", 53000)
    if log is not None:
        log.stop()  # the last chunk written: part of the cost
    return time.process_time() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--cpu", type=int, default=0, help="pin to this CPU (-1: do not)")
    parser.add_argument("--server-ns", type=float, default=1e9 / 415_000,
                        help="the server's CPU ns per answered query at full rate")
    args = parser.parse_args()
    if args.cpu >= 0:
        os.sched_setaffinity(0, {args.cpu})
    pairs = workload(20_000)
    print(f"load average {os.getloadavg()[0]:.2f}; {args.records:,} records per run; "
          f"server cost per query {args.server_ns:.0f} ns", flush=True)
    best = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(5):
            for mode in ("counters", "dnstap", "json"):
                seconds = run(mode, pairs, args.records, tmp)
                best[mode] = min(best.get(mode, seconds), seconds)
        sizes = {m: os.path.getsize(os.path.join(tmp, f"q.{m}")) for m in ("dnstap", "json")}
    base = best["counters"] / args.records * 1e9
    print(f"obs_note, counters only: {base:.0f} ns per query (the Python call included; the "
          "C loop calls the same function directly)")
    for mode in ("dnstap", "json"):
        ns = best[mode] / args.records * 1e9
        added = ns - base
        print(f"{mode:7s}: {ns:.0f} ns per query, +{added:.0f} ns for the log "
              f"({sizes[mode] / args.records:.0f} bytes per record): "
              f"{100 * added / args.server_ns:.1f}% of the server's cost per query, "
              f"i.e. full-rate throughput x{args.server_ns / (args.server_ns + added):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
