"""edge.policy.h2flood: fixed-window counting per frame kind, table-driven."""

from __future__ import annotations

import pytest

from edge.policy.h2flood import FloodCounter, FloodLimits

LIMITS = FloodLimits(window=10.0, resets=3, pings=2)


@pytest.mark.parametrize(("frames", "expected"), [
    # (kind, now) per frame -> what the last note returned
    ([("resets", 0.0)] * 3, None),  # at the limit
    ([("resets", 0.0)] * 4, "resets"),  # one over
    ([("resets", 0.0)] * 3 + [("resets", 10.0)], None),  # a new window
    ([("resets", 0.0)] * 3 + [("resets", 9.9)], "resets"),
    ([("pings", 1.0), ("resets", 1.0), ("pings", 2.0), ("resets", 2.0), ("pings", 3.0)],
     "pings"),  # each kind its own limit
    ([("pings", 0.0), ("pings", 5.0), ("resets", 11.0), ("pings", 12.0), ("pings", 13.0)],
     None),  # the window restarted at 11.0
])
def test_note(frames, expected):
    counter = FloodCounter(LIMITS)
    result = None
    for kind, now in frames:
        result = counter.note(kind, now)
    assert result == expected


def test_bulk_note_and_defaults():
    counter = FloodCounter()
    assert counter.note("empty", 0.0, 1000) is None
    assert counter.note("empty", 0.0) == "empty"
    assert FloodLimits().resets == 200
