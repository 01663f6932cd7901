"""Request coalescing: concurrent misses for one key make one origin request.

Rules:

- The first request for a key becomes the leader and runs the fetch; later ones wait on a
  future (no polling) and get what the leader publishes: the stored entry, or None when the
  response was not shareable (then each waiter fetches for itself, as after Varnish's
  hit-for-miss).
- At most ``max_waiters`` wait on one key and each waits at most ``timeout`` seconds; past
  either bound a request fetches on its own instead of queueing forever.
- A leader that fails passes its exception to the waiters (a dead origin is not hit again by
  every waiter at once).
- The leader publishes as soon as it knows the outcome, before it streams a body to its own
  client.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class Flight(Generic[T]):
    future: asyncio.Future[T | None]
    waiters: int = 0
    published: bool = field(default=False)


class Coalescer(Generic[T]):
    def __init__(self, max_waiters: int, timeout: float) -> None:
        self.max_waiters = max_waiters
        self.timeout = timeout
        self.flights: dict[str, Flight[T]] = {}

    def lead(self, key: str) -> Flight[T] | None:
        """Become the leader for ``key``; None if a flight is already under way."""
        if key in self.flights:
            return None
        flight: Flight[T] = Flight(asyncio.get_running_loop().create_future())
        self.flights[key] = flight
        return flight

    def publish(self, key: str, flight: Flight[T], value: T | None) -> None:
        if not flight.published:
            flight.published = True
            if not flight.future.done():
                flight.future.set_result(value)
        if self.flights.get(key) is flight:
            del self.flights[key]

    def fail(self, key: str, flight: Flight[T], exc: BaseException) -> None:
        if not flight.published:
            flight.published = True
            if not flight.future.done():
                flight.future.set_exception(exc)
                flight.future.exception()  # mark retrieved: waiters may be none
        if self.flights.get(key) is flight:
            del self.flights[key]

    def in_flight(self, key: str) -> bool:
        return key in self.flights

    async def wait(self, key: str) -> tuple[bool, T | None]:
        """(waited, value): waited is False when there was no flight or the wait was refused
        (too many waiters) or timed out — the caller then fetches itself."""
        flight = self.flights.get(key)
        if flight is None or flight.waiters >= self.max_waiters:
            return False, None
        flight.waiters += 1
        try:
            async with asyncio.timeout(self.timeout):
                value = await asyncio.shield(flight.future)
        except TimeoutError:
            return False, None
        finally:
            flight.waiters -= 1
        return True, value
