#!/usr/bin/env bash
# Edge at scale (#13): many objects, cold misses and latency, geoedge vs nginx proxy_cache.
#
#   bash bench/edge_scale.sh        # see docs/benchmarks.md, "Edge at scale"
#
# An origin nginx answers every /o/N and /m/N with the same 4 KiB file (max-age=3600) and
# logs each request. In front of it, each pinned to CPU $SCALE_SERVER_CPU (default 0):
# nginx proxy_cache (one worker, a 1 GiB cache: max_size=1g, keys_zone 64m) and one
# `geoedge edge` process with disk_path, disk_max_bytes = 1 GiB and cache_max_bytes =
# $SCALE_MEMORY_BYTES (default 1 GiB). The same cache size for both: nginx's 1 GiB on disk is
# served from the OS page cache (the 100,000 files, ~800 MB of pages, stay there on this machine),
# so its memory tier is as large as its disk tier; geoedge's memory store holds what its disk
# holds likewise (write-through: every object is on disk too, for restarts). Set
# SCALE_MEMORY_BYTES=268435456 (the default cache_max_bytes) to measure a memory tier smaller
# than the object set, where ~10% of the Zipf hits come from disk.
# wrk (pinned to $SCALE_CLIENT_CPU, default 1, -t1 -c64) runs, for each server:
#   1. misses: /m/SERVER/1 .. $SCALE_MISSES (10,000), each once, through the cold cache; the
#      rate is the count over the time between the origin's first and last of them;
#   2. fill: /o/1 .. /o/$SCALE_OBJECTS (100,000) once each (not reported);
#   3. hits: /o/i with i Zipf-distributed (s = 1) for $SCALE_DURATION s (every one a hit:
#      the origin's log must not grow);
#   4. latency: the same at half of nginx's rate of step 3, paced by wrk's delay() (a closed
#      loop: each connection waits 64 / rate seconds between requests; wrk2 is not in Debian).
# Prints requests/s, p50/p99/max latency and the ratio to nginx for each step.
#
# Environment: SCALE_DURATION=10 SCALE_OBJECTS=100000 SCALE_MISSES=10000
#   SCALE_MEMORY_BYTES=1073741824 SCALE_SERVER_CPU=0 SCALE_CLIENT_CPU=1 SCALE_KEEP=0
#   SCALE_PROFILE=<file> (geoedge under cProfile, stats written there at exit)
#   SCALE_STEPS=all (or misses: step 1 only, e.g. to profile the miss path)
#   SCALE_DISK=1 (0: geoedge without disk_path, to see what the disk store costs)
#   SCALE_GC_FREEZE=0 (1: geoedge with gc.freeze() every 5 s, bench/edge/scale_gcfreeze.py:
#     what CPython's full collections over ~100,000 cached entries cost the latency)
#   GEOEDGE_VENV=<repo>/.venv
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
HERE=$ROOT/bench/edge
VENV=${GEOEDGE_VENV:-$ROOT/.venv}
PY=$VENV/bin/python
GEOEDGE=$VENV/bin/geoedge
DURATION=${SCALE_DURATION:-10}
OBJECTS=${SCALE_OBJECTS:-100000}
MISSES=${SCALE_MISSES:-10000}
MEMORY=${SCALE_MEMORY_BYTES:-1073741824}
PROFILE=${SCALE_PROFILE:-}
STEPS=${SCALE_STEPS:-all}
DISK=${SCALE_DISK:-1}
GC_FREEZE=${SCALE_GC_FREEZE:-0}
SERVER_CPU=${SCALE_SERVER_CPU:-0}
CLIENT_CPU=${SCALE_CLIENT_CPU:-1}
KEEP=${SCALE_KEEP:-0}

log() { printf '[edge-scale] %s\n' "$*" >&2; }
die() { printf '[edge-scale] ERROR: %s\n' "$*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

export PATH=$PATH:/usr/sbin:/sbin
install_missing nginx:nginx-light wrk:wrk curl:curl taskset:util-linux
NGINX=$(command -v nginx)
[[ -x $GEOEDGE ]] || die "no $GEOEDGE (run 'make venv' in $ROOT, or set GEOEDGE_VENV)"
ulimit -n 65536 2>/dev/null || true

WORK=$(mktemp -d "${TMPDIR:-/tmp}/geoedge-edge-scale.XXXXXX")
chmod 755 "$WORK"
PIDS=()
cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in {1..50}; do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ $KEEP == 1 ]]; then log "kept $WORK"; else rm -rf -- "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$WORK/www" "$WORK/tmp" "$WORK/nginx-cache" "$WORK/geoedge-cache"
head -c 4096 /dev/urandom >"$WORK/www/obj.bin"
chmod -R a+rX "$WORK/www"
read -r ORIGIN_PORT NGINX_PORT EDGE_PORT < <(free_ports 3)

start_nginx() {  # $1 config, $2 cpu
    "$NGINX" -t -q -p "$WORK" -c "$1" 2>"$WORK/nginx-t.log" || { cat "$WORK/nginx-t.log"; die "nginx -t $1"; }
    taskset -c "$2" "$NGINX" -p "$WORK" -c "$1" >>"$WORK/nginx.out" 2>&1 &
    PIDS+=($!)
}

render "$HERE/scale-origin-nginx.conf.in" "$WORK/origin.conf" "PORT=$ORIGIN_PORT"
start_nginx "$WORK/origin.conf" "$CLIENT_CPU"
ORIGIN_PID=${PIDS[-1]}
wait_http "$ORIGIN_PID" "http://127.0.0.1:$ORIGIN_PORT/healthz" "$WORK/scale-origin.error.log"

render "$HERE/scale-nginx.conf.in" "$WORK/cache.conf" "PORT=$NGINX_PORT" "ORIGIN_PORT=$ORIGIN_PORT"
start_nginx "$WORK/cache.conf" "$SERVER_CPU"
NGINX_PID=${PIDS[-1]}
wait_http "$NGINX_PID" "http://127.0.0.1:$NGINX_PORT/healthz" "$WORK/scale-nginx.error.log"

sed -e "s#@ORIGIN_NAME@#origin-1#g" -e "s#@ORIGIN_HOST@#127.0.0.1#g" \
    -e "s#@ORIGIN_PORT@#$ORIGIN_PORT#g" "$HERE/topology.toml.in" |
    sed -e "s#^\[edge\]\$#[edge]\ndisk_path = \"$WORK/geoedge-cache\"\ndisk_max_bytes = 1073741824\ncache_max_bytes = $MEMORY#" \
        >"$WORK/topology.toml"
[[ $DISK == 1 ]] || sed -i -e '/^disk_path = /d' -e '/^disk_max_bytes = /d' "$WORK/topology.toml"
EDGE_CMD=("$GEOEDGE")
if [[ $GC_FREEZE == 1 ]]; then EDGE_CMD=("$HERE/scale_gcfreeze.py" "$GEOEDGE"); fi
if [[ -n $PROFILE ]]; then EDGE_CMD=(-m cProfile -o "$PROFILE" "${EDGE_CMD[@]}"); fi
taskset -c "$SERVER_CPU" "$PY" "${EDGE_CMD[@]}" edge --config "$WORK/topology.toml" --name us-east-1 \
    --listen "127.0.0.1:$EDGE_PORT" --log-level warning >"$WORK/edge.log" 2>&1 &
PIDS+=($!)
EDGE_PID=${PIDS[-1]}
wait_http "$EDGE_PID" "http://127.0.0.1:$EDGE_PORT/healthz" "$WORK/edge.log"
log "origin :$ORIGIN_PORT, nginx :$NGINX_PORT (pid $NGINX_PID), geoedge :$EDGE_PORT (pid $EDGE_PID)"

origin_requests() { grep -c ' /[om]/' "$WORK/scale-origin.access.log" || true; }

to_ms() {
    awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : -1
        if (f < 0) { print "nan"; exit } printf "%.2f", n * f }'
}

# run PORT MODE N PREFIX SECONDS DELAY_MS -> "rps p50 p99 max requests non2xx"
run() {
    local out=$WORK/wrk.out
    SCALE_MODE=$2 SCALE_N=$3 SCALE_PREFIX=$4 SCALE_DELAY_MS=$6 taskset -c "$CLIENT_CPU" \
        wrk -t1 -c64 -d"$5s" --latency -s "$HERE/zipf.lua" "http://127.0.0.1:$1" >"$out" 2>&1 ||
        { cat "$out" >&2; die "wrk failed"; }
    local rps p50 p99 max reqs non2xx
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    max=$(to_ms "$(awk '$1 == "Latency" { print $4 }' "$out")")
    reqs=$(awk '/ requests in / { print $1 }' "$out")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    echo "$rps $p50 $p99 $max $reqs ${non2xx:-0}"
}

# pass PORT N PREFIX -> "rps": GET PREFIX1..PREFIX<N> once each (every one a miss, so each
# reaches the origin once); wrk runs until the origin has seen them all (wrk's own rate
# counts its whole -d, not the pass), the rate is N over the origin's first-to-last times.
pass() {
    local log=$WORK/scale-origin.access.log before got=0
    before=$(wc -l <"$log")
    SCALE_MODE=seq SCALE_N=$2 SCALE_PREFIX=$3 taskset -c "$CLIENT_CPU" \
        wrk -t1 -c64 -d600s -s "$HERE/zipf.lua" "http://127.0.0.1:$1" >"$WORK/pass.out" 2>&1 &
    local wrk_pid=$!
    for _ in $(seq 1 6000); do
        got=$(tail -n +"$((before + 1))" "$log" | grep -c " GET $3" || true)
        ((got >= $2 - 1)) && break  # wrk spends the script's first request() on a probe
        kill -0 "$wrk_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill "$wrk_pid" 2>/dev/null || true
    wait "$wrk_pid" 2>/dev/null || true
    ((got >= $2 - 1)) || die "only $got of $2 requests for $3 reached the origin"
    tail -n +"$((before + 1))" "$log" | grep " GET $3" |
        awk 'NR == 1 { a = $1 } { b = $1 } END { printf "%.0f", (NR - 1) / (b - a) }'
}

declare -A R
for server in nginx geoedge; do
    port=$NGINX_PORT; [[ $server == geoedge ]] && port=$EDGE_PORT
    prefix=/m/$server/  # each server its own URLs: both start cold
    R[$server,miss]="$(pass "$port" "$MISSES" "$prefix") - - - $MISSES 0"
    log "$server misses: ${R[$server,miss]%% *} req/s"
    [[ $STEPS == misses ]] && continue
    pass "$port" "$OBJECTS" /o/ >/dev/null
    log "$server filled $OBJECTS objects"
    o0=$(origin_requests)
    R[$server,hit]=$(run "$port" zipf "$OBJECTS" /o/ "$DURATION" 0)
    o1=$(origin_requests)
    ((o1 == o0)) || log "warning: $((o1 - o0)) origin requests during $server's hit run"
    log "$server Zipf hits: ${R[$server,hit]}"
done
if [[ $STEPS == misses ]]; then
    printf '\nmisses only: nginx %s, geoedge %s req/s, load %s\n' "${R[nginx,miss]%% *}" \
        "${R[geoedge,miss]%% *}" "$(cut -d' ' -f1 /proc/loadavg)"
    exit 0
fi
half=$(awk -v r="${R[nginx,hit]%% *}" 'BEGIN { printf "%.0f", r / 2 }')
delay=$(awk -v r="$half" 'BEGIN { printf "%d", 64 * 1000 / r }')
((delay >= 1)) || delay=1  # wrk's delay() has millisecond resolution
for server in nginx geoedge; do
    port=$NGINX_PORT; [[ $server == geoedge ]] && port=$EDGE_PORT
    R[$server,lat]=$(run "$port" zipf "$OBJECTS" /o/ "$DURATION" "$delay")
    log "$server at ~$half req/s: ${R[$server,lat]}"
done

printf '\n%s objects of 4 KiB, 1 GiB caches (geoedge: %s bytes in memory), server CPU %s, wrk -t1 -c64 CPU %s, load %s\n' \
    "$OBJECTS" "$MEMORY" "$SERVER_CPU" "$CLIENT_CPU" "$(cut -d' ' -f1 /proc/loadavg)"
printf '%-28s %12s %12s %9s\n' step nginx geoedge ratio
row() {  # label field(1=rps,2=p50,3=p99,4=max) key
    local n g
    n=$(cut -d' ' -f"$2" <<<"${R[nginx,$3]}"); g=$(cut -d' ' -f"$2" <<<"${R[geoedge,$3]}")
    printf '%-28s %12s %12s %9s\n' "$1" "$n" "$g" "$(awk -v a="$g" -v b="$n" 'BEGIN { if (b > 0) printf "%.2fx", a / b }')"
}
row "misses req/s (cold)" 1 miss
row "Zipf hits req/s" 1 hit
row "Zipf hits p99 ms" 3 hit
row "at ~$half req/s: p50 ms" 2 lat
row "at ~$half req/s: p99 ms" 3 lat
row "at ~$half req/s: max ms" 4 lat
row "at ~$half req/s: req/s" 1 lat
