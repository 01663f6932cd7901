"""Layering: which package may import which, checked on the source with ``ast``.

The rule enforced, bottom to top (first-party packages only; "third-party" is anything that is
neither first-party nor in the standard library):

    geodata       the standard library and third-party packages; no first-party package
    geoconfig     + geodata                                   (the configuration types)
    geodns, edge, origin   (the roles) + geoconfig, geodata; never geoedge, never another role
    edge.policy   pure: edge.policy, geoconfig and the standard library only, and none of the
                  standard modules that do I/O or read the clock (asyncio, socket, time, ...);
                  no third-party package (no aiohttp, redis, httptools)
    edge.admin, edge.tier   never edge.proxy (the proxy builds them, not the other way round)
    edge.tier     redis and aiocache only in edge.tier.conn (the connection adapters)
    geoedge.client, geoedge.demo, geoedge.deploy   + geoconfig, geodata, and their own package:
                  they reach the roles over the network or as child processes, never by import
    geoedge.cli   the top shell: anything (it imports each role's entry point)

Every import counts: ``import`` and ``from ... import``, relative ones (resolved against the
module's package), imports inside functions and under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIRST_PARTY = frozenset({"geodata", "geoconfig", "geodns", "edge", "origin", "geoedge"})
ROLES = ("geodns", "edge", "origin")
# standard modules a pure function of its arguments has no use for
IMPURE_STDLIB = frozenset({
    "asyncio", "socket", "ssl", "selectors", "select", "subprocess", "threading",
    "multiprocessing", "concurrent", "time", "os", "signal", "http.client", "http.server",
    "urllib.request", "logging",
})


@dataclass(frozen=True)
class Rule:
    package: str  # the rule covers this package and every module below it
    allowed: tuple[str, ...]  # first-party packages it may import
    third_party: bool = True  # may it import third-party packages?
    forbidden: tuple[str, ...] = ()  # modules never imported, even when ``allowed`` covers them


RULES = [
    Rule("geodata", allowed=("geodata",)),
    Rule("geoconfig", allowed=("geoconfig", "geodata")),
    *(Rule(role, allowed=(role, "geoconfig", "geodata")) for role in ROLES),
    Rule("edge.policy", allowed=("edge.policy", "geoconfig"), third_party=False,
         forbidden=tuple(sorted(IMPURE_STDLIB))),
    *(Rule(f"geoedge.{tool}", allowed=(f"geoedge.{tool}", "geoconfig", "geodata"))
      for tool in ("client", "demo", "deploy")),
]


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def imports(module: str, source: str, is_package: bool = False) -> Iterator[tuple[int, list[str]]]:
    """(line, dotted names) of each import statement in ``module``; ``from a import b`` names
    both ``a`` and ``a.b`` (``b`` may be a submodule)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield node.lineno, [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - (node.level - 1)])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            yield node.lineno, [target, *(f"{target}.{a.name}" for a in node.names
                                          if a.name != "*")]


def violation(rule: Rule, name: str) -> str | None:
    """Why ``rule`` forbids importing ``name``, or None."""
    for bad in rule.forbidden:
        if within(name, bad):
            return f"{bad} is forbidden in {rule.package}"
    top = name.partition(".")[0]
    if top in FIRST_PARTY:
        if not any(within(name, ok) for ok in rule.allowed):
            return f"{rule.package} may import only {', '.join(rule.allowed)} (first-party)"
    elif top not in sys.stdlib_module_names and not rule.third_party:
        return f"{rule.package} may not import third-party packages"
    return None


def violations(rule: Rule, sources: Mapping[str, tuple[str, bool]]) -> list[str]:
    """Every forbidden import in ``sources`` ({module: (source, is_package)}) under ``rule``."""
    found = []
    for module, (source, is_package) in sorted(sources.items()):
        if not within(module, rule.package):
            continue
        for line, names in imports(module, source, is_package):
            bad = [(name, why) for name in names if (why := violation(rule, name))]
            if bad:  # one report per statement
                found.append(f"{module}:{line} imports {bad[-1][0]}: {bad[-1][1]}")
    return found


def package_sources(package: str) -> dict[str, tuple[str, bool]]:
    root = REPO / package.replace(".", "/")
    sources = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if is_package else parts)
        sources[module] = (path.read_text(), is_package)
    return sources


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.package)
def test_package_imports_follow_the_layering(rule: Rule) -> None:
    sources = package_sources(rule.package)
    assert sources, f"no modules found for {rule.package}"
    assert violations(rule, sources) == []


@pytest.mark.parametrize(("module", "forbidden"), [
    ("edge.admin", "edge.proxy"),
    ("edge.tier", "edge.proxy"),
    ("edge.tier", "edge.admin"),
    ("edge.tier.protocol", "redis"),  # every redis and aiocache import is in edge.tier.conn
    ("edge.tier.protocol", "aiocache"),
    ("edge.tier.region", "redis"),
    ("edge.tier.region", "aiocache"),
    ("edge.tier.keys", "redis"),
])
def test_no_module_imports_what_builds_it(module: str, forbidden: str) -> None:
    rule = Rule(module, allowed=("edge", "geoconfig", "geodata"), forbidden=(forbidden,))
    sources = package_sources("edge")
    assert any(within(m, module) for m in sources), f"{module} does not exist"
    assert violations(rule, sources) == []


# The checker itself: each row is a module that breaks (or keeps) a rule.
CASES = [
    # (module, is_package, source, rule package, expected violation substring or None)
    ("edge.balancer", False, "from geoedge.topology import Topology\n", "edge", "geoedge"),
    ("edge.balancer", False, "import geodns.engine\n", "edge", "geodns"),
    ("edge.balancer", False, "def f():\n    from origin import app\n", "edge", "origin"),
    ("edge.tier.region", False, "from ..proxy import EdgeApp\n", "edge", None),
    ("edge.policy.vary", False, "from .. import proxy\n", "edge.policy", "edge.proxy"),
    ("edge.policy.vary", False, "import asyncio\n", "edge.policy", "asyncio"),
    ("edge.policy.vary", False, "from time import monotonic\n", "edge.policy", "time"),
    ("edge.policy.vary", False, "import aiohttp\n", "edge.policy", "third-party"),
    ("edge.policy.vary", False, "from . import headers\nimport hashlib\n", "edge.policy", None),
    ("edge.policy", True, "from .sf import parse\n", "edge.policy", None),
    ("edge.policy.vary", False, "from geoconfig.httpdate import parse_http_date\n",
     "edge.policy", None),
    ("geoconfig.topology", False, "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
     "    from edge.proxy import EdgeApp\n", "geoconfig", "edge.proxy"),
    ("geoconfig.topology", False, "from geodata.regions import Region\n", "geoconfig", None),
    ("geodata.reader", False, "from geoconfig import validate\n", "geodata", "geoconfig"),
    ("geodata.reader", False, "import maxminddb\n", "geodata", None),
]


@pytest.mark.parametrize(("module", "is_package", "source", "package", "expected"), CASES)
def test_the_checker_finds_bad_imports(module: str, is_package: bool, source: str,
                                       package: str, expected: str | None) -> None:
    rule = next(r for r in RULES if r.package == package)
    found = violations(rule, {module: (source, is_package)})
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1 and expected in found[0], found
