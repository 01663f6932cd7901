"""The store's byte bound counts real memory (#11 item 8): what tracemalloc sees the store
allocate for small objects stays within what the store counts (bench/edge_memory.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import edge_memory


@pytest.mark.parametrize("size", [1, 1024])
def test_counted_bytes_cover_the_real_allocation(size):
    bound = 8 * 1024 * 1024
    got = edge_memory.measure(bound, 6000, size, trace=True)
    assert got["counted"] <= bound
    assert got["objects"] < 6000  # the bound was reached: entries were evicted and replaced
    assert got["real"] <= got["counted"] * 1.05, got
