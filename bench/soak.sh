#!/usr/bin/env bash
# The soak run of tether ("nothing is lost"): builds the release binaries and
# runs `soak`, which drives the real tether binary on 127.0.0.1 through 100
# reloads, a SIGKILLed server, a Redis restart and a slowloris attack under
# steady checked WebSocket traffic. One table per phase, PASS/FAIL; the exit
# status is non-zero on any FAIL. Not part of `cargo test`. See bench/README.md.
#
#   bench/soak.sh              full run (2,000 sockets, 100 reloads; about 4 minutes once built)
#   bench/soak.sh --quick      smoke run (200 sockets, 20 reloads; about 1 minute)
#   bench/soak.sh --phases kill,redis --sockets 500     any option of `soak --help`
#
# Environment overrides (all optional):
#   CARGO_TARGET_DIR   where cargo builds (default: <repo>/target)
#   BENCH_TETHER_BIN   a tether binary to run instead of building one
#   BENCH_NO_BUILD=1   use the binaries already built
#   BENCH_OUT          directory for configs and logs (default: a new /tmp dir)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
export CARGO_TARGET_DIR=$TARGET_DIR

for arg in "$@"; do
    if [[ $arg == -h || $arg == --help ]]; then
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        echo
        [[ -x $TARGET_DIR/release/soak ]] && "$TARGET_DIR/release/soak" --help
        exit 0
    fi
done

if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
    (cd "$ROOT" && cargo build --release -p tether-bench)
    if [[ -z ${BENCH_TETHER_BIN:-} ]]; then
        (cd "$ROOT" && cargo build --release -p tether)
    fi
fi
export BENCH_TETHER_BIN=${BENCH_TETHER_BIN:-$TARGET_DIR/release/tether}
command -v redis-server >/dev/null || echo "soak.sh: redis-server not found: the redis phase will be skipped (apt-get install redis-server)" >&2
# 2,000 WebSockets: 2,000 descriptors in the client, 4,000 in tether.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec "$TARGET_DIR/release/soak" "$@"
