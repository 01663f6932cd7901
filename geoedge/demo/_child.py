"""``python -m geoedge.demo._child PARENT_PID CMD ...``: run CMD so that it dies with its parent.

The demo's supervisor starts every process through this: on Linux it asks the kernel for
SIGINT when the parent goes away (``PR_SET_PDEATHSIG``, kept across ``exec``), so nothing is
left running even if the supervisor itself is killed with SIGKILL. SIGINT, not SIGTERM: every
role stops at once on it (SIGTERM too, now; edges give in-flight requests a moment). If the
parent is already gone when this runs, the command is not started. Elsewhere it simply execs
the command.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not argv[0].isdigit():
        print("usage: python -m geoedge.demo._child PARENT_PID CMD [ARG ...]", file=sys.stderr)
        return 2
    parent, command = int(argv[0]), argv[1:]
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGINT), 0, 0, 0) != 0:
            print(f"geoedge: prctl(PR_SET_PDEATHSIG) failed: {os.strerror(ctypes.get_errno())}",
                  file=sys.stderr)
            return 1
    if os.getppid() != parent:  # the parent died before prctl took effect
        return 1
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"geoedge: cannot run {command[0]}: {exc.strerror or exc}", file=sys.stderr)
        return 127
    return 0  # not reached: execvp replaced this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
