"""HTTP/2 flood limits: how many of each costly frame a connection may send per time window.

Rules (CVE-2023-44487 "rapid reset", CVE-2019-9512 ping flood, CVE-2019-9515 settings flood,
CVE-2019-9518 empty frames, CVE-2019-9516/9513 priority churn; what nginx, Go and h2o do):

- Each kind of frame a client can send cheaply but the server pays for is counted per
  connection in fixed windows of ``window`` seconds: stream resets (RST_STREAM from the
  client, and streams the edge refused because too many handlers were still running), PINGs,
  SETTINGS, PRIORITY, WINDOW_UPDATE and empty frames (DATA without payload nor END_STREAM,
  unknown frame types).
- More than the kind's limit within one window: the connection must end with GOAWAY
  ENHANCE_YOUR_CALM. ``note`` says so by returning the kind's name; None: within the limits.
- A window starts at the first frame counted after the previous one ended; ``now`` is
  passed in (no clock is read here).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["FloodCounter", "FloodLimits"]


@dataclass(frozen=True, slots=True)
class FloodLimits:
    window: float = 10.0
    resets: int = 200  # nginx: a reset costs a stream slot; Go's default is close to this
    pings: int = 100
    settings: int = 100
    priority: int = 1000
    window_updates: int = 5000
    empty: int = 1000


@dataclass(slots=True)
class FloodCounter:
    limits: FloodLimits = field(default_factory=FloodLimits)
    started: float = float("-inf")
    counts: dict[str, int] = field(default_factory=dict)

    def note(self, kind: str, now: float, n: int = 1) -> str | None:
        """Count ``n`` frames of ``kind`` (a FloodLimits field name); the kind when this
        connection is over its limit and must be closed."""
        if now - self.started >= self.limits.window:
            self.started = now
            self.counts.clear()
        count = self.counts.get(kind, 0) + n
        self.counts[kind] = count
        return kind if count > getattr(self.limits, kind) else None
