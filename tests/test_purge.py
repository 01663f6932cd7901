"""``geoedge purge``: one request per edge (pure plan, table-driven) and the command's errors.

The requests reaching real edges (and a stopped edge making the command fail) are exercised
end to end in tests/test_demo.py.
"""

from __future__ import annotations

import pytest
from demoutil import DEMO

from geoconfig.topology import load_topology
from geoedge.cli import main
from geoedge.client.purge import plan_purge

URL = "http://www.example.test:8080/index.html"


@pytest.mark.parametrize(("kind", "value", "soft"), [
    ("url", URL, False),
    ("prefix", "http://www.example.test:8080/static/", True),
    ("key", "html", False),
])
def test_one_request_per_edge(kind: str, value: str, soft: bool) -> None:
    requests = plan_purge(load_topology(DEMO), kind, value, soft)
    assert [(r.edge, r.where) for r in requests] == [
        ("us-east-1", "127.0.1.1:8080"), ("us-east-2", "127.0.1.2:8080"),
        ("eu-west-1", "127.0.2.1:8080"), ("eu-west-2", "127.0.2.2:8080"),
        ("ap-southeast-1", "127.0.3.1:8080"), ("ap-southeast-2", "127.0.3.2:8080")]
    assert {r.url for r in requests} >= {"http://127.0.2.1:8080/.geoedge/purge"}
    assert all(r.body == {kind: value, "soft": soft} for r in requests)


@pytest.mark.parametrize(("kind", "value", "message"), [
    ("url", "/index.html", "URL must be absolute"),
    ("prefix", "www.example.test/static/", "--prefix must be absolute"),
    ("tag", "x", "unknown purge kind"),
])
def test_bad_plans(kind: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_purge(load_topology(DEMO), kind, value, False)


@pytest.mark.parametrize(("args", "message"), [
    ([], "give exactly one of URL, --prefix URL, --key KEY"),
    ([URL, "--key", "html"], "give exactly one of"),
    (["/index.html"], "URL must be absolute"),
    (["--key", "html", "--timeout", "-1"], "--timeout must be greater than 0"),
])
def test_usage_errors_exit_2(args: list[str], message: str, capsys) -> None:
    assert main(["purge", "--config", str(DEMO), *args]) == 2
    assert message in capsys.readouterr().err


def test_no_token_exits_2(tmp_path, capsys) -> None:
    config = tmp_path / "demo.toml"
    config.write_text(DEMO.read_text().replace('purge_token = "demo-purge-token"', ""))
    assert main(["purge", "--config", str(config), "--key", "html"]) == 2
    assert "no token" in capsys.readouterr().err
