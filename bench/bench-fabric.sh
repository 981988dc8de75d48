#!/bin/bash
# Fabric benchmark (not a test). Run from the source tree as root with a release build:
#
#   cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release && cmake --build build-release -j2
#   tests/sandbox/con-sandbox --build build-release -- bench/bench-fabric.sh build-release
#
# Measures inside the sandbox (fresh system bus, project installed in /usr):
#   (a) durable file drop -> completed throughput with the no-op runtime (/ping), tasks/s
#   (b) Submit -> TaskCompleted latency, p50/p99 (sequential)
#   (c) idle RSS of each running agent service
#   (d) the original's design side by side: one process spawned per task (fork+exec of a tiny
#       worker that reads the file, writes the response with fsync and moves the task)
# Prints one line per number; copy them into docs/PERFORMANCE.md.
set -euo pipefail
BUILD=${1:?usage: bench-fabric.sh BUILD_DIR}
N=${BENCH_N:-5000}
LAT_N=${BENCH_LAT_N:-1000}
AGENT_DIR=/srv/con/agents/concierge

con bootstrap --profile default >/dev/null
con up >/dev/null
con-send /ping >/dev/null     # activation out of the way

echo "== (a) file drop -> completed, $N tasks"
before=$(find $AGENT_DIR/outbox -name 'bench-*.response' | wc -l)
t0=$(date +%s.%N)
for i in $(seq -w 1 "$N"); do printf '/ping\n' >"/srv/con/inbox/bench-$i.task"; done
t1=$(date +%s.%N)
while (( $(find $AGENT_DIR/outbox -name 'bench-*.response' | wc -l) - before < N )); do sleep 0.05; done
t2=$(date +%s.%N)
echo "drop: $(echo "$N / ($t1 - $t0)" | bc -l | xargs printf '%.0f') files/s written"
echo "throughput: $(echo "$N / ($t2 - $t0)" | bc -l | xargs printf '%.0f') tasks/s (drop to last response)"

echo "== (b) Submit -> TaskCompleted latency"
"$BUILD/bench/bench-latency" concierge "$LAT_N" /ping

echo "== (c) idle RSS"
sleep 2
for name in $(busctl list --no-legend | awk '$1 ~ /^org\.conspiracy\./ {print $1}'); do
        pid=$(busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus \
                GetConnectionUnixProcessID s "$name" 2>/dev/null | awk '{print $2}') || continue
        [ -n "$pid" ] || continue   # an on-demand agent that exited meanwhile
        # VmRSS counts shared library pages (libc, libsystemd: ~3 MiB shared by every service);
        # Pss and Private_Dirty are what this one process adds.
        echo "$name pid $pid $(grep VmRSS /proc/"$pid"/status)" \
                "$(awk '/^(Pss|Private_Dirty):/ {printf "%s %s kB ", $1, $2}' /proc/"$pid"/smaps_rollup)"
done

echo "== (d) baseline: one process per task"
B=$(mktemp -d /var/tmp/bench-spawn.XXXXXX)
"$BUILD/bench/bench-spawn-baseline" run "$B" "$N"
rm -rf "$B"
con down >/dev/null
