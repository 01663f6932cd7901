"""The demo's local CA and its sites' certificate (trustme), for the edges' HTTPS listeners.

- One CA per demo run, made at start; one certificate for the zones' names (``example.test``
  and ``*.example.test``) that every edge serves as its default certificate.
- ``python -m geoedge.demo.certs --out DIR NAME...`` does the same for the compose demo (a
  one-shot ``certs`` service writing into a volume the edges mount).
- The CA certificate is written into the demo's data directory and copied to
  ``demo_ca_file()`` (in the system's temporary directory), where ``geoedge fetch`` looks for
  it when no ``--cacert`` is given; the copy is removed when the demo stops.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from geoconfig.topology import Topology


def demo_ca_file() -> Path:
    return Path(tempfile.gettempdir()) / "geoedge-demo-ca.pem"


@dataclass(frozen=True, slots=True)
class DemoCerts:
    ca: Path
    cert: Path
    key: Path


def zone_names(topology: Topology) -> list[str]:
    names: list[str] = []
    for zone in topology.zones:
        origin = zone.origin.rstrip(".")
        names += [origin, f"*.{origin}"]
    return names or ["localhost"]


def issue(names: Sequence[str], where: Path) -> DemoCerts:
    """A new CA and an ECDSA P-256 certificate for ``names``, written under ``where``."""
    import trustme  # the demo (or tls) extra; imported here so the rest never needs it

    ca = trustme.CA(organization_name="geoedge demo CA")
    issued = ca.issue_cert(*names, key_type=trustme.KeyType.ECDSA)
    where.mkdir(parents=True, exist_ok=True)
    out = DemoCerts(where / "ca.pem", where / "edge.pem", where / "edge.key")
    ca.cert_pem.write_to_path(str(out.ca))
    issued.private_key_pem.write_to_path(str(out.key))
    os.chmod(out.key, 0o600)
    issued.cert_chain_pems[0].write_to_path(str(out.cert))
    return out


def make_certs(topology: Topology, where: Path) -> DemoCerts:
    out = issue(zone_names(topology), where)
    shared = demo_ca_file()
    tmp = shared.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(out.ca.read_bytes())
    os.replace(tmp, shared)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m geoedge.demo.certs --out DIR NAME...`` (the compose demo's certs job)."""
    parser = argparse.ArgumentParser(prog="python -m geoedge.demo.certs",
                                     description="make a local CA and a certificate")
    parser.add_argument("--out", required=True, help="directory for ca.pem, edge.pem, edge.key")
    parser.add_argument("names", nargs="+", help="DNS names of the certificate")
    args = parser.parse_args(argv)
    out = issue(args.names, Path(args.out))
    os.chmod(out.key, 0o644)  # the edges run as another user of the shared volume
    print(f"CA certificate: {out.ca}")
    return 0


def remove_shared_ca(certs: DemoCerts) -> None:
    """Remove the shared copy if it is still this run's."""
    shared = demo_ca_file()
    with contextlib.suppress(OSError):
        if shared.read_bytes() == certs.ca.read_bytes():
            shared.unlink()


if __name__ == "__main__":
    sys.exit(main())
