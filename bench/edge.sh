#!/usr/bin/env bash
# Edge benchmark: geoedge's edge vs nginx proxy_cache, cache hits under wrk, and request
# coalescing under 1,000 concurrent misses.
#
#   bash bench/edge.sh            # from any directory; see docs/benchmarks.md, "Edge"
#
# Throughput: a static origin (its own nginx) serves a 1 KiB and a 64 KiB file with
# Cache-Control: max-age=3600 and an ETag. In front of it run (a) nginx proxy_cache, one
# worker, and (b) one `geoedge edge` process, both pinned to one CPU (taskset -c
# $EDGE_BENCH_SERVER_CPU, default 0). Both caches are warmed and checked to answer hits; then
# `wrk -t1 -c64 --latency` (pinned to $EDGE_BENCH_CLIENT_CPU, default 1) measures each
# (server, size), nginx and geoedge alternately, $EDGE_BENCH_ROUNDS times; the table shows
# the median round by requests/s, and requests per CPU-second of the server (its CPU time
# from /proc), which is steadier when the machine is shared. The static origin's access log
# must not grow during a measured run (every request was a hit).
#
# Coalescing: `geoedge origin` (the project's origin, /api/slow and /api/stats) behind a second
# geoedge edge and behind the same nginx (proxy_cache_lock on). bench/edge/coalesce.py sends
# 1,000 concurrent GETs for a fresh /api/slow?ms=500&n=RANDOM over pre-opened connections and
# reports the origin's request count for that URL (geoedge must make exactly 1), the wall
# time (about 0.5 s) and per-request latency.
#
# Environment (all optional):
#   EDGE_BENCH_DURATION=10    seconds per measured wrk run (DURATION is read too)
#   EDGE_BENCH_WARMUP=2       seconds of unmeasured wrk per server and size (0: none)
#   EDGE_BENCH_ROUNDS=3       measured runs per (server, size); the median is reported
#   EDGE_BENCH_CONNECTIONS=64 wrk connections (-c); wrk uses one thread (-t1)
#   EDGE_BENCH_SERVERS="nginx geoedge"   which caches to measure
#   EDGE_BENCH_COALESCE=1     0: skip the coalescing part
#   EDGE_BENCH_COALESCE_COUNT=1000 EDGE_BENCH_COALESCE_MS=500
#   EDGE_BENCH_COALESCE_ROUNDS=3   coalescing bursts per cache, each for a fresh URL
#   EDGE_BENCH_SERVER_CPU=0 EDGE_BENCH_CLIENT_CPU=1
#   EDGE_BENCH_NGINX_SENDFILE=on   the proxy_cache's sendfile (off: read + writev)
#   EDGE_BENCH_HEADERS=wrk    wrk: wrk's bare GET (Host only); browser: bench/edge/browser.lua,
#                             a browser's header fields, a different User-Agent every request
#   EDGE_BENCH_ACCESS_LOG=0   1: both caches write an access log (nginx: combined, buffer=64k
#                             flush=1s; geoedge: [edge] access_log, combined), checked to grow
#   EDGE_BENCH_KEEP=0         1: keep the temp dir (configs, logs, raw wrk output)
#   GEOEDGE_VENV=<repo>/.venv
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
HERE=$ROOT/bench/edge
VENV=${GEOEDGE_VENV:-$ROOT/.venv}
PY=$VENV/bin/python
GEOEDGE=$VENV/bin/geoedge
DURATION=${EDGE_BENCH_DURATION:-${DURATION:-10}}
WARMUP=${EDGE_BENCH_WARMUP:-2}
ROUNDS=${EDGE_BENCH_ROUNDS:-3}
CONNECTIONS=${EDGE_BENCH_CONNECTIONS:-64}
SERVERS=${EDGE_BENCH_SERVERS:-nginx geoedge}
COALESCE=${EDGE_BENCH_COALESCE:-1}
COALESCE_COUNT=${EDGE_BENCH_COALESCE_COUNT:-1000}
COALESCE_MS=${EDGE_BENCH_COALESCE_MS:-500}
COALESCE_ROUNDS=${EDGE_BENCH_COALESCE_ROUNDS:-3}
SERVER_CPU=${EDGE_BENCH_SERVER_CPU:-0}
CLIENT_CPU=${EDGE_BENCH_CLIENT_CPU:-1}
KEEP=${EDGE_BENCH_KEEP:-0}
NGINX_SENDFILE=${EDGE_BENCH_NGINX_SENDFILE:-on}
ACCESS_LOG=${EDGE_BENCH_ACCESS_LOG:-0}
HEADERS=${EDGE_BENCH_HEADERS:-wrk}
EDGE_NAME=us-east-1
TARGET_RATIO=1.0  # issue #13: hits per core at or above nginx
SIZES=(1k 64k)
declare -A BYTES=([1k]=1024 [64k]=65536)

log() { printf '[edge-bench] %s\n' "$*" >&2; }
die() { printf '[edge-bench] ERROR: %s\n' "$*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

for v in DURATION WARMUP ROUNDS CONNECTIONS COALESCE COALESCE_COUNT COALESCE_MS \
    COALESCE_ROUNDS SERVER_CPU CLIENT_CPU ACCESS_LOG; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "EDGE_BENCH_$v must be a non-negative integer (got '${!v}')"
done
((DURATION > 0 && DURATION <= 600)) || die "EDGE_BENCH_DURATION must be 1..600"
((ROUNDS > 0 && ROUNDS <= 20)) || die "EDGE_BENCH_ROUNDS must be 1..20"
((WARMUP <= 60)) || die "EDGE_BENCH_WARMUP must be 0..60"
((COALESCE_ROUNDS > 0 && COALESCE_ROUNDS <= 20)) || die "EDGE_BENCH_COALESCE_ROUNDS must be 1..20"
((COALESCE_MS <= 10000)) || die "EDGE_BENCH_COALESCE_MS must be 0..10000 (the origin's cap)"
((CONNECTIONS > 0 && COALESCE_COUNT > 0 && COALESCE_COUNT <= 10000)) ||
    die "EDGE_BENCH_CONNECTIONS must be > 0 and EDGE_BENCH_COALESCE_COUNT 1..10000"
[[ $NGINX_SENDFILE == on || $NGINX_SENDFILE == off ]] ||
    die "EDGE_BENCH_NGINX_SENDFILE must be on or off"
[[ $HEADERS == wrk || $HEADERS == browser ]] || die "EDGE_BENCH_HEADERS must be wrk or browser"
WRK_SCRIPT=()
[[ $HEADERS == browser ]] && WRK_SCRIPT=(-s "$HERE/browser.lua")
for s in $SERVERS; do
    [[ $s == nginx || $s == geoedge ]] || die "unknown server '$s' in EDGE_BENCH_SERVERS"
done

# ---------------------------------------------------------------- prerequisites
export PATH=$PATH:/usr/sbin:/sbin
# (Debian's nginx package starts the system nginx on port 80; it is not used here.)
install_missing nginx:nginx-light wrk:wrk curl:curl taskset:util-linux
NGINX=$(command -v nginx)
[[ -x $PY ]] || die "no Python venv at $VENV (run 'make venv' in $ROOT, or set GEOEDGE_VENV)"
[[ -x $GEOEDGE ]] || die "$GEOEDGE not found (pip install -e $ROOT)"
"$PY" -c 'import aiohttp' 2>/dev/null || die "$PY lacks aiohttp"
[[ -f $ROOT/origin/main.py ]] || die "origin/main.py is missing: 'geoedge origin' is needed"
ncpu=$(nproc)
((SERVER_CPU < ncpu && CLIENT_CPU < ncpu)) ||
    die "CPU $SERVER_CPU or $CLIENT_CPU does not exist (this machine has $ncpu)"
((SERVER_CPU != CLIENT_CPU)) || log "warning: servers and wrk share CPU $SERVER_CPU"
# 1,000 concurrent connections need file descriptors in the client and in the servers.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(($(ulimit -n) >= 4096)) || log "warning: only $(ulimit -n) file descriptors"

# ---------------------------------------------------------------- temp dir + cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/geoedge-edge-bench.XXXXXX")
chmod 755 "$WORK"
PIDS=()     # every process started here, stopped in reverse order
declare -A STOP_SIG=()
cleanup() {
    local rc=$? i pid
    trap - EXIT INT TERM
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid=${PIDS[i]}
        # nginx: QUIT is a graceful stop of master and workers; geoedge: INT stops at once
        # (TERM gives requests in progress edge.drain_timeout first).
        kill -"${STOP_SIG[$pid]:-TERM}" "$pid" 2>/dev/null || true
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

start_nginx() {  # $1 config, $2 name, $3 cpu (or ""); sets NGINX_PID
    local conf=$1 name=$2 cpu=$3 pin=()
    "$NGINX" -t -q -p "$WORK" -e "$WORK/$name.error.log" -c "$conf" 2>"$WORK/$name.t.log" || {
        cat "$WORK/$name.t.log" >&2
        die "nginx -t failed for $conf"
    }
    [[ -n $cpu ]] && pin=(taskset -c "$cpu")
    "${pin[@]}" "$NGINX" -p "$WORK" -e "$WORK/$name.error.log" -c "$conf" \
        >"$WORK/$name.out.log" 2>&1 &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    STOP_SIG[$NGINX_PID]=QUIT
}

start_geoedge() {  # $1 role (edge|origin), $2 config, $3 name, $4 log, $5 cpu (or "")
    local role=$1 conf=$2 name=$3 logf=$4 cpu=$5 pin=() line
    [[ -n $cpu ]] && pin=(taskset -c "$cpu")
    "${pin[@]}" "$GEOEDGE" "$role" --config "$conf" --name "$name" --listen 127.0.0.1:0 \
        --log-level info >"$logf" 2>&1 &
    GEOEDGE_PID=$!
    PIDS+=("$GEOEDGE_PID")
    STOP_SIG[$GEOEDGE_PID]=INT
    line=$(wait_log "$GEOEDGE_PID" "$logf" "serving $role $name on [^ ]+ port [0-9]+")
    GEOEDGE_PORT=$(sed -E 's/.* port ([0-9]+).*/\1/' <<<"$line")
}

render_topology() {  # $1 output, $2 origin name, $3 port
    local edge_log=""
    ((ACCESS_LOG)) && edge_log="access_log = \"$WORK/$(basename "$1" .toml).access.log\""
    sed -e "s#@ORIGIN_NAME@#$2#g" -e "s#@ORIGIN_HOST@#127.0.0.1#g" -e "s#@ORIGIN_PORT@#$3#g" \
        -e "s#^\[edge\]\$#[edge]\n$edge_log#" "$HERE/topology.toml.in" >"$1"
}

# ---------------------------------------------------------------- servers
mkdir -p "$WORK/www" "$WORK/tmp" "$WORK/nginx-cache"
for size in "${SIZES[@]}"; do
    head -c "${BYTES[$size]}" /dev/urandom >"$WORK/www/$size.bin"
done
chmod -R a+rX "$WORK/www"

STATIC_PORT=$(free_ports 1)
[[ $STATIC_PORT =~ ^[0-9]+$ ]] || die "could not pick a free port"

render "$HERE/origin-nginx.conf.in" "$WORK/origin-nginx.conf" "PORT=$STATIC_PORT"
start_nginx "$WORK/origin-nginx.conf" origin-nginx "$CLIENT_CPU"
STATIC_PID=$NGINX_PID
wait_http "$STATIC_PID" "http://127.0.0.1:$STATIC_PORT/healthz" "$WORK/origin-nginx.error.log"
log "static origin (nginx) on 127.0.0.1:$STATIC_PORT"

render_topology "$WORK/static.toml" origin-1 "$STATIC_PORT"
start_geoedge edge "$WORK/static.toml" "$EDGE_NAME" "$WORK/edge.log" "$SERVER_CPU"
EDGE_PID=$GEOEDGE_PID EDGE_PORT=$GEOEDGE_PORT
log "geoedge edge (pid $EDGE_PID, CPU $SERVER_CPU) on 127.0.0.1:$EDGE_PORT"

API_PID="" API_PORT=0 EDGE2_PID="" EDGE2_PORT=0
if ((COALESCE)); then
    # The origin's own host/port in its topology do not matter: --listen overrides them.
    render_topology "$WORK/api-origin.toml" origin-1 1
    start_geoedge origin "$WORK/api-origin.toml" origin-1 "$WORK/origin.log" "$CLIENT_CPU"
    API_PID=$GEOEDGE_PID API_PORT=$GEOEDGE_PORT
    log "geoedge origin (pid $API_PID) on 127.0.0.1:$API_PORT"
    render_topology "$WORK/api.toml" origin-1 "$API_PORT"
    start_geoedge edge "$WORK/api.toml" "$EDGE_NAME" "$WORK/edge2.log" "$SERVER_CPU"
    EDGE2_PID=$GEOEDGE_PID EDGE2_PORT=$GEOEDGE_PORT
    log "geoedge edge for coalescing (pid $EDGE2_PID) on 127.0.0.1:$EDGE2_PORT"
fi

# nginx proxy_cache; /api/ goes to geoedge's origin (a closed port when coalescing is off).
if ((API_PORT)); then CACHE_PORT=$(free_ports 1); else read -r CACHE_PORT API_PORT < <(free_ports 2); fi
[[ $CACHE_PORT =~ ^[0-9]+$ && $API_PORT =~ ^[0-9]+$ ]] || die "could not pick a free port"
render "$HERE/cache-nginx.conf.in" "$WORK/cache-nginx.conf" "PORT=$CACHE_PORT" \
    "STATIC_PORT=$STATIC_PORT" "API_PORT=$API_PORT" "SENDFILE=$NGINX_SENDFILE" \
    "ACCESS_LOG=$( ((ACCESS_LOG)) && echo "access_log $WORK/cache-nginx.access.log combined buffer=64k flush=1s;" || echo "access_log off;")"
start_nginx "$WORK/cache-nginx.conf" cache-nginx "$SERVER_CPU"
CACHE_PID=$NGINX_PID
wait_http "$CACHE_PID" "http://127.0.0.1:$CACHE_PORT/healthz" "$WORK/cache-nginx.error.log"
log "nginx proxy_cache (pid $CACHE_PID, CPU $SERVER_CPU) on 127.0.0.1:$CACHE_PORT"

declare -A URL_BASE=([nginx]="http://127.0.0.1:$CACHE_PORT" [geoedge]="http://127.0.0.1:$EDGE_PORT")
declare -A SERVER_PID=([nginx]=$CACHE_PID [geoedge]=$EDGE_PID)

# Requests that reached the static origin for the bench files (its access log, one a line).
origin_hits() { grep -c -E '"GET /(1k|64k)\.bin ' "$WORK/origin-nginx.access.log" || true; }

# Headers of one GET; checks the status and body size.
probe() {  # $1 url, $2 expected bytes; prints the headers
    local hdr=$WORK/probe.hdr out
    out=$(curl -sS -o /dev/null -D "$hdr" -w '%{http_code} %{size_download}' --max-time 5 "$1") ||
        die "GET $1 failed"
    [[ $out == "200 $2" ]] || { cat "$hdr" >&2; die "GET $1: status/size '$out', want '200 $2'"; }
    cat "$hdr"
}

is_hit() {  # $1 server, $2 headers
    case $1 in
        nginx) grep -qi '^X-Cache-Status: HIT' <<<"$2" ;;
        geoedge) grep -qiE "^Cache-Status: geoedge-$EDGE_NAME; hit" <<<"$2" ;;
    esac
}

warm() {  # $1 server, $2 size: fill the cache and check that the next request is a hit
    local server=$1 size=$2 url hdr
    url=${URL_BASE[$server]}/$size.bin
    for _ in {1..50}; do
        hdr=$(probe "$url" "${BYTES[$size]}")
        if is_hit "$server" "$hdr"; then return 0; fi
        sleep 0.1
    done
    printf '%s\n' "$hdr" >&2
    die "$server never answered a cache hit for $url"
}

log "warming the caches"
for server in $SERVERS; do
    for size in "${SIZES[@]}"; do
        warm "$server" "$size"
        hdr=$(probe "${URL_BASE[$server]}/$size.bin" "${BYTES[$size]}")
        log "  $server $size: $(grep -iE '^(X-Cache-Status|Cache-Status|ETag|Cache-Control):' \
            <<<"$hdr" | tr -d '\r' | paste -sd ' ' -)"
    done
done

# ---------------------------------------------------------------- wrk
to_ms() {  # wrk's "1.23ms" / "512.00us" / "1.02s" / "2.00m" -> milliseconds
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : -1
        if (f < 0) { print "nan"; exit }
        printf "%.3f", n * f }'
}

RESULTS=$WORK/results.tsv
printf 'server\tsize\tround\trps\tp50_ms\tp99_ms\trequests\tnon2xx\tsocket_errors\torigin_requests\tserver_cpu\twrk_cpu\tserver_cpu_s\n' >"$RESULTS"

# One wrk run; appends a row to $RESULTS when $4 (round) is not "warmup".
run_wrk() {  # $1 server, $2 size, $3 seconds, $4 round
    local server=$1 size=$2 secs=$3 round=$4 url out times cpu0 cpu1 o0 o1 rps p50 p99 reqs
    local non2xx sockerr wrk_cpu server_cpu real
    url=${URL_BASE[$server]}/$size.bin
    out=$WORK/wrk.$server.$size.$round.txt
    o0=$(origin_hits)
    cpu0=$(cpu_seconds "${SERVER_PID[$server]}")
    times=$( { TIMEFORMAT='%U %S %R'; time taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" \
        -d"${secs}s" --timeout 5s --latency "${WRK_SCRIPT[@]}" "$url" >"$out" 2>&1; } 2>&1 ) ||
        { cat "$out" >&2; die "wrk failed against $url"; }
    cpu1=$(cpu_seconds "${SERVER_PID[$server]}")
    o1=$(origin_hits)
    [[ $round == warmup ]] && return 0
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    [[ -n $rps ]] || { cat "$out" >&2; die "no Requests/sec in wrk output"; }
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    reqs=$(awk '/ requests in / { print $1 }' "$out")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    sockerr=$(awk '/Socket errors:/ { gsub(/,/, ""); print $4 + $6 + $8 + $10 }' "$out")
    read -r u s real <<<"$times"
    wrk_cpu=$(awk -v u="$u" -v s="$s" -v r="$real" 'BEGIN { printf "%.0f", 100 * (u + s) / r }')
    server_cpu=$(awk -v a="$cpu0" -v b="$cpu1" -v r="$real" \
        'BEGIN { printf "%.0f", 100 * (b - a) / r }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$server" "$size" \
        "$round" "$rps" "$p50" "$p99" "$reqs" "${non2xx:-0}" "${sockerr:-0}" "$((o1 - o0))" \
        "$server_cpu" "$wrk_cpu" "$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { print b - a }')" \
        >>"$RESULTS"
    log "  round $round $server $size: $rps req/s, p50 $p50 ms, p99 $p99 ms," \
        "non-2xx ${non2xx:-0}, socket errors ${sockerr:-0}, origin requests $((o1 - o0))," \
        "server CPU ${server_cpu}%, wrk CPU ${wrk_cpu}%"
}

# Share of time some runnable task waited for a CPU (other load on the machine), avg of 60 s.
cpu_pressure() { awk '/^some/ { sub("avg60=", "", $3); print $3 }' /proc/pressure/cpu 2>/dev/null ||
    echo '?'; }
LOAD_BEFORE=$(uptime) PSI_BEFORE=$(cpu_pressure)
log "load before: $LOAD_BEFORE; CPU pressure avg60 $PSI_BEFORE%"
if ((WARMUP)); then
    log "wrk warm-up: ${WARMUP} s per server and size"
    for size in "${SIZES[@]}"; do
        for server in $SERVERS; do run_wrk "$server" "$size" "$WARMUP" warmup; done
    done
fi
log "measuring: $ROUNDS round(s) of ${DURATION} s per server and size," \
    "wrk -t1 -c$CONNECTIONS on CPU $CLIENT_CPU, servers on CPU $SERVER_CPU"
for ((round = 1; round <= ROUNDS; round++)); do
    for size in "${SIZES[@]}"; do
        for server in $SERVERS; do run_wrk "$server" "$size" "$DURATION" "$round"; done
    done
done
LOAD_AFTER=$(uptime) PSI_AFTER=$(cpu_pressure)
log "load after: $LOAD_AFTER; CPU pressure avg60 $PSI_AFTER%"
# Still hits after the runs (nothing was evicted or revalidated).
for server in $SERVERS; do
    for size in "${SIZES[@]}"; do
        is_hit "$server" "$(probe "${URL_BASE[$server]}/$size.bin" "${BYTES[$size]}")" ||
            log "warning: $server $size is no longer a cache hit after the runs"
    done
done

if ((ACCESS_LOG)); then  # both logged every request (the flush interval is 1 s)
    sleep 1.5
    for f in "$WORK/cache-nginx.access.log" "$WORK/static.access.log"; do
        n=$(wc -l <"$f" 2>/dev/null || echo 0)
        ((n > 1000)) || die "access log $f has only $n lines"
        log "access log $(basename "$f"): $n lines"
    done
fi

# ---------------------------------------------------------------- coalescing
COALESCE_OUT=$WORK/coalesce.txt
: >"$COALESCE_OUT"
coalesce_rc=0
if ((COALESCE)); then
    log "coalescing: $COALESCE_COUNT concurrent GETs for a cold /api/slow?ms=$COALESCE_MS," \
        "$COALESCE_ROUNDS round(s), geoedge and nginx alternately, each with a fresh URL"
    for ((round = 1; round <= COALESCE_ROUNDS; round++)); do
        taskset -c "$CLIENT_CPU" "$PY" "$HERE/coalesce.py" --label "geoedge-$round" \
            --target "http://127.0.0.1:$EDGE2_PORT" --origin "http://127.0.0.1:$API_PORT" \
            --count "$COALESCE_COUNT" --ms "$COALESCE_MS" --expect-origin-requests 1 \
            | tee -a "$COALESCE_OUT" >&2 || coalesce_rc=$?
        taskset -c "$CLIENT_CPU" "$PY" "$HERE/coalesce.py" --label "nginx-$round" \
            --target "http://127.0.0.1:$CACHE_PORT" --origin "http://127.0.0.1:$API_PORT" \
            --count "$COALESCE_COUNT" --ms "$COALESCE_MS" --status-header X-Cache-Status \
            | tee -a "$COALESCE_OUT" >&2 || die "coalescing client failed against nginx"
    done
fi

# ---------------------------------------------------------------- report
NGINX_VERSION=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')
WRK_VERSION=$( (wrk -v 2>&1 || true) | awk 'NR == 1 { print $2 }')  # wrk -v exits 1
GEOEDGE_VERSION=$("$PY" -c 'from importlib.metadata import version; print(version("geoedge"))')
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
KERNEL=$(uname -r)
PY_VERSION=$("$PY" -c 'import platform; print(platform.python_version())')
GIT_REV="git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
[[ -z $(git -C "$ROOT" status --porcelain 2>/dev/null || true) ]] ||
    GIT_REV="$GIT_REV + uncommitted changes"
echo
echo "## Edge benchmark $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "- machine: $ncpu x ${CPU_MODEL:-unknown CPU}, Linux $KERNEL; servers on CPU $SERVER_CPU," \
    "wrk on CPU $CLIENT_CPU"
echo "- nginx $NGINX_VERSION, wrk $WRK_VERSION, geoedge $GEOEDGE_VERSION ($GIT_REV)," \
    "Python $PY_VERSION"
echo "- nginx proxy_cache: 1 worker, sendfile $NGINX_SENDFILE, tcp_nopush off," \
    "proxy_cache_lock on; geoedge edge: [edge] defaults"
echo "- wrk -t1 -c$CONNECTIONS -d${DURATION}s --latency, $ROUNDS round(s) alternating" \
    "nginx/geoedge, median round by req/s shown; requests: $( [[ $HEADERS == browser ]] &&
    echo "a browser's header fields, a new User-Agent each (bench/edge/browser.lua)" ||
    echo "wrk's bare GET (Host only)")"
echo "- load average before: ${LOAD_BEFORE##*load average: }; after:" \
    "${LOAD_AFTER##*load average: }; CPU pressure (PSI some avg60) before: $PSI_BEFORE%;" \
    "after: $PSI_AFTER%"
echo
"$PY" - "$RESULTS" "$TARGET_RATIO" <<'EOF'
import csv
import sys

path, target = sys.argv[1], float(sys.argv[2])
rows = list(csv.DictReader(open(path), delimiter="\t"))
by: dict[tuple[str, str], list[dict[str, str]]] = {}
for r in rows:
    # Requests per CPU-second of the server: steadier than req/s when the server had to share
    # its core with other load (or waited on the client).
    cpu = float(r["server_cpu_s"])
    r["per_cpu"] = str(int(r["requests"]) / cpu if cpu > 0 else 0.0)
    by.setdefault((r["server"], r["size"]), []).append(r)
SIZES = {"1k": "1 KiB", "64k": "64 KiB"}

def median(server, size, key="rps"):
    runs = sorted(by.get((server, size), []), key=lambda r: float(r[key]))
    return runs[(len(runs) - 1) // 2] if runs else None

def lat(r):
    return f"{float(r['p50_ms']):.2f} / {float(r['p99_ms']):.2f}" if r else "-"

def num(r, key="rps"):
    return f"{float(r[key]):,.0f}" if r else "-"

def ratio(g, n, key="rps"):
    return float(g[key]) / float(n[key]) if g and n and float(n[key]) else None

def fmt(x):
    return "-" if x is None else f"{x:.2f}"

def total(size, *keys):
    return ", ".join(f"{s} " + "/".join(str(sum(int(r[k]) for r in by[(s, size)])) for k in keys)
                     for s in ("nginx", "geoedge") if (s, size) in by)

print("| size | nginx req/s | geoedge req/s | geoedge/nginx | nginx p50 / p99 ms "
      "| geoedge p50 / p99 ms | nginx req/CPU-s | geoedge req/CPU-s | geoedge/nginx per CPU-s |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
verdicts = []
for size, label in SIZES.items():
    n, g = median("nginx", size), median("geoedge", size)
    nc, gc = median("nginx", size, "per_cpu"), median("geoedge", size, "per_cpu")
    verdicts.append((size, ratio(g, n), ratio(gc, nc, "per_cpu")))
    print(f"| {label} | {num(n)} | {num(g)} | **{fmt(ratio(g, n))}** | {lat(n)} | {lat(g)} "
          f"| {num(nc, 'per_cpu')} | {num(gc, 'per_cpu')} | {fmt(ratio(gc, nc, 'per_cpu'))} |")
print()
print("Median of the rounds (req/s and latency: the median round by req/s; req/CPU-s: the")
print("median by itself). Every round, req/s (server CPU % of its core / wrk CPU %):")
print()
for size in SIZES:
    for server in ("nginx", "geoedge"):
        runs = by.get((server, size), [])
        if runs:
            print(f"    {server:7s} {size:3s}: " + "  ".join(
                f"{float(r['rps']):>7,.0f} ({r['server_cpu']}%/{r['wrk_cpu']}%)" for r in runs))
print()
for size in SIZES:
    if any((s, size) in by for s in ("nginx", "geoedge")):
        print(f"- {SIZES[size]}: non-2xx/socket errors: {total(size, 'non2xx', 'socket_errors')}; "
              "requests that reached the origin during the runs (must be 0): "
              f"{total(size, 'origin_requests')}")
for size, r, rc in verdicts:
    if r is not None:
        status = "meets" if r >= target else "BELOW"
        print(f"- {SIZES[size]}: geoedge/nginx = {r:.2f} req/s, {status} the target of {target}x"
              f" (per CPU-second: {fmt(rc)})")
busy = [r for r in rows if int(r["server_cpu"]) < 90]
if busy:
    print(f"- {len(busy)} of {len(rows)} runs had the server below 90% of its core: held back "
          "by other load on the machine (or by wrk), not by its own CPU; req/CPU-s is the "
          "steadier comparison then")
EOF
if ((COALESCE)); then
    echo
    echo "Coalescing ($COALESCE_COUNT concurrent GETs for a cold /api/slow?ms=$COALESCE_MS over" \
        "connections opened beforehand; the client on CPU $CLIENT_CPU, the caches on CPU" \
        "$SERVER_CPU):"
    echo
    echo "| cache | origin requests | wall time s | p50 ms | p99 ms | 2xx | errors | collapsed" \
        "| hits | client CPU s | same burst, all hits: wall s, p50/p99 ms |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    grep '^RESULT ' "$COALESCE_OUT" | sort -s -k2,2 | while read -r _ fields; do
        declare -A f=()
        for kv in $fields; do f[${kv%%=*}]=${kv#*=}; done
        echo "| ${f[label]} | ${f[origin_requests]} | ${f[wall_s]} | ${f[p50_ms]} |" \
            "${f[p99_ms]} | ${f[ok]} | ${f[errors]} | ${f[collapsed]} | ${f[hits]} |" \
            "${f[client_cpu_s]} | ${f[hot_wall_s]}, ${f[hot_p50_ms]} / ${f[hot_p99_ms]} |"
        unset f
    done
    echo
    if ((coalesce_rc == 0)); then
        echo "- geoedge: exactly 1 origin request for $COALESCE_COUNT concurrent misses in every" \
            "round: PASS"
    else
        echo "- geoedge: coalescing check FAILED (origin requests != 1 or failed requests)"
    fi
fi
((coalesce_rc == 0)) || exit 1
