"""Test helpers for DNSSEC: the demo topology with example.test signed by a fresh key, a
``delv`` runner with that key as trust anchor, and an ECS-adding UDP relay (``delv`` cannot
send ECS: the relay puts the given client subnet into every query on its way to geoedge)."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

import dns.edns
import dns.message
import pytest
from dnsutil import DEMO, with_udp_loop

from geodns.dnssec import keys

# a TXT that fits 512 bytes unsigned but not with its RRSIG (truncation with DO)
BIG_TXT = "{ name = \"big\", type = \"TXT\", value = '\"" + "x" * 200 + "\" \"" + "y" * 200 \
    + "\"' },\n"


def signed_topology(directory: Path, loop: str = "c", algorithm: int = keys.ECDSAP256SHA256,
                    dnssec: str = 'dnssec = { key_dir = "keys" }') -> Path:
    """The demo topology in ``directory`` with example.test signed (key in ``keys/``)."""
    text = with_udp_loop(DEMO.read_text(), loop)
    text = text.replace('origin = "example.test"\n', f'origin = "example.test"\n{dnssec}\n', 1)
    text = text.replace("records = [\n", "records = [\n  " + BIG_TXT, 1)
    path = directory / "topology.toml"
    path.write_text(text)
    if not any((directory / "keys").glob("Kexample.test.+*.private")):
        keys.generate("example.test", directory / "keys", algorithm)
    return path


def anchor_file(directory: Path) -> Path:
    found = keys.load_keys("example.test", directory / "keys", "keys")
    path = directory / "anchor.conf"
    path.write_text(keys.trust_anchor_text(found))
    return path


def delv(port: int, anchor: Path, name: str, rdtype: str = "A", *args: str) -> str:
    exe = shutil.which("delv")
    if exe is None:
        pytest.fail("delv is not installed (apt-get install bind9-dnsutils; .ci/run does)")
    out = subprocess.run([exe, "@127.0.0.1", "-p", str(port), "-a", str(anchor),
                          "+root=example.test", *args, name, rdtype],
                         capture_output=True, text=True, timeout=30, check=False)
    return out.stdout + out.stderr


def addresses(out: str, name: str = "www.example.test.") -> list[str]:
    return sorted(re.findall(rf"^{re.escape(name)}\s+\d+\s+IN\s+A\s+(\S+)$", out, re.M))


@dataclass
class EcsRelay:
    """UDP on 127.0.0.1:port relaying to ``upstream`` with ``subnet`` ("81.2.69.0/24") as ECS."""

    upstream: int
    subnet: str
    port: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> EcsRelay:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        addr, prefix = self.subnet.split("/")
        while not self._stop.is_set():
            try:
                data, client = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            query.use_edns(0, query.ednsflags, query.payload,
                           options=[dns.edns.ECSOption(addr, int(prefix))])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
                up.settimeout(3)
                up.sendto(query.to_wire(), ("127.0.0.1", self.upstream))
                try:
                    self.sock.sendto(up.recv(65535), client)
                except TimeoutError:
                    continue

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.sock.close()
