"""Debian's ``unbound`` as a resolver on a loopback port, for the end-to-end DNS tests
(tests/test_dns_unbound.py: ECS through its subnetcache; tests/test_dnssec_unbound.py: as a
validator). ``running_unbound`` checks the configuration with unbound-checkconf, starts it in
the foreground and yields once it answers (its own CHAOS id.server, never sent to geoedge),
polling with a deadline; it stops it (SIGKILL if SIGTERM is not enough) whatever happened.

Without ``unbound`` a test is skipped with the reason; under CI (``CI`` set, .ci/run installs
it) it fails instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rdataclass
import pytest

START_WAIT = 30.0


def unbound_binary() -> str:
    binary = shutil.which("unbound") or (
        "/usr/sbin/unbound" if os.access("/usr/sbin/unbound", os.X_OK) else None)
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("unbound is missing under CI (.ci/run installs the Debian package)")
        pytest.skip("unbound is not installed (apt-get install unbound)")
    version = subprocess.run([binary, "-V"], capture_output=True, text=True, timeout=20,
                             check=False).stdout
    if "subnetcache" not in version:
        if os.environ.get("CI"):
            pytest.fail("this unbound is built without the subnetcache module")
        pytest.skip("this unbound is built without the subnetcache module (--enable-subnet)")
    return binary


CONF = """server:
    interface: 127.0.0.1
    port: {port}
    do-ip6: no
    username: ""
    chroot: ""
    directory: "{dir}"
    pidfile: "{dir}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
    do-daemonize: no
    do-not-query-localhost: no
    qname-minimisation: no
    prefetch: no
    num-threads: 1
    module-config: "subnetcache iterator"
    send-client-subnet: 127.0.0.1
    client-subnet-always-forward: yes
    max-client-subnet-ipv4: 24
    max-client-subnet-ipv6: 56
    domain-insecure: "example.test"
    local-zone: "test." nodefault  # unbound serves .test itself by default (RFC 6761)
stub-zone:
    name: "example.test"
    stub-addr: 127.0.0.1@{geoedge}
"""


@contextlib.contextmanager
def running_unbound(binary: str, conf: Path) -> Iterator[int]:
    """unbound with the configuration ``conf`` (its ``port: N`` line says where): the port."""
    check = subprocess.run([binary.replace("unbound", "unbound-checkconf"), str(conf)],
                           capture_output=True, text=True, timeout=20, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    port = int(next(line.split(":")[1] for line in conf.read_text().splitlines()
                    if line.strip().startswith("port:")))
    proc = subprocess.Popen([binary, "-d", "-c", str(conf)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        probe = dns.message.make_query("id.server", "TXT", dns.rdataclass.CH)
        deadline = time.monotonic() + START_WAIT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"unbound exited: {proc.stdout.read() if proc.stdout else ''}")
            try:
                dns.query.udp(probe, "127.0.0.1", port=port, timeout=0.5)
                break
            except (TimeoutError, dns.exception.Timeout, ConnectionRefusedError):
                assert time.monotonic() < deadline, "unbound did not start answering"
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
