"""``geoedge explain`` as a real subprocess: location, ranking, answer and ECS scope, with and
without ``--probe`` against real health endpoints.

The main cases run ``geoedge explain`` as subprocesses, started together and collected
afterwards (each spends ~0.5 s importing and opening the embedded database); the rest of the
table calls the same CLI entry point in-process, which is as real but much quicker.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from dnsutil import DEMO, HealthEndpoint, demo_text, free_port

from geoedge.cli import main

GEOEDGE = str(Path(sys.executable).parent / "geoedge")
EU4, EU6 = "127.0.2.1 127.0.2.2", "fd00:0:0:2::1 fd00:0:0:2::2"
US4, US6 = "127.0.1.1 127.0.1.2", "fd00:0:0:1::1 fd00:0:0:1::2"
EDGES = {
    "us-east-1": "127.0.1.1", "us-east-2": "127.0.1.2",
    "eu-west-1": "127.0.2.1", "eu-west-2": "127.0.2.2",
    "ap-southeast-1": "127.0.3.1", "ap-southeast-2": "127.0.3.2",
}


@dataclass
class Run:
    code: int
    out: str
    err: str

    def line(self, prefix: str) -> str:
        (found,) = [x for x in self.out.splitlines() if x.startswith(prefix)]
        return found

    def ranking(self) -> list[tuple[str, int | None, str]]:
        """[(region, km or None, health text)] in the printed order."""
        rows = re.findall(r"^\s+\d+\. (\S+)\s+(\d+|-) km\s+(.*)$", self.out, re.M)
        return [(r, None if km == "-" else int(km), h) for r, km, h in rows]


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([GEOEDGE, "explain", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str]) -> Run:
    out, err = proc.communicate(timeout=60)
    return Run(proc.returncode, out, err)


def in_process(*args: str) -> Run:
    """``geoedge explain ARGS`` through the console script's own ``main`` (exceptions escape)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["explain", *args])
    return Run(code, out.getvalue(), err.getvalue())


SUBPROCESS = {"gb", "private", "gb-v6", "bad"}


CASES: dict[str, tuple[str, ...]] = {
    "gb": ("81.2.69.160",),
    "private": ("10.0.0.1",),
    "doc-range": ("192.0.2.1",),
    "gb-v6": ("2a02:8010::1",),
    "ula-v6": ("fd00::1",),
    "mapped": ("::ffff:81.2.69.160",),
    "name": ("81.2.69.160", "WWW.Example.Test"),
    "name-dot": ("1.0.16.1", "www.example.test."),
    "not-geo": ("81.2.69.160", "cdn.example.test"),
    "bad": ("bad",),
    "subnet": ("81.2.69.160/24",),
    "octets": ("999.1.1.1",),
    "empty": ("",),
}


@pytest.fixture(scope="module")
def runs() -> dict[str, Run]:
    procs = {key: start("--config", str(DEMO), *args) for key, args in CASES.items()
             if key in SUBPROCESS}
    done = {key: finish(proc) for key, proc in procs.items()}
    for key, args in CASES.items():
        if key not in SUBPROCESS:
            with contextlib.suppress(Exception):  # a crash leaves the key out: see its test
                done[key] = in_process("--config", str(DEMO), *args)
    return done


def test_gb_client(runs):
    run = runs["gb"]
    assert run.code == 0, run.err
    assert run.err == ""
    assert run.line("client") == "client      81.2.69.160 (as ECS 81.2.69.160/24)"
    assert "GeoLite2-City" in run.line("database")
    location = run.line("location")
    assert "country GB" in location and "continent EU" in location
    assert "database network 81.2.68.0/22" in location
    assert run.line("ranking") == "ranking     by distance"
    ranking = run.ranking()
    assert [r for r, _, _ in ranking] == ["eu-west", "us-east", "ap-southeast"]
    km = [k for _, k, _ in ranking]
    assert all(k is not None for k in km) and km == sorted(km)
    assert 350 < km[0] < 500 and 5500 < km[1] < 6300 and 10400 < km[2] < 11300
    assert ranking[0][2] == "eu-west-1 up, eu-west-2 up"
    assert run.line("answer") == "answer      www.example.test. -> eu-west"
    assert re.search(rf"^\s+A\s+{EU4}\s+TTL 30$", run.out, re.M)
    assert re.search(rf"^\s+AAAA\s+{EU6}\s+TTL 30$", run.out, re.M)
    assert run.line("ecs scope").startswith("ecs scope   /18 for geo-routed names")
    assert "note" not in run.out


@pytest.mark.parametrize("key", ["private", "doc-range", "ula-v6"])
def test_address_not_in_database_gets_default_region(runs, key):
    run = runs[key]
    assert run.code == 0, run.err
    assert "not in the database" in run.line("location")
    assert "default region" in run.line("location")
    assert "not global" in run.line("note")
    assert run.line("ranking") == "ranking     by default"
    ranking = run.ranking()
    assert ranking[0][:2] == ("us-east", None)
    assert all(km is None for _, km, _ in ranking)
    assert run.line("answer") == "answer      www.example.test. -> us-east"
    assert re.search(rf"^\s+A\s+{US4}\s+TTL 30$", run.out, re.M)
    assert re.search(rf"^\s+AAAA\s+{US6}\s+TTL 30$", run.out, re.M)
    assert run.line("ecs scope").startswith("ecs scope   /0 ")


@pytest.mark.parametrize("key", ["private", "ula-v6"])
def test_printed_network_contains_the_client(runs, key):
    client = ipaddress.ip_address(CASES[key][0])
    networks = re.findall(r"in ([0-9a-f.:]+/\d+)", runs[key].line("location"))
    assert all(client in ipaddress.ip_network(n) for n in networks), networks


def test_ipv6_client(runs):
    run = runs["gb-v6"]
    assert run.code == 0, run.err
    assert run.line("client") == "client      2a02:8010::1 (as ECS 2a02:8010::1/56)"
    network = re.search(r"database network (\S+)", run.line("location"))
    assert network and ipaddress.ip_address("2a02:8010::1") in ipaddress.ip_network(network[1])
    assert "country GB" in run.line("location")
    assert [r for r, _, _ in run.ranking()] == ["eu-west", "us-east", "ap-southeast"]
    assert run.line("answer") == "answer      www.example.test. -> eu-west"
    assert re.search(rf"^\s+AAAA\s+{EU6}\s+TTL 30$", run.out, re.M)
    prefix = int(network[1].split("/")[1])
    # the database's /34 merged with its neighbours that get the same answer: /29
    assert prefix == 34 and run.line("ecs scope").startswith("ecs scope   /29 ")


def test_ipv4_mapped_client_is_located_as_ipv4(runs):
    run = runs["mapped"]
    assert run.code == 0, run.err
    assert "country GB" in run.line("location")
    assert run.line("answer") == "answer      www.example.test. -> eu-west"


@pytest.mark.parametrize(("key", "region", "a"), [("name", "eu-west", EU4),
                                                  ("name-dot", "ap-southeast",
                                                   "127.0.3.1 127.0.3.2")])
def test_one_name(runs, key, region, a):
    run = runs[key]
    assert run.code == 0, run.err
    assert run.line("answer") == f"answer      www.example.test. -> {region}"
    assert re.search(rf"^\s+A\s+{a}\s+TTL 30$", run.out, re.M)


def test_cname_to_a_geo_name_is_followed(runs):
    run = runs["not-geo"]
    assert run.code == 0, run.err
    assert run.line("answer") == ("answer      cdn.example.test. -> CNAME www.example.test. "
                                  "-> eu-west")


def test_not_geo_name_is_printed_in_presentation_format(runs):
    line = runs["not-geo"].line("answer")
    assert "cdn.example.test" in line and "b'" not in line


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("bad", ["not an IP address: 'bad'"]),
        ("subnet", ["not an IP address: '81.2.69.160/24'"]),
        ("octets", ["not an IP address: '999.1.1.1'"]),
        ("empty", ["not an IP address: ''"]),
    ],
)
def test_bad_ip_exits_2(runs, key, words):
    run = runs[key]
    assert run.code == 2
    assert run.out == ""
    for word in words:
        assert word in run.err
    assert "Traceback" not in run.err


@pytest.mark.parametrize("name", ["wWw.exämple.test", "a" * 300 + ".example.test"],
                         ids=["non-ascii", "long-label"])
def test_bad_name_argument_is_a_clear_error(name):
    run = in_process("--config", str(DEMO), "81.2.69.160", name)  # raises today
    assert run.code == 2
    assert "geoedge:" in run.err


# ---------------------------------------------------------------------------- --probe


@pytest.fixture(scope="module")
def endpoints() -> Iterator[int]:
    """Real health endpoints for all six demo edges, on one port."""
    port = free_port()
    eps = [HealthEndpoint(ip, port).start() for ip in EDGES.values()]
    yield port
    with ThreadPoolExecutor(len(eps)) as pool:  # each stop() takes up to 0.5 s
        list(pool.map(lambda ep: ep.stop(), eps))


PROBE_CASES = {
    # key: (edges made unreachable, answer region, A line, AAAA line, fail-open note)
    "all-up": (set(), "eu-west", EU4, EU6, False),
    "eu-west-1-down": ({"eu-west-1"}, "eu-west", "127.0.2.2", "fd00:0:0:2::2", False),
    "eu-west-down": ({"eu-west-1", "eu-west-2"}, "us-east", US4, US6, False),
    "eu-and-us-down": ({"eu-west-1", "eu-west-2", "us-east-1", "us-east-2"}, "ap-southeast",
                       "127.0.3.1 127.0.3.2", "fd00:0:0:3::1 fd00:0:0:3::2", False),
    "all-down": (set(EDGES), "eu-west", EU4, EU6, True),
}


@pytest.fixture(scope="module")
def probe_runs(endpoints, tmp_path_factory) -> dict[str, Run]:
    dead = free_port()  # nothing listens there: connection refused
    configs: dict[str, Path] = {}
    for key, (down, *_rest) in PROBE_CASES.items():
        text = demo_text(endpoints)
        for name in down:
            old = f'{{ name = "{name}", ipv4 = "{EDGES[name]}"'
            start_at = text.index(old)
            end_at = text.index("}", start_at)
            text = (text[:start_at]
                    + text[start_at:end_at].replace(f"port = {endpoints}", f"port = {dead}")
                    + text[end_at:])
        config = tmp_path_factory.mktemp(key) / "topology.toml"
        config.write_text(text)
        configs[key] = config
    proc = start("--config", str(configs["eu-west-down"]), "--probe", "81.2.69.160")
    done = {key: in_process("--config", str(config), "--probe", "81.2.69.160")
            for key, config in configs.items() if key != "eu-west-down"}
    done["eu-west-down"] = finish(proc)  # the headline case as a real subprocess
    return done


@pytest.mark.parametrize("key", list(PROBE_CASES))
def test_probe(probe_runs, key):
    down, region, a, aaaa, fail_open = PROBE_CASES[key]
    run = probe_runs[key]
    assert run.code == 0, run.err
    assert "Traceback" not in run.err
    health = {}
    for _, _, text in run.ranking():
        for part in text.split(", "):
            edge, state = part.split()
            health[edge] = state
    assert health == {e: ("DOWN" if e in down else "up") for e in EDGES}
    # the ranking is by distance whatever the health; the answer moves
    assert [r for r, _, _ in run.ranking()] == ["eu-west", "us-east", "ap-southeast"]
    answer = run.line("answer")
    assert answer.startswith(f"answer      www.example.test. -> {region}")
    assert ("every region is down: failing open to the nearest" in answer) is fail_open
    assert re.search(rf"^\s+A\s+{a}\s+TTL 30$", run.out, re.M), run.out
    assert re.search(rf"^\s+AAAA\s+{aaaa}\s+TTL 30$", run.out, re.M), run.out
    # merged by the answer in this health state: with only ap-southeast up, one answer for all
    scope = "/0" if region == "ap-southeast" else "/18"
    assert run.line("ecs scope").startswith(f"ecs scope   {scope} ")


def test_without_probe_every_edge_is_up(runs):
    assert all(state == "up" for _, _, text in runs["gb"].ranking()
               for state in re.findall(r"\b(up|DOWN)\b", text))
