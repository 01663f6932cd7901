#!/usr/bin/env bash
# Shared-tier benchmark: two geoedge edges of one region sharing a Redis, against the same two
# edges without it and against nginx proxy_cache; hit rate, requests/s, and what an in-process
# hit, a shared-tier hit and a miss each cost.
#
#   bash bench/tier.sh            # from any directory; see docs/benchmarks.md, "Shared tier"
#
# Servers, all on 127.0.0.1 on free ports, in a temp dir: Redis (no persistence), a static
# origin (nginx: any /obj/ANYTHING is a distinct 1 KiB object, Cache-Control: max-age=3600),
# and three pairs of edges us-east-1 + us-east-2 of region us-east: "shared" (the region's
# redis with timeout = $TIER_BENCH_REDIS_TIMEOUT), "default" (the same Redis under another key
# prefix, every redis setting at geoedge's default, i.e. a 50 ms timeout) and "private" (no
# shared tier: each edge its own cache); and nginx proxy_cache (one worker) as the peer. The
# caches (6 edges, nginx) run on CPU $TIER_BENCH_SERVER_CPU; wrk, Redis and the origin on
# $TIER_BENCH_CLIENT_CPU. Every request carries "Host: www.example.test", so both edges of a
# pair compute the same cache key.
#
# 1. Hit rate (cold caches): wrk -t2 -c64, thread 1 on edge 1 and thread 2 on edge 2 (both on
#    nginx for the peer), uniform random over $TIER_BENCH_OBJECTS objects, each thread a fixed
#    seeded sequence of $TIER_BENCH_MIX_REQUESTS / 2 requests (so every cache sees the same
#    requests); bench/tier/load.lua tallies each response's Cache-Status as an in-process hit,
#    a shared-tier hit, a miss or collapsed; the origin's access log counts origin fetches.
# 2. Per-request cost: latency at one connection (wrk -c1: p50/p99) and throughput at
#    $TIER_BENCH_CONNECTIONS (req/s, the server's CPU per request, Redis's) of
#    - an in-process hit: one hot URL, for $TIER_BENCH_DURATION s each;
#    - a shared-tier hit: distinct URLs filled into Redis through edge 1 (one pass of misses at
#      -c$TIER_BENCH_FILL_CONNECTIONS, itself reported), then each requested once through
#      edge 2;
#    - a miss: distinct URLs never asked for, through edge 2 of the shared pair (tier lookup,
#      lease, origin fetch, fill) and through a private edge (origin fetch only);
#    and nginx's hit and miss the same way. Distinct-URL runs stop after a fixed count
#    ($TIER_BENCH_LATENCY_COUNT at -c1, $TIER_BENCH_THROUGHPUT_COUNT at -c$CONNECTIONS).
# The report (bench/tier/report.py) exits 1 when a run had socket errors or non-200
# responses, or a response was not of the kind its run is for (e.g. a miss among tier hits).
#
# Environment (all optional):
#   TIER_BENCH_OBJECTS=2000         objects in the hit-rate mix
#   TIER_BENCH_MIX_REQUESTS=60000   requests per hit-rate run (half per wrk thread)
#   TIER_BENCH_DURATION=5           seconds per hot-URL run (-c1 and -c$CONNECTIONS)
#   TIER_BENCH_LATENCY_COUNT=2000   distinct URLs per -c1 run (tier hits, misses)
#   TIER_BENCH_THROUGHPUT_COUNT=5000   distinct URLs per -c$CONNECTIONS run
#   TIER_BENCH_CONNECTIONS=64       wrk connections for the throughput runs and the mix
#   TIER_BENCH_FILL_CONNECTIONS=16  wrk connections filling Redis through edge 1
#   TIER_BENCH_REDIS_TIMEOUT=1.0    the "shared" pair's redis timeout, seconds
#   TIER_BENCH_CACHE_BYTES=         the edges' [edge] cache_max_bytes (default: geoedge's)
#   TIER_BENCH_SERVER_CPU=0 TIER_BENCH_CLIENT_CPU=1
#   TIER_BENCH_LOG_LEVEL=info       the edges' --log-level (debug shows each tier failure)
#   TIER_BENCH_KEEP=0               1: keep the temp dir (configs, logs, raw wrk output)
#   GEOEDGE_VENV=<repo>/.venv
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
HERE=$ROOT/bench/tier
VENV=${GEOEDGE_VENV:-$ROOT/.venv}
PY=$VENV/bin/python
GEOEDGE=$VENV/bin/geoedge
OBJECTS=${TIER_BENCH_OBJECTS:-2000}
MIX_REQUESTS=${TIER_BENCH_MIX_REQUESTS:-60000}
DURATION=${TIER_BENCH_DURATION:-5}
LAT_COUNT=${TIER_BENCH_LATENCY_COUNT:-2000}
THR_COUNT=${TIER_BENCH_THROUGHPUT_COUNT:-5000}
CONNECTIONS=${TIER_BENCH_CONNECTIONS:-64}
CACHE_BYTES=${TIER_BENCH_CACHE_BYTES:-}
REDIS_TIMEOUT=${TIER_BENCH_REDIS_TIMEOUT:-1.0}
FILL_CONNECTIONS=${TIER_BENCH_FILL_CONNECTIONS:-16}
SERVER_CPU=${TIER_BENCH_SERVER_CPU:-0}
CLIENT_CPU=${TIER_BENCH_CLIENT_CPU:-1}
KEEP=${TIER_BENCH_KEEP:-0}
HOST_HEADER="Host: www.example.test"
MAX_RUN=120  # wrk -d cap (seconds) of the runs that stop after a count of responses
MARGIN=200  # unused URLs between ranges: a run that stops may have sent a few more requests

log() { printf '[tier-bench] %s\n' "$*" >&2; }
die() { printf '[tier-bench] ERROR: %s\n' "$*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

for v in OBJECTS MIX_REQUESTS DURATION LAT_COUNT THR_COUNT CONNECTIONS SERVER_CPU CLIENT_CPU; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
((OBJECTS >= 1 && OBJECTS <= 10000000)) || die "TIER_BENCH_OBJECTS must be 1..10000000"
((MIX_REQUESTS >= 2 && MIX_REQUESTS <= 10000000)) ||
    die "TIER_BENCH_MIX_REQUESTS must be 2..10000000"
((DURATION >= 1 && DURATION <= 300)) || die "TIER_BENCH_DURATION must be 1..300"
((LAT_COUNT >= 1 && LAT_COUNT <= 1000000 && THR_COUNT >= 1 && THR_COUNT <= 1000000)) ||
    die "TIER_BENCH_LATENCY_COUNT and TIER_BENCH_THROUGHPUT_COUNT must be 1..1000000"
((CONNECTIONS >= 2 && CONNECTIONS <= 10000)) || die "TIER_BENCH_CONNECTIONS must be 2..10000"
[[ -z $CACHE_BYTES || $CACHE_BYTES =~ ^[0-9]+$ ]] ||
    die "TIER_BENCH_CACHE_BYTES must be a number of bytes"
[[ -z $CACHE_BYTES ]] || ((CACHE_BYTES >= 1024)) || die "TIER_BENCH_CACHE_BYTES must be >= 1024"
[[ $REDIS_TIMEOUT =~ ^[0-9]*\.?[0-9]+$ ]] || die "TIER_BENCH_REDIS_TIMEOUT must be seconds"
[[ $FILL_CONNECTIONS =~ ^[0-9]+$ ]] || die "TIER_BENCH_FILL_CONNECTIONS must be a number"
((FILL_CONNECTIONS >= 1 && FILL_CONNECTIONS <= 1000)) ||
    die "TIER_BENCH_FILL_CONNECTIONS must be 1..1000"

# ---------------------------------------------------------------- prerequisites
export PATH=$PATH:/usr/sbin:/sbin
# (Debian's packages start the system nginx (port 80) and redis (6379): neither is used.)
install_missing nginx:nginx-light wrk:wrk redis-server:redis-server redis-cli:redis-tools \
    curl:curl taskset:util-linux
NGINX=$(command -v nginx)
REDIS_SERVER=$(command -v redis-server)
REDIS_CLI=$(command -v redis-cli)
[[ -x $PY ]] || die "no Python venv at $VENV (run 'make venv' in $ROOT, or set GEOEDGE_VENV)"
[[ -x $GEOEDGE ]] || die "$GEOEDGE not found (pip install -e $ROOT)"
"$PY" -c 'import edge.tier.region, aiocache, redis' 2>/dev/null ||
    die "$PY cannot import edge.tier.region (aiocache[redis], redis): the shared tier is missing"
ncpu=$(nproc)
((SERVER_CPU < ncpu && CLIENT_CPU < ncpu)) ||
    die "CPU $SERVER_CPU or $CLIENT_CPU does not exist (this machine has $ncpu)"
((SERVER_CPU != CLIENT_CPU)) || log "warning: servers and clients share CPU $SERVER_CPU"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---------------------------------------------------------------- temp dir + cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/geoedge-tier-bench.XXXXXX")
chmod 755 "$WORK"
PIDS=()     # every process started here, stopped in reverse order
declare -A STOP_SIG=()
WRK_SUB=""  # the subshell running wrk, while it runs
cleanup() {
    local rc=$? i pid
    trap - EXIT INT TERM
    if [[ -n $WRK_SUB ]]; then pkill -INT -P "$WRK_SUB" 2>/dev/null || true; fi
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill -"${STOP_SIG[${PIDS[i]}]:-TERM}" "${PIDS[i]}" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in {1..50}; do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -KILL "$pid" 2>/dev/null; then log "process $pid did not stop in 5 s: killed"; fi
        wait "$pid" 2>/dev/null || true
    done
    if [[ $KEEP == 1 ]]; then log "kept $WORK"; else rm -rf -- "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# shellcheck source=bench/tier/lib.sh
source "$HERE/lib.sh"

# ---------------------------------------------------------------- servers
mkdir -p "$WORK/www" "$WORK/tmp" "$WORK/nginx-cache"
head -c 1024 /dev/urandom >"$WORK/www/1k.bin"
chmod -R a+rX "$WORK/www"

read -r REDIS_PORT ORIGIN_PORT PEER_PORT < <(free_ports 3)
[[ $REDIS_PORT =~ ^[0-9]+$ && $ORIGIN_PORT =~ ^[0-9]+$ && $PEER_PORT =~ ^[0-9]+$ ]] ||
    die "could not pick free ports"

start_redis "$REDIS_PORT" "$CLIENT_CPU"
log "redis (pid $REDIS_PID, CPU $CLIENT_CPU) on 127.0.0.1:$REDIS_PORT"

render "$HERE/origin-nginx.conf.in" "$WORK/origin-nginx.conf" "PORT=$ORIGIN_PORT"
start_nginx "$WORK/origin-nginx.conf" origin-nginx "$CLIENT_CPU"
ORIGIN_PID=$NGINX_PID
wait_http "$ORIGIN_PID" "http://127.0.0.1:$ORIGIN_PORT/healthz" "$WORK/origin-nginx.error.log"
log "static origin (nginx, pid $ORIGIN_PID, CPU $CLIENT_CPU) on 127.0.0.1:$ORIGIN_PORT"

edge_settings=""
if [[ -n $CACHE_BYTES ]]; then  # max_object_bytes (16 MiB) must not exceed the cache size
    edge_settings="cache_max_bytes = $CACHE_BYTES"$'\n'"max_object_bytes = $((
        CACHE_BYTES < 16777216 ? CACHE_BYTES : 16777216))"
fi
# Three pairs of edges: "shared" (the region's redis with timeout = $REDIS_TIMEOUT s),
# "default" (the same Redis, its own key prefix, every redis setting at geoedge's default) and
# "private" (no shared tier).
redis_url="url = \"redis://127.0.0.1:$REDIS_PORT/0\""
timeout_toml=$REDIS_TIMEOUT
[[ $timeout_toml == *.* ]] || timeout_toml+=".0"  # a TOML float
render "$HERE/topology.toml.in" "$WORK/shared.toml" "ORIGIN_PORT=$ORIGIN_PORT" \
    "EDGE_SETTINGS=$edge_settings" "REDIS=redis = { $redis_url, timeout = $timeout_toml }"
render "$HERE/topology.toml.in" "$WORK/default.toml" "ORIGIN_PORT=$ORIGIN_PORT" \
    "EDGE_SETTINGS=$edge_settings" \
    "REDIS=redis = { $redis_url, prefix = \"geoedge:us-east-default:\" }"
render "$HERE/topology.toml.in" "$WORK/private.toml" "ORIGIN_PORT=$ORIGIN_PORT" \
    "EDGE_SETTINGS=$edge_settings" "REDIS="

declare -A PORT=() PID=() ADMIN=()
for pair in shared default private; do
    for n in 1 2; do
        start_edge "$WORK/$pair.toml" "us-east-$n" "$WORK/$pair-$n.log" "$SERVER_CPU"
        PORT[$pair$n]=$EDGE_PORT PID[$pair$n]=$EDGE_PID ADMIN[$pair$n]=$ADMIN_PORT
        log "geoedge edge us-east-$n, $pair pair (pid $EDGE_PID, CPU $SERVER_CPU)" \
            "on 127.0.0.1:$EDGE_PORT"
    done
done

render "$HERE/peer-nginx.conf.in" "$WORK/peer-nginx.conf" "PORT=$PEER_PORT" \
    "ORIGIN_PORT=$ORIGIN_PORT"
start_nginx "$WORK/peer-nginx.conf" peer-nginx "$SERVER_CPU"
PORT[nginx]=$PEER_PORT PID[nginx]=$NGINX_PID
wait_http "$NGINX_PID" "http://127.0.0.1:$PEER_PORT/healthz" "$WORK/peer-nginx.error.log"
log "nginx proxy_cache (pid $NGINX_PID, CPU $SERVER_CPU) on 127.0.0.1:$PEER_PORT"

# ---------------------------------------------------------------- checks
origin_fetches() {  # requests for /obj/ that reached the origin so far
    grep -c '"GET /obj/' "$WORK/origin-nginx.access.log" || true
}

cache_status() {  # $1 server key, $2 path: GET it, check 200 + 1 KiB; prints the Cache-Status
    local hdr=$WORK/probe.hdr out
    out=$(curl -sS -o /dev/null -D "$hdr" -w '%{http_code} %{size_download}' --max-time 5 \
        -H "$HOST_HEADER" "http://127.0.0.1:${PORT[$1]}$2") || die "GET $2 from $1 failed"
    [[ $out == "200 1024" ]] || { cat "$hdr" >&2; die "GET $2 from $1: '$out', want '200 1024'"; }
    grep -iE '^(X-)?Cache-Status:' "$hdr" | tr -d '\r' | sed -E 's/^[^:]+: *//'
}

edge_stats() {  # $1 server key: the edge's /.geoedge/stats JSON (on its admin listener)
    curl -fsS --max-time 5 "http://127.0.0.1:${ADMIN[$1]}/.geoedge/stats"
}

shared_stat() {  # $1 server key, $2 counter of the edge's shared tier
    edge_stats "$1" | "$PY" -c '
import json, sys
print((json.load(sys.stdin).get("shared") or {}).get(sys.argv[1], 0))' "$2"
}

shared_counters() {  # $1 server key: its shared-tier counters on one line
    edge_stats "$1" | "$PY" -c '
import json, sys
s = json.load(sys.stdin)["shared"]
keys = ("hits", "misses", "stores", "errors", "timeouts", "short_circuits", "leases_won",
        "leases_lost", "waits_filled", "waits_timed_out")
lat = s["latency_ms"]
avg = lat["sum_ms"] / lat["count"] if lat["count"] else 0.0
top = lat["max_ms"]
print(", ".join(f"{k} {s[k]}" for k in keys)
      + f"; Redis calls avg {avg:.2f} ms, max {top:.1f} ms"
      + "; breaker " + str(s["breaker"].get("state", "?")))'
}

wait_stores() {  # $1 server key, $2 target count of tier stores: the background fills done
    local n=0
    for _ in {1..100}; do
        n=$(shared_stat "$1" stores)
        ((n >= $2)) && return 0
        sleep 0.1
    done
    log "$1 shared tier: $(shared_counters "$1")"
    die "$1 made $n shared-tier stores, expected $2 (see its counters above)"
}

expect() {  # $1 server key, $2 path, $3 extended regex the Cache-Status must match
    local got
    got=$(cache_status "$1" "$2")
    [[ $got =~ $3 ]] || die "GET $2 from $1: Cache-Status '$got' does not match '$3'"
    log "  $1 $2: $got"
}

log "checking that the shared pair shares (and the private pair does not)"
expect shared1 /obj/check/1 '^geoedge-us-east-1; fwd=uri-miss'
wait_stores shared1 1
expect shared2 /obj/check/1 '^geoedge-us-east-redis; hit.*, geoedge-us-east-2; fwd=uri-miss'
expect shared2 /obj/check/1 '^geoedge-us-east-2; hit'
expect default1 /obj/check/1 '^geoedge-us-east-1; fwd=uri-miss'
wait_stores default1 1
expect default2 /obj/check/1 '^geoedge-us-east-redis; hit.*, geoedge-us-east-2; fwd=uri-miss'
expect private1 /obj/check/1 '^geoedge-us-east-1; fwd=uri-miss'
expect private2 /obj/check/1 '^geoedge-us-east-2; fwd=uri-miss'
expect nginx /obj/check/1 '^MISS$'
expect nginx /obj/check/1 '^HIT$'

# ---------------------------------------------------------------- wrk runs
RESULTS=$WORK/results.tsv
printf 'part\tlabel\tconns\trequests\tduration_us\tp50_us\tp99_us\terrors\tmem\ttier\tmiss' >"$RESULTS"
printf '\tcollapsed\tother\tnon200\torigin_fetches\tserver_cpu_s\tredis_cpu_s\twrk_cpu_s' >>"$RESULTS"
printf '\tredis_commands\ttier_errors\ttier_short_circuits\n' >>"$RESULTS"

redis_commands() {  # commands Redis has processed so far (this INFO not counted)
    "$REDIS_CLI" -p "$REDIS_PORT" info stats |
        awk -F: '/^total_commands_processed:/ { print $2 - 1 }'
}

tier_failures() {  # $@ server keys: "errors short_circuits" of their shared tiers, summed
    local s e=0 c=0 line
    for s in "$@"; do
        [[ $s == shared* || $s == default* ]] || continue
        line=$(edge_stats "$s" | "$PY" -c '
import json, sys
s = json.load(sys.stdin)["shared"]
print(s["errors"], s["short_circuits"])')
        e=$((e + ${line% *})) c=$((c + ${line#* }))
    done
    echo "$e $c"
}

# One wrk run with bench/tier/load.lua; appends a row to $RESULTS.
#   $1 part (mix|cost), $2 label, $3 wrk threads, $4 connections, $5 seconds (a cap for seq),
#   $6 servers (keys of PORT/PID; thread i goes to server i mod n), $7 mode (hot|random|seq),
#   $8 URL prefix, $9 first index, $10 count (seq)
run_wrk() {
    local part=$1 label=$2 threads=$3 conns=$4 secs=$5 servers=$6 mode=$7 prefix=$8
    local first=$9 count=${10} addrs="" pids=() s out times cpu0 cpu1 r0 r1 o0 o1 u sy real
    local result k0 k1 te0 ts0 te1 ts1 srv=() done_dir
    read -r -a srv <<<"$servers"
    for s in "${srv[@]}"; do
        addrs+="127.0.0.1:${PORT[$s]} "
        [[ " ${pids[*]} " == *" ${PID[$s]} "* ]] || pids+=("${PID[$s]}")
    done
    out=$WORK/wrk.$part.$label.c$conns.txt
    read -r te0 ts0 < <(tier_failures "${srv[@]}")
    k0=$(redis_commands)
    o0=$(origin_fetches) cpu0=$(cpu_seconds "${pids[@]}") r0=$(cpu_seconds "$REDIS_PID")
    done_dir=$WORK/finished.$part.$label.c$conns
    mkdir -p "$done_dir"
    # wrk in the background (its CPU time from `time` into a file): with a count, each thread
    # creates done_dir/done.N when it has its responses, and wrk is then ended with SIGINT.
    ( TIMEFORMAT='%U %S %R'; time env TIER_MODE="$mode" TIER_PREFIX="$prefix" \
        TIER_FIRST="$first" TIER_COUNT="$count" TIER_OBJECTS="$OBJECTS" TIER_ADDRS="$addrs" \
        TIER_SEED=1 TIER_DONE_DIR="$done_dir" taskset -c "$CLIENT_CPU" wrk -t"$threads" \
        -c"$conns" -d"${secs}s" --timeout 5s -H "$HOST_HEADER" -s "$HERE/load.lua" \
        "http://127.0.0.1:${PORT[${servers%% *}]}/" >"$out" 2>&1 ) 2>"$out.time" &
    WRK_SUB=$!
    while ((count)) && kill -0 "$WRK_SUB" 2>/dev/null; do
        if (($(find "$done_dir" -type f -name 'done.*' | wc -l) >= threads)); then
            pkill -INT -P "$WRK_SUB" 2>/dev/null || true  # wrk, the subshell's only child
            break
        fi
        sleep 0.05
    done
    wait "$WRK_SUB" || { cat "$out" >&2; die "wrk failed ($part $label)"; }
    WRK_SUB=""
    times=$(tail -n 1 "$out.time")
    cpu1=$(cpu_seconds "${pids[@]}") r1=$(cpu_seconds "$REDIS_PID") o1=$(origin_fetches)
    k1=$(redis_commands)
    read -r te1 ts1 < <(tier_failures "${srv[@]}")
    result=$(grep -m1 '^RESULT ' "$out") || { cat "$out" >&2; die "no RESULT from wrk"; }
    read -r u sy real <<<"$times"
    declare -A f=()
    for kv in ${result#RESULT }; do f[${kv%%=*}]=${kv#*=}; done
    {
        printf '%s\t' "$part" "$label" "$conns" "${f[requests]}" "${f[duration_us]}" \
            "${f[p50_us]}" "${f[p99_us]}" "${f[errors]}" "${f[mem]}" "${f[tier]}" "${f[miss]}" \
            "${f[collapsed]}" "${f[other]}" "${f[non200]}" "$((o1 - o0))"
        awk -v a="$cpu0" -v b="$cpu1" -v c="$r0" -v d="$r1" -v u="$u" -v s="$sy" \
            'BEGIN { printf "%.2f\t%.2f\t%.2f\t", b - a, d - c, u + s }'
        printf '%s\t%s\t%s\n' "$((k1 - k0))" "$((te1 - te0))" "$((ts1 - ts0))"
    } >>"$RESULTS"
    log "  $part $label -c$conns: ${f[requests]} requests in" \
        "$(awk -v d="${f[duration_us]}" 'BEGIN { printf "%.1f", d / 1e6 }') s," \
        "p50 ${f[p50_us]} us, p99 ${f[p99_us]} us; in-process hits ${f[mem]}, tier hits" \
        "${f[tier]}, misses ${f[miss]}, collapsed ${f[collapsed]}, other ${f[other]}," \
        "non-200 ${f[non200]}, errors ${f[errors]}; origin fetches $((o1 - o0));" \
        "server CPU $(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { print b - a }') s (real $real s);" \
        "Redis commands $((k1 - k0)), tier errors $((te1 - te0)), short-circuited $((ts1 - ts0))"
}

cpu_pressure() { awk '/^some/ { sub("avg60=", "", $3); print $3 }' /proc/pressure/cpu 2>/dev/null ||
    echo '?'; }
LOAD_BEFORE=$(uptime) PSI_BEFORE=$(cpu_pressure)
log "load before: $LOAD_BEFORE; CPU pressure avg60 $PSI_BEFORE%"
T0=$SECONDS

HALF=$((MIX_REQUESTS / 2))
log "hit rate: cold caches, uniform over $OBJECTS objects, wrk -t2 -c$CONNECTIONS, $HALF" \
    "requests per thread (thread 1 on edge 1, thread 2 on edge 2), the same sequences each time"
run_wrk mix shared 2 "$CONNECTIONS" "$MAX_RUN" "shared1 shared2" random /obj/mix/ 0 "$HALF"
run_wrk mix default 2 "$CONNECTIONS" "$MAX_RUN" "default1 default2" random /obj/mix/ 0 "$HALF"
run_wrk mix private 2 "$CONNECTIONS" "$MAX_RUN" "private1 private2" random /obj/mix/ 0 "$HALF"
run_wrk mix nginx 2 "$CONNECTIONS" "$MAX_RUN" "nginx nginx" random /obj/mix/ 0 "$HALF"
for s in shared1 shared2 default1 default2; do
    log "  $s shared tier: $(shared_counters "$s")"
done

log "in-process hit: one hot URL, ${DURATION} s at -c1 and at -c$CONNECTIONS"
expect shared1 /obj/hot/0 '; (fwd=uri-miss|hit)'
expect shared1 /obj/hot/0 '^geoedge-us-east-1; hit'
expect nginx /obj/hot/0 '^(MISS|HIT)$'
expect nginx /obj/hot/0 '^HIT$'
for c in 1 "$CONNECTIONS"; do
    run_wrk cost geoedge-hit 1 "$c" "$DURATION" shared1 hot /obj/hot/ 0 0
    run_wrk cost nginx-hit 1 "$c" "$DURATION" nginx hot /obj/hot/ 0 0
done
expect shared1 /obj/hot/0 '^geoedge-us-east-1; hit'
expect nginx /obj/hot/0 '^HIT$'

FILL=$((LAT_COUNT + THR_COUNT + 2 * MARGIN))
log "shared-tier hit: filling $FILL distinct URLs into Redis through edge 1 (-c$FILL_CONNECTIONS)"
stores0=$(shared_stat shared1 stores)
run_wrk fill shared1 1 "$FILL_CONNECTIONS" "$MAX_RUN" shared1 seq /obj/tier/ 0 "$FILL"
wait_stores shared1 $((stores0 + FILL))
log "  edge 1 stored $(($(shared_stat shared1 stores) - stores0)) entries in Redis" \
    "(Redis: $("$REDIS_CLI" -p "$REDIS_PORT" dbsize) keys)"
run_wrk cost geoedge-tier-hit 1 1 "$MAX_RUN" shared2 seq /obj/tier/ 0 "$LAT_COUNT"
run_wrk cost geoedge-tier-hit 1 "$CONNECTIONS" "$MAX_RUN" shared2 seq /obj/tier/ \
    $((LAT_COUNT + MARGIN)) "$THR_COUNT"

log "miss: distinct URLs never asked for"
for c in 1 "$CONNECTIONS"; do
    count=$LAT_COUNT
    ((c == 1)) || count=$THR_COUNT
    run_wrk cost geoedge-miss 1 "$c" "$MAX_RUN" shared2 seq "/obj/miss-c$c/" 0 "$count"
    run_wrk cost geoedge-miss-private 1 "$c" "$MAX_RUN" private2 seq "/obj/miss-c$c/" 0 "$count"
    run_wrk cost nginx-miss 1 "$c" "$MAX_RUN" nginx seq "/obj/miss-c$c/" 0 "$count"
done
ELAPSED=$((SECONDS - T0))
LOAD_AFTER=$(uptime) PSI_AFTER=$(cpu_pressure)
log "load after: $LOAD_AFTER; CPU pressure avg60 $PSI_AFTER%; measuring took $ELAPSED s"

SHARED_COUNTERS=""
for s in shared1 shared2 default1 default2; do
    SHARED_COUNTERS+="$s: $(shared_counters "$s"). "
done

# ---------------------------------------------------------------- report
NGINX_VERSION=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')
WRK_VERSION=$( (wrk -v 2>&1 || true) | awk 'NR == 1 { print $2 }')  # wrk -v exits 1
REDIS_VERSION=$("$REDIS_SERVER" --version | sed -E 's/.* v=([^ ]+).*/\1/')
GEOEDGE_VERSION=$("$PY" -c 'from importlib.metadata import version; print(version("geoedge"))')
LIBS=$("$PY" -c 'from importlib.metadata import version as v
print("redis-py", v("redis") + ", aiocache", v("aiocache"))')
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
PY_VERSION=$("$PY" -c 'import platform; print(platform.python_version())')
GIT_REV="git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
[[ -z $(git -C "$ROOT" status --porcelain 2>/dev/null || true) ]] ||
    GIT_REV="$GIT_REV + uncommitted changes"
echo
echo "## Shared-tier benchmark $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "- machine: $ncpu x ${CPU_MODEL:-unknown CPU}, Linux $(uname -r); caches on CPU" \
    "$SERVER_CPU, wrk + Redis + origin on CPU $CLIENT_CPU"
echo "- geoedge $GEOEDGE_VERSION ($GIT_REV), Python $PY_VERSION, $LIBS; Redis $REDIS_VERSION," \
    "nginx $NGINX_VERSION, wrk $WRK_VERSION"
edge_desc="defaults"
[[ -z $edge_settings ]] || edge_desc="${edge_settings//$'\n'/, }, the rest at the defaults"
echo "- edges: [edge] $edge_desc; region redis: \"shared\" pair timeout $timeout_toml s," \
    "\"default\" pair all defaults (timeout 50 ms); nginx proxy_cache: 1 worker"
echo "- command: $(env | grep -E '^TIER_BENCH_' | sort | tr '\n' ' ')bash bench/tier.sh"
echo "- load average before: ${LOAD_BEFORE##*load average: }; after:" \
    "${LOAD_AFTER##*load average: }; CPU pressure (PSI some avg60) before: $PSI_BEFORE%;" \
    "after: $PSI_AFTER%; measured part: $ELAPSED s"
echo
report_rc=0
"$PY" "$HERE/report.py" "$RESULTS" --objects "$OBJECTS" --connections "$CONNECTIONS" \
    --timeout "$timeout_toml" || report_rc=$?
echo
echo "Shared-tier counters at the end: $SHARED_COUNTERS"
((report_rc == 0)) || exit 1
