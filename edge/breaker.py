"""A circuit breaker for calls to a shared dependency (the regional Redis tier); pure, clock passed.

Rules (the classic three-state machine of Hystrix, resilience4j and gobreaker; see
https://github.com/Netflix/Hystrix/wiki/How-it-Works#CircuitBreaker,
https://resilience4j.readme.io/docs/circuitbreaker and https://github.com/sony/gobreaker):

- States: ``closed`` (calls flow), ``open`` (calls are refused), ``half_open`` (a few trial
  calls probe whether the dependency is back).
- closed: ``allow`` is always True. ``record_failure`` counts *consecutive* failures (gobreaker's
  ``ConsecutiveFailures``); reaching ``failure_threshold`` opens the breaker at that ``now``.
  ``record_success`` resets the count to 0.
- open: ``allow`` is False while ``now < opened_at + reset_timeout`` (Hystrix's sleep window,
  resilience4j's ``waitDurationInOpenState``, gobreaker's ``Timeout``). From
  ``opened_at + reset_timeout`` inclusive the breaker is half_open.
- half_open: ``allow`` hands out at most ``half_open_max_calls`` trial permits (resilience4j's
  ``permittedNumberOfCallsInHalfOpenState``, gobreaker's ``MaxRequests``; Hystrix allows one) and
  refuses every other call. A trial's ``record_success`` closes the breaker (count reset); a
  trial's ``record_failure`` counts as one more consecutive failure and re-opens it with
  ``opened_at = now``, so a fresh ``reset_timeout`` starts.
- Stale results: a ``record_*`` that cannot be a trial's result -- while open, or half_open
  before any permit was handed out -- comes from a call allowed before the breaker opened and is
  ignored (gobreaker drops results from an older "generation" the same way).
- Lost trials: every allowed call must be followed by exactly one ``record_*`` (use
  ``try/finally``; a cancelled task is neither success nor failure of the dependency, record it
  as a failure). Should a trial never report, the permits are handed out again once
  ``reset_timeout`` has passed since the first permit of the round, so the breaker cannot stay
  wedged in half_open (resilience4j issues #903/#935, fixed there by
  ``maxWaitDurationInHalfOpenState``).
- ``state(now)`` and ``snapshot(now)`` only read: they report half_open once the open period
  has passed, the transition itself happens on the next ``allow``/``record_*``.
- Time is whatever ``now`` the caller passes (a monotonic clock is best); nothing here reads a
  clock. A ``now`` earlier than ``opened_at`` simply keeps the breaker open. Not thread-safe:
  one breaker per event loop.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any

__all__ = ["BreakerState", "CircuitBreaker"]


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(self, failure_threshold: int = 5, reset_timeout: float = 2.0,
                 half_open_max_calls: int = 1) -> None:
        if type(failure_threshold) is not int or failure_threshold < 1:
            raise ValueError("failure_threshold must be an int >= 1")
        if not isinstance(reset_timeout, int | float) or not (
                math.isfinite(reset_timeout) and reset_timeout > 0):
            raise ValueError("reset_timeout must be a finite number > 0")
        if type(half_open_max_calls) is not int or half_open_max_calls < 1:
            raise ValueError("half_open_max_calls must be an int >= 1")
        self.failure_threshold = failure_threshold
        self.reset_timeout = float(reset_timeout)
        self.half_open_max_calls = half_open_max_calls
        self._state = BreakerState.CLOSED
        self._failures = 0  # consecutive failures while closed
        self._opened_at: float | None = None  # when it last opened
        self._times_opened = 0
        self._permits = 0  # trial permits handed out in the current half-open round
        self._round_started: float | None = None  # when the round's first permit went out

    # -- reading ----------------------------------------------------------------------------------
    def state(self, now: float) -> BreakerState:
        if self._state is BreakerState.OPEN and self._open_period_over(now):
            return BreakerState.HALF_OPEN
        return self._state

    def snapshot(self, now: float) -> dict[str, Any]:
        """For metrics: state, consecutive failures, last opened_at (None: never), times opened."""
        return {
            "state": self.state(now).value,
            "consecutive_failures": self._failures,
            "opened_at": self._opened_at,
            "times_opened": self._times_opened,
        }

    # -- deciding ---------------------------------------------------------------------------------
    def allow(self, now: float) -> bool:
        """May a call go to the dependency now? In half_open, True hands out a trial permit."""
        self._advance(now)
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.OPEN:
            return False
        if self._permits >= self.half_open_max_calls:
            assert self._round_started is not None
            if now < self._round_started + self.reset_timeout:
                return False
            self._permits = 0  # the round's trials were lost: start a new round
        if self._permits == 0:
            self._round_started = now
        self._permits += 1
        return True

    # -- recording --------------------------------------------------------------------------------
    def record_success(self, now: float) -> None:
        self._advance(now)
        if self._state is BreakerState.CLOSED:
            self._failures = 0
        elif self._state is BreakerState.HALF_OPEN and self._permits > 0:
            self._close()

    def record_failure(self, now: float) -> None:
        self._advance(now)
        if self._state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._open(now)
        elif self._state is BreakerState.HALF_OPEN and self._permits > 0:
            self._failures += 1
            self._open(now)

    # -- transitions ------------------------------------------------------------------------------
    def _open_period_over(self, now: float) -> bool:
        assert self._opened_at is not None
        return now >= self._opened_at + self.reset_timeout

    def _advance(self, now: float) -> None:
        if self._state is BreakerState.OPEN and self._open_period_over(now):
            self._state = BreakerState.HALF_OPEN
            self._permits = 0
            self._round_started = None

    def _open(self, now: float) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = now
        self._times_opened += 1
        self._permits = 0
        self._round_started = None

    def _close(self) -> None:
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._permits = 0
        self._round_started = None
