# shellcheck shell=bash
# Helpers shared by the benchmarks (sourced, never run on their own). They expect WORK, PY and
# NGINX from the caller where they use them, and the caller's `die`.

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
