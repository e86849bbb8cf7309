#!/usr/bin/env bash
# Idle WebSockets past one process's descriptor limit and one source address's
# ports: CLIENTS `bench-load idle` processes, one after the other (each starts
# once the previous one has all its connections open, so each measures the
# memory its own connections add), all to ONE address, spread over SOURCES
# source addresses (127.0.0.1 ..= 127.0.0.K). Prints each client's JSON line
# and how the connections spread over the source addresses. See bench/README.md.
#
#   bench/idle-scale.sh ADDR CLIENTS PER_CLIENT SOURCES [PID...]
#
# PID...: the processes whose RSS counts (the proxy's, or the echo servers'
# for a direct run), summed. The target (a proxy, or echo servers started with
# --reuseport) must already listen on ADDR. Environment: CARGO_TARGET_DIR (where
# bench-load is), BENCH_OUT (work directory, default a new /tmp dir),
# BENCH_IDLE_HOLD (seconds the last client holds, default 20; earlier ones hold
# 25 s longer each), BENCH_IDLE_PING (default 30).
set -euo pipefail

if [[ $# -lt 4 || $1 == -h || $1 == --help ]]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 64
fi
ADDR=$1 CLIENTS=$2 PER_CLIENT=$3 SOURCES=$4
shift 4
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
OUT=${BENCH_OUT:-$(mktemp -d /tmp/tether-idle-scale.XXXXXX)}
HOLD=${BENCH_IDLE_HOLD:-20}
PING=${BENCH_IDLE_PING:-30}
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)"
rss=()
for pid in "$@"; do rss+=(--rss-pid "$pid"); done

pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

for ((i = 1; i <= CLIENTS; i++)); do
    rm -f "$OUT/ready.$i"
    "$BIN/bench-load" idle --addr "$ADDR" -n "$PER_CLIENT" --sources "$SOURCES" \
        --hold $(((CLIENTS - i) * 25 + HOLD)) --ping-interval "$PING" --target scale --round "$i" \
        --ready-file "$OUT/ready.$i" "${rss[@]}" >"$OUT/client.$i.json" 2>"$OUT/client.$i.log" &
    pids+=($!)
    while [[ ! -f $OUT/ready.$i ]] && kill -0 "${pids[-1]}" 2>/dev/null; do sleep 0.2; done
    sleep 1
    echo "client $i: $(cat "$OUT/ready.$i" 2>/dev/null || echo 'no ready file'); $(grep '^TCP:' /proc/net/sockstat)" >&2
done
echo "established connections to $ADDR per source address:" >&2
ss -tn state established "( dport = :${ADDR##*:} )" | awk 'NR > 1 { sub(/:[0-9]+$/, "", $3); print $3 }' | sort | uniq -c >&2
for p in "${pids[@]}"; do wait "$p" || true; done
pids=()
for ((i = 1; i <= CLIENTS; i++)); do cat "$OUT/client.$i.json"; done
