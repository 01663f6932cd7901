#!/usr/bin/env bash
# What GeoDNS's metrics and query log cost at full rate: bench/dns.sh with plain geoedge, then
# geoedge with [dns] metrics_listen, then with metrics and a complete (sample = 1) query log as
# dnstap and as JSON lines, one after the other on the same core with the same query file, and
# gdnsd as the usual peer. The report ends with each variant's qps (and answers per CPU-second)
# relative to plain geoedge in the same run, and how many records each log holds.
#
#   bash bench/dns_querylog.sh       # see docs/benchmarks.md, "GeoDNS metrics and query log"
#
# Every DNS_BENCH_* variable of bench/dns.sh applies (DNS_BENCH_SERVERS is set here unless
# given).
set -euo pipefail
ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
export DNS_BENCH_SERVERS=${DNS_BENCH_SERVERS:-"geoedge geoedge:metrics geoedge:dnstap geoedge:json gdnsd"}
exec bash "$ROOT/bench/dns.sh"
