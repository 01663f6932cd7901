#!/usr/bin/env bash
# DNSSEC benchmark (#16): geoedge serving example.test signed (queries with DO) against the
# same geoedge unsigned (queries without DO), in the same run on the same cores, under dnsperf.
#
#   bash bench/dnssec.sh          # from any directory; see docs/benchmarks.md, "DNSSEC"
#
# Two workloads, each replayed once (dnsperf -n 1) against a freshly started server, so every
# cache starts cold:
#   cold ECS  every query www.example.test A or AAAA (50/50) with its own client subnet (real
#             GeoLite2 networks, 85% IPv4 /24, 15% IPv6 /48): the C cold path answers from the
#             region map and answer templates, signed templates for DO (geodns/_coldpath.h)
#   random NX every query a random name under example.test: unsigned, an NXDOMAIN built in C;
#             signed with DO, a compact-denial NSEC signed in Python for each query
# Each server is pinned to CPU $DNSSEC_BENCH_SERVER_CPU (0), dnsperf to $DNSSEC_BENCH_CLIENT_CPU
# (1). Environment (optional): DNSSEC_BENCH_QUERIES=300000 (cold file), DNSSEC_BENCH_NX=60000
# (NX file), DNSSEC_BENCH_OUTSTANDING=100 (dnsperf -q), DNSSEC_BENCH_ALGORITHM=ecdsap256sha256
# (or ed25519), DNSSEC_BENCH_KEEP=0 (1: keep the temp dir), GEOEDGE_VENV=<repo>/.venv.
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${GEOEDGE_VENV:-$ROOT/.venv}
PY=$VENV/bin/python
COUNT=${DNSSEC_BENCH_QUERIES:-300000}
NX=${DNSSEC_BENCH_NX:-60000}
OUTSTANDING=${DNSSEC_BENCH_OUTSTANDING:-100}
ALGORITHM=${DNSSEC_BENCH_ALGORITHM:-ecdsap256sha256}
SERVER_CPU=${DNSSEC_BENCH_SERVER_CPU:-0}
CLIENT_CPU=${DNSSEC_BENCH_CLIENT_CPU:-1}
KEEP=${DNSSEC_BENCH_KEEP:-0}
TARGET_RATIO=0.8

log() { printf '[dnssec-bench] %s\n' "$*" >&2; }
die() { printf '[dnssec-bench] ERROR: %s\n' "$*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

for v in COUNT NX OUTSTANDING SERVER_CPU CLIENT_CPU; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "${v} must be a non-negative integer (got '${!v}')"
done
install_missing dnsperf:dnsperf dig:bind9-dnsutils taskset:util-linux
[[ -x $VENV/bin/geoedge ]] || die "no geoedge in $VENV (run 'make venv' in $ROOT)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/geoedge-dnssec-bench.XXXXXX")
PIDS=()
cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ $KEEP == 1 ]]; then log "kept $WORK"; else rm -rf -- "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- query files (same seed)
v4=$((COUNT * 85 / 100))
gen() {  # $1 out, then make_dns_queries.py options
    local out=$1
    shift
    "$PY" "$ROOT/bench/make_dns_queries.py" --out "$out" --seed 1 "$@" 2>>"$WORK/gen.log" ||
        { cat "$WORK/gen.log" >&2; die "could not write $out"; }
}
log "writing the query files ($COUNT cold ECS queries, $NX random NXDOMAIN names)"
gen "$WORK/cold.bin" --count "$COUNT" --v4 "$v4" --v6 $((COUNT - v4)) --nx-percent 0
gen "$WORK/cold-do.bin" --count "$COUNT" --v4 "$v4" --v6 $((COUNT - v4)) --nx-percent 0 --do
gen "$WORK/nx.bin" --count "$NX" --nx-percent 100
gen "$WORK/nx-do.bin" --count "$NX" --nx-percent 100 --do

# ---------------------------------------------------------------- topologies
# The demo topology; its edges are not running, so they are probed once an hour and need 100
# failures (every edge stays up for the whole run, as in bench/dns.sh).
sed -e "s#^interval = .*#interval = 3600.0#" -e "s#^fall = .*#fall = 100#" \
    "$ROOT/examples/demo.toml" >"$WORK/unsigned.toml"
sed -e 's#^origin = "example.test"$#origin = "example.test"\ndnssec = { key_dir = "keys" }#' \
    "$WORK/unsigned.toml" >"$WORK/signed.toml"
grep -q '^dnssec = ' "$WORK/signed.toml" || die "could not add the dnssec table"
"$VENV/bin/geoedge" dnssec keygen --zone example.test --key-dir "$WORK/keys" \
    --algorithm "$ALGORITHM" >"$WORK/keygen.log" 2>&1 || { cat "$WORK/keygen.log" >&2; die keygen; }

free_port() {  # a port free for both UDP and TCP on 127.0.0.1
    "$PY" -c 'import socket
for _ in range(100):
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM); t.bind(("127.0.0.1", 0))
    port = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        u.close()
        t.close()
    print(port)
    break'
}

# ---------------------------------------------------------------- one measured run
RESULTS=()
run() {  # $1 label, $2 topology, $3 query file, $4 dig flag (+dnssec or +nodnssec)
    local label=$1 cfg=$2 qfile=$3 flag=$4 port pid cpu0 cpu1 t0 t1
    port=$(free_port)
    taskset -c "$SERVER_CPU" "$VENV/bin/geoedge" dns --config "$cfg" \
        --listen "127.0.0.1:$port" >"$WORK/$label.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    for _ in {1..120}; do
        kill -0 "$pid" 2>/dev/null || { cat "$WORK/$label.log" >&2; die "$label: exited"; }
        dig @127.0.0.1 -p "$port" +norec +time=1 +tries=1 example.test SOA 2>/dev/null |
            grep -q 'status: NOERROR' && break
        sleep 0.25
    done
    # sanity: signatures exactly when expected (queried for a name outside the files)
    local sigs
    sigs=$(dig @127.0.0.1 -p "$port" +norec "$flag" mail.example.test A | grep -c 'RRSIG' || true)
    if [[ $flag == +dnssec && $cfg == *signed.toml && $sigs == 0 ]]; then
        die "$label: no RRSIG in a DO answer"
    fi
    log "$label: measuring (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    cpu0=$(cpu_seconds "$pid")
    t0=$(date +%s.%N)
    taskset -c "$CLIENT_CPU" dnsperf -B -d "$qfile" -s 127.0.0.1 -p "$port" -n 1 \
        -q "$OUTSTANDING" -t 2 >"$WORK/$label.dnsperf" 2>&1 || die "$label: dnsperf failed"
    t1=$(date +%s.%N)
    cpu1=$(cpu_seconds "$pid")
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    RESULTS+=("$label $(awk '/Queries per second/ {q=$4} /Queries lost/ {l=$3}
        END {print q, l}' "$WORK/$label.dnsperf") $(awk -v a="$cpu0" -v b="$cpu1" \
        -v s="$t0" -v e="$t1" 'BEGIN { printf "%.0f", 100 * (b - a) / (e - s) }')")
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
run cold-unsigned "$WORK/unsigned.toml" "$WORK/cold.bin" +nodnssec
run cold-signed-do "$WORK/signed.toml" "$WORK/cold-do.bin" +dnssec
run nx-unsigned "$WORK/unsigned.toml" "$WORK/nx.bin" +nodnssec
run nx-signed-do "$WORK/signed.toml" "$WORK/nx-do.bin" +dnssec

# ---------------------------------------------------------------- report
echo
echo "DNSSEC benchmark: geoedge $(git -C "$ROOT" describe --always --dirty 2>/dev/null), key" \
    "$ALGORITHM, dnsperf -n 1 -q $OUTSTANDING, server on CPU $SERVER_CPU, dnsperf on CPU" \
    "$CLIENT_CPU, $(nproc) CPUs; load average $load_before before, $(cut -d' ' -f1-3 \
    /proc/loadavg) after"
printf '%-16s %12s %8s %11s %10s\n' run qps lost "server CPU" q/CPU-s
declare -A QPS PER
for r in "${RESULTS[@]}"; do
    read -r label qps lost cpu <<<"$r"
    per=$(awk -v q="$qps" -v c="$cpu" 'BEGIN { printf "%.0f", c ? q * 100 / c : 0 }')
    QPS[$label]=$qps
    PER[$label]=$per
    printf '%-16s %12.0f %8s %10s%% %10s\n' "$label" "$qps" "$lost" "$cpu" "$per"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b ? a / b : 0 }'; }
cold=$(ratio "${QPS[cold-signed-do]}" "${QPS[cold-unsigned]}")
echo "cold ECS, signed with DO / unsigned: $cold x qps (target >= $TARGET_RATIO:" \
    "$(awk -v r="$cold" -v t="$TARGET_RATIO" 'BEGIN { print (r >= t) ? "PASS" : "FAIL" }'))," \
    "$(ratio "${PER[cold-signed-do]}" "${PER[cold-unsigned]}") x per CPU-second"
echo "random NXDOMAIN, signed with DO / unsigned: $(ratio "${QPS[nx-signed-do]}" \
    "${QPS[nx-unsigned]}") x qps (one signature per query), $(ratio "${PER[nx-signed-do]}" \
    "${PER[nx-unsigned]}") x per CPU-second"
