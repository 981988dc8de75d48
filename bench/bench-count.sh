#!/bin/bash
# Per-task cost of both doors (not a test): syscalls of the agents, the router and the bus broker
# (strace -c -f, attached from the host: the sandbox has no strace) and bus messages by type and
# member (dbus-monitor inside), for BENCH_N tasks (default 3000) through the bus door (Submit,
# BENCH_COUNT_K in flight, default 64, to the concierge) and through the file door. As root on
# the host, release build:
#
#   bench/bench-count.sh build-bench                 # dbus-daemon
#   CON_BUS_BROKER=dbus-broker bench/bench-count.sh build-bench
#
# Prints "SYS PHASE PROCESS SYSCALL CALLS PER_TASK USEC_PER_TASK" (the last: time in the syscall as
# strace -c measures it, strace's own overhead included) and "MSG PHASE COUNT TYPE MEMBER" lines.
set -euo pipefail
BUILD=$(realpath "${1:?usage: bench-count.sh BUILD_DIR}")
N=${BENCH_N:-3000}
here=$(cd "$(dirname "$0")" && pwd)
command -v strace >/dev/null || { echo "bench-count: needs strace on the host" >&2; exit 2; }
A=$(mktemp -d)
trap 'rm -rf "$A"; [ -z "${sb:-}" ] || kill "$sb" 2>/dev/null || true' EXIT

BENCH_COUNT=1 BENCH_N=$N "$here/../tests/sandbox/con-sandbox" --build "$BUILD" --artifacts "$A" -- \
        "$here/bench-bus.sh" "$BUILD" >"$A/out" 2>&1 &
sb=$!

# The sandbox's PID namespace: the one of the unshare'd bash (PID 1 inside).
ns=""
for _ in $(seq 200); do
        u=$(pgrep -P "$(pgrep -P "$sb" -x unshare | head -n 1)" 2>/dev/null | head -n 1) || true
        [ -n "${u:-}" ] && ns=$(readlink "/proc/$u/ns/pid") && break
        sleep 0.1
done
[ -n "$ns" ] || { cat "$A/out" >&2; echo "bench-count: sandbox did not start" >&2; exit 1; }

host_pid() { # host_pid INNER: the host PID of the sandbox's process INNER
        local d
        for d in /proc/[0-9]*; do
                [ "$(readlink "$d/ns/pid" 2>/dev/null)" = "$ns" ] || continue
                if awk -v p="$1" '/^NSpid:/ {exit !($NF == p)}' "$d/status" 2>/dev/null; then
                        echo "${d#/proc/}"
                        return 0
                fi
        done
        return 1
}

for phase in busdoor filedoor; do
        while [ ! -e "$A/ready-$phase" ]; do
                kill -0 "$sb" 2>/dev/null || { cat "$A/out" >&2; exit 1; }
                sleep 0.1
        done
        straces=()
        while read -r inner name; do
                [ -n "$inner" ] || continue
                hp=$(host_pid "$inner") || continue
                strace -c -f -p "$hp" -o "$A/strace-$phase-$name" 2>/dev/null &
                straces+=($!)
        done <"$A/pids-$phase"
        sleep 1
        touch "$A/go-$phase"
        while [ ! -e "$A/done-$phase" ]; do sleep 0.1; done
        kill -INT "${straces[@]}"
        wait "${straces[@]}" 2>/dev/null || true
        touch "$A/stopped-$phase"
        for f in "$A"/strace-"$phase"-*; do
                name=${f##*/strace-$phase-}
                awk -v ph="$phase" -v pr="$name" -v n="$N" '
                        $1 ~ /^[0-9.]+$/ && NF >= 5 {sc = $NF; c = $4; if (c == 0) next;
                                printf "SYS %s %s %s %d %.2f %.2f\n", ph, pr, sc, c, c / n, $2 * 1e6 / n}' "$f"
        done
done
wait "$sb" || { cat "$A/out" >&2; exit 1; }
sb=""
grep '^MSG\|^INFO' "$A/out"
