"""The purge log follower stops even when its Redis client loses a cancel (edge/tier/purgelog.py,
``_cancel``): seen under load with redis-py 8.2, where a worker never stopped."""

from __future__ import annotations

import asyncio
import contextlib
import time

from edge.tier.keys import SharedSettings
from edge.tier.purgelog import PurgeLog
from tests.edgeutil import WAIT, until


class LosesCancels:
    """A client whose blocking XREAD swallows the cancel and returns as a BLOCK that timed out
    would (the one part of Redis that cannot be made to misbehave here on demand)."""

    def __init__(self) -> None:
        self.reads = 0

    async def xread(self, *args: object, **kw: object) -> None:
        self.reads += 1
        with contextlib.suppress(asyncio.CancelledError):  # lost
            await asyncio.sleep(0.2)

    async def xrange(self, *args: object, **kw: object) -> list[object]:
        return []

    async def hset(self, *args: object, **kw: object) -> int:
        return 1

    async def aclose(self) -> None:
        return None


async def test_stop_ends_a_follower_whose_client_loses_the_cancel() -> None:
    log = PurgeLog(SharedSettings("redis://127.0.0.1:1/0", ()), "edge-a", time.time,
                   lambda kind, value, soft: None)
    log.cursor = "0-0"
    client = log._client = LosesCancels()
    task = log._task = asyncio.create_task(log._follow())
    assert await until(lambda: client.reads >= 2, WAIT)  # following
    async with asyncio.timeout(WAIT):
        await log.stop()
    assert task.done() and log._client is None
