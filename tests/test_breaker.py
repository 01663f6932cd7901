"""Circuit breaker: table-driven (now, event) sequences checked step by step; no sleeps."""

from __future__ import annotations

import pytest

from edge.breaker import BreakerState, CircuitBreaker

C, OP, H = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN

# A step: (now, event, expected). ``allow`` expects (returned bool, state after); ``ok``/``fail``
# (record_success / record_failure) and ``state`` (a read) expect the state after.
Step = tuple[float, str, object]

CASES: dict[str, tuple[dict[str, object], list[Step]]] = {
    "closed allows": ({}, [(0, "allow", (True, C)), (0, "state", C)]),
    "threshold exactly: 4 failures stay closed, the 5th opens": ({}, [
        (0, "fail", C), (1, "fail", C), (2, "fail", C), (3, "fail", C),
        (3, "allow", (True, C)),
        (4, "fail", OP),
        (4, "allow", (False, OP)),
    ]),
    "threshold 1 opens on the first failure": ({"failure_threshold": 1}, [
        (0, "fail", OP), (0, "allow", (False, OP)),
    ]),
    "success resets the consecutive count": ({"failure_threshold": 3}, [
        (0, "fail", C), (1, "fail", C), (2, "ok", C),
        (3, "fail", C), (4, "fail", C), (5, "allow", (True, C)),
        (6, "fail", OP),
    ]),
    "reset timeout boundary: refused just before, allowed exactly at": (
        {"failure_threshold": 1, "reset_timeout": 2.0}, [
            (10.0, "fail", OP),
            (10.0, "allow", (False, OP)),
            (11.999, "allow", (False, OP)),
            (11.999, "state", OP),
            (12.0, "state", H),
            (12.0, "allow", (True, H)),
        ]),
    "only one trial in half_open": ({"failure_threshold": 1, "reset_timeout": 2.0}, [
        (0, "fail", OP),
        (2, "allow", (True, H)),
        (2, "allow", (False, H)),
        (3, "allow", (False, H)),
    ]),
    "half_open_max_calls trials, then refused": (
        {"failure_threshold": 1, "reset_timeout": 2.0, "half_open_max_calls": 3}, [
            (0, "fail", OP),
            (2, "allow", (True, H)), (2, "allow", (True, H)), (2.5, "allow", (True, H)),
            (2.5, "allow", (False, H)),
        ]),
    "trial failure re-opens with a fresh timeout": (
        {"failure_threshold": 1, "reset_timeout": 2.0}, [
            (0, "fail", OP),
            (2, "allow", (True, H)),
            (3, "fail", OP),
            (3, "allow", (False, OP)),
            (4.5, "allow", (False, OP)),  # the old timeout (from 0) would have allowed this
            (4.999, "state", OP),
            (5, "allow", (True, H)),
        ]),
    "trial success closes": ({"failure_threshold": 2, "reset_timeout": 2.0}, [
        (0, "fail", C), (0, "fail", OP),
        (2, "allow", (True, H)),
        (2.1, "ok", C),
        (2.1, "allow", (True, C)), (2.1, "allow", (True, C)),
        (3, "fail", C),  # the count starts again from zero after closing
        (3, "fail", OP),
    ]),
    "success while open is a stale result: ignored": (
        {"failure_threshold": 1, "reset_timeout": 2.0}, [
            (0, "fail", OP), (1, "ok", OP), (1, "allow", (False, OP)),
        ]),
    "failure while open does not extend the open period": (
        {"failure_threshold": 1, "reset_timeout": 2.0}, [
            (0, "fail", OP), (1.5, "fail", OP), (2, "allow", (True, H)),
        ]),
    "result before any trial permit is stale: ignored": (
        {"failure_threshold": 1, "reset_timeout": 2.0}, [
            (0, "fail", OP),
            (2.5, "ok", H),  # a call allowed before opening finishing late
            (2.5, "fail", H),
            (2.5, "allow", (True, H)),
            (2.6, "ok", C),
        ]),
    "a lost trial does not wedge half_open: permits again after reset_timeout": (
        {"failure_threshold": 1, "reset_timeout": 2.0}, [
            (0, "fail", OP),
            (2, "allow", (True, H)),  # this trial never reports
            (3.999, "allow", (False, H)),
            (4, "allow", (True, H)),
            (4, "allow", (False, H)),
            (4.2, "ok", C),
        ]),
    "a clock before opened_at keeps it open": ({"failure_threshold": 1}, [
        (10, "fail", OP), (9, "allow", (False, OP)),
    ]),
}


@pytest.mark.parametrize("kwargs, steps", list(CASES.values()), ids=list(CASES))
def test_sequences(kwargs: dict[str, object], steps: list[Step]) -> None:
    breaker = CircuitBreaker(**kwargs)  # type: ignore[arg-type]
    for i, (now, event, expected) in enumerate(steps):
        where = f"step {i}: {event} at {now}"
        if event == "allow":
            assert (breaker.allow(now), breaker.state(now)) == expected, where
            continue
        if event == "ok":
            breaker.record_success(now)
        elif event == "fail":
            breaker.record_failure(now)
        else:
            assert event == "state"
        assert breaker.state(now) == expected, where


def test_state_is_a_pure_read() -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=2.0)
    breaker.record_failure(0)
    assert breaker.state(5) is H
    assert breaker.state(1) is OP  # reading at 5 did not move it to half_open


def test_snapshot() -> None:
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=2.0)
    assert breaker.snapshot(0) == {"state": "closed", "consecutive_failures": 0,
                                   "opened_at": None, "times_opened": 0}
    breaker.record_failure(1)
    assert breaker.snapshot(1)["consecutive_failures"] == 1
    breaker.record_failure(2)
    assert breaker.snapshot(2) == {"state": "open", "consecutive_failures": 2,
                                   "opened_at": 2, "times_opened": 1}
    assert breaker.snapshot(4)["state"] == "half_open"
    assert breaker.allow(4)
    breaker.record_failure(4.5)
    assert breaker.snapshot(4.5) == {"state": "open", "consecutive_failures": 3,
                                     "opened_at": 4.5, "times_opened": 2}
    assert breaker.allow(6.5)
    breaker.record_success(6.6)
    assert breaker.snapshot(6.6) == {"state": "closed", "consecutive_failures": 0,
                                     "opened_at": 4.5, "times_opened": 2}


def test_state_values() -> None:
    assert [s.value for s in BreakerState] == ["closed", "open", "half_open"]


@pytest.mark.parametrize("kwargs", [
    {"failure_threshold": 0},
    {"failure_threshold": 2.5},
    {"reset_timeout": -1.0},
    {"reset_timeout": 0},
    {"reset_timeout": float("inf")},
    {"reset_timeout": float("nan")},
    {"half_open_max_calls": 0},
])
def test_invalid_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]
