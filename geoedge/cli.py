"""The ``geoedge`` command: one console script, one subcommand per role."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Callable, Sequence
from importlib import metadata

from geoconfig.validate import ConfigError, format_host_port, host_port
from geoedge import dnssec_cli

LOG_LEVELS = ["debug", "info", "warning", "error"]
LOG_LEVEL_HELP = "logging threshold on stderr (default info)"
EXIT_SIGPIPE = 128 + 13  # what a shell reports for a process ended by SIGPIPE


def package_version() -> str:
    """The installed distribution's version, else ``geoedge.__version__``, else ``unknown``."""
    try:
        return metadata.version("geoedge")
    except metadata.PackageNotFoundError:
        import geoedge

        return str(getattr(geoedge, "__version__", "unknown"))


def describe_os_error(exc: OSError) -> str:
    """``[Errno 98] Address already in use``: the errno and its text, never the exception's
    arguments (uvloop's and asyncio's bind errors embed the address as a Python tuple)."""
    if exc.errno:
        return f"[Errno {exc.errno}] {os.strerror(exc.errno)}"
    return exc.strerror or exc.__class__.__name__


def _listen(value: str) -> tuple[str, int]:
    try:
        return host_port(value, "--listen")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _workers(value: str) -> int:
    if value == "auto":
        from edge.workers import cpu_count

        return cpu_count()
    if not value.isdigit() or not 1 <= int(value) <= 1024:
        raise argparse.ArgumentTypeError(f'must be "auto" or 1 to 1024, got {value!r}')
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="geoedge", description="GeoDNS and CDN edge service")
    parser.add_argument("--version", action="version", version=f"geoedge {package_version()}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="the role to run or the tool to use (COMMAND --help "
                                     "for its options)")

    dns = sub.add_parser(
        "dns", help="run the authoritative GeoDNS server",
        description="Serve the topology's zones over UDP and TCP, answering each geo-routed "
                    "name with the edges of the client's nearest healthy region (by ECS, "
                    "else the resolver's address). The topology and the GeoIP database are "
                    "reloaded when they change on disk or on SIGHUP; SIGTERM stops.")
    dns.add_argument("--config", required=True, help="topology file (TOML)")
    dns.add_argument("--listen", action="append", type=_listen, metavar="HOST:PORT",
                     help="address to serve on (UDP and TCP); repeatable; overrides dns.listen")
    dns.add_argument("--workers", type=int, default=1,
                     help="processes sharing the sockets with SO_REUSEPORT (default 1)")
    dns.add_argument("--metrics-listen", type=_listen, metavar="HOST:PORT",
                     help="serve Prometheus metrics at http://HOST:PORT/metrics; overrides "
                          "dns.metrics_listen")
    dns.add_argument("--log-level", default="info", choices=LOG_LEVELS, help=LOG_LEVEL_HELP)

    explain = sub.add_parser(
        "explain", help="show how the server answers a client address",
        description="Show, without a running server, which region and edges the GeoDNS "
                    "server would answer with for a client address, the ECS scope, and why.")
    explain.add_argument("--config", required=True, help="topology file (TOML)")
    explain.add_argument("ip", help="client address (or ECS subnet address)")
    explain.add_argument("name", nargs="?", help="geo-routed name (default: every geo name)")
    explain.add_argument("--probe", action="store_true",
                         help="probe the edges' health first (default: assume up)")

    edge = sub.add_parser(
        "edge", help="run an edge node (caching reverse proxy)",
        description="Run one edge of the topology: an HTTP/1.1 caching reverse proxy in front "
                    "of the [[origins]], sharing its region's Redis tier when configured. "
                    "SIGTERM or SIGINT stops accepting at once and gives requests in progress "
                    "edge.drain_timeout seconds.")
    edge.add_argument("--config", required=True, help="topology file (TOML)")
    edge.add_argument("--name", required=True, help="the edge's name in the topology")
    edge.add_argument("--listen", type=_listen, metavar="HOST:PORT", action="append",
                      help="address to serve on (default: the edge's ipv4 and port); "
                           "repeatable: each one serves the same")
    edge.add_argument("--access-log", metavar="PATH",
                      help="write the access log here (overrides edge.access_log; "
                           "SIGUSR1 reopens it)")
    edge.add_argument("--admin-listen", type=_listen, metavar="HOST:PORT",
                      help="serve /metrics and stats here (overrides edge.admin_listen)")
    edge.add_argument("--tls-listen", type=_listen, metavar="HOST:PORT",
                      help="also serve HTTPS there (default: [edge] tls_listen)")
    edge.add_argument("--tls-cert", metavar="PEM",
                      help="default certificate chain (default: [edge] tls_cert)")
    edge.add_argument("--tls-key", metavar="PEM", help="its private key")
    edge.add_argument("--log-level", default="info", choices=LOG_LEVELS, help=LOG_LEVEL_HELP)
    edge.add_argument("--workers", type=_workers, metavar="N|auto",
                      help="processes serving the port, sharing the cache through the region's "
                           "Redis (overrides edge.workers; auto: one per CPU)")

    origin = sub.add_parser(
        "origin", help="run an origin web server",
        description="Run one origin of the topology's [[origins]] pool: the [origin] root's "
                    "files, the virtual test files and the API. SIGTERM or SIGINT stops.")
    origin.add_argument("--config", required=True, help="topology file (TOML)")
    origin.add_argument("--name", required=True, help="the origin's name in [[origins]]")
    origin.add_argument("--listen", type=_listen, metavar="HOST:PORT",
                        help="address to serve on (default: the origin's host and port)")
    origin.add_argument("--log-level", default="info", choices=LOG_LEVELS,
                        help="logging threshold on stderr (default info; debug adds the "
                             "access log)")

    _add_fetch(sub)
    dnssec_cli.add_parser(sub)

    purge = sub.add_parser("purge", help="purge a URL, prefix or surrogate key on every edge",
                           description="Send a purge to every edge of the topology (and so "
                                       "to their regions' shared tiers) and report each "
                                       "edge's answer.",
                           epilog="exit status: 0 when every edge confirmed, 1 when any did "
                                  "not, 2 for usage or config errors")
    purge.add_argument("--config", required=True, help="topology file (TOML)")
    purge.add_argument("url", nargs="?", metavar="URL",
                       help="absolute URL as clients ask for it: http://HOST[:PORT]/PATH")
    purge.add_argument("--prefix", metavar="URL", help="every URL starting with this one")
    purge.add_argument("--key", metavar="KEY", help="a surrogate key (Surrogate-Key/Cache-Tag)")
    purge.add_argument("--soft", action="store_true",
                       help="mark stale (revalidated on next use) instead of dropping")
    purge.add_argument("--token", help="bearer token (default: the topology's edge.purge_token)")
    purge.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                       help="per edge (default 5)")

    demo = sub.add_parser(
        "demo", help="run the local multi-region demo",
        description="Start and supervise every process of the topology on this machine: a "
                    "Redis per region, the origins, the edges and GeoDNS. Once they are up, "
                    "type on stdin: stop|start|kill PROCESS-or-REGION, status, help, quit. "
                    "Ctrl-C stops everything.")
    demo.add_argument("--config", default="examples/demo.toml",
                      help="topology file (TOML; default: examples/demo.toml)")
    demo.add_argument("--dashboard", default="127.0.0.1:8088", metavar="HOST:PORT|off",
                      help="serve the live web dashboard here (default 127.0.0.1:8088, "
                           "another free port when that one is taken; off: none)")
    demo.add_argument("--redis-cluster", action="store_true",
                      help="run each region's shared tier as a Redis Cluster of 3 masters + "
                           "3 replicas (18 redis-server processes) instead of one Redis")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; a reader that goes away (``geoedge fetch ... | head -1``) ends it quietly
    with the status of a process ended by SIGPIPE."""
    try:
        try:
            code = _dispatch(argv)
        except SystemExit:  # --help, --version and usage errors: flush while we can catch it
            sys.stdout.flush()
            raise
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_SIGPIPE


def _discard_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush has nowhere to fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def _dispatch(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "dns": _cmd_dns,
        "explain": _cmd_explain,
        "demo": _cmd_demo,
        "edge": _cmd_edge,
        "origin": _cmd_origin,
        "fetch": _cmd_fetch,
        "purge": _cmd_purge,
        "dnssec": dnssec_cli.run,
    }
    try:
        return handlers[args.command](args)
    except ConfigError as exc:
        print(f"geoedge: config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        raise
    except OSError as exc:  # what the roles do not report themselves, without a traceback
        print(f"geoedge {args.command}: {_os_error_text(args, exc)}", file=sys.stderr)
        return 1


def _os_error_text(args: argparse.Namespace, exc: OSError) -> str:
    if args.command in ("edge", "origin") and exc.errno in (errno.EADDRINUSE,
                                                            errno.EADDRNOTAVAIL,
                                                            errno.EACCES):
        where = f" on {format_host_port(*args.listen)}" if args.listen else _configured(args)
        return f"cannot listen for {args.command} {args.name}{where}: {describe_os_error(exc)}"
    return describe_os_error(exc)


def _configured(args: argparse.Namespace) -> str:
    """`` on HOST:PORT``: the origin's configured address (the edge reports its own)."""
    if args.command != "origin":
        return ""
    from geoconfig.topology import load_topology

    origin = next((o for o in load_topology(args.config).cdn.origins if o.name == args.name),
                  None)
    return "" if origin is None else f" on {format_host_port(origin.host, origin.port)}"


def _cmd_dns(args: argparse.Namespace) -> int:
    from geodns.main import run_dns

    return run_dns(args.config, listen=args.listen, workers=args.workers, log_level=args.log_level,
                   metrics_listen=args.metrics_listen)


def _cmd_explain(args: argparse.Namespace) -> int:
    from geodns.explain import run_explain

    return run_explain(args.config, args.ip, args.name, probe=args.probe)


def _cmd_edge(args: argparse.Namespace) -> int:
    from edge.main import run_edge

    listen = args.listen or []
    return run_edge(args.config, args.name, listen=listen[0] if listen else None,
                    log_level=args.log_level, admin_listen=args.admin_listen,
                    tls_listen=args.tls_listen, tls_cert=args.tls_cert, tls_key=args.tls_key,
                    workers=args.workers, also_listen=listen[1:], access_log=args.access_log)


def _cmd_origin(args: argparse.Namespace) -> int:
    from origin.main import run_origin

    return run_origin(args.config, args.name, listen=args.listen, log_level=args.log_level)


FETCH_EPILOG = """\
Resolves the URL's host through the GeoDNS server (with --client-ip sent as EDNS Client
Subnet, as a resolver would for that client), then fetches the URL from the first address
of the answer (the next one if it refuses the connection) with the URL's Host header, and
prints the region, edge, status, Cache-Status, Age, size and time taken.

exit status: 0 for an HTTP status below 500; 1 for a status of 500 or more, a DNS failure
(timeout, NXDOMAIN, REFUSED, no address) or a network error; 2 for usage or config errors.
"""


def _add_fetch(sub: argparse._SubParsersAction) -> None:
    fetch = sub.add_parser(
        "fetch", help="resolve a URL through GeoDNS and fetch it from the chosen edge",
        description="Fetch an http:// URL the way a client in --client-ip's network would.",
        epilog=FETCH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    fetch.add_argument("url", metavar="URL", help="http[s]://HOST[:PORT]/PATH (HOST may be an IP)")
    fetch.add_argument("--client-ip", metavar="IP[/PREFIX]",
                       help="the client to resolve for, sent as ECS (default prefix /24 for "
                            "IPv4, /56 for IPv6); without it: no ECS, like a normal client")
    fetch.add_argument("--dns", default="127.0.0.1:5353", metavar="HOST:PORT",
                       help="the GeoDNS server, UDP then TCP if truncated; [V6]:PORT for IPv6 "
                            "(default 127.0.0.1:5353, the demo's)")
    fetch.add_argument("--config", metavar="FILE",
                       help="topology used to name the region and edge (default: "
                            "examples/demo.toml if it exists here, else the Via header)")
    fetch.add_argument("--ipv6", action="store_true", help="ask for AAAA instead of A")
    fetch.add_argument("--cacert", metavar="PEM",
                       help="CA certificates for https:// (default: the system's, and the "
                            "running demo's CA)")
    fetch.add_argument("-H", "--header", action="append", metavar="'NAME: VALUE'",
                       help="extra request header; repeatable")
    fetch.add_argument("-X", "--method", default="GET",
                       help="request method: GET (default), HEAD, PURGE, ...")
    fetch.add_argument("--repeat", type=int, default=1, metavar="N",
                       help="send N requests to the same address, one report each")
    fetch.add_argument("--each", action="store_true",
                       help="then fetch once through each other address of the answer "
                            "(a region's other edges)")
    fetch.add_argument("--body", action="store_true",
                       help="print the response body after the report (default: its size)")
    fetch.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                       help="per DNS try (one retry) and per HTTP request (default 5)")


def _cmd_purge(args: argparse.Namespace) -> int:
    from geoedge.client.purge import run_purge

    return run_purge(args)


def _cmd_fetch(args: argparse.Namespace) -> int:
    from geoedge.client.fetch import run_fetch

    return run_fetch(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from geoedge.demo.main import run_demo

    dashboard = None if args.dashboard.lower() in ("off", "none", "") else args.dashboard
    if dashboard is not None:
        try:
            host_port(dashboard, "--dashboard")
        except ConfigError as exc:
            print(f"geoedge demo: {exc}", file=sys.stderr)
            return 2
    return run_demo(args.config, dashboard=dashboard, redis_cluster=args.redis_cluster)


if __name__ == "__main__":
    sys.exit(main())
