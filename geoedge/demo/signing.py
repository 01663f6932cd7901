"""The demo signs ``example.test`` (DNSSEC, #16): a key made at start in the demo's state
directory and a copy of the topology for GeoDNS with the zone's ``dnssec`` table added.

Rules:

- Only a topology with a zone ``example.test`` that has no ``dnssec`` table of its own is
  changed, and only when its ``geoip.database`` is not a relative path (the copy lives in the
  state directory, where a relative path would point elsewhere). Otherwise GeoDNS gets the
  topology as it is and ``note`` says why the zone is not signed by the demo.
- The key is made by ``geoedge dnssec keygen`` (the demo never imports geodns) into
  ``<state>/dnssec``; the copy is ``<state>/geodns.toml``, checked to load with the zone
  signed. GeoDNS reloads that copy, so edits to the topology reach GeoDNS at the next start.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from geoconfig.topology import Topology, load_topology
from geoedge.demo.services import geoedge_argv

ZONE = "example.test."


@dataclass(frozen=True, slots=True)
class Signing:
    dns_config: Path  # the topology GeoDNS serves
    key_dir: Path | None  # None: the demo does not sign
    note: str = ""


def sign_demo_zone(topology: Topology, config: Path, state: Path) -> Signing:
    zone = next((z for z in topology.zones if z.origin == ZONE), None)
    if zone is None or zone.dnssec is not None:
        return Signing(config, None)  # nothing to do: no such zone, or signed as configured
    database = topology.geoip.database
    if database and not Path(database).is_absolute():
        return Signing(config, None, f"example.test is not signed: geoip.database {database!r} "
                                     "is relative")
    text = config.read_text()
    line = re.compile(r'(?m)^origin\s*=\s*"example\.test\.?"\s*(#.*)?$')
    found = line.search(text)
    if found is None:
        return Signing(config, None, "example.test is not signed: its origin line is not "
                                     'origin = "example.test"')
    key_dir = state / "dnssec"
    made = subprocess.run(geoedge_argv("dnssec", "keygen", "--zone", ZONE, "--key-dir",
                                       str(key_dir)),
                          capture_output=True, text=True, timeout=60, check=False)
    if made.returncode != 0:
        return Signing(config, None, f"example.test is not signed: keygen failed: "
                                     f"{made.stderr.strip()}")
    signed = state / "geodns.toml"
    table = f'dnssec = {{ key_dir = "{key_dir}" }}  # made by geoedge demo'
    signed.write_text(text[:found.end()] + "\n" + table + text[found.end():])
    load_topology(signed)  # ConfigError: the CLI prints it and exits 2
    return Signing(signed, key_dir)


def tour_lines(at: str, geo: str, signing: Signing, ge: str = "geoedge") -> str:
    """The README tour's DNSSEC commands for the running demo ("" when not signed)."""
    if signing.key_dir is None:
        return f"\n{signing.note}" if signing.note else ""
    anchor = signing.key_dir / "anchor.conf"
    return f"""

DNSSEC (example.test is signed; key in {signing.key_dir}):
  dig {at} {geo} A +dnssec +subnet=81.2.69.0/24   # RRSIG beside the A records
  {ge} dnssec ds --zone example.test --key-dir {signing.key_dir} --trust-anchor > {anchor}
  delv {at} -a {anchor} +root=example.test {geo} A    # "; fully validated\""""
