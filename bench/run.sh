#!/usr/bin/env bash
# The tether benchmark: direct vs tether vs HAProxy vs NGINX, same load, same
# machine, same run. Prints one markdown table. See bench/README.md.
#
#   bench/run.sh            full run (5 rounds, 10 s per figure, 60 s idle hold)
#   bench/run.sh --quick    quick run (3 rounds, 2 s per figure, 10 s idle hold), < 5 min
#
# Everything (load generator, echo servers, proxy) is pinned to ONE core with
# taskset: the per-message CPU cost then decides the ratios, and repeated runs
# agree within a few percent even on a small shared machine. The order of the
# targets rotates between rounds; the table shows medians with min–max.
#
# Environment overrides (all optional):
#   CARGO_TARGET_DIR   where cargo builds (default: <repo>/target)
#   BENCH_CPU          the core everything is pinned to (default: the last one)
#   BENCH_PORT_BASE    first port used on 127.0.0.1 (default 19000)
#   BENCH_TARGETS      subset of "direct tether haproxy nginx" (also "tether-log-text",
#                      "tether-log-json": tether with its access log on, 1 worker)
#   BENCH_LOG_ROWS=0   no access-log-on rows (by default they run whenever tether does)
#   BENCH_URING_ROWS=0 no "tether-uring" row (tether, 1 worker, [tunnel] engine = "io_uring";
#                      by default it runs whenever tether does)
#   BENCH_SERVERS      echo servers behind each proxy (default 3); a proxy opens at most one
#                      port range of connections to each, so 1,000,000 idle need about 20
#   BENCH_WORKERS      worker counts to compare (default "1 2")
#   BENCH_ROUNDS, BENCH_ECHO_SECONDS, BENCH_ECHO_CONNECTIONS, BENCH_ECHO_SIZE,
#   BENCH_CONNECT_COUNT, BENCH_CONNECT_CONCURRENCY, BENCH_HTTP_SECONDS,
#   BENCH_HTTP_CONNECTIONS, BENCH_IDLE_COUNT, BENCH_IDLE_HOLD, BENCH_IDLE_PING
#   BENCH_H2=0         skip the HTTP/2 rows (WebSockets over one h2c connection,
#                      RFC 8441; tether and HAProxy only: NGINX cannot proxy them)
#   BENCH_H2_STREAMS   WebSockets held open on one h2 connection for the h2 idle row
#   BENCH_ROUNDS=0     only the idle rows (memory, kernel included) and the h2 idle row
#   BENCH_NO_INSTALL=1 don't apt-get install missing proxies
#   BENCH_NO_BUILD=1   use the binaries already built
#   BENCH_TETHER_BIN   a tether binary to measure instead of building one (e.g. an older build)
#   BENCH_OUT          directory for configs, logs and results.jsonl (default: a new /tmp dir)
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

QUICK=0
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown argument: $arg (try --help)" >&2; exit 64 ;;
    esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release
CPU=${BENCH_CPU:-$(($(nproc) - 1))}
PORT_BASE=${BENCH_PORT_BASE:-19000}
TARGETS=${BENCH_TARGETS:-"direct tether haproxy nginx"}
WORKERS=${BENCH_WORKERS:-"1 2"}
# tether with its access log on (to a file, text and json): one worker, echo,
# connect and http only, part of the rotation.
LOG_TARGETS=(tether-log-text tether-log-json)
if [[ ${BENCH_LOG_ROWS:-1} != 0 && " $TARGETS " == *" tether "* ]]; then
    for t in "${LOG_TARGETS[@]}"; do [[ " $TARGETS " == *" $t "* ]] || TARGETS+=" $t"; done
fi
# tether with its tunnels on io_uring: one worker, every mode, part of the rotation.
if [[ ${BENCH_URING_ROWS:-1} != 0 && " $TARGETS " == *" tether "* && " $TARGETS " != *" tether-uring "* ]]; then
    TARGETS+=" tether-uring"
fi
WANT_TETHER=0
for t in $TARGETS; do [[ $t == tether* ]] && WANT_TETHER=1; done

if [[ $QUICK == 1 ]]; then
    ROUNDS=${BENCH_ROUNDS:-3}
    ECHO_SECONDS=${BENCH_ECHO_SECONDS:-2}
    HTTP_SECONDS=${BENCH_HTTP_SECONDS:-2}
    WARMUP=0.5
    CONNECT_COUNT=${BENCH_CONNECT_COUNT:-2000}
    IDLE_HOLD=${BENCH_IDLE_HOLD:-10}
    IDLE_PING=${BENCH_IDLE_PING:-5}
else
    ROUNDS=${BENCH_ROUNDS:-5}
    ECHO_SECONDS=${BENCH_ECHO_SECONDS:-10}
    HTTP_SECONDS=${BENCH_HTTP_SECONDS:-10}
    WARMUP=1
    CONNECT_COUNT=${BENCH_CONNECT_COUNT:-10000}
    IDLE_HOLD=${BENCH_IDLE_HOLD:-60}
    IDLE_PING=${BENCH_IDLE_PING:-10}
fi
ECHO_CONNECTIONS=${BENCH_ECHO_CONNECTIONS:-50}
ECHO_SIZE=${BENCH_ECHO_SIZE:-64}
CONNECT_CONCURRENCY=${BENCH_CONNECT_CONCURRENCY:-50}
HTTP_CONNECTIONS=${BENCH_HTTP_CONNECTIONS:-50}

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- file descriptors: raise the soft limit to the hard one ------------------
HARD_NOFILE=$(ulimit -Hn)
[[ $HARD_NOFILE == unlimited ]] && HARD_NOFILE=1048576
ulimit -n "$HARD_NOFILE" || die "cannot raise ulimit -n to $HARD_NOFILE"
NOFILE=$(ulimit -n)
# A proxied connection costs 2 descriptors in the proxy (the largest user);
# keep 10% for listeners, logs and upstream keep-alive.
IDLE_COUNT=${BENCH_IDLE_COUNT:-$((NOFILE * 9 / 10 / 2))}
HAPROXY_MAXCONN=$(((NOFILE - 200) / 2))
[[ $IDLE_COUNT -gt $HAPROXY_MAXCONN ]] && HAPROXY_MAXCONN=$IDLE_COUNT

# --- tools -------------------------------------------------------------------
export PATH="$PATH:/usr/sbin:/sbin"
want_haproxy=0
want_nginx=0
[[ " $TARGETS " == *" haproxy "* ]] && want_haproxy=1
[[ " $TARGETS " == *" nginx "* ]] && want_nginx=1
missing=()
[[ $want_haproxy == 1 ]] && ! command -v haproxy >/dev/null && missing+=(haproxy)
[[ $want_nginx == 1 ]] && ! command -v nginx >/dev/null && missing+=(nginx)
command -v taskset >/dev/null || missing+=(util-linux)
if [[ ${#missing[@]} -gt 0 ]]; then
    [[ ${BENCH_NO_INSTALL:-0} == 1 ]] && die "missing: ${missing[*]} (and BENCH_NO_INSTALL=1)"
    SUDO=""
    [[ $(id -u) != 0 ]] && SUDO="sudo"
    log "installing ${missing[*]} from Debian packages"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- build ---------------------------------------------------------------------
TETHER_OK=1
TETHER_ERROR=""
if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
    log "building tether-bench (release, target dir $TARGET_DIR)"
    (cd "$ROOT" && cargo build --release -p tether-bench) || die "cannot build tether-bench"
    if [[ $WANT_TETHER == 1 && -z ${BENCH_TETHER_BIN:-} ]]; then
        log "building tether (release)"
        if ! (cd "$ROOT" && cargo build --release -p tether); then
            TETHER_OK=0
            TETHER_ERROR="tether did not build"
        fi
    fi
fi
[[ -x $BIN/bench-load && -x $BIN/bench-echo-server ]] || die "no bench binaries in $BIN"
H2=${BENCH_H2:-1}
[[ $H2 == 1 && ! -x $BIN/bench-h2 ]] && die "no bench-h2 in $BIN (or set BENCH_H2=0)"
if [[ $QUICK == 1 ]]; then H2_STREAMS=${BENCH_H2_STREAMS:-1000}; else H2_STREAMS=${BENCH_H2_STREAMS:-4000}; fi
TETHER_BIN=${BENCH_TETHER_BIN:-$BIN/tether}
if [[ $TETHER_OK == 1 && $WANT_TETHER == 1 && ! -x $TETHER_BIN ]]; then
    TETHER_OK=0
    TETHER_ERROR="no tether binary at $TETHER_BIN"
fi

# --- work dir, process bookkeeping ------------------------------------------------
OUT=${BENCH_OUT:-$(mktemp -d /tmp/tether-bench.XXXXXX)}
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"
# shellcheck source=bench/processes.sh
source "$ROOT/bench/processes.sh"

# Echo servers s1, s2, s3 on PORT_BASE+1..3; more (BENCH_SERVERS) from PORT_BASE+104 on.
SERVER_COUNT=${BENCH_SERVERS:-3}
[[ $SERVER_COUNT =~ ^[0-9]+$ && $SERVER_COUNT -ge 1 ]] || die "BENCH_SERVERS must be a number ≥ 1"
SERVER_PORTS=()
for ((i = 1; i <= SERVER_COUNT; i++)); do
    if ((i <= 3)); then SERVER_PORTS+=($((PORT_BASE + i))); else SERVER_PORTS+=($((PORT_BASE + 100 + i))); fi
done
declare -A PROXY_PORT=([tether]=$((PORT_BASE + 10)) [tether-log-text]=$((PORT_BASE + 11)) [tether-log-json]=$((PORT_BASE + 12)) [tether-uring]=$((PORT_BASE + 13))
    [haproxy]=$((PORT_BASE + 20)) [nginx]=$((PORT_BASE + 30)))
# The h2c listeners of the HTTP/2 rows (one worker each).
declare -A H2_PORT=([tether]=$((PORT_BASE + 40)) [haproxy]=$((PORT_BASE + 50)))
for port in "${SERVER_PORTS[@]}" "${PROXY_PORT[@]}" "${H2_PORT[@]}"; do
    port_open "$port" && die "port $port on 127.0.0.1 is in use (set BENCH_PORT_BASE)"
done

# --- configs ---------------------------------------------------------------------
write_configs() {
    local w=$1 s i
    # tether (TOML): leastconn with the same cookie insertion HAProxy does.
    {
        echo "workers = $w"
        echo
        echo "[[frontend]]"
        echo 'name = "bench"'
        echo "bind = [\"127.0.0.1:${PROXY_PORT[tether]}\"]"
        echo 'default_backend = "echo"'
        echo
        echo "[[backend]]"
        echo 'name = "echo"'
        echo 'balance = "leastconn"'
        echo 'sticky = { cookie = "SERVERID", mode = "insert", indirect = true, nocache = true }'
        echo 'timeouts = { connect = "3s", server = "30s", tunnel = "1h" }'
        for ((i = 1; i <= SERVER_COUNT; i++)); do
            echo
            echo "[[backend.server]]"
            echo "name = \"s$i\""
            echo "address = \"127.0.0.1:${SERVER_PORTS[$((i - 1))]}\""
            echo "cookie = \"s$i\""
        done
    } >"$OUT/tether-$w.toml"

    # HAProxy: no `log` line, so nothing is logged.
    {
        echo "global"
        echo "    nbthread $w"
        echo "    maxconn $HAPROXY_MAXCONN"
        echo "defaults"
        echo "    mode http"
        echo "    timeout connect 3s"
        echo "    timeout client 30s"
        echo "    timeout server 30s"
        echo "    timeout http-keep-alive 30s"
        echo "    timeout tunnel 1h"
        echo "frontend bench"
        echo "    bind 127.0.0.1:${PROXY_PORT[haproxy]}"
        echo "    default_backend echo"
        echo "backend echo"
        echo "    balance leastconn"
        echo "    cookie SERVERID insert indirect nocache"
        for ((i = 1; i <= SERVER_COUNT; i++)); do
            echo "    server s$i 127.0.0.1:${SERVER_PORTS[$((i - 1))]} cookie s$i"
        done
    } >"$OUT/haproxy-$w.cfg"

    # NGINX open source has no cookie stickiness: least_conn only.
    mkdir -p "$OUT/nginx-$w"
    {
        [[ $(id -u) == 0 ]] && echo "user root;"
        echo "worker_processes $w;"
        echo "worker_rlimit_nofile $NOFILE;"
        echo "daemon off;"
        echo "master_process on;"
        echo "pid $OUT/nginx-$w/nginx.pid;"
        echo "error_log $OUT/nginx-$w/error.log error;"
        echo "events { worker_connections $((NOFILE - 100)); }"
        echo "http {"
        echo "    access_log off;"
        for s in client_body proxy fastcgi uwsgi scgi; do
            echo "    ${s}_temp_path $OUT/nginx-$w/$s;"
        done
        echo "    keepalive_timeout 65s;"
        echo "    keepalive_requests 1000000;"
        echo "    map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }"
        echo "    upstream echo {"
        echo "        least_conn;"
        for ((i = 1; i <= SERVER_COUNT; i++)); do
            echo "        server 127.0.0.1:${SERVER_PORTS[$((i - 1))]};"
        done
        echo "        keepalive 64;"
        echo "        keepalive_requests 1000000;"
        echo "    }"
        echo "    server {"
        echo "        listen 127.0.0.1:${PROXY_PORT[nginx]};"
        echo "        location / {"
        echo "            proxy_pass http://echo;"
        echo "            proxy_http_version 1.1;"
        echo "            proxy_set_header Upgrade \$http_upgrade;"
        echo "            proxy_set_header Connection \$connection_upgrade;"
        echo "            proxy_set_header Host \$host;"
        echo "            proxy_connect_timeout 3s;"
        echo "            proxy_read_timeout 1h;"
        echo "            proxy_send_timeout 1h;"
        echo "        }"
        echo "    }"
        echo "}"
    } >"$OUT/nginx-$w.conf"
}

for w in $WORKERS; do write_configs "$w"; done

# A one-worker variant of tether (when it is in the targets): the one-worker
# config on the variant's own port, then the TOML in $2.
write_variant_config() {
    local t=$1 extra=$2
    [[ " $TARGETS " == *" $t "* ]] || return 0
    [[ -f $OUT/tether-1.toml ]] || write_configs 1
    {
        sed -e "s/127.0.0.1:${PROXY_PORT[tether]}\"/127.0.0.1:${PROXY_PORT[$t]}\"/" "$OUT/tether-1.toml"
        echo
        printf '%s\n' "$extra"
    } >"$OUT/$t-1.toml"
}
# The access-log-on rows: `[log]` writes every line to a file in the work dir
# (what operators do); TETHER_LOG lets tether::access through (start_instance).
for t in "${LOG_TARGETS[@]}"; do
    write_variant_config "$t" "[log]
access = \"$OUT/$t-access.log\"
log_format = \"${t#tether-log-}\""
done
# The io_uring row: the same, with its tunnels on io_uring.
write_variant_config tether-uring '[tunnel]
engine = "io_uring"'

# The HTTP/2 rows: the one-worker configs with an h2c listener (prior
# knowledge) that lets one connection hold $H2_STREAMS WebSockets.
write_h2_configs() {
    sed -e "s/127.0.0.1:${PROXY_PORT[tether]}\"\]/127.0.0.1:${H2_PORT[tether]}\"]\nhttp2 = true\nlimits = { http2_max_concurrent_streams = $((H2_STREAMS + 100)) }/" \
        -e 's/^workers = .*/workers = 1/' "$OUT/tether-1.toml" >"$OUT/tether-h2.toml"
    sed -e "s/bind 127.0.0.1:${PROXY_PORT[haproxy]}/bind 127.0.0.1:${H2_PORT[haproxy]} proto h2/" \
        -e "s/^    nbthread .*/    nbthread 1\n    tune.h2.max-concurrent-streams $((H2_STREAMS + 100))/" \
        "$OUT/haproxy-1.cfg" >"$OUT/haproxy-h2.cfg"
}
[[ $H2 == 1 ]] && write_configs 1 && write_h2_configs

# --- targets -------------------------------------------------------------------
# An instance is "direct" or "<proxy>/<workers>".
INSTANCES=()
[[ " $TARGETS " == *" direct "* ]] && INSTANCES+=(direct)
VARIANT_INSTANCES=()
[[ " $TARGETS " == *" tether-uring "* ]] && VARIANT_INSTANCES+=("tether-uring/1")
for t in "${LOG_TARGETS[@]}"; do [[ " $TARGETS " == *" $t "* ]] && VARIANT_INSTANCES+=("$t/1"); done
for w in $WORKERS; do
    for t in tether haproxy nginx; do
        [[ " $TARGETS " == *" $t "* ]] && INSTANCES+=("$t/$w")
        [[ $t == tether && $w == 1 ]] && INSTANCES+=("${VARIANT_INSTANCES[@]}")
    done
done
[[ " $WORKERS " == *" 1 "* ]] || INSTANCES+=("${VARIANT_INSTANCES[@]}")

# Starts the proxy of an instance; sets ADDR and RSS_PIDS. Returns 1 on failure
# with the reason in START_ERROR.
PROXY_PID=""
start_instance() {
    local inst=$1 t=${1%/*} w=${1#*/} logfile
    START_ERROR=""
    PROXY_PID=""
    if [[ $t == direct ]]; then
        ADDR=127.0.0.1:${SERVER_PORTS[0]}
        RSS_PIDS=("${SERVER_PIDS[0]}")
        return 0
    fi
    ADDR=127.0.0.1:${PROXY_PORT[$t]}
    logfile=$OUT/$t-$w.log
    case $t in
        tether | tether-uring)
            if [[ $TETHER_OK != 1 ]]; then
                START_ERROR=$TETHER_ERROR
                return 1
            fi
            TETHER_LOG=error RUST_LOG=error start_pinned "$logfile" "$TETHER_BIN" run --config "$OUT/$t-$w.toml"
            ;;
        tether-log-*)
            if [[ $TETHER_OK != 1 ]]; then
                START_ERROR=$TETHER_ERROR
                return 1
            fi
            rm -f "$OUT/$t-access.log"
            TETHER_LOG=error,tether::access=info RUST_LOG=error start_pinned "$logfile" "$TETHER_BIN" run --config "$OUT/$t-$w.toml"
            ;;
        haproxy) start_pinned "$logfile" haproxy -db -f "$OUT/haproxy-$w.cfg" ;;
        nginx) start_pinned "$logfile" nginx -p "$OUT/nginx-$w" -e "$OUT/nginx-$w/error.log" -c "$OUT/nginx-$w.conf" ;;
    esac
    PROXY_PID=$STARTED
    if ! wait_port "$PROXY_PID" "${PROXY_PORT[$t]}"; then
        START_ERROR="$t did not start: $(tail -q -n 3 "$logfile" "$OUT/nginx-$w/error.log" 2>/dev/null | tr -d '"\\' | tr '\n' ' ' | cut -c1-200)"
        stop_pid "$PROXY_PID"
        PROXY_PID=""
        return 1
    fi
    sleep 0.2
    # NGINX: the master and its workers.
    local children
    mapfile -t children < <(pgrep -P "$PROXY_PID" || true)
    RSS_PIDS=("$PROXY_PID" "${children[@]}")
    return 0
}

stop_instance() {
    if [[ -n $PROXY_PID ]]; then
        stop_pid "$PROXY_PID"
        PROXY_PID=""
    fi
}

# After an access-log-on instance stopped: says how much it logged (an empty
# file would mean the rows measured tether with its log off), keeps the last
# lines and removes the file (a full run would leave gigabytes).
access_log_done() {
    local t=${1%/*} f
    [[ $t == tether-log-* ]] || return 0
    f=$OUT/$t-access.log
    if [[ -s $f ]]; then
        log "  $1 access log: $(wc -l <"$f") lines, $(du -h "$f" | cut -f1)"
        tail -n 3 "$f" >"$OUT/$t-access.tail"
    else
        log "  $1 access log: EMPTY, these figures are tether with its log off"
    fi
    rm -f "$f"
}

# Runs one load mode against the current instance and appends its JSON line.
run_load() {
    local inst=$1 round=$2 mode=$3 t=${1%/*} w=0 out pid cpu_args=()
    shift 3
    [[ $t != direct ]] && w=${inst#*/}
    # The proxy's CPU time (every process: NGINX's master and workers) over
    # the measured window, read by bench-load itself (for direct: the echo server's).
    if [[ $mode != idle ]]; then
        for pid in "${RSS_PIDS[@]}"; do cpu_args+=(--cpu-pid "$pid"); done
    fi
    out=$(taskset -c "$CPU" "$BIN/bench-load" "$mode" --addr "$ADDR" --target "$t" --workers "$w" --round "$round" "$@" "${cpu_args[@]}" 2>>"$OUT/bench-load.log" | tail -n 1) || true
    if [[ $out != "{"* ]]; then
        out="{\"mode\":\"$mode\",\"target\":\"$t\",\"workers\":$w,\"round\":$round,\"ok\":false,\"first_error\":\"bench-load gave no result\"}"
    fi
    echo "$out" >>"$RESULTS"
    # Whether the run gave a figure (a target that fails echo is not run further this round).
    LAST_MEASURED=0
    [[ $out =~ \"(rate|opened)\":[0-9]*[1-9] ]] && LAST_MEASURED=1
    local rate cpu
    rate=$(sed -n 's/.*"rate":\([0-9.]*\).*/\1/p; s/.*"kib_per_conn":\([0-9.]*\).*/\1 KiB\/conn/p' <<<"$out" | head -n 1)
    cpu=$(sed -n 's/.*"proxy_cpu_us_per_op":\([0-9.]*\).*/, CPU \1 µs\/op/p' <<<"$out")
    log "  $inst $mode: ${rate:-failed}$cpu"
}

record_failure() {
    local inst=$1 round=$2 t=${1%/*} w=${1#*/} mode
    shift 2
    for mode in "$@"; do
        echo "{\"mode\":\"$mode\",\"target\":\"$t\",\"workers\":$w,\"round\":$round,\"ok\":false,\"first_error\":\"$START_ERROR\"}" >>"$RESULTS"
    done
    log "  $inst: $START_ERROR"
}

# --- echo servers ------------------------------------------------------------------
SERVER_PIDS=()
for ((i = 0; i < SERVER_COUNT; i++)); do
    start_pinned "$OUT/server-s$((i + 1)).log" "$BIN/bench-echo-server" --listen "127.0.0.1:${SERVER_PORTS[$i]}" --name "s$((i + 1))"
    SERVER_PIDS+=("$STARTED")
    wait_port "$STARTED" "${SERVER_PORTS[$i]}" || die "echo server s$((i + 1)) did not start"
done

log "pinned to CPU $CPU; ulimit -n $NOFILE; $ROUNDS rounds; echo ${ECHO_CONNECTIONS}x${ECHO_SIZE}B ${ECHO_SECONDS}s;" \
    "connect ${CONNECT_COUNT}@${CONNECT_CONCURRENCY}; http ${HTTP_CONNECTIONS} ${HTTP_SECONDS}s; idle ${IDLE_COUNT} for ${IDLE_HOLD}s"
log "instances: ${INSTANCES[*]}; work dir $OUT"
START_TIME=$SECONDS

# --- throughput rounds -----------------------------------------------------------------
n=${#INSTANCES[@]}
for ((round = 1; round <= ROUNDS; round++)); do
    log "round $round/$ROUNDS"
    for ((k = 0; k < n; k++)); do
        inst=${INSTANCES[$(((k + round - 1) % n))]}
        if ! start_instance "$inst"; then
            record_failure "$inst" "$round" echo connect http
            continue
        fi
        # Warm-up: a few handshakes through the fresh proxy, not recorded.
        taskset -c "$CPU" "$BIN/bench-load" connect --addr "$ADDR" -n 200 -c 20 --max-seconds 20 >/dev/null 2>&1 || true
        run_load "$inst" "$round" echo -c "$ECHO_CONNECTIONS" -s "$ECHO_SIZE" -d "$ECHO_SECONDS" --warmup "$WARMUP" \
            --max-seconds "$((ECHO_SECONDS + 30))"
        if [[ $LAST_MEASURED != 1 ]]; then
            START_ERROR="skipped: echo gave no figure in this round"
            record_failure "$inst" "$round" connect http
            stop_instance
            access_log_done "$inst"
            continue
        fi
        run_load "$inst" "$round" connect -n "$CONNECT_COUNT" -c "$CONNECT_CONCURRENCY" -s "$ECHO_SIZE" \
            --max-seconds "$((CONNECT_COUNT / 100 + 30))"
        run_load "$inst" "$round" http -c "$HTTP_CONNECTIONS" -d "$HTTP_SECONDS" --warmup "$WARMUP" \
            --max-seconds "$((HTTP_SECONDS + 30))"
        stop_instance
        access_log_done "$inst"
    done
done

# --- idle: one fresh proxy per instance -------------------------------------------------
log "idle: $IDLE_COUNT connections held ${IDLE_HOLD}s, ping every ${IDLE_PING}s"
for ((k = 0; k < n; k++)); do
    inst=${INSTANCES[$k]}
    [[ $inst == tether-log-* ]] && continue
    if ! start_instance "$inst"; then
        record_failure "$inst" 1 idle
        continue
    fi
    taskset -c "$CPU" "$BIN/bench-load" connect --addr "$ADDR" -n 200 -c 20 --max-seconds 20 >/dev/null 2>&1 || true
    sleep 0.5
    rss_args=()
    for pid in "${RSS_PIDS[@]}"; do rss_args+=(--rss-pid "$pid"); done
    run_load "$inst" 1 idle -n "$IDLE_COUNT" --hold "$IDLE_HOLD" --ping-interval "$IDLE_PING" \
        --ready-file "$OUT/idle-ready.json" --max-seconds "$((IDLE_HOLD + IDLE_COUNT / 100 + 60))" "${rss_args[@]}"
    stop_instance
    # Let the sockets of the last run leave TIME_WAIT/FIN states before the next.
    sleep 1
done

# --- HTTP/2: WebSockets as streams of one h2c connection (tether and HAProxy) ----------
start_h2() {
    local t=$1
    case $t in
        tether) TETHER_LOG=error RUST_LOG=error start_pinned "$OUT/tether-h2.log" "$TETHER_BIN" run --config "$OUT/tether-h2.toml" ;;
        haproxy) start_pinned "$OUT/haproxy-h2.log" haproxy -db -f "$OUT/haproxy-h2.cfg" ;;
    esac
    PROXY_PID=$STARTED
    wait_port "$PROXY_PID" "${H2_PORT[$t]}" || { stop_instance; return 1; }
    sleep 0.2
}

run_h2() {
    local t=$1 round=$2 mode=$3 out
    shift 3
    out=$(taskset -c "$CPU" "$BIN/bench-h2" --addr "127.0.0.1:${H2_PORT[$t]}" --target "$t" "$mode" "$@" 2>>"$OUT/bench-h2.log" | tail -n 1) || true
    [[ $out == "{"* ]] || out="{\"mode\":\"h2-$mode\",\"target\":\"$t\",\"ok\":false,\"first_error\":\"bench-h2 gave no result\"}"
    echo "${out%\}},\"round\":$round}" >>"$RESULTS"
    log "  $t h2 $mode: $(sed -n 's/.*"messages_per_s":\([0-9.]*\).*/\1 msg\/s/p; s/.*"kib_per_websocket":\([0-9.]*\).*/\1 KiB\/WebSocket/p' <<<"$out" | head -n 1)"
}

if [[ $H2 == 1 ]]; then
    H2_TARGETS=()
    for t in tether haproxy; do [[ " $TARGETS " == *" $t "* ]] && H2_TARGETS+=("$t"); done
    log "h2: ${ECHO_CONNECTIONS} WebSockets on one h2c connection, echo ${ECHO_SECONDS}s; idle ${H2_STREAMS} on one connection"
    for ((round = 1; round <= ROUNDS; round++)); do
        for ((k = 0; k < ${#H2_TARGETS[@]}; k++)); do
            t=${H2_TARGETS[$(((k + round - 1) % ${#H2_TARGETS[@]}))]}
            [[ $t == tether && $TETHER_OK != 1 ]] && continue
            start_h2 "$t" || { log "  $t h2: did not start"; continue; }
            run_h2 "$t" "$round" echo --streams "$ECHO_CONNECTIONS" --size "$ECHO_SIZE" --duration "$ECHO_SECONDS"
            stop_instance
        done
    done
    for t in "${H2_TARGETS[@]}"; do
        [[ $t == tether && $TETHER_OK != 1 ]] && continue
        start_h2 "$t" || continue
        run_h2 "$t" 1 idle --streams "$H2_STREAMS" --hold "$IDLE_HOLD" --rss-pid "$PROXY_PID"
        stop_instance
        sleep 1
    done
fi

log "done in $((SECONDS - START_TIME))s; raw results: $RESULTS"
echo
echo "tether benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, everything pinned to CPU $CPU," \
    "$ROUNDS round(s) (median, min–max)$([[ $QUICK == 1 ]] && echo ', --quick')"
echo
"$BIN/bench-load" report "$RESULTS"
echo
echo "echo: ${ECHO_CONNECTIONS} connections × ${ECHO_SIZE}-byte messages, ${ECHO_SECONDS}s; connect: ${CONNECT_COUNT} handshakes," \
    "${CONNECT_CONCURRENCY} at a time; http: ${HTTP_CONNECTIONS} keep-alive connections, ${HTTP_SECONDS}s;" \
    "idle: ${IDLE_COUNT} WebSockets held ${IDLE_HOLD}s (KiB/conn = proxy RSS delta ÷ connections; for direct, the echo server's)."
echo "CPU µs/msg, /handshake, /req: the proxy's CPU time (every thread of every process, /proc/PID/task/*/schedstat) over the measured" \
    "window ÷ messages echoed (round trips) / handshakes completed / responses read; for direct, the echo server's." \
    "tether-log-text / -json: tether, 1 worker, access log on, written to a file in the work dir ([log] access, log_format)." \
    "tether-uring: tether, 1 worker, tunnels on io_uring ([tunnel] engine = \"io_uring\")."
echo "Kernel: growth of /proc/net/sockstat TCP mem (pages) and of the socket slab caches (/proc/slabinfo objects in use; /proc/meminfo Slab" \
    "without root) from before the first handshake to all open (h2: to the end of the hold), ÷ connections; it counts every socket of the run and whatever else the" \
    "machine did meanwhile, so the proxy's own share is its figure minus direct's (h2: minus half of direct's). See docs/benchmarks.md."
echo "$(haproxy -v 2>/dev/null | head -n 1 | cut -d' ' -f1-3); $(nginx -v 2>&1); $(rustc --version 2>/dev/null || true)"
