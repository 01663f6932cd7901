#!/usr/bin/env python3
"""ECS scopes of geoedge vs gdnsd with ``auto_dc_limit => 1`` (issue #15 §2), all regions up.

  .venv/bin/python bench/scopes.py [--v4 2550] [--v6 450] [--seed 7]

Real subnets (IPv4 /24 and IPv6 /48 drawn uniformly over the located networks of the embedded
GeoLite2-City database, as bench/make_dns_queries.py does) are each asked ``www.example.test
A`` with that ECS, once of gdnsd (bench/gdnsd/config.in plus ``auto_dc_limit => 1``: only the
nearest datacenter, gdnsd's widest merging) and once of ``geoedge dns`` (examples/demo.toml;
the edges' health checks answered 200 by a local HTTP server, so every region is up). Printed:
how often geoedge's scope is at least as wide as gdnsd's (its prefix length <= gdnsd's; target
>= 95%), the median scopes, answer
agreement, and "too wide": scopes (of either server) holding an address whose nearest region
(geodata's ranking: the oracle both follow) differs from the answer, sampled at the first,
middle and last address of the scope and 5 random ones.
"""

from __future__ import annotations

import argparse
import http.server
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from ipaddress import IPv4Address, IPv6Address, ip_network
from pathlib import Path

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.query
import maxminddb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from make_dns_queries import Tree, default_db, sample_subnets  # noqa: E402

from geoconfig.topology import load_topology  # noqa: E402
from geodata import GeoReader, rank_regions  # noqa: E402

REGION_OF = {"127.0.1": "us-east", "127.0.2": "eu-west", "127.0.3": "ap-southeast"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ask(port: int, addr: str, plen: int) -> tuple[str, int] | None:
    q = dns.message.make_query("www.example.test", "A", use_edns=0,
                               options=[dns.edns.ECSOption(addr, plen)])
    q.flags &= ~dns.flags.RD
    for _ in range(3):
        try:
            r = dns.query.udp(q, "127.0.0.1", port=port, timeout=1)
        except dns.exception.Timeout:
            continue
        regions = {REGION_OF[rd.address.rsplit(".", 1)[0]] for rrset in r.answer for rd in rrset}
        scope = next((o.scopelen for o in r.options if isinstance(o, dns.edns.ECSOption)), -1)
        return ",".join(sorted(regions)), scope
    return None


def wait_answer(port: int, proc: subprocess.Popen, name: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited during start-up")
        if ask(port, "8.8.8.0", 24) is not None:
            return
        time.sleep(0.2)
    raise SystemExit(f"{name} did not answer within 60 s")


def start_gdnsd(work: Path, db: Path, port: int) -> subprocess.Popen:
    exe = shutil.which("gdnsd") or "/usr/sbin/gdnsd"
    d = work / "gdnsd"
    for sub in ("zones", "geoip", "run", "state"):
        (d / sub).mkdir(parents=True)
    text = (ROOT / "bench/gdnsd/config.in").read_text()
    text = text.replace("@PORT@", str(port)).replace("@RUN_DIR@", str(d / "run"))
    text = text.replace("@STATE_DIR@", str(d / "state"))
    text = text.replace("        ignore_ecs => false\n",
                        "        ignore_ecs => false\n        auto_dc_limit => 1\n")
    assert text.count("auto_dc_limit => 1") == 1
    (d / "config").write_text(text)
    shutil.copy(ROOT / "bench/gdnsd/example.test", d / "zones/example.test")
    shutil.copy(db, d / "geoip/GeoLite2-City.mmdb")
    return subprocess.Popen([exe, "-c", str(d), "start"], stdout=subprocess.DEVNULL,
                            stderr=(work / "gdnsd.log").open("w"))


def start_geoedge(work: Path, port: int, health_port: int) -> subprocess.Popen:
    text = (ROOT / "examples/demo.toml").read_text().replace("port = 8080",
                                                             f"port = {health_port}")
    cfg = work / "geoedge.toml"
    cfg.write_text(text)
    exe = Path(sys.executable).parent / "geoedge"
    return subprocess.Popen([str(exe), "dns", "--config", str(cfg), "--listen",
                             f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=(work / "geoedge.log").open("w"))


class Healthy(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def too_wide(reader: GeoReader, regions, default: str, addr: str, scope: int, answer: str,
             rng: random.Random) -> bool:
    """True when a sampled address inside addr/scope has another nearest region."""
    v6 = ":" in addr
    net = ip_network(f"{addr}/{scope}", strict=False)
    size = net.num_addresses
    base = int(net.network_address)
    points = [0, size // 2, size - 1] + [rng.randrange(size) for _ in range(5)]
    for off in points:
        ip = (IPv6Address if v6 else IPv4Address)(base + off)
        order = rank_regions(reader.locate(ip), regions, default).order
        if order[0] != answer:
            return True
    return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--v4", type=int, default=2550)
    ap.add_argument("--v6", type=int, default=450)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", default="", help="a directory for configs and logs")
    args = ap.parse_args()
    db = default_db()
    rng = random.Random(args.seed)
    mm = maxminddb.open_database(str(db))
    meta = mm.metadata()
    tree = Tree(db, meta.node_count, meta.record_size, meta.ip_version)
    continents: dict[str, int] = {}
    subnets = (sample_subnets(mm, tree, rng, 4, args.v4, continents)
               + sample_subnets(mm, tree, rng, 6, args.v6, continents))
    topology = load_topology(ROOT / "examples/demo.toml")
    regions = [rc.region for rc in topology.regions]
    reader = GeoReader(db)
    health = http.server.ThreadingHTTPServer(("0.0.0.0", 0), Healthy)  # every 127.x address
    threading.Thread(target=health.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        gport, eport = free_port(), free_port()
        procs = [start_gdnsd(work, db, gport),
                 start_geoedge(work, eport, health.server_address[1])]
        try:
            wait_answer(gport, procs[0], "gdnsd")
            wait_answer(eport, procs[1], "geoedge")
            time.sleep(3)  # health probes done (rise) and the all-up map merged
            rows = []
            for addr, plen in subnets:
                g, e = ask(gport, addr, plen), ask(eport, addr, plen)
                if g is None or e is None:
                    raise SystemExit(f"no answer for {addr}/{plen}: gdnsd {g}, geoedge {e}")
                rows.append((addr, plen, g, e))
        finally:
            for p in procs:
                p.terminate()
                p.wait(10)
            health.shutdown()
    out = {"v4": [r for r in rows if ":" not in r[0]], "v6": [r for r in rows if ":" in r[0]]}
    wide_rng = random.Random(args.seed + 1)
    total_ge = 0
    for fam, rs in (("IPv4", out["v4"]), ("IPv6", out["v6"])):
        ge = sum(1 for r in rs if r[3][1] <= r[2][1])  # as wide: a prefix no longer
        total_ge += ge
        agree = sum(1 for r in rs if r[2][0] == r[3][0])
        med_e = statistics.median(r[3][1] for r in rs)
        med_g = statistics.median(r[2][1] for r in rs)
        print(f"{fam}: {len(rs)} subnets; geoedge's scope as wide as gdnsd's in {ge} "
              f"({100 * ge / len(rs):.1f}%); median scope geoedge /{med_e:g}, gdnsd /{med_g:g}; "
              f"same answer {agree}")
    n = len(rows)
    print(f"all: {n} subnets; geoedge's scope as wide as gdnsd's in {total_ge} "
          f"({100 * total_ge / n:.1f}%, target >= 95%)")
    for name, idx in (("geoedge", 3), ("gdnsd", 2)):
        wide = [r for r in rows if too_wide(reader, regions, topology.default_region, r[0],
                                            r[idx][1], r[idx][0].split(",")[0], wide_rng)]
        print(f"too wide ({name}): {len(wide)} of {n}"
              + "".join(f"\n  {r[0]}/{r[1]} -> {r[idx][0]} /{r[idx][1]}" for r in wide[:5]))
    narrower = [r for r in rows if r[3][1] > r[2][1]]
    by = re.sub(r"\s+", " ", ", ".join(f"{r[0]}/{r[1]}: geoedge /{r[3][1]} gdnsd /{r[2][1]}"
                                       for r in narrower[:8]))
    print(f"narrower examples: {by}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
