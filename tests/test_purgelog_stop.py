"""Tier tasks stop even when the Redis client loses a cancel (edge/tier/conn.py,
``cancel_until_done``): seen under load with redis-py 8.2, where a worker never stopped."""

from __future__ import annotations

import asyncio
import contextlib
import time

from edge.tier.conn import cancel_until_done
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


async def test_cancel_until_done_cancels_again_a_task_that_swallowed_the_cancel() -> None:
    async def stubborn() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # the first cancel is lost
            await asyncio.sleep(WAIT)
        await asyncio.sleep(WAIT)  # the next one ends it

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)  # let it start
    async with asyncio.timeout(WAIT):
        assert await cancel_until_done(task) is None
    assert task.cancelled()
