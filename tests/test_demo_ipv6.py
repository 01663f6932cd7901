"""The demo's plan for its AAAA answers (``geoedge.demo.ipv6``): table-driven, and the line a
real demo prints about them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from demoutil import DEMO, DemoProcess, demo_config

from geoconfig.topology import load_topology
from geoedge.demo.ipv6 import NOT_LISTENING, plan_ipv6, summary, undo_commands
from geoedge.demo.services import plan

TOPOLOGY = load_topology(DEMO)
V6 = ["fd00:0:0:1::1", "fd00:0:0:1::2", "fd00:0:0:2::1", "fd00:0:0:2::2", "fd00:0:0:3::1",
      "fd00:0:0:3::2"]


def test_edges_on_ipv4_only_leave_the_host_alone() -> None:
    v6 = plan_ipv6(TOPOLOGY, 0, "/usr/sbin/ip", edges_listen=False)
    assert list(v6.addresses) == V6
    assert v6.add == () and v6.listen == {} and not v6.reachable
    assert v6.why_not == NOT_LISTENING
    assert summary(v6) == ("AAAA answers (6 edge addresses, fd00:0:0:1::1, ...) are not "
                           f"reachable here: {NOT_LISTENING}.")


def test_as_root_the_missing_addresses_are_added_to_lo_and_removed_after() -> None:
    v6 = plan_ipv6(TOPOLOGY, 0, "/usr/sbin/ip", local=["fd00:0:0:1::1", "::1"],
                   edges_listen=True)
    assert v6.reachable
    assert [cmd[4] for cmd in v6.add] == [f"{a}/128" for a in V6[1:]]  # ::1 of 1 already here
    assert v6.add[0] == ("/usr/sbin/ip", "-6", "addr", "add", "fd00:0:0:1::2/128", "dev", "lo",
                         "nodad")
    assert undo_commands(v6.add[:2]) == [
        ("/usr/sbin/ip", "-6", "addr", "del", "fd00:0:0:2::1/128", "dev", "lo"),
        ("/usr/sbin/ip", "-6", "addr", "del", "fd00:0:0:1::2/128", "dev", "lo"),
    ]
    assert v6.listen["eu-west-2"] == "[fd00:0:0:2::2]:8080"
    assert summary(v6).startswith("AAAA answers are reachable: the edges listen on fd00:0:0:1::1")


@pytest.mark.parametrize(("euid", "ip", "why"), [
    (1000, "/usr/sbin/ip", "needs root"),
    (0, None, "no `ip` command"),
])
def test_why_not(euid: int, ip: str | None, why: str) -> None:
    v6 = plan_ipv6(TOPOLOGY, euid, ip, edges_listen=True)
    assert not v6.reachable and v6.add == () and why in v6.why_not
    assert why in summary(v6)


def test_a_failed_command_is_the_reason() -> None:
    v6 = plan_ipv6(TOPOLOGY, 0, "/usr/sbin/ip", edges_listen=True)
    assert "RTNETLINK answers: Operation not permitted" in summary(
        v6, "`ip -6 addr add ...` failed: RTNETLINK answers: Operation not permitted")


def test_nothing_to_say_without_edge_ipv6(tmp_path: Path) -> None:
    text = Path(DEMO).read_text()
    stripped = "\n".join(line.replace(line[line.find("ipv6"):line.find("port")], "")
                         if "ipv6 =" in line else line for line in text.splitlines())
    config = tmp_path / "v4.toml"
    config.write_text(stripped)
    v6 = plan_ipv6(load_topology(config), 0, "/usr/sbin/ip", edges_listen=True)
    assert v6.addresses == () and summary(v6) == ""


def test_edges_given_ipv6_listen_on_both_addresses() -> None:
    v6 = plan_ipv6(TOPOLOGY, 0, "/usr/sbin/ip", local=V6, edges_listen=True)
    assert v6.add == ()
    edge = next(s for s in plan(TOPOLOGY, DEMO, None, Path("/tmp/d"), edge_ipv6=v6.listen)
                if s.name == "us-east-2")
    i = edge.argv.index("--listen")
    assert edge.argv[i:i + 4] == ("--listen", "127.0.1.2:8080", "--listen",
                                  "[fd00:0:0:1::2]:8080")


def local_v6() -> set[str]:
    out = subprocess.run(["ip", "-6", "-o", "addr", "show", "dev", "lo"], capture_output=True,
                         text=True, check=False).stdout
    return {w[w.index("inet6") + 1].split("/")[0] for w in map(str.split, out.splitlines())
            if "inet6" in w}


CAN_ADD = os.geteuid() == 0 and shutil.which("ip") is not None


@pytest.mark.skipif(CAN_ADD, reason="as root the demo makes them reachable (tested below)")
def test_a_real_demo_says_why_aaaa_answers_are_not_reachable(tmp_path: Path) -> None:
    config, _ = demo_config(tmp_path)
    proc = DemoProcess(config)
    try:
        proc.wait_for(r"All 12 processes are up", 60)
        proc.wait_for(r"^AAAA answers \(6 edge addresses, fd00:0:0:1::1, \.\.\.\) are not "
                      r"reachable here: .*(needs root|no `ip` command)", 10)
    finally:
        proc.close()


@pytest.mark.skipif(not CAN_ADD, reason="needs root and the ip command")
def test_as_root_a_real_demo_answers_aaaa_with_addresses_that_serve(tmp_path: Path) -> None:
    before = local_v6()
    config, ports = demo_config(tmp_path)
    proc = DemoProcess(config)
    try:
        proc.wait_for(r"All 12 processes are up", 60)
        proc.wait_for(r"^AAAA answers are reachable: the edges listen on fd00:0:0:1::1, ", 10)
        assert set(V6) <= local_v6()
        dig = subprocess.run(["dig", "@127.0.0.1", "-p", str(ports.dns), "www.example.test",
                              "AAAA", "+subnet=81.2.69.0/24", "+short", "+time=2"],
                             capture_output=True, text=True, timeout=20, check=True)
        answers = dig.stdout.split()
        assert sorted(answers) == ["fd00:0:0:2::1", "fd00:0:0:2::2"]  # GB -> eu-west
        curl = subprocess.run(
            ["curl", "-sS", "-g", "-o", "/dev/null", "-D", "-", "--max-time", "10",
             "-H", f"Host: www.example.test:{ports.edge}",
             f"http://[{answers[0]}]:{ports.edge}/index.html"],
            capture_output=True, text=True, timeout=20)
        assert curl.returncode == 0, curl.stderr
        assert curl.stdout.startswith("HTTP/1.1 200")
        edge = "eu-west-1" if answers[0].endswith("::1") else "eu-west-2"
        assert f"Via: 1.1 geoedge-{edge}" in curl.stdout
    finally:
        proc.close()
    assert local_v6() == before  # what the demo added is gone, what was there stays
