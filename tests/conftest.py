"""Suite-wide test settings.

Under CI (``CI`` set), hypothesis runs derandomized: the same examples every run, so a red CI
always means a change broke something, never that a new random example was drawn. Locally it
explores new examples on every run.
"""

import asyncio
import faulthandler
import gc
import os
import sys
import threading
from collections.abc import Iterator

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


# -- the watchdog: a hung test ends the run in minutes, saying where it hung ---------------------
# CI has a time limit for the whole run; a test that never returns would use all of it and say
# nothing. After HANG_AFTER seconds in one test (setup, call and teardown) this prints the test's
# id, every thread's stack and every unfinished asyncio task's stack, then exits the process
# (status 3). No test comes near it: the slowest take tens of seconds.
HANG_AFTER = float(os.environ.get("GEOEDGE_TEST_HANG_AFTER", "300"))


def _report_hang(item: pytest.Item) -> None:
    capture = item.config.pluginmanager.getplugin("capturemanager")
    if capture is not None:  # the terminal, not the captured output that is never shown
        capture.suspend_global_capture(in_=True)
    out = sys.stderr
    nodeid = item.nodeid
    print(f"\n\n*** {nodeid} hung for {HANG_AFTER:g} s: stacks follow ***", file=out, flush=True)
    faulthandler.dump_traceback(file=out, all_threads=True)
    for obj in gc.get_objects():
        try:
            pending = isinstance(obj, asyncio.Task) and not obj.done()
        except ReferenceError:
            continue
        if pending:
            print(f"--- {obj!r}", file=out)
            obj.print_stack(file=out)
    out.flush()
    os._exit(3)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    timer = threading.Timer(HANG_AFTER, _report_hang, args=(item,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
