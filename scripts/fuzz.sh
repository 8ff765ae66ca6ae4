#!/usr/bin/env bash
# Runs the cargo-fuzz targets (fuzz/fuzz_targets) and sums them up.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS per target (default 600); TARGETs default to all. $FUZZ_JOBS (default 1) libFuzzer processes per target (-fork).
# The corpus of each target grows in fuzz/corpus/<target> (only seed-* files are in git),
# crashes land in fuzz/artifacts/<target>/, full logs in fuzz/logs/<target>.log.
# Exits non-zero if any target produced a crash (or leak, OOM, timeout) artifact or failed.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${1:-600}
shift || true
jobs=${FUZZ_JOBS:-1}
[[ $duration =~ ^[0-9]+$ ]] || { echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2; }
[[ $jobs =~ ^[1-9][0-9]*$ ]] || { echo "FUZZ_JOBS must be a positive number" >&2; exit 2; }

scripts/fuzz-build.sh

if (($# > 0)); then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

mkdir -p fuzz/logs
count_artifacts() {
    # No artifacts folder yet (a fresh clone) is no crash: find's failure must not end the script.
    { find "fuzz/artifacts/$1" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'oom-*' \
        -o -name 'timeout-*' \) 2>/dev/null || true; } | wc -l
}

failed=0
summary=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    before=$(count_artifacts "$t")
    log="fuzz/logs/$t.log"
    fork=()
    ((jobs > 1)) && fork=(-fork="$jobs")
    echo "== $t: ${duration}s, $jobs job(s), log $log" >&2
    status=0
    cargo +nightly fuzz run -O -a "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$duration" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        "${fork[@]}" >"$log" 2>&1 || status=$?
    crashes=$(($(count_artifacts "$t") - before))

    # libFuzzer's summary: "Done N runs in S second(s)" and the stat:: lines; in fork mode
    # (or after a crash) the last "#N ... exec/s: E" status line.
    runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
    secs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\2/p' "$log" | tail -1)
    eps=$(sed -n 's/^stat::average_exec_per_sec: *\([0-9]*\).*/\1/p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    [[ -n $runs ]] || runs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -1)
    [[ -n $runs ]] || runs=$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$last")
    [[ -n $eps ]] || eps=$(sed -n 's/.*exec\/s: \([0-9]*\).*/\1/p' <<<"$last")
    [[ -n $secs ]] || secs=$(sed -n 's/.* time: \([0-9]*\)s.*/\1/p' <<<"$last")
    [[ -n $secs ]] || { ((${runs:-0} > 0 && ${eps:-0} > 0)) && secs=$((runs / eps)); }
    corpus=$(find "fuzz/corpus/$t" -type f | wc -l)

    result=ok
    if ((crashes > 0)); then
        result="CRASH (fuzz/artifacts/$t)"
        failed=1
    elif ((status != 0)); then
        result="FAILED (exit $status, see $log)"
        failed=1
    fi
    summary+=("$(printf '%-16s %12s %10s %8s %8s %8s  %s' "$t" "${runs:-?}" "${eps:-?}" \
        "${secs:-?}s" "$crashes" "$corpus" "$result")")
done

printf '\n%-16s %12s %10s %8s %8s %8s  %s\n' target executions exec/s time crashes corpus result
printf '%s\n' "${summary[@]}"
if ((failed)); then
    grep -h -A3 -E '^(thread .* panicked|==[0-9]+==ERROR)' fuzz/logs/*.log 2>/dev/null | head -40 >&2 || true
fi
exit "$failed"
