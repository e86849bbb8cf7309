#!/usr/bin/env bash
# Issue 19: does an io_uring data path cut the relay's CPU per echoed message
# by ≥ 15 % against epoll? One bench-echo-server, then `bench-relay` with each
# engine in turn (and tether itself), the same WebSocket echo load through each
# (the handshake passes through the plain TCP relay untouched). Prints one
# markdown table per connection count.
#
#   bench/uring.sh                  5 rounds × 10 s, 50 connections, 64-byte messages
#   URING_CONNECTIONS="1 50 500" bench/uring.sh
#
# Everything (load, echo server, relay) is pinned to ONE core with taskset, as
# in bench/run.sh. Engines alternate within each round (epoll, uring, …) so a
# busy machine hits them alike; the table shows medians with min–max.
#
# The relay's CPU time is the sum over /proc/PID/task/*/schedstat (first field,
# ns on the CPU, io_uring's io-wq threads included), read about 1 s after the
# measured window opened and 0.5 s before it closes. CPU per round trip =
# Δ CPU / (Δ wall × round trips per second reported by bench-load). A round
# trip is one message relayed each way (client → server and back), i.e. two
# receives and two sends in the relay. "sys %" is the kernel share of the
# relay's CPU (/proc/PID/stat stime ÷ (utime + stime), 10 ms ticks). The last
# column adds the echo server's and bench-load's CPU over the same window: work
# the relay's engine might shift onto its peers shows there. (The kernel here
# has no CONFIG_IRQ_TIME_ACCOUNTING, so softirq work, e.g. loopback delivery,
# counts for the task it interrupted.)
#
# Engines (URING_ENGINES, default "epoll uring uring-single tether"):
#   epoll         bench-relay --engine epoll: tokio current-thread, a task per pair
#   uring         bench-relay --engine uring: multishot receive, provided buffer ring
#   uring-single  bench-relay --engine uring --uring-recv single: one receive per direction
#   tether        tether itself, 1 worker, the tunnel after the WebSocket upgrade
#
# Environment overrides (all optional):
#   CARGO_TARGET_DIR   where cargo builds (default: <repo>/target)
#   BENCH_NO_BUILD=1   use the binaries already built
#   BENCH_TETHER_BIN   tether binary (default: $CARGO_TARGET_DIR/release/tether;
#                      built unless BENCH_NO_BUILD=1 or this is set)
#   BENCH_CPU          the core everything is pinned to (default: the last one)
#   BENCH_PORT_BASE    first port used on 127.0.0.1 (default 19600; uses 100)
#   BENCH_OUT          directory for logs and results.tsv (default: a new /tmp dir)
#   URING_ENGINES, URING_CONNECTIONS (default "50"), URING_ROUNDS (5),
#   URING_SECONDS (10), URING_SIZE (64 bytes), URING_WARMUP (1 s)
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
for arg in "$@"; do
    case "$arg" in
        -h | --help) usage; exit 0 ;;
        *) echo "unknown argument: $arg (try --help)" >&2; exit 64 ;;
    esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release
CPU=${BENCH_CPU:-$(($(nproc) - 1))}
PORT_BASE=${BENCH_PORT_BASE:-19600}
ENGINES=${URING_ENGINES:-"epoll uring uring-single tether"}
CONNECTIONS=${URING_CONNECTIONS:-50}
ROUNDS=${URING_ROUNDS:-5}
SECONDS_=${URING_SECONDS:-10}
SIZE=${URING_SIZE:-64}
WARMUP=${URING_WARMUP:-1}
TETHER_BIN=${BENCH_TETHER_BIN:-$BIN/tether}

log() { printf '[uring %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v taskset >/dev/null || die "taskset (util-linux) is needed"
command -v python3 >/dev/null || die "python3 is needed for the table"
HARD_NOFILE=$(ulimit -Hn)
[[ $HARD_NOFILE == unlimited ]] && HARD_NOFILE=1048576
ulimit -n "$HARD_NOFILE"

if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
    log "building tether-bench (release, target dir $TARGET_DIR)"
    (cd "$ROOT" && cargo build --release -p tether-bench) || die "cannot build tether-bench"
    if [[ " $ENGINES " == *" tether "* && -z ${BENCH_TETHER_BIN:-} ]]; then
        (cd "$ROOT" && cargo build --release -p tether) || die "cannot build tether"
    fi
fi
for b in bench-load bench-echo-server bench-relay; do
    [[ -x $BIN/$b ]] || die "no $b in $BIN"
done
[[ " $ENGINES " == *" tether "* && ! -x $TETHER_BIN ]] && die "no tether binary at $TETHER_BIN"

OUT=${BENCH_OUT:-$(mktemp -d /tmp/tether-uring.XXXXXX)}
mkdir -p "$OUT"
RESULTS=$OUT/results.tsv
: >"$RESULTS"
# shellcheck source=bench/processes.sh
source "$ROOT/bench/processes.sh"

# ns on the CPU, summed over the process's threads.
cpu_ns() {
    local s
    s=$(awk '{ s += $1 } END { printf "%d", s }' /proc/"$1"/task/*/schedstat 2>/dev/null) || s=0
    echo "${s:-0}"
}
# utime + stime ticks of the whole process, as "utime stime".
ticks() { awk '{ print $14, $15 }' /proc/"$1"/stat; }
now_ns() { date +%s%N; }
# Sleeps until $1 ns (date +%s%N clock), if that is still ahead.
sleep_until() {
    local left=$(($1 - $(now_ns)))
    ((left > 0)) && sleep "$((left / 1000000000)).$(printf %09d $((left % 1000000000)))"
    return 0
}
# Seconds (decimal) to ns.
ns() { awk -v s="$1" 'BEGIN { printf "%d", s * 1e9 }'; }

SERVER_PORT=$PORT_BASE
start_pinned "$OUT/server.log" "$BIN/bench-echo-server" --listen "127.0.0.1:$SERVER_PORT" --name s1
SERVER_PID=$STARTED
wait_port "$SERVER_PID" "$SERVER_PORT" || die "echo server did not start"

# A fresh port per relay start: a ring's listener is released asynchronously
# after its process exits, so the last port may still be taken.
RUN=0
next_port() { RUN=$((RUN + 1)); PORT=$((PORT_BASE + 1 + RUN % 99)); }

start_engine() {
    local engine=$1 logfile=$OUT/$1-$RUN.log
    case $engine in
        epoll) start_pinned "$logfile" "$BIN/bench-relay" --listen "127.0.0.1:$PORT" --upstream "127.0.0.1:$SERVER_PORT" --engine epoll ;;
        uring) start_pinned "$logfile" "$BIN/bench-relay" --listen "127.0.0.1:$PORT" --upstream "127.0.0.1:$SERVER_PORT" --engine uring ;;
        uring-single) start_pinned "$logfile" "$BIN/bench-relay" --listen "127.0.0.1:$PORT" --upstream "127.0.0.1:$SERVER_PORT" --engine uring --uring-recv single ;;
        tether)
            {
                echo "workers = 1"
                echo "[[frontend]]"
                echo 'name = "bench"'
                echo "bind = [\"127.0.0.1:$PORT\"]"
                echo 'default_backend = "echo"'
                echo "[[backend]]"
                echo 'name = "echo"'
                echo 'timeouts = { connect = "3s", server = "30s", tunnel = "1h" }'
                echo "[[backend.server]]"
                echo 'name = "s1"'
                echo "address = \"127.0.0.1:$SERVER_PORT\""
            } >"$OUT/tether-$PORT.toml"
            TETHER_LOG=error RUST_LOG=error start_pinned "$logfile" "$TETHER_BIN" run --config "$OUT/tether-$PORT.toml"
            ;;
        *) die "unknown engine $engine" ;;
    esac
    ENGINE_PID=$STARTED
    wait_port "$ENGINE_PID" "$PORT" || die "$engine did not start: $(tail -n 3 "$logfile")"
}

log "pinned to CPU $CPU; kernel $(uname -r); $(taskset -c "$CPU" "$BIN/bench-relay" --listen 127.0.0.1:0 --probe || true)"
log "engines: $ENGINES; connections: $CONNECTIONS; $ROUNDS rounds × ${SECONDS_} s, ${SIZE}-byte messages; work dir $OUT"
log "load average: $(cut -d' ' -f1-3 /proc/loadavg)"

for conns in $CONNECTIONS; do
    for ((round = 1; round <= ROUNDS; round++)); do
        for engine in $ENGINES; do
            next_port
            start_engine "$engine"
            # Warm-up: a few handshakes through the fresh relay, not measured.
            taskset -c "$CPU" "$BIN/bench-load" connect --addr "127.0.0.1:$PORT" -n 200 -c 20 --max-seconds 20 >/dev/null 2>&1 || true
            taskset -c "$CPU" "$BIN/bench-load" echo --addr "127.0.0.1:$PORT" --target "$engine" --round "$round" \
                -c "$conns" -s "$SIZE" -d "$SECONDS_" --warmup "$WARMUP" --max-seconds "$((SECONDS_ + 60))" \
                >"$OUT/load-$RUN.json" 2>>"$OUT/bench-load.log" &
            LOAD_PID=$!
            launched=$(now_ns)
            # The measured window opens once the connections are open plus
            # the warm-up; read the CPU inside it, with margins.
            sleep_until $((launched + $(ns "$WARMUP") + 1000000000))
            c0=$(cpu_ns "$ENGINE_PID"); read -r u0 s0 < <(ticks "$ENGINE_PID"); t0=$(now_ns)
            a0=$(($(cpu_ns "$SERVER_PID") + $(cpu_ns "$LOAD_PID")))
            sleep_until $((launched + $(ns "$WARMUP") + $(ns "$SECONDS_") - 500000000))
            c1=$(cpu_ns "$ENGINE_PID"); read -r u1 s1 < <(ticks "$ENGINE_PID"); t1=$(now_ns)
            a1=$(($(cpu_ns "$SERVER_PID") + $(cpu_ns "$LOAD_PID")))
            wait "$LOAD_PID" || true
            stop_pid "$ENGINE_PID"
            line=$(tail -n 1 "$OUT/load-$RUN.json")
            python3 - "$engine" "$conns" "$round" "$((c1 - c0))" "$((t1 - t0))" "$((u1 - u0))" "$((s1 - s0))" "$((a1 - a0 + c1 - c0))" "$line" >>"$RESULTS" <<'EOF'
import json, sys
engine, conns, rnd, cpu_ns, wall_ns, du, ds, all_ns, line = sys.argv[1:]
r = json.loads(line)
if not r.get("ok") or not r.get("rate"):
    print(f"{engine}\t{conns}\t{rnd}\tfailed\t{r.get('first_error')}")
    sys.exit()
round_trips = int(wall_ns) / 1e9 * r["rate"]
per_rt_us = int(cpu_ns) / round_trips / 1000
all_us = int(all_ns) / round_trips / 1000
ticks = int(du) + int(ds)
sys_pct = 100 * int(ds) / ticks if ticks else 0
load = open("/proc/loadavg").read().split()[0]
print(f"{engine}\t{conns}\t{rnd}\t{r['rate']}\t{r['p99_us']}\t{per_rt_us:.3f}\t{sys_pct:.0f}\t{load}\t{all_us:.3f}")
EOF
            log "  $conns conns, round $round, $engine: $(tail -n 1 "$RESULTS" | cut -f4-)"
        done
    done
done

python3 - "$RESULTS" "$ENGINES" <<'EOF'
import statistics, sys
path, engines = sys.argv[1], sys.argv[2].split()
rows = [l.rstrip("\n").split("\t") for l in open(path)]
def fmt(xs, f):
    return f"{f(statistics.median(xs))} ({f(min(xs))}–{f(max(xs))})"
for conns in dict.fromkeys(r[1] for r in rows):
    print(f"\n{conns} connections, round trips of one message each way; relay CPU per round trip")
    print("\n| engine | rounds | round trips/s | relay CPU µs / round trip | ÷ epoll | p99 µs | relay sys % | relay + echo + load µs / round trip |")
    print("|---|---|---|---|---|---|---|---|")
    base = None
    for e in engines:
        ok = [r for r in rows if r[0] == e and r[1] == conns and r[3] != "failed"]
        failed = sum(1 for r in rows if r[0] == e and r[1] == conns and r[3] == "failed")
        if not ok:
            print(f"| {e} | 0 ({failed} failed) | – | – | – | – | – | – |")
            continue
        rate = [float(r[3]) for r in ok]; p99 = [float(r[4]) for r in ok]
        cpu = [float(r[5]) for r in ok]; sysp = [float(r[6]) for r in ok]
        setup = [float(r[8]) for r in ok]
        med = statistics.median(cpu)
        if e == "epoll":
            base = med
        ratio = "–"
        if base:
            # Also paired by round (the runs of one round are minutes apart at most).
            by_round = {r[2]: float(r[5]) for r in rows if r[0] == "epoll" and r[1] == conns and r[3] != "failed"}
            pairs = [float(r[5]) / by_round[r[2]] for r in ok if r[2] in by_round]
            ratio = f"{med / base:.2f}"
            if pairs and e != "epoll":
                ratio += f" (per round {min(pairs):.2f}–{max(pairs):.2f})"
        n = f"{len(ok)}" + (f" ({failed} failed)" if failed else "")
        print(f"| {e} | {n} | {fmt(rate, lambda x: f'{x:,.0f}')} | {fmt(cpu, lambda x: f'{x:.2f}')} | {ratio} "
              f"| {fmt(p99, lambda x: f'{x:,.0f}')} | {fmt(sysp, lambda x: f'{x:.0f}')} | {fmt(setup, lambda x: f'{x:.2f}')} |")
print(f"\nraw figures: {path}")
EOF
