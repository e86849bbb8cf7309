#!/usr/bin/env bash
# Where tether's time goes, per operation: exact user-space instruction counts
# (callgrind) and syscalls (strace -c) per WebSocket handshake, per keep-alive
# HTTP request and per echoed message. See bench/README.md ("Profiles").
#
#   bench/profile.sh                  all three operations, access log off and on
#   bench/profile.sh handshake http   only these operations
#
# tether runs with one worker behind three bench-echo-servers, as in
# bench/run.sh; bench-load drives it. Counting covers only the measured
# operations: callgrind's counters are zeroed after start-up and a warm-up
# (`callgrind_control -z`) and dumped right after (`-d`); strace attaches for
# the operations only. Figures are per operation, start-up excluded.
#
# Environment overrides (all optional):
#   CARGO_TARGET_DIR     where the release binaries are (default: <repo>/target)
#   PROFILE_TETHER_BIN   the tether binary to profile (default: $CARGO_TARGET_DIR/release/tether)
#   PROFILE_LOG          "off on" (default): access log off (TETHER_LOG=warn), on (info)
#   PROFILE_HANDSHAKES   handshakes counted (default 2000, 20 at a time)
#   PROFILE_HTTP_SECONDS seconds of keep-alive GETs over 20 connections (default 5)
#   PROFILE_ECHO_SECONDS seconds of 64-byte echo over 20 connections (default 5)
#   PROFILE_PORT_BASE    first port on 127.0.0.1 (default 19500)
#   PROFILE_OUT          directory for configs, logs and callgrind files (default: a new /tmp dir)
#   PROFILE_PERF=0       skip the perf phase (kernel share of the CPU samples, page faults per operation)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
TETHER=${PROFILE_TETHER_BIN:-$BIN/tether}
LOGS=${PROFILE_LOG:-"off on"}
HANDSHAKES=${PROFILE_HANDSHAKES:-2000}
HTTP_SECONDS=${PROFILE_HTTP_SECONDS:-5}
ECHO_SECONDS=${PROFILE_ECHO_SECONDS:-5}
PORT_BASE=${PROFILE_PORT_BASE:-19500}
OUT=${PROFILE_OUT:-$(mktemp -d /tmp/tether-profile.XXXXXX)}
OPS=("$@")
[[ ${#OPS[@]} == 0 ]] && OPS=(handshake http echo)

log() { printf '[profile %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in valgrind callgrind_control strace; do
    command -v "$tool" >/dev/null || die "$tool is needed (apt-get install valgrind strace)"
done
[[ -x $TETHER ]] || die "no tether binary at $TETHER (cargo build --release -p tether)"
[[ -x $BIN/bench-load && -x $BIN/bench-echo-server ]] ||
    die "no bench binaries in $BIN (cargo build --release -p tether-bench)"
for op in "${OPS[@]}"; do
    case "$op" in handshake | http | echo) ;; *) die "unknown operation $op (handshake, http, echo)" ;; esac
done

# shellcheck source=bench/processes.sh
source "$ROOT/bench/processes.sh"

SERVER_PORTS=($((PORT_BASE + 1)) $((PORT_BASE + 2)) $((PORT_BASE + 3)))
PROXY_PORT=$((PORT_BASE + 10))
ADDR=127.0.0.1:$PROXY_PORT
for port in "${SERVER_PORTS[@]}" "$PROXY_PORT"; do
    port_open "$port" && die "port $port on 127.0.0.1 is in use (set PROFILE_PORT_BASE)"
done

# The same configuration bench/run.sh measures (one worker).
{
    echo "workers = 1"
    echo
    echo "[[frontend]]"
    echo 'name = "bench"'
    echo "bind = [\"$ADDR\"]"
    echo 'default_backend = "echo"'
    echo
    echo "[[backend]]"
    echo 'name = "echo"'
    echo 'balance = "leastconn"'
    echo 'sticky = { cookie = "SERVERID", mode = "insert", indirect = true, nocache = true }'
    echo 'timeouts = { connect = "3s", server = "30s", tunnel = "1h" }'
    for i in 1 2 3; do
        echo
        echo "[[backend.server]]"
        echo "name = \"s$i\""
        echo "address = \"127.0.0.1:${SERVER_PORTS[$((i - 1))]}\""
        echo "cookie = \"s$i\""
    done
} >"$OUT/tether.toml"

for i in 0 1 2; do
    "$BIN/bench-echo-server" --listen "127.0.0.1:${SERVER_PORTS[$i]}" --name "s$((i + 1))" \
        >"$OUT/server-$i.log" 2>&1 &
    PIDS+=($!)
    wait_port $! "${SERVER_PORTS[$i]}" || die "echo server $i did not start"
done

# Runs operation $1 once against tether; prints how many operations it made.
run_op() {
    local op=$1 line
    case "$op" in
        handshake) line=$("$BIN/bench-load" connect --addr "$ADDR" -n "$HANDSHAKES" -c 20 --target tether 2>>"$OUT/load.log" | tail -n 1) ;;
        http) line=$("$BIN/bench-load" http --addr "$ADDR" -c 20 -d "$HTTP_SECONDS" --warmup 0 --target tether 2>>"$OUT/load.log" | tail -n 1) ;;
        echo) line=$("$BIN/bench-load" echo --addr "$ADDR" -c 20 -d "$ECHO_SECONDS" --warmup 0 --target tether 2>>"$OUT/load.log" | tail -n 1) ;;
    esac
    [[ $line == *'"ok":true'* ]] || die "bench-load $op failed: $line"
    local key
    case "$op" in handshake) key=handshakes ;; http) key=requests ;; echo) key=messages ;; esac
    sed -n "s/.*\"$key\":\([0-9]*\).*/\1/p" <<<"$line"
}

# A warm-up that is not counted: the first connections fill pools and caches.
warm_up() {
    "$BIN/bench-load" connect --addr "$ADDR" -n 200 -c 20 >/dev/null 2>&1 || true
    "$BIN/bench-load" http --addr "$ADDR" -c 20 -d 1 --warmup 0 >/dev/null 2>&1 || true
}

# Starts tether (under `$@`, a wrapper command, possibly empty) with access log $1.
start_tether() {
    local log=$1
    shift
    local filter=warn
    [[ $log == on ]] && filter=info
    TETHER_LOG=$filter "$@" "$TETHER" run --config "$OUT/tether.toml" >"$OUT/tether.out" 2>"$OUT/tether-$log.log" &
    TETHER_PID=$!
    PIDS+=("$TETHER_PID")
    wait_port "$TETHER_PID" "$PROXY_PORT" 60 || die "tether did not start (see $OUT/tether-$log.log)"
}

stop_tether() {
    kill "$TETHER_PID" 2>/dev/null || true
    wait "$TETHER_PID" 2>/dev/null || true
}

RESULTS=$OUT/results.txt
: >"$RESULTS"
for log in $LOGS; do
    # Instructions: callgrind, counters zeroed after the warm-up.
    start_tether "$log" valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind-$log.%p" --dump-instr=no
    warm_up
    for op in "${OPS[@]}"; do
        callgrind_control -z "$TETHER_PID" >/dev/null 2>&1
        count=$(run_op "$op")
        callgrind_control -d "$op-$log" "$TETHER_PID" >/dev/null 2>&1
        sleep 1
        dump=$(ls -t "$OUT"/callgrind-"$log".* | head -n 1)
        total=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$dump" | head -n 1)
        [[ -n $total && $count -gt 0 ]] || die "no callgrind figures for $op (see $dump)"
        log "callgrind $op log=$log: $total instructions for $count operations"
        echo "instructions $op $log $((total / count)) $count" >>"$RESULTS"
    done
    stop_tether

    # Syscalls: strace -c attached for the operations only.
    start_tether "$log"
    warm_up
    for op in "${OPS[@]}"; do
        strace -c -f -p "$TETHER_PID" -o "$OUT/strace-$op-$log.txt" 2>/dev/null &
        strace_pid=$!
        sleep 1
        count=$(run_op "$op")
        kill -INT "$strace_pid"
        wait "$strace_pid" 2>/dev/null || true
        calls=$(awk '$NF == "total" { print $4 }' "$OUT/strace-$op-$log.txt")
        [[ -n $calls && $count -gt 0 ]] || die "no strace figures for $op (see $OUT/strace-$op-$log.txt)"
        log "strace $op log=$log: $calls syscalls for $count operations"
        echo "syscalls $op $log $(awk -v c="$calls" -v n="$count" 'BEGIN { printf "%.1f", c / n }') $count" >>"$RESULTS"
    done
    stop_tether

    # Where the CPU goes, kernel included: perf's cpu-clock samples of the
    # tether process (user space and kernel), and minor page faults per
    # operation (/proc/PID/stat), which the allocator's purging causes.
    if [[ ${PROFILE_PERF:-1} != 0 ]] && command -v perf >/dev/null; then
        start_tether "$log"
        warm_up
        for op in "${OPS[@]}"; do
            faults_before=$(awk '{ print $10 }' "/proc/$TETHER_PID/stat")
            perf record -q -e cpu-clock -F 4999 -g -p "$TETHER_PID" -o "$OUT/perf-$op-$log.data" >/dev/null 2>&1 &
            perf_pid=$!
            sleep 1
            count=$(run_op "$op")
            kill -INT "$perf_pid"
            wait "$perf_pid" 2>/dev/null || true
            faults_after=$(awk '{ print $10 }' "/proc/$TETHER_PID/stat")
            # The share of samples taken in the kernel ([kernel.kallsyms]).
            kernel=$(perf report -i "$OUT/perf-$op-$log.data" --no-children --sort dso --stdio 2>/dev/null |
                awk '/kernel.kallsyms/ { gsub("%", "", $1); k += $1 } END { printf "%.0f", k }')
            log "perf $op log=$log: kernel ${kernel}% of samples; $((faults_after - faults_before)) minor faults for $count operations"
            echo "kernel $op $log $kernel $count" >>"$RESULTS"
            echo "faults $op $log $(awk -v f="$((faults_after - faults_before))" -v n="$count" 'BEGIN { printf "%.2f", f / n }') $count" >>"$RESULTS"
        done
        stop_tether
    fi
done

echo "| operation | access log | instructions per op | syscalls per op | kernel share of CPU samples | minor faults per op |"
echo "|---|---|--:|--:|--:|--:|"
for log in $LOGS; do
    for op in "${OPS[@]}"; do
        field() { awk -v k="$1" -v o="$op" -v l="$log" '$1 == k && $2 == o && $3 == l { print $4 }' "$RESULTS"; }
        kernel=$(field kernel)
        faults=$(field faults)
        [[ -n $kernel ]] && kernel="$kernel %"
        printf '| %s | %s | %s | %s | %s | %s |\n' "$op" "$log" "$(field instructions)" "$(field syscalls)" \
            "${kernel:-–}" "${faults:-–}"
    done
done
log "callgrind files, strace tables, perf data and logs: $OUT (callgrind_annotate FILE, perf report -i FILE show where)"
