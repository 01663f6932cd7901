#!/usr/bin/env bash
# HTTP/2 benchmark: cache hits over HTTPS + HTTP/2 from geoedge's H2Protocol vs nginx
# proxy_cache with `listen ... ssl http2`, under h2load with 100 concurrent streams.
#
#   bash bench/h2.sh            # from any directory; see docs/benchmarks.md, "HTTP/2"
#
# A static origin (nginx, bench/edge/origin-nginx.conf.in) serves a 1 KiB and a 64 KiB file
# with Cache-Control: max-age=3600. In front of it, both pinned to one CPU (taskset -c
# $H2_BENCH_SERVER_CPU, default 0): (a) nginx proxy_cache, one worker, HTTPS + HTTP/2
# (bench/h2/cache-nginx.conf.in), (b) one geoedge edge with an HTTPS listener whose
# connections are edge.h2server.H2Protocol (bench/h2/h2edge.py; its layer: H2_BENCH_IMPL).
# Both use the same ECDSA P-256 certificate (made with trustme) and TLS 1.2/1.3. Both caches
# are warmed and checked to answer hits; then `h2load -c $CLIENTS -m 100 -n N` (pinned to
# $H2_BENCH_CLIENT_CPU, default 1) measures each (server, size), alternately, $ROUNDS times; N is sized by one
# unmeasured warm-up run each so that a run lasts about $DURATION seconds. The table shows the median round by requests/s,
# the ratio to nginx, and requests per CPU-second of the server (from /proc), which is
# steadier on a shared machine. The origin's access log must not grow while measuring.
#
# Environment (all optional):
#   H2_BENCH_DURATION=10  seconds a measured h2load run should last (its -n is sized for it)
#   H2_BENCH_ROUNDS=3     measured runs per (server, size); the median is reported
#   H2_BENCH_CLIENTS=10   h2load connections (-c); streams per connection: H2_BENCH_STREAMS=100
#   H2_BENCH_SERVER_CPU=0 H2_BENCH_CLIENT_CPU=1
#   H2_BENCH_IMPL=auto    the edge's HTTP/2 layer: auto (nghttp2 when edge._nghttp2 is built),
#                         h2lib (the pure-Python h2 library) or nghttp2
#   H2_BENCH_KEEP=0       1: keep the temp dir (configs, logs, raw h2load output)
#   GEOEDGE_VENV=<repo>/.venv
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
HERE=$ROOT/bench/h2
VENV=${GEOEDGE_VENV:-$ROOT/.venv}
PY=$VENV/bin/python
DURATION=${H2_BENCH_DURATION:-10}
ROUNDS=${H2_BENCH_ROUNDS:-3}
CLIENTS=${H2_BENCH_CLIENTS:-10}
STREAMS=${H2_BENCH_STREAMS:-100}
SERVER_CPU=${H2_BENCH_SERVER_CPU:-0}
CLIENT_CPU=${H2_BENCH_CLIENT_CPU:-1}
KEEP=${H2_BENCH_KEEP:-0}
IMPL=${H2_BENCH_IMPL:-auto}
EDGE_NAME=us-east-1
TARGET_RATIO=0.7
SIZES=(1k 64k)
declare -A BYTES=([1k]=1024 [64k]=65536)

log() { printf '[h2-bench] %s\n' "$*" >&2; }
die() { printf '[h2-bench] ERROR: %s\n' "$*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

for v in DURATION ROUNDS CLIENTS STREAMS SERVER_CPU CLIENT_CPU; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "H2_BENCH_$v must be a non-negative integer (got '${!v}')"
done
((DURATION > 0 && DURATION <= 600)) || die "H2_BENCH_DURATION must be 1..600"
((ROUNDS > 0 && ROUNDS <= 20)) || die "H2_BENCH_ROUNDS must be 1..20"
((CLIENTS > 0 && STREAMS > 0)) || die "H2_BENCH_CLIENTS and H2_BENCH_STREAMS must be > 0"
[[ $IMPL =~ ^(auto|h2lib|nghttp2)$ ]] || die "H2_BENCH_IMPL must be auto, h2lib or nghttp2"

export PATH=$PATH:/usr/sbin:/sbin
install_missing nginx:nginx-light h2load:nghttp2-client curl:curl taskset:util-linux
NGINX=$(command -v nginx)
[[ -x $PY ]] || die "no Python venv at $VENV (run 'make lint' in $ROOT, or set GEOEDGE_VENV)"
"$PY" -c 'import h2, trustme, uvloop' 2>/dev/null || die "$PY lacks h2, trustme or uvloop"
ncpu=$(nproc)
((SERVER_CPU < ncpu && CLIENT_CPU < ncpu)) ||
    die "CPU $SERVER_CPU or $CLIENT_CPU does not exist (this machine has $ncpu)"
ulimit -n 65536 2>/dev/null || true

WORK=$(mktemp -d "${TMPDIR:-/tmp}/geoedge-h2-bench.XXXXXX")
chmod 755 "$WORK"
PIDS=()
declare -A STOP_SIG=()
cleanup() {
    local rc=$? i pid
    trap - EXIT INT TERM
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid=${PIDS[i]}
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

start_nginx() {  # $1 config, $2 name, $3 cpu; sets NGINX_PID
    local conf=$1 name=$2 cpu=$3
    "$NGINX" -t -q -p "$WORK" -e "$WORK/$name.error.log" -c "$conf" 2>"$WORK/$name.t.log" || {
        cat "$WORK/$name.t.log" >&2
        die "nginx -t failed for $conf"
    }
    taskset -c "$cpu" "$NGINX" -p "$WORK" -e "$WORK/$name.error.log" -c "$conf" \
        >"$WORK/$name.out.log" 2>&1 &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    STOP_SIG[$NGINX_PID]=QUIT
}

# ---------------------------------------------------------------- certificate and files
"$PY" - "$WORK" <<'EOF'
import sys
import trustme
ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
cert = ca.issue_cert("localhost", "127.0.0.1", key_type=trustme.KeyType.ECDSA)
cert.private_key_pem.write_to_path(f"{sys.argv[1]}/key.pem")
cert.cert_chain_pems[0].write_to_path(f"{sys.argv[1]}/cert.pem")
ca.cert_pem.write_to_path(f"{sys.argv[1]}/ca.pem")
EOF
mkdir -p "$WORK/www" "$WORK/tmp" "$WORK/nginx-cache"
for size in "${SIZES[@]}"; do head -c "${BYTES[$size]}" /dev/urandom >"$WORK/www/$size.bin"; done
chmod -R a+rX "$WORK/www"

# ---------------------------------------------------------------- servers
read -r STATIC_PORT CACHE_PORT < <(free_ports 2)
render "$ROOT/bench/edge/origin-nginx.conf.in" "$WORK/origin-nginx.conf" "PORT=$STATIC_PORT"
start_nginx "$WORK/origin-nginx.conf" origin-nginx "$CLIENT_CPU"
STATIC_PID=$NGINX_PID
wait_http "$STATIC_PID" "http://127.0.0.1:$STATIC_PORT/healthz" "$WORK/origin-nginx.error.log"
log "static origin (nginx) on 127.0.0.1:$STATIC_PORT"

render "$HERE/cache-nginx.conf.in" "$WORK/cache-nginx.conf" "PORT=$CACHE_PORT" \
    "STATIC_PORT=$STATIC_PORT"
start_nginx "$WORK/cache-nginx.conf" cache-nginx "$SERVER_CPU"
CACHE_PID=$NGINX_PID
log "nginx proxy_cache h2 (pid $CACHE_PID, CPU $SERVER_CPU) on 127.0.0.1:$CACHE_PORT"

sed -e "s#@ORIGIN_NAME@#origin-1#g" -e "s#@ORIGIN_HOST@#127.0.0.1#g" \
    -e "s#@ORIGIN_PORT@#$STATIC_PORT#g" "$ROOT/bench/edge/topology.toml.in" >"$WORK/static.toml"
(cd "$ROOT" && exec taskset -c "$SERVER_CPU" "$PY" "$HERE/h2edge.py" "$WORK/static.toml" \
    "$EDGE_NAME" "$WORK/cert.pem" "$WORK/key.pem" "$IMPL") >"$WORK/edge.log" 2>&1 &
EDGE_PID=$!
PIDS+=("$EDGE_PID")
STOP_SIG[$EDGE_PID]=INT
EDGE_PORT=$(wait_log "$EDGE_PID" "$WORK/edge.log" "h2 listening on [0-9]+" | awk '{print $4}')
EDGE_IMPL=$(grep -m1 -oE "h2 listening on [0-9]+ \([A-Za-z0-9]+\)" "$WORK/edge.log" |
    sed -E 's/.*\((.*)\)/\1/')
log "geoedge edge h2 $EDGE_IMPL (pid $EDGE_PID, CPU $SERVER_CPU) on 127.0.0.1:$EDGE_PORT"

declare -A PORT=([nginx]=$CACHE_PORT [geoedge]=$EDGE_PORT)
declare -A PID=([nginx]=$CACHE_PID [geoedge]=$EDGE_PID)
declare -A HIT=([nginx]="x-cache-status: HIT" [geoedge]="cache-status: geoedge-$EDGE_NAME; hit")

# ---------------------------------------------------------------- warm and check
for server in nginx geoedge; do
    for size in "${SIZES[@]}"; do
        url="https://localhost:${PORT[$server]}/$size.bin"
        ok=0
        for _ in {1..50}; do
            head=$(curl -sS --http2 --cacert "$WORK/ca.pem" -o /dev/null -D - "$url" || true)
            if grep -qi "^${HIT[$server]}" <<<"$head" && grep -q "^HTTP/2 200" <<<"$head"; then
                ok=1; break
            fi
            sleep 0.1
        done
        ((ok)) || die "$server does not answer $url with an HTTP/2 cache hit: $head"
    done
done
log "both caches answer HTTP/2 hits"

# ---------------------------------------------------------------- measure
RESULTS=$WORK/results.tsv
: >"$RESULTS"
run_h2load() {  # $1 server, $2 size, $3 requests, $4 out file
    # -n, not -D: with -D, h2load 1.52 at times never stops some clients (they go on
    # sending after the deadline), whatever the server
    taskset -c "$CLIENT_CPU" h2load -c "$CLIENTS" -m "$STREAMS" -n "$3" \
        "https://localhost:${PORT[$1]}/$2.bin" >"$4" 2>&1 ||
        { cat "$4" >&2; die "h2load failed against $1"; }
}
rate_of() { sed -nE 's/^finished in [0-9.]+m?s, ([0-9.]+) req\/s.*/\1/p' "$1"; }
# unmeasured warm-up runs, which also size each measured run to last about DURATION seconds
declare -A COUNT=()
for server in nginx geoedge; do
    for size in "${SIZES[@]}"; do
        run_h2load "$server" "$size" 10000 "$WORK/warm.txt"
        COUNT[$server-$size]=$(awk -v r="$(rate_of "$WORK/warm.txt")" -v d="$DURATION" \
            -v c="$((CLIENTS * STREAMS))" 'BEGIN { n = int(r * d); if (n < 10 * c) n = 10 * c;
                                                  print n }')
    done
done
before=$(wc -l <"$WORK/origin-nginx.access.log")
LOAD_BEFORE=$(uptime | sed 's/.*load average: //')
for ((round = 1; round <= ROUNDS; round++)); do
    for size in "${SIZES[@]}"; do
        for server in nginx geoedge; do
            out="$WORK/h2load-$server-$size-$round.txt"
            c0=$(cpu_seconds "${PID[$server]}")
            run_h2load "$server" "$size" "${COUNT[$server-$size]}" "$out"
            c1=$(cpu_seconds "${PID[$server]}")
            rps=$(rate_of "$out")
            line=$(grep -E '^requests: ' "$out")
            done_=$(sed -nE 's/.* ([0-9]+) succeeded.*/\1/p' <<<"$line")
            failed=$(sed -nE 's/.* ([0-9]+) failed, ([0-9]+) errored.*/\1+\2/p' <<<"$line")
            [[ $failed == "0+0" ]] || die "$server: failed requests in round $round: $line"
            printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$server" "$size" "$round" "$rps" \
                "$(awk -v a="$c0" -v b="$c1" 'BEGIN { print b - a }')" "$done_" >>"$RESULTS"
            log "round $round $server $size: $rps req/s"
        done
    done
done
after=$(wc -l <"$WORK/origin-nginx.access.log")
LOAD_AFTER=$(uptime | sed 's/.*load average: //')
((after == before)) || die "the origin saw $((after - before)) requests while measuring"

"$PY" - "$RESULTS" "$TARGET_RATIO" <<'EOF'
import statistics
import sys
rows = [line.split("\t") for line in open(sys.argv[1]).read().splitlines()]
target = float(sys.argv[2])
print(f"{'size':<6} {'server':<8} {'req/s (median)':>15} {'req/CPU-s':>10} {'vs nginx':>9}")
for size in ("1k", "64k"):
    best = {}
    for server in ("nginx", "geoedge"):
        runs = [r for r in rows if r[0] == server and r[1] == size]
        runs.sort(key=lambda r: float(r[3]))
        mid = runs[len(runs) // 2]
        cpu = float(mid[4])
        best[server] = (float(mid[3]), int(mid[5]) / cpu if cpu > 0 else 0.0)
    for server in ("nginx", "geoedge"):
        rps, per_cpu = best[server]
        ratio = rps / best["nginx"][0]
        print(f"{size:<6} {server:<8} {rps:>15,.0f} {per_cpu:>10,.0f} {ratio:>8.2f}x")
    ratio = best["geoedge"][0] / best["nginx"][0]
    verdict = "meets" if ratio >= target else "below"
    print(f"# {size}: geoedge/nginx = {ratio:.2f} ({verdict} the {target}x goal)")
EOF
log "h2load -c $CLIENTS -m $STREAMS, about $DURATION s per run, rounds $ROUNDS; server CPU $SERVER_CPU, client CPU $CLIENT_CPU; edge layer $EDGE_IMPL"
log "load average before: $LOAD_BEFORE; after: $LOAD_AFTER"
