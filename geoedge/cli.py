"""The ``geoedge`` command: one console script, one subcommand per role."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from geoedge.validate import ConfigError, host_port


def _listen(value: str) -> tuple[str, int]:
    try:
        return host_port(value, "--listen")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="geoedge", description="GeoDNS and CDN edge service")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dns = sub.add_parser("dns", help="run the authoritative GeoDNS server")
    dns.add_argument("--config", required=True, help="topology file (TOML)")
    dns.add_argument("--listen", action="append", type=_listen, metavar="HOST:PORT",
                     help="address to serve on (UDP and TCP); repeatable; overrides dns.listen")
    dns.add_argument("--workers", type=int, default=1,
                     help="processes sharing the sockets with SO_REUSEPORT (default 1)")
    dns.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    explain = sub.add_parser("explain", help="show how the server answers a client address")
    explain.add_argument("--config", required=True, help="topology file (TOML)")
    explain.add_argument("ip", help="client address (or ECS subnet address)")
    explain.add_argument("name", nargs="?", help="geo-routed name (default: every geo name)")
    explain.add_argument("--probe", action="store_true",
                         help="probe the edges' health first (default: assume up)")

    edge = sub.add_parser("edge", help="run an edge node (caching reverse proxy)")
    edge.add_argument("--config", required=True, help="topology file (TOML)")
    edge.add_argument("--name", required=True, help="the edge's name in the topology")
    edge.add_argument("--listen", type=_listen, metavar="HOST:PORT",
                      help="address to serve on (default: the edge's ipv4 and port)")
    edge.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    origin = sub.add_parser("origin", help="run an origin web server")
    origin.add_argument("--config", required=True, help="topology file (TOML)")
    origin.add_argument("--name", required=True, help="the origin's name in [[origins]]")
    origin.add_argument("--listen", type=_listen, metavar="HOST:PORT",
                        help="address to serve on (default: the origin's host and port)")
    origin.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])

    demo = sub.add_parser("demo", help="run the local multi-region demo")
    demo.add_argument("--config", default="examples/demo.toml", help="topology file (TOML)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "dns": _cmd_dns,
        "explain": _cmd_explain,
        "demo": _cmd_demo,
        "edge": _cmd_edge,
        "origin": _cmd_origin,
    }
    try:
        return handlers[args.command](args)
    except ConfigError as exc:
        print(f"geoedge: config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _cmd_dns(args: argparse.Namespace) -> int:
    from geodns.main import run_dns

    return run_dns(args.config, listen=args.listen, workers=args.workers, log_level=args.log_level)


def _cmd_explain(args: argparse.Namespace) -> int:
    from geodns.explain import run_explain

    return run_explain(args.config, args.ip, args.name, probe=args.probe)


def _cmd_edge(args: argparse.Namespace) -> int:
    from edge.main import run_edge

    return run_edge(args.config, args.name, listen=args.listen, log_level=args.log_level)


def _cmd_origin(args: argparse.Namespace) -> int:
    from origin.main import run_origin

    return run_origin(args.config, args.name, listen=args.listen, log_level=args.log_level)


def _cmd_demo(args: argparse.Namespace) -> int:
    from geoedge.demo import run_demo

    return run_demo(args.config)


if __name__ == "__main__":
    sys.exit(main())
