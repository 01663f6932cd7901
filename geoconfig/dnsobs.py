"""``[dns] metrics_listen`` and ``[dns.querylog]``: what the DNS server exposes about itself.

Keys (all optional; see README's configuration reference)::

    [dns]
    metrics_listen = ""          # HOST:PORT of the Prometheus endpoint (GET /metrics); "": off
    [dns.querylog]
    path = ""                    # the log file; "": no query log
    format = "json"              # "json" (JSON lines) or "dnstap" (Frame Streams, dnstap-read)
    sample = 1                   # log one query in `sample` (1: every query)
    buffer_size = 65536          # bytes encoded before a chunk goes to the writer thread
    flush_interval = 1.0         # seconds: a partial buffer is written at least this often
    max_pending = 256            # chunks waiting for the writer; beyond, chunks are dropped
                                 # (counted in geoedge_dns_querylog_dropped_total)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from geoconfig.validate import ConfigError, check_keys, get, host_port, join, number_in

KEYS = frozenset({"metrics_listen", "querylog"})
FORMATS = ("json", "dnstap")


@dataclass(frozen=True, slots=True)
class QueryLogSettings:
    path: str = ""
    format: str = "json"
    sample: int = 1
    buffer_size: int = 65536
    flush_interval: float = 1.0
    max_pending: int = 256


@dataclass(frozen=True, slots=True)
class ObsSettings:
    metrics_listen: tuple[str, int] | None = None
    querylog: QueryLogSettings = field(default_factory=QueryLogSettings)


def parse_obs(table: dict[str, Any], path: str = "dns") -> ObsSettings:
    """The observability keys of the ``[dns]`` table (already checked for unknown keys)."""
    listen = None
    text = get(table, path, "metrics_listen", str, "")
    if text:
        listen = host_port(text, join(path, "metrics_listen"))
    p = join(path, "querylog")
    t = check_keys(table.get("querylog", {}), p, {"path", "format", "sample", "buffer_size",
                                                   "flush_interval", "max_pending"})
    d = QueryLogSettings()
    fmt = get(t, p, "format", str, d.format)
    if fmt not in FORMATS:
        raise ConfigError(join(p, "format"), f"must be one of {', '.join(FORMATS)}, got {fmt!r}")
    sample = get(t, p, "sample", int, d.sample)
    number_in(sample, join(p, "sample"), 1, 1_000_000)
    size = get(t, p, "buffer_size", int, d.buffer_size)
    number_in(size, join(p, "buffer_size"), 4096, 64 << 20)
    interval = get(t, p, "flush_interval", float, d.flush_interval)
    number_in(interval, join(p, "flush_interval"), 0.01, 3600)
    pending = get(t, p, "max_pending", int, d.max_pending)
    number_in(pending, join(p, "max_pending"), 1, 1_000_000)
    log = QueryLogSettings(get(t, p, "path", str, d.path), fmt, sample, size, interval, pending)
    return ObsSettings(listen, log)


__all__ = ["KEYS", "ObsSettings", "QueryLogSettings", "parse_obs"]
