"""The demo signs example.test (#16): its key is made at start in the demo's state directory,
``dig +dnssec`` shows signatures and ``delv`` validates with the command the tour prints."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

from demoutil import DemoProcess, demo_config
from dnssecutil import delv
from dnsutil import DEMO, dig

from geoconfig.topology import load_topology
from geoedge.demo.signing import sign_demo_zone


def test_sign_demo_zone_makes_a_key_and_a_signed_copy(tmp_path: Path) -> None:
    signing = sign_demo_zone(load_topology(DEMO), DEMO, tmp_path)
    assert signing.key_dir == tmp_path / "dnssec" and signing.note == ""
    private = list(signing.key_dir.glob("Kexample.test.+013+*.private"))
    assert len(private) == 1 and private[0].stat().st_mode & 0o777 == 0o600
    zone = load_topology(signing.dns_config).zones[0]
    assert zone.dnssec is not None and zone.dnssec.key_dir == str(signing.key_dir)


def test_a_relative_database_or_a_signed_zone_is_left_alone(tmp_path: Path) -> None:
    text = DEMO.read_text().replace('database = ""', 'database = "GeoLite2-City.mmdb"', 1)
    config = tmp_path / "t.toml"
    config.write_text(text)
    signing = sign_demo_zone(load_topology(config), config, tmp_path)
    assert signing.key_dir is None and signing.dns_config == config
    assert "relative" in signing.note and not (tmp_path / "dnssec").exists()


def test_the_demo_serves_example_test_signed(tmp_path: Path) -> None:
    config, ports = demo_config(tmp_path)
    proc = DemoProcess(config)
    try:
        proc.wait_for(r"All 12 processes are up", 60)
        found = proc.wait_for(r"(?m)^  (\S+) dnssec ds (.*) > (\S+)$", 10)
        anchor = Path(found.group(3))
        made = subprocess.run([*shlex.split(found.group(1)), "dnssec", "ds",
                               *shlex.split(found.group(2))], capture_output=True, text=True,
                              timeout=30, check=False)
        assert made.returncode == 0, made.stderr
        anchor.write_text(made.stdout)
        out = dig(ports.dns, "www.example.test", "A", "+dnssec", "+subnet=81.2.69.0/24")
        assert re.search(r"IN\s+RRSIG\s+A 13 3 30 ", out), out
        checked = delv(ports.dns, anchor, "www.example.test")
        assert "; fully validated" in checked, checked
    finally:
        proc.close()
