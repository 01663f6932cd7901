#!/usr/bin/env bash
# HTTPS benchmark: geoedge's TLS listener vs nginx (TLS + proxy_cache), same certificate
# (ECDSA P-256), same protocols and ciphers, one core each, in the same run.
#
#   bash bench/https.sh            # see docs/benchmarks.md, "HTTPS"
#
# A static origin (nginx, bench/edge/origin-nginx.conf.in) serves a 1 KiB and a 64 KiB file
# with Cache-Control: max-age=3600. In front of it: (a) nginx terminating TLS with
# proxy_cache (bench/https/nginx-tls.conf.in), one worker, and (b) one `geoedge edge` with
# --tls-listen, both pinned to CPU $HTTPS_BENCH_SERVER_CPU (0). wrk (pinned to CPU
# $HTTPS_BENCH_CLIENT_CPU, 1) measures, nginx and geoedge alternately, $HTTPS_BENCH_ROUNDS times:
#   - keep-alive cache hits: 1 KiB and 64 KiB, wrk -t1 -c64 (TLS once per connection)
#   - handshakes: 1 KiB with "Connection: close", wrk -t1 -c16: every request is a new TCP
#     connection and a full TLS handshake (wrk does not resume sessions): handshakes/s
# The table shows the median round by requests/s and requests per CPU-second of the server.
#
# Environment: HTTPS_BENCH_DURATION=5 HTTPS_BENCH_ROUNDS=3 HTTPS_BENCH_WARMUP=1
#   HTTPS_BENCH_SERVER_CPU=0 HTTPS_BENCH_CLIENT_CPU=1 HTTPS_BENCH_KEEP=0 GEOEDGE_VENV=<repo>/.venv
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
HERE=$ROOT/bench/https
VENV=${GEOEDGE_VENV:-$ROOT/.venv}
PY=$VENV/bin/python
GEOEDGE=$VENV/bin/geoedge
DURATION=${HTTPS_BENCH_DURATION:-5}
ROUNDS=${HTTPS_BENCH_ROUNDS:-3}
WARMUP=${HTTPS_BENCH_WARMUP:-1}
SERVER_CPU=${HTTPS_BENCH_SERVER_CPU:-0}
CLIENT_CPU=${HTTPS_BENCH_CLIENT_CPU:-1}
KEEP=${HTTPS_BENCH_KEEP:-0}
EDGE_NAME=us-east-1

log() { printf '[https-bench] %s\n' "$*" >&2; }
die() { printf '[https-bench] ERROR: %s\n' "$*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
for v in DURATION ROUNDS WARMUP SERVER_CPU CLIENT_CPU; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "HTTPS_BENCH_$v must be a non-negative integer"
done
((DURATION > 0 && ROUNDS > 0)) || die "HTTPS_BENCH_DURATION and _ROUNDS must be > 0"

export PATH=$PATH:/usr/sbin:/sbin
install_missing nginx:nginx-light wrk:wrk curl:curl taskset:util-linux openssl:openssl
NGINX=$(command -v nginx)
[[ -x $GEOEDGE ]] || die "$GEOEDGE not found (make venv in $ROOT, or set GEOEDGE_VENV)"
ulimit -n 65536 2>/dev/null || true

WORK=$(mktemp -d "${TMPDIR:-/tmp}/geoedge-https-bench.XXXXXX")
chmod 755 "$WORK"
PIDS=()
declare -A STOP_SIG=()
cleanup() {
    local rc=$? i pid
    trap - EXIT INT TERM
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill -"${STOP_SIG[${PIDS[i]}]:-TERM}" "${PIDS[i]}" 2>/dev/null || true
    done
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

start_nginx() {  # $1 config, $2 name, $3 cpu
    "$NGINX" -t -q -p "$WORK" -e "$WORK/$2.error.log" -c "$1" 2>"$WORK/$2.t.log" ||
        { cat "$WORK/$2.t.log" >&2; die "nginx -t failed for $1"; }
    taskset -c "$3" "$NGINX" -p "$WORK" -e "$WORK/$2.error.log" -c "$1" >"$WORK/$2.out.log" 2>&1 &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    STOP_SIG[$NGINX_PID]=QUIT
}

# ---------------------------------------------------------------- certificate, servers
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=bench.test" -addext "subjectAltName=DNS:bench.test,IP:127.0.0.1" \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null || die "openssl req failed"
mkdir -p "$WORK/www" "$WORK/tmp" "$WORK/nginx-cache"
head -c 1024 /dev/urandom >"$WORK/www/1k.bin"
head -c 65536 /dev/urandom >"$WORK/www/64k.bin"
chmod -R a+rX "$WORK/www"

read -r STATIC_PORT NGINX_PORT EDGE_TLS_PORT < <(free_ports 3)
render "$ROOT/bench/edge/origin-nginx.conf.in" "$WORK/origin-nginx.conf" "PORT=$STATIC_PORT"
start_nginx "$WORK/origin-nginx.conf" origin-nginx "$CLIENT_CPU"
wait_http "$NGINX_PID" "http://127.0.0.1:$STATIC_PORT/healthz" "$WORK/origin-nginx.error.log"

render "$HERE/nginx-tls.conf.in" "$WORK/tls-nginx.conf" "PORT=$NGINX_PORT" \
    "STATIC_PORT=$STATIC_PORT"
start_nginx "$WORK/tls-nginx.conf" tls-nginx "$SERVER_CPU"
NGINX_TLS_PID=$NGINX_PID

sed -e "s#@ORIGIN_NAME@#origin-1#g" -e "s#@ORIGIN_HOST@#127.0.0.1#g" \
    -e "s#@ORIGIN_PORT@#$STATIC_PORT#g" "$ROOT/bench/edge/topology.toml.in" >"$WORK/edge.toml"
taskset -c "$SERVER_CPU" "$GEOEDGE" edge --config "$WORK/edge.toml" --name "$EDGE_NAME" \
    --listen 127.0.0.1:0 --tls-listen "127.0.0.1:$EDGE_TLS_PORT" --tls-cert "$WORK/cert.pem" \
    --tls-key "$WORK/key.pem" --log-level info >"$WORK/edge.log" 2>&1 &
EDGE_PID=$!
PIDS+=("$EDGE_PID")
STOP_SIG[$EDGE_PID]=INT
wait_log "$EDGE_PID" "$WORK/edge.log" "HTTPS on port $EDGE_TLS_PORT" >/dev/null

declare -A BASE=([nginx]="https://127.0.0.1:$NGINX_PORT" [geoedge]="https://127.0.0.1:$EDGE_TLS_PORT")
declare -A PID=([nginx]=$NGINX_TLS_PID [geoedge]=$EDGE_PID)
for server in nginx geoedge; do  # warm both caches, check a hit over TLS 1.3
    for size in 1k 64k; do
        for _ in 1 2 3; do
            curl -sk --tlsv1.3 -o /dev/null "${BASE[$server]}/$size.bin" || die "$server: no answer"
        done
        hdr=$(curl -sk -D - -o /dev/null "${BASE[$server]}/$size.bin")
        grep -qiE '^(X-Cache-Status: HIT|Cache-Status: geoedge-[^;]+; hit)' <<<"$hdr" ||
            { printf '%s\n' "$hdr" >&2; die "$server $size: not a cache hit"; }
    done
done
log "nginx on $NGINX_PORT, geoedge on $EDGE_TLS_PORT (CPU $SERVER_CPU); wrk on CPU $CLIENT_CPU"

# ---------------------------------------------------------------- wrk
RESULTS=$WORK/results.tsv
: >"$RESULTS"
run() {  # $1 server, $2 test (ka-1k | ka-64k | hs-1k), $3 seconds, $4 round
    local server=$1 test=$2 secs=$3 round=$4 url extra=() c=64 out cpu0 cpu1 rps reqs err
    case $test in
        ka-1k) url=${BASE[$server]}/1k.bin ;;
        ka-64k) url=${BASE[$server]}/64k.bin ;;
        hs-1k) url=${BASE[$server]}/1k.bin extra=(-H "Connection: close") c=16 ;;
    esac
    out=$WORK/wrk.$server.$test.$round.txt
    cpu0=$(cpu_seconds "${PID[$server]}")
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$c" -d"${secs}s" --timeout 5s "${extra[@]}" "$url" \
        >"$out" 2>&1 || { cat "$out" >&2; die "wrk failed against $url"; }
    cpu1=$(cpu_seconds "${PID[$server]}")
    [[ $round == warmup ]] && return 0
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
    reqs=$(awk '/ requests in / { print $1 }' "$out")
    err=$(awk '/Non-2xx|Socket errors/ { n++ } END { print n + 0 }' "$out")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$server" "$test" "$round" "$rps" "$reqs" \
        "$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { print b - a }')" "$err" >>"$RESULTS"
    log "  round $round $server $test: $rps req/s ($(grep -E 'Non-2xx|Socket errors' "$out" |
        tr -s ' ' | paste -sd ';' - || true))"
}
LOAD_BEFORE=$(uptime)
TESTS=(ka-1k ka-64k hs-1k)
if ((WARMUP)); then for t in "${TESTS[@]}"; do for s in nginx geoedge; do run "$s" "$t" "$WARMUP" warmup; done; done; fi
for ((round = 1; round <= ROUNDS; round++)); do
    for t in "${TESTS[@]}"; do for s in nginx geoedge; do run "$s" "$t" "$DURATION" "$round"; done; done
done
LOAD_AFTER=$(uptime)

echo
echo "## HTTPS benchmark $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "- $(nproc) x $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo); servers on CPU" \
    "$SERVER_CPU, wrk on CPU $CLIENT_CPU; $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), $(openssl version)"
echo "- geoedge $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), Python" \
    "$("$PY" -c 'import platform; print(platform.python_version())')," \
    "uvloop; ECDSA P-256 certificate, TLS 1.3 (wrk's default), session tickets on"
echo "- load average before: ${LOAD_BEFORE##*load average: }; after: ${LOAD_AFTER##*load average: }"
echo
"$PY" - "$RESULTS" <<'PYEOF'
import csv
import sys

rows = list(csv.reader(open(sys.argv[1]), delimiter="\t"))
by: dict[tuple[str, str], list[tuple[float, float]]] = {}
for server, test, _round, rps, reqs, cpu, _err in rows:
    per_cpu = int(reqs) / float(cpu) if float(cpu) > 0 else 0.0
    by.setdefault((server, test), []).append((float(rps), per_cpu))
LABELS = {"ka-1k": "1 KiB hits, keep-alive (-c64)", "ka-64k": "64 KiB hits, keep-alive (-c64)",
          "hs-1k": "new connection + full handshake per request (-c16): handshakes/s"}


def med(values: list[float]) -> float:
    values = sorted(values)
    return values[(len(values) - 1) // 2]


print("| test | nginx req/s | geoedge req/s | geoedge/nginx | nginx req/CPU-s "
      "| geoedge req/CPU-s | geoedge/nginx per CPU-s |")
print("|---|---:|---:|---:|---:|---:|---:|")
for test, label in LABELS.items():
    n, g = by.get(("nginx", test)), by.get(("geoedge", test))
    if not n or not g:
        continue
    nr, gr = med([r for r, _ in n]), med([r for r, _ in g])
    nc, gc = med([c for _, c in n]), med([c for _, c in g])
    print(f"| {label} | {nr:,.0f} | {gr:,.0f} | **{gr / nr:.2f}** | {nc:,.0f} | {gc:,.0f} "
          f"| {gc / nc:.2f} |")
print()
for (server, test), runs in sorted(by.items()):
    print(f"    {server:7s} {test:6s}: " + "  ".join(f"{r:>7,.0f}" for r, _ in runs))
errors = sum(int(r[6]) for r in rows)
print(f"\n- runs reporting non-2xx or socket errors: {errors}")
PYEOF
