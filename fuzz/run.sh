#!/usr/bin/env bash
# Runs tether's fuzz targets with cargo-fuzz on the stable toolchain.
#   fuzz/run.sh [request_head|frame_tracker|config|all] [seconds]   (default: all, 600)
# FUZZ_SANITIZER=none skips AddressSanitizer (default: address).
# New corpus entries go to fuzz/corpus/<target>, crashes to fuzz/artifacts/<target>.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-all}
seconds=${2:-600}
# cargo-fuzz passes nightly-only flags (-Zsanitizer, -Cpasses=sancov-module);
# RUSTC_BOOTSTRAP lets the stable compiler accept them.
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="$PWD/fuzz/target"
sanitizer=${FUZZ_SANITIZER:-address}
if [ "$target" = all ]; then
    targets=(request_head frame_tracker config)
else
    targets=("$target")
fi
for t in "${targets[@]}"; do
    corpus="fuzz/corpus/$t"
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    extra=()
    seeds=()
    if [ -d "fuzz/seeds/$t" ]; then
        seeds=("fuzz/seeds/$t")
    fi
    if [ "$t" = config ]; then
        # The shipped example configs are the config target's seeds.
        cp examples/*.toml "$corpus"/
        extra=(-dict=fuzz/config.dict)
    fi
    # One process on one core (the default; -jobs/-workers would fork a child).
    cargo fuzz run --sanitizer "$sanitizer" "$t" "$corpus" "${seeds[@]}" -- \
        -max_total_time="$seconds" -print_final_stats=1 "${extra[@]}"
done
