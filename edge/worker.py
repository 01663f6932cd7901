"""One worker process of a multi-worker edge (``python -m edge.worker``, started by
edge/workers.py; not a command for users)."""

from __future__ import annotations

import argparse
import sys

from edge.main import run_edge
from edge.workers import WorkerRole
from geoconfig.validate import ConfigError, host_port


def _listen(text: str) -> tuple[str, int]:
    try:
        return host_port(text, "--listen")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="edge.worker")
    ap.add_argument("--config", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--listen", type=_listen, required=True)
    ap.add_argument("--admin-listen", type=_listen)
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--worker-index", type=int, required=True)
    ap.add_argument("--workers", type=int, required=True)
    ap.add_argument("--channel-fd", type=int)
    ap.add_argument("--discard-disk", action="store_true")
    args = ap.parse_args(argv)
    role = WorkerRole(args.worker_index, args.workers, args.channel_fd, args.discard_disk)
    return run_edge(args.config, args.name, listen=args.listen, log_level=args.log_level,
                    admin_listen=args.admin_listen, workers=args.workers, worker=role)


if __name__ == "__main__":
    sys.exit(main())
