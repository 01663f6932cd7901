# shellcheck shell=bash
# shellcheck disable=SC2034,SC2004  # STOP_SIG (an associative array), EDGE_PORT etc.: the caller's
# Helpers for bench/tier.sh (sourced; not run on its own). Most are bench/edge.sh's, copied
# rather than shared so that neither script changes under the other. They expect WORK, PY,
# GEOEDGE, NGINX, PIDS and STOP_SIG from the caller, and `die`/`log`.

free_ports() {  # $1 count: distinct free TCP ports on 127.0.0.1
    "$PY" - "$1" <<'EOF'
import socket
import sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# CPU seconds (user+sys) used so far by processes and their children (nginx: the worker).
cpu_seconds() {  # $@ pids
    local ticks=0 p f a
    for p in "$@" $(for q in "$@"; do pgrep -P "$q" || true; done); do
        f=$(cat /proc/"$p"/stat 2>/dev/null) || continue
        f=${f##*) }  # fields after "(comm) "; utime/stime are fields 14/15, here 12/13
        read -r -a a <<<"$f"
        ticks=$((ticks + a[11] + a[12]))
    done
    awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }'
}

# Wait until $2 (a log file) has a line matching $3, or the process $1 died; prints the line.
wait_log() {
    local pid=$1 file=$2 pattern=$3 line
    for _ in {1..200}; do
        line=$(grep -m1 -E "$pattern" "$file" 2>/dev/null || true)
        if [[ -n $line ]]; then printf '%s\n' "$line"; return 0; fi
        kill -0 "$pid" 2>/dev/null || { cat "$file" >&2; die "process $pid exited (log $file)"; }
        sleep 0.1
    done
    cat "$file" >&2
    die "timed out waiting for '$pattern' in $file"
}

wait_http() {  # $1 pid, $2 url, $3 log: until the url answers
    for _ in {1..100}; do
        curl -fsS -o /dev/null --max-time 1 "$2" 2>/dev/null && return 0
        kill -0 "$1" 2>/dev/null || { cat "$3" >&2; die "process $1 exited (log $3)"; }
        sleep 0.1
    done
    cat "$3" >&2
    die "no answer from $2"
}

# nginx-light and nginx-full differ in modules: set the temp paths of those compiled in.
temp_paths() {
    local m opts
    opts=$("$NGINX" -V 2>&1)
    printf '    client_body_temp_path %s/tmp/body;\n' "$WORK"
    for m in proxy fastcgi uwsgi scgi; do
        [[ $opts == *"--without-http_${m}_module"* ]] ||
            printf '    %s_temp_path %s/tmp/%s;\n' "$m" "$WORK" "$m"
    done
}

render() {  # $1 template, $2 output, then NAME=VALUE pairs for @NAME@ (USER/DIR/TEMP_PATHS too)
    local tpl=$1 out=$2 user="" tmp
    shift 2
    ((EUID == 0)) && user="user root;"  # nginx workers read/write the 0700 temp dir
    tmp=$(temp_paths)
    "$PY" - "$tpl" "$out" "USER=$user" "DIR=$WORK" "TEMP_PATHS=$tmp" "$@" <<'EOF'
import re
import sys
tpl, out, *pairs = sys.argv[1:]
text = open(tpl).read()
for kv in pairs:
    name, value = kv.split("=", 1)
    text = text.replace(f"@{name}@", value)
left = re.findall(r"@[A-Z_]+@", "".join(line.split("#")[0] for line in text.splitlines()))
if left:
    raise SystemExit(f"unreplaced markers {left} in {out}")
open(out, "w").write(text)
EOF
}

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
    STOP_SIG[$NGINX_PID]=QUIT  # graceful stop of master and workers
}

start_edge() {  # $1 config, $2 edge name, $3 log, $4 cpu; sets EDGE_PID, EDGE_PORT
    local conf=$1 name=$2 logf=$3 cpu=$4 line
    taskset -c "$cpu" "$GEOEDGE" edge --config "$conf" --name "$name" --listen 127.0.0.1:0 \
        --log-level "${TIER_BENCH_LOG_LEVEL:-warning}" >"$logf" 2>&1 &
    EDGE_PID=$!
    PIDS+=("$EDGE_PID")
    STOP_SIG[$EDGE_PID]=INT  # INT stops at once (TERM would drain for edge.drain_seconds)
    line=$(wait_log "$EDGE_PID" "$logf" "serving edge $name on [^ ]+ port [0-9]+")
    EDGE_PORT=$(sed -E 's/.* port ([0-9]+).*/\1/' <<<"$line")
}

start_redis() {  # $1 port, $2 cpu; sets REDIS_PID. No persistence, loopback only.
    mkdir -p "$WORK/redis"
    taskset -c "$2" "$REDIS_SERVER" --port "$1" --bind 127.0.0.1 --protected-mode yes \
        --save '' --appendonly no --dir "$WORK/redis" --daemonize no \
        --logfile "$WORK/redis.log" --loglevel warning &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    STOP_SIG[$REDIS_PID]=TERM
    for _ in {1..100}; do
        [[ $("$REDIS_CLI" -p "$1" ping 2>/dev/null || true) == PONG ]] && return 0
        kill -0 "$REDIS_PID" 2>/dev/null || { cat "$WORK/redis.log" >&2; die "redis exited"; }
        sleep 0.1
    done
    die "redis on port $1 did not answer PING"
}
