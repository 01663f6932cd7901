# shellcheck shell=bash
# Helpers shared by the benchmarks (sourced, never run on their own). They expect WORK, PY and
# NGINX from the caller where they use them, and the caller's `log` and `die`.

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

# CPU seconds (user+sys) used so far by processes and all their descendants (nginx: the
# worker; geoedge dns --workers: the workers).
cpu_seconds() {  # $@ pids
    local pids=("$@") all=() p kids ticks=0 f a
    while ((${#pids[@]})); do
        p=${pids[0]}; pids=("${pids[@]:1}")
        all+=("$p")
        kids=$(pgrep -P "$p" || true)
        for k in $kids; do pids+=("$k"); done
    done
    for p in "${all[@]}"; do
        f=$(cat /proc/"$p"/stat 2>/dev/null) || continue
        f=${f##*) }  # fields after "(comm) "; utime/stime are fields 14/15, here 12/13
        read -r -a a <<<"$f"
        ticks=$((ticks + a[11] + a[12]))
    done
    awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }'
}

# Install from Debian what is missing: install_missing COMMAND:PACKAGE ... (root or sudo).
install_missing() {
    local pair need=() sudo=()
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
    done
    ((${#need[@]})) || return 0
    log "installing from Debian: ${need[*]}"
    if ((EUID != 0)); then
        command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to install: ${need[*]}"
        sudo=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    # Update the package lists only when the install fails without them.
    if ! "${sudo[@]}" apt-get install -y -q "${need[@]}" >&2; then
        "${sudo[@]}" apt-get update -q >&2 || die "apt-get update failed"
        "${sudo[@]}" apt-get install -y -q "${need[@]}" >&2 || die "could not install ${need[*]}"
    fi
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

# Fill an nginx config template (nginx: the workers read/write the 0700 temp dir as root).
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
