"""Hot reload of the topology file: on change, on SIGHUP, and refusing a bad file."""

from __future__ import annotations

import os
import signal

import pytest
from dnsutil import UDP_LOOPS, DnsProcess, addresses, demo_text, query, wait_for, with_udp_loop

GB = "81.2.69.0/24"


def eu_answer(dns: DnsProcess) -> set[str]:
    return addresses(query(dns.port, "www.example.test", subnet=GB))


@pytest.mark.parametrize("loop", UDP_LOOPS)
def test_reload_on_change_keeps_running_config_when_bad(tmp_path, loop):
    config = tmp_path / "topology.toml"
    text = with_udp_loop(demo_text(1, watch_interval=0.1), loop)
    config.write_text(text)
    dns = DnsProcess(config)
    try:
        assert eu_answer(dns) == {"127.0.2.1", "127.0.2.2"}
        config.write_text(text.replace('"127.0.2.2"', '"127.0.2.9"'))
        got, _ = wait_for(lambda: eu_answer(dns) == {"127.0.2.1", "127.0.2.9"}, 10)
        assert got, eu_answer(dns)
        # a broken file: logged, and the running configuration keeps answering
        config.write_text(text.replace("latitude = 53.3", "latitude = 153.3"))
        logged, _ = wait_for(lambda: any("regions[1].latitude" in x for x in dns.log), 10)
        assert logged, "".join(dns.log)
        # still the good file's edges (the broken one has 127.0.2.2): which of them answer
        # depends on where the health checks of the unreachable edge port are
        still = eu_answer(dns)
        assert still and still <= {"127.0.2.1", "127.0.2.9"}, still
        assert dns.proc.poll() is None
    finally:
        assert dns.stop() == 0


@pytest.mark.parametrize("loop", UDP_LOOPS)
def test_sighup_reloads(tmp_path, loop):
    config = tmp_path / "topology.toml"
    text = with_udp_loop(demo_text(1, watch_interval=3600), loop)
    config.write_text(text)
    dns = DnsProcess(config)
    try:
        assert eu_answer(dns) == {"127.0.2.1", "127.0.2.2"}
        config.write_text(text.replace('"127.0.2.1"', '"127.0.2.7"'))
        os.kill(dns.proc.pid, signal.SIGHUP)
        got, _ = wait_for(lambda: eu_answer(dns) == {"127.0.2.7", "127.0.2.2"}, 10)
        assert got, eu_answer(dns)
    finally:
        assert dns.stop() == 0
