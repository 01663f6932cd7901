"""The demo's local CA and its sites' certificate (trustme), for the edges' HTTPS listeners.

- One CA per demo run, made at start; one certificate for the zones' names (``example.test``
  and ``*.example.test``) that every edge serves as its default certificate.
- The CA certificate is written into the demo's data directory and copied to
  ``demo_ca_file()`` (in the system's temporary directory), where ``geoedge fetch`` looks for
  it when no ``--cacert`` is given; the copy is removed when the demo stops.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
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


def make_certs(topology: Topology, where: Path) -> DemoCerts:
    import trustme  # the demo extra; imported here so the rest of geoedge never needs it

    names: list[str] = []
    for zone in topology.zones:
        origin = zone.origin.rstrip(".")
        names += [origin, f"*.{origin}"]
    ca = trustme.CA(organization_name="geoedge demo CA")
    issued = ca.issue_cert(*(names or ["localhost"]), key_type=trustme.KeyType.ECDSA)
    where.mkdir(parents=True, exist_ok=True)
    out = DemoCerts(where / "ca.pem", where / "edge.pem", where / "edge.key")
    ca.cert_pem.write_to_path(str(out.ca))
    issued.private_key_pem.write_to_path(str(out.key))
    os.chmod(out.key, 0o600)
    issued.cert_chain_pems[0].write_to_path(str(out.cert))
    shared = demo_ca_file()
    tmp = shared.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(out.ca.read_bytes())
    os.replace(tmp, shared)
    return out


def remove_shared_ca(certs: DemoCerts) -> None:
    """Remove the shared copy if it is still this run's."""
    shared = demo_ca_file()
    with contextlib.suppress(OSError):
        if shared.read_bytes() == certs.ca.read_bytes():
            shared.unlink()
