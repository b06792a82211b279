#!/usr/bin/env bash
# Run the cargo-fuzz targets of fuzz/ and print executions and exec/s per target.
#
#   bash contrib/fuzz.sh [target|all] [runs]     # default: all, 10000000 runs each
#
# Targets run one after the other, each in one process (no -jobs/-workers). Each starts from
# the committed seeds (fuzz/seeds/<target>) and the corpus grown by earlier runs
# (fuzz/corpus/<target>, not committed). A crash leaves its input in fuzz/artifacts/<target>/
# and makes the script exit 1 once the other targets ran; reproduce it with
# `cargo +nightly fuzz run -s none <target> <file>`.
# Logs: fuzz/logs/<target>.log. Needs the nightly toolchain; installs cargo-fuzz if missing.
#
# Built with overflow checks and debug assertions (cargo-fuzz's default) but without
# AddressSanitizer: the crate is safe Rust, and ASan made the targets about 3.5 times slower
# and 8 times larger. FUZZ_SANITIZER=address brings it back.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

target=${1:-all}
runs=${2:-10000000}
sanitizer=${FUZZ_SANITIZER:-none}

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "the nightly toolchain is needed: rustup toolchain install nightly" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

mapfile -t all < <(cargo +nightly fuzz list)
if [ "$target" = all ]; then
    targets=("${all[@]}")
else
    targets=("$target")
fi

mkdir -p logs
status=0
summary=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "seeds/$t"
    log="logs/$t.log"
    echo "== $t: $runs runs (log: fuzz/$log)"
    start=$(date +%s)
    if cargo +nightly fuzz run --sanitizer "$sanitizer" "$t" "corpus/$t" "seeds/$t" -- -runs="$runs" -print_final_stats=1 >"$log" 2>&1; then
        result=ok
    else
        result="CRASH (see fuzz/$log, fuzz/artifacts/$t/)"
        status=1
    fi
    secs=$(($(date +%s) - start))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    execs=${execs:-0}
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    fuzzed=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
    summary+=("$(printf '%-18s %11s execs %7s exec/s %6ss fuzzing %6ss wall  %s' \
        "$t" "$execs" "${rate:-?}" "${fuzzed:-?}" "$secs" "$result")")
    tail -n 3 "$log"
done

echo
echo "== summary"
printf '%s\n' "${summary[@]}"
exit "$status"
