# shellcheck shell=bash
# shellcheck disable=SC2034,SC2004  # STOP_SIG (an associative array), EDGE_PORT etc.: the caller's
# Helpers for bench/tier.sh (sourced; not run on its own); the ones shared with the other
# benchmarks are in bench/lib.sh. They expect WORK, PY, GEOEDGE, NGINX, PIDS and STOP_SIG from
# the caller, and `die`/`log`.

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

start_edge() {  # $1 config, $2 edge name, $3 log, $4 cpu; sets EDGE_PID, EDGE_PORT, ADMIN_PORT
    local conf=$1 name=$2 logf=$3 cpu=$4 line
    taskset -c "$cpu" "$GEOEDGE" edge --config "$conf" --name "$name" --listen 127.0.0.1:0 \
        --admin-listen 127.0.0.1:0 \
        --log-level "${TIER_BENCH_LOG_LEVEL:-info}" >"$logf" 2>&1 &
    EDGE_PID=$!
    PIDS+=("$EDGE_PID")
    STOP_SIG[$EDGE_PID]=INT  # INT stops at once (TERM gives requests in progress edge.drain_timeout)
    line=$(wait_log "$EDGE_PID" "$logf" "serving edge $name on [^ ]+ port [0-9]+")
    EDGE_PORT=$(sed -E 's/.* port ([0-9]+).*/\1/' <<<"$line")
    line=$(wait_log "$EDGE_PID" "$logf" "admin listener .* port [0-9]+")
    ADMIN_PORT=$(sed -E 's/.* port ([0-9]+).*/\1/' <<<"$line")  # /metrics, /.geoedge/stats
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
