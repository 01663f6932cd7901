"""Edge metrics, rendered in the Prometheus text exposition format (version 0.0.4)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable


class Metrics:
    COUNTERS = {
        "requests": "Client requests received",
        "hits": "Requests answered from the cache (fresh)",
        "misses": "Requests forwarded because nothing usable was stored",
        "stale": "Requests answered with a stale stored response",
        "revalidations": "Conditional requests sent to validate a stored response",
        "coalesced": "Requests that waited for another request's origin fetch",
        "passes": "Requests forwarded without caching (methods, bypass, hit-for-miss)",
        "purges": "Entries removed or marked stale by purges",
        "origin_errors": "Origin requests that failed (connection, timeout)",
        "bytes_sent": "Response body bytes sent to clients",
        "stored": "Responses stored in the cache",
    }

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.status: Counter[int] = Counter()

    def inc(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def render(self, gauges: dict[str, tuple[str, float]],
               origins: Iterable[dict[str, object]], edge: str) -> str:
        lines: list[str] = []
        label = f'edge="{edge}"'
        for name, help_text in self.COUNTERS.items():
            metric = f"geoedge_{name}_total"
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter",
                      f"{metric}{{{label}}} {self.counts[name]}"]
        lines += ["# HELP geoedge_responses_total Responses by status code",
                  "# TYPE geoedge_responses_total counter"]
        for code, n in sorted(self.status.items()):
            lines.append(f'geoedge_responses_total{{{label},code="{code}"}} {n}')
        for name, (help_text, value) in gauges.items():
            metric = f"geoedge_{name}"
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge",
                      f"{metric}{{{label}}} {_number(value)}"]
        rows = list(origins)
        for key, help_text in (("up", "Origin health (1 up, 0 down or ejected)"),
                               ("active", "Requests in flight to the origin"),
                               ("ewma_ms", "Smoothed origin response latency in ms"),
                               ("fails", "Recent passive failures of the origin")):
            metric = f"geoedge_origin_{key}"
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge"]
            for row in rows:
                value = row.get(key, 0)
                if key == "up":
                    value = 1 if row.get("up") and not row.get("ejected") else 0
                lines.append(f'{metric}{{{label},origin="{row.get("name")}"}} '
                             f"{_number(float(value or 0))}")
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    """Exact for integers (no 2.68435e+08), shortest round-trip form otherwise."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))
