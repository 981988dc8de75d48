#!/bin/bash
# Runs the libFuzzer targets of tests/fuzz (docs/HACKING.md, "Fuzzing").
#
#   scripts/fuzz.sh [--time SECONDS | --runs N] [--fork JOBS] [--build DIR] [TARGET...]
#
# Builds the fuzz build folder (default build-fuzz: clang, ASan + UBSan + libFuzzer, only the
# `fuzzers` target), then runs every target (or the TARGETs named, e.g. cron config) one after the
# other for SECONDS each (default 60), each from a fresh working corpus seeded with
# tests/fuzz/corpus/<target>/, and prints one table: executions, coverage, corpus size, findings.
# --runs N runs each target for N executions instead (the long run of docs/RELIABILITY.md:
# --runs 10000000), however long that takes. --fork JOBS runs each target as one libFuzzer run in
# JOBS processes at once (libFuzzer's -fork: one core each; the executions and the corpus are the
# run's, summed over its processes), for the slow targets' long runs.
# Exit status 1 when any target found a crash, a leak, a timeout or an out-of-memory, or did not
# run; 2 on a usage error.
#
# Every input that crashed, leaked or timed out is kept in DIR/fuzz-findings/<target>/ and added to
# tests/fuzz/corpus/<target>/ as regress-<kind>-<sha1>: the corpus replay test (ctest -L fuzz)
# then fails until the bug is fixed, and guards the fix afterwards. Logs: DIR/fuzz-work/<target>.log.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
}

time_s=60
runs=
fork=
build=build-fuzz
targets=()
while [ $# -gt 0 ]; do
        case "$1" in
        --time) time_s="${2:?--time needs SECONDS}"; shift 2 ;;
        --time=*) time_s="${1#--time=}"; shift ;;
        --runs) runs="${2:?--runs needs N}"; shift 2 ;;
        --runs=*) runs="${1#--runs=}"; shift ;;
        --fork) fork="${2:?--fork needs JOBS}"; shift 2 ;;
        --fork=*) fork="${1#--fork=}"; shift ;;
        --build) build="${2:?--build needs DIR}"; shift 2 ;;
        --build=*) build="${1#--build=}"; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "fuzz.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
        esac
done
case "$time_s" in ''|*[!0-9]*|0) echo "fuzz.sh: --time wants a positive number of seconds" >&2; exit 2 ;; esac
case "$runs" in *[!0-9]*|0) echo "fuzz.sh: --runs wants a positive number of executions" >&2; exit 2 ;; esac
case "$fork" in *[!0-9]*|0) echo "fuzz.sh: --fork wants a positive number of processes" >&2; exit 2 ;; esac

all=()
for f in tests/fuzz/fuzz-*.c; do
        t="${f#tests/fuzz/fuzz-}"
        t="${t%.c}"
        [ "$t" = main ] || all+=("$t")
done
if [ ${#targets[@]} -eq 0 ]; then
        targets=("${all[@]}")
fi
for t in "${targets[@]}"; do
        if [ ! -f "tests/fuzz/fuzz-$t.c" ]; then
                echo "fuzz.sh: no target '$t' (there are: ${all[*]})" >&2
                exit 2
        fi
done

if ! command -v clang >/dev/null; then
        echo "fuzz.sh: needs clang and libclang-rt-14-dev (scripts/install-deps.sh)" >&2
        exit 1
fi
CC=clang cmake -S . -B "$build" -DCON_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build "$build" --target fuzzers -j"$(nproc)" >/dev/null

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
work="$build/fuzz-work"
findings_dir="$build/fuzz-findings"
mkdir -p "$work" "$findings_dir"

failed=0
rows=()
for t in "${targets[@]}"; do
        bin="$build/tests/fuzz/fuzz-$t-libfuzzer"
        corpus="$work/$t.corpus"
        arts="$work/$t.artifacts"
        log="$work/$t.log"
        rm -rf "$corpus" "$arts"
        mkdir -p "$corpus" "$arts"
        if [ -n "$runs" ]; then
                echo "fuzz.sh: $t for $runs executions" >&2
                limit=(-runs="$runs")
        else
                echo "fuzz.sh: $t for ${time_s} s" >&2
                limit=(-max_total_time="$time_s")
        fi
        # Per-target libFuzzer options. result: an input with flags 2 or 3 makes a 1 MiB round trip
        # through the queue (about 100 ms of CPU under the instrumentation, the others under 1 ms)
        # and the entropic schedule kept picking them; scaled by execution time it picks the cheap
        # ones more (about 16 times the executions per CPU second, docs/RELIABILITY.md).
        extra=()
        case "$t" in
        result) extra=(-entropic_scale_per_exec_time=1) ;;
        esac
        [ -z "$fork" ] || extra+=(-fork="$fork")
        rc=0
        start=$(date +%s)
        "$bin" "${limit[@]}" ${extra[@]+"${extra[@]}"} -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
                -artifact_prefix="$arts/" "$corpus" "tests/fuzz/corpus/$t" >"$log" 2>&1 || rc=$?

        secs=$(($(date +%s) - start))
        [ "$secs" -gt 0 ] || secs=1
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
        # -fork: the parent prints no final stats; its status lines are "#N: cov: .. ft: .. corp: ..".
        last=$(grep -E '^#[0-9]+' "$log" | grep -E ' cov: ' | tail -n1 || true)
        if [ -n "$fork" ] && [ -z "$execs" ]; then
                execs=$(sed -n 's/^INFO: fuzzed for \([0-9]*\) iterations.*/\1/p' "$log" | tail -n1)
                [ -n "$execs" ] || execs=$(sed -n 's/^#\([0-9]*\):.*/\1/p' <<<"$last")
        fi
        cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
        ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
        corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
        found=()
        for a in "$arts"/*; do
                [ -f "$a" ] || continue
                kind=$(basename "$a" | cut -d- -f1)
                sum=$(sha1sum "$a" | cut -c1-16)
                mkdir -p "$findings_dir/$t"
                cp "$a" "$findings_dir/$t/"
                cp "$a" "tests/fuzz/corpus/$t/regress-$kind-$sum"
                found+=("$kind:tests/fuzz/corpus/$t/regress-$kind-$sum")
        done
        result=ok
        if [ ${#found[@]} -gt 0 ]; then
                result="${found[*]}"
        elif [ "$rc" -ne 0 ] || [ -z "$execs" ]; then
                result="exit $rc (see $log)"
        fi
        [ "$result" = ok ] || failed=1
        rows+=("$(printf '%-16s %12s %7s %9s %7s %7s %9s  %s' "$t" "${execs:--}" "$secs" "$((${execs:-0} / secs))" \
                "${cov:--}" "${ft:--}" "${corp:--}" "$result")")
done

echo
if [ -n "$runs" ]; then limit_text="$runs executions"; else limit_text="$time_s s"; fi
printf 'libFuzzer, ASan+UBSan, %s per target (%s)\n' "$limit_text" \
        "$(clang --version | head -n1)"
printf '%-16s %12s %7s %9s %7s %7s %9s  %s\n' target executions seconds exec/s cov ft corpus findings
for r in "${rows[@]}"; do
        echo "$r"
done
if [ "$failed" -ne 0 ]; then
        echo "fuzz.sh: findings above; the inputs were added to tests/fuzz/corpus/<target>/ (logs in $work)" >&2
        exit 1
fi
