#!/bin/bash
# The throughput benchmarks in one command (not a test), as root from the top of the checkout:
#
#   bench/bench-all.sh
#
# Builds build-bench (RelWithDebInfo, no sanitizers, no tests), then runs bench/bench-bus.sh in a
# fresh sandbox once per bus broker (BENCH_BROKERS, default "dbus-daemon dbus-broker") and prints
# one table: per K the bare bus ceiling, Submit to one and to four agents (tasks/s, p50/p99 of
# Submit -> TaskCompleted, the share of the bare bus), the file door, the process-per-task
# baseline, idle memory, and each issue-18 target met or not. BENCH_N, BENCH_ROUNDS, BENCH_K and
# BENCH_SRV pass through (bench/bench-bus.sh); BENCH_LOGS=DIR keeps the raw output.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
B=${BENCH_BUILD:-$src/build-bench}
BROKERS=${BENCH_BROKERS:-dbus-daemon dbus-broker}
L=${BENCH_LOGS:-$(mktemp -d)}
mkdir -p "$L"

cmake -S "$src" -B "$B" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCON_SANITIZE=OFF -DBUILD_TESTING=OFF >"$L/cmake.log"
cmake --build "$B" -j2 >>"$L/cmake.log" 2>&1 || { tail -20 "$L/cmake.log" >&2; exit 1; }
load0=$(cut -d' ' -f1-3 /proc/loadavg)
for br in $BROKERS; do
        echo "bench-all: $br ..." >&2
        CON_BUS_BROKER=$br "$src/tests/sandbox/con-sandbox" --build "$B" -- "$src/bench/bench-bus.sh" "$B" \
                >"$L/$br.log" 2>"$L/$br.err" || { tail -20 "$L/$br.err" >&2; exit 1; }
done
load1=$(cut -d' ' -f1-3 /proc/loadavg)

# v FILE KIND K KEY: a value of a ROW line
v() { awk -v kind="$2" -v k="$3" -v key="$4" '$1 == "ROW" && $2 == kind && $3 == k {
        for (i = 4; i <= NF; i++) { split($i, a, "="); if (a[1] == key) print a[2] } }' "$1"; }

first=${BROKERS%% *}
info=$(grep -m1 '^INFO' "$L/$first.log")
echo "ConspiracyOS throughput, $(date -u +%F) $(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo '?')," \
        "$(nproc) CPUs, load $load0 -> $load1"
echo "/srv: $(sed -n 's/.*srv_fs=\([^ ]*\).*/\1/p' <<<"$info") on $(sed -n 's/.*disk_fs=\([^ ]*\).*/\1/p' <<<"$info");" \
        "every task in the agent's journal (fdatasync) before its acknowledgement;" \
        "medians of $(grep -c '^RUN bare' "$L/$first.log" | awk -v k="$(wc -w <<<"${BENCH_K:-1 16 64 256}")" '{print $1 / k}') rounds" \
        "of ${BENCH_N:-5000} tasks"
printf '%-4s %-16s' K what
for br in $BROKERS; do printf ' | %-11s %9s %8s %8s %6s' "$br" tasks/s p50_ms p99_ms %bare; done
echo
for k in ${BENCH_K:-1 16 64 256}; do
        for kind in bare submit1 submit4; do
                case $kind in bare) what="bare bus calls" ;; submit1) what="Submit, 1 agent" ;; *) what="Submit, 4 agents" ;; esac
                printf '%-4s %-16s' "$k" "$what"
                for br in $BROKERS; do
                        r=$(v "$L/$br.log" "$kind" "$k" rate) b=$(v "$L/$br.log" bare "$k" rate)
                        printf ' | %-11s %9s %8s %8s %6s' "" "$r" "$(v "$L/$br.log" "$kind" "$k" p50)" \
                                "$(v "$L/$br.log" "$kind" "$k" p99)" "$(awk -v r="$r" -v b="$b" 'BEGIN {printf "%.0f%%", 100 * r / b}')"
                done
                echo
        done
done
for kind in filedrop spawn; do
        case $kind in filedrop) what="file drop -> response (router + agent)" ;; *) what="process per task (the original's design)" ;; esac
        printf '%-21s' "$what"
        for br in $BROKERS; do printf ' | %-11s %9s (%s)' "$br" "$(v "$L/$br.log" $kind - rate)" "$(v "$L/$br.log" $kind - rate_range)"; done
        echo
done
for br in $BROKERS; do
        f=$L/$br.log
        fd=$(v "$f" filedrop - rate) sp=$(v "$f" spawn - rate) s64=$(v "$f" submit1 64 rate) b64=$(v "$f" bare 64 rate)
        echo "$br: fabric / process per task: file drop $(awk -v a="$fd" -v b="$sp" 'BEGIN {printf "%.1fx", a / b}')," \
                "Submit K=64 $(awk -v a="$s64" -v b="$sp" 'BEGIN {printf "%.1fx", a / b}');" \
                "idle agent private dirty $(awk '$1 == "ROW" && $2 ~ /^idle-/ {split($4, a, "="); printf "%s%s", s, a[2]; s = "/"}' "$f") KiB"
        met() { awk -v a="$1" -v b="$2" -v op="$3" 'BEGIN {ok = op == ">=" ? a + 0 >= b + 0 : a + 0 <= b + 0; print ok ? "met" : "NOT met"}'; }
        p99_1=$(v "$f" submit1 1 p99) p99_64=$(v "$f" submit1 64 p99)
        pd=$(awk '$1 == "ROW" && $2 ~ /^idle-/ {split($4, a, "="); if (a[2] > m) m = a[2]} END {print m}' "$f")
        echo "$br targets: file drop >= 5000/s: $fd $(met "$fd" 5000 '>=');" \
                "Submit K=64 >= 5000/s: $s64 $(met "$s64" 5000 '>=');" \
                "K=64 >= 50% of bare: $(awk -v a="$s64" -v b="$b64" 'BEGIN {printf "%.0f%%", 100 * a / b}')" \
                "$(met "$(awk -v a="$s64" -v b="$b64" 'BEGIN {print 100 * a / b}')" 50 '>=');" \
                "p99 K=1 <= 1 ms: $p99_1 $(met "$p99_1" 1 '<=');" \
                "p99 K=64 <= 10 ms: $p99_64 $(met "$p99_64" 10 '<=');" \
                "idle private dirty <= 1024 KiB: ${pd:-not measured} $([ -z "$pd" ] || met "$pd" 1024 '<=')"
done
echo "raw output: $L"
