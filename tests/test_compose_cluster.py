"""``python -m geoedge.deploy.compose --redis-cluster``: every region's tier as a Redis Cluster
of 3 masters and 3 replicas, created by a one-shot init service; validated with the real
``docker-compose config`` (skipped where it is not installed)."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from edgeutil import ROOT

from geoconfig.topology import parse_topology
from geoedge.deploy.compose import COMPOSE_FILE, TOPOLOGY_FILE, main

REGIONS = ("us-east", "eu-west", "ap-southeast")


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cluster")
    assert main(["--config", str(ROOT / "examples" / "demo.toml"), "--out-dir", str(out),
                 "--redis-cluster"]) == 0
    return out


def test_each_region_gets_six_nodes_and_an_init_service(generated: Path) -> None:
    text = (generated / COMPOSE_FILE).read_text()
    for region in REGIONS:
        for i in range(1, 7):
            assert f"\n  redis-{region}-{i}:\n" in text
        assert f"\n  redis-{region}-init:\n" in text
        assert f"\n  redis-{region}:\n" not in text  # no standalone Redis
    assert text.count("--cluster-replicas 1") == 3
    # each edge waits for its region's cluster init and for the certificates (HTTPS)
    assert text.count('condition: "service_completed_successfully"') == 2 * 6


def test_the_container_topology_names_the_cluster_nodes(generated: Path) -> None:
    with (generated / TOPOLOGY_FILE).open("rb") as f:
        topology = parse_topology(tomllib.load(f))
    for rc in topology.regions:
        assert rc.redis is not None and rc.redis.url is None
        assert rc.redis.cluster == tuple(f"redis-{rc.name}-{i}:6379" for i in range(1, 7))


def test_docker_compose_accepts_it(generated: Path) -> None:
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("docker-compose is not installed")
    shutil.copy(ROOT / "Dockerfile", generated / "Dockerfile")
    out = subprocess.run([compose, "-f", str(generated / COMPOSE_FILE), "config", "-q"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr


def test_the_default_is_unchanged() -> None:
    assert main(["--config", str(ROOT / "examples" / "demo.toml"), "--out-dir", str(ROOT),
                 "--check"]) == 0
