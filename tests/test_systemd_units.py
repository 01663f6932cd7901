"""The systemd units in deploy/systemd: the keys docs/deploy.md promises, an ExecStart the CLI
accepts, and (where systemd-analyze exists) ``systemd-analyze verify`` without a warning."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
GEOEDGE = str(Path(sys.executable).parent / "geoedge")
INSTALLED = "/opt/geoedge/venv/bin/geoedge"  # where docs/deploy.md installs it
INSTANCES = {"geoedge-edge@.service": "us-east-1", "geoedge-origin@.service": "origin-1"}
PRIVILEGED = {"geoedge-dns.service", "geoedge-edge@.service"}  # ports 53 and 80


def _service(unit: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(unit)
    return dict(parser["Service"])


def test_the_three_roles_have_units() -> None:
    assert {u.name for u in UNITS} == {"geoedge-dns.service", "geoedge-edge@.service",
                                       "geoedge-origin@.service"}


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_runs_unprivileged_and_restarts(unit: Path) -> None:
    service = _service(unit)
    assert service["User"] == "geoedge"
    assert service["Restart"] == "on-failure"
    assert int(service["LimitNOFILE"]) >= 65536
    assert service["NoNewPrivileges"] == "yes"
    if unit.name in PRIVILEGED:
        assert service["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    else:
        assert "AmbientCapabilities" not in service
    if unit.name in ("geoedge-dns.service", "geoedge-edge@.service"):  # both reload on SIGHUP
        assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_exec_start_is_a_command_line_the_cli_accepts(unit: Path) -> None:
    argv = shlex.split(_service(unit)["ExecStart"].replace("%i", INSTANCES.get(unit.name, "")))
    assert argv[0] == INSTALLED
    sub = argv[1]
    assert unit.name.startswith(f"geoedge-{sub}")
    helptext = subprocess.run([GEOEDGE, sub, "--help"], capture_output=True, text=True,
                              check=True, timeout=30).stdout
    flags = [a for a in argv[2:] if a.startswith("--")]
    assert flags and all(f" {flag} " in helptext for flag in flags)
    from geoedge.cli import build_parser

    build_parser().parse_args(argv[1:])  # exits 2 on anything it does not accept


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    paths = []
    for unit in UNITS:
        text = unit.read_text().replace(INSTALLED, GEOEDGE)  # verify wants a real executable
        name = unit.name.replace("@.", f"@{INSTANCES[unit.name]}.") if "@" in unit.name \
            else unit.name
        (tmp_path / name).write_text(text)
        paths.append(str(tmp_path / name))
    done = subprocess.run(["systemd-analyze", "verify", *paths], capture_output=True,
                          text=True, timeout=60)
    if done.returncode and "Failed to" in done.stderr and "systemd" in done.stderr.lower() \
            and "geoedge" not in done.stderr:
        pytest.skip(f"systemd-analyze cannot run here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    assert "Unknown" not in done.stderr and "nvalid" not in done.stderr, done.stderr
