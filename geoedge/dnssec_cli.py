"""``geoedge dnssec``: make a zone's signing key, print its DS and DNSKEY (geodns/dnssec/keys.py).

- ``geoedge dnssec keygen --zone Z [--key-dir DIR] [--algorithm ecdsap256sha256|ed25519]``
  writes ``K<zone>+<alg>+<tag>.private`` (0600) and ``.key`` into DIR and prints the key's
  file name, its DS and DNSKEY.
- ``geoedge dnssec ds --zone Z [--key-dir DIR | --config TOPOLOGY]`` prints, for every key of
  the zone, the DS (SHA-256) for the parent zone and the DNSKEY; ``--trust-anchor`` prints a
  ``trust-anchors`` clause for ``delv -a FILE`` instead. With ``--config`` the key directory is
  the zone's ``dnssec.key_dir`` (relative to the topology file).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

KEY_DIR_HELP = "directory of the zone's key files (default ./keys)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    dnssec = sub.add_parser(
        "dnssec", help="make DNSSEC keys and print their DS and DNSKEY",
        description="Manage the keys GeoDNS signs a zone with (a combined signing key per "
                    "file; every key of the zone in its key directory signs).")
    tools = dnssec.add_subparsers(dest="dnssec_command", required=True, metavar="ACTION",
                                  help="keygen or ds (ACTION --help for its options)")
    keygen = tools.add_parser(
        "keygen", help="make a new signing key for a zone",
        description="Write a new key's private file (mode 0600) and public DNSKEY file into "
                    "the key directory and print its DS and DNSKEY.")
    keygen.add_argument("--zone", required=True, help="the zone's origin, e.g. example.test")
    keygen.add_argument("--key-dir", default="keys", help=KEY_DIR_HELP)
    keygen.add_argument("--algorithm", default="ecdsap256sha256",
                        choices=("ecdsap256sha256", "ed25519"),
                        help="ecdsap256sha256 (13, default) or ed25519 (15)")
    keygen.add_argument("--ttl", type=int, default=3600, help="TTL in the .key file (3600)")
    ds = tools.add_parser(
        "ds", help="print the DS records and DNSKEYs of a zone's keys",
        description="Print the DS (SHA-256) to give to the parent zone and the DNSKEY to use "
                    "as a trust anchor, for every key of the zone.")
    ds.add_argument("--zone", required=True, help="the zone's origin, e.g. example.test")
    where = ds.add_mutually_exclusive_group()
    where.add_argument("--key-dir", help=KEY_DIR_HELP)
    where.add_argument("--config", help="topology file: use the zone's dnssec.key_dir")
    ds.add_argument("--trust-anchor", action="store_true",
                    help="print a trust-anchors clause (for delv -a FILE) instead")


def run(args: argparse.Namespace) -> int:
    from geodns.dnssec import keys

    if args.dnssec_command == "keygen":
        algorithm = keys.ALGORITHMS[args.algorithm]
        key = keys.generate(args.zone, Path(args.key_dir), algorithm, args.ttl)
        print(f"; wrote {key.path} (private, mode 0600) and its .key", file=sys.stderr)
        print(keys.ds_text(key))
        print(keys.dnskey_text(key, args.ttl))
        return 0
    key_dir, path = _key_dir(args)
    found = keys.load_keys(args.zone, key_dir, path)
    if args.trust_anchor:
        print(keys.trust_anchor_text(found), end="")
        return 0
    for key in found:
        print(f"; key {key.algorithm}+{key.tag:05d} ({key.path})")
        print(keys.ds_text(key))
        print(keys.dnskey_text(key))
    return 0


def _key_dir(args: argparse.Namespace) -> tuple[Path, str]:
    """The key directory and the name to report errors under."""
    if not args.config:
        return Path(args.key_dir or "keys"), "--key-dir"
    from geoconfig.topology import load_topology
    from geoconfig.validate import ConfigError

    topology = load_topology(args.config)
    origin = args.zone.lower().rstrip(".") + "."
    for i, zone in enumerate(topology.zones):
        if zone.origin == origin:
            if zone.dnssec is None:
                raise ConfigError(f"zones[{i}]", f"{origin} is not signed (no dnssec table)")
            key_dir = Path(zone.dnssec.key_dir)
            if not key_dir.is_absolute():
                key_dir = Path(args.config).parent / key_dir
            return key_dir, f"zones[{i}].dnssec.key_dir"
    raise ConfigError("zones", f"no zone {origin} in {args.config}")
