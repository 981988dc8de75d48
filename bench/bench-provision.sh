#!/bin/bash
# Provisioning benchmark (not a test): con bootstrap of N agents (default 1,000) into a fresh
# sandbox, then measures the first run, a repeated run (nothing to change), the generated policy
# sizes, `con policy check`, and, with the fabric up, a file drop to the last agent (router ->
# D-Bus activation of that agent -> answered). Release build, inside the sandbox:
#
#   cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF
#   cmake --build build-rel -j2
#   tests/sandbox/con-sandbox --build build-rel -- "$PWD/bench/bench-provision.sh" 1000 "$PWD/build-rel"
#
# With the build folder as second argument (its bench/bench-bus), it also measures Submit ->
# TaskCompleted latency, one task in flight, to the first and to the last worker (after one task
# has started each), after BENCH_SETTLE seconds (default 15) for the contract service's first
# sweep. The issue's comparison is with the 2-agent case: the same command with N=1
# (the concierge and w0001).
#
# The agents are w0001..wNNNN (workers, on-demand) plus the concierge; their users come from the
# agent UID block (system.agent_uid_min..agent_uid_max, widened when N > 999).
set -euo pipefail
N=${1:-1000}
BUILD=${2:-}
SUBMITS=${BENCH_SUBMITS:-500}
[ -z "$BUILD" ] || [ -x "$BUILD/bench/bench-bus" ] || { echo "bench-provision: no $BUILD/bench/bench-bus" >&2; exit 2; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

ms() { # ms CMD...: runs CMD (output dropped), prints its wall time in milliseconds
        local a b
        a=$(date +%s%N)
        "$@" >/dev/null 2>>"$T/stderr"
        b=$(date +%s%N)
        echo $(((b - a) / 1000000))
}

{
        printf 'system:\n  name: bench\n  agent_uid_min: 60000\n  agent_uid_max: %d\n' $((60000 + N + 99))
        # The default contracts run for real: a loaded machine must not halt the agents.
        printf 'contracts:\n  system:\n    max_load_factor: 1000\n    disk_min_free_pct: 0\n    mem_min_free_pct: 0\n'
        printf 'agents:\n  - name: concierge\n    mode: on-demand\n'
        for i in $(seq 1 "$N"); do
                printf '  - name: w%04d\n    tier: worker\n    mode: on-demand\n' "$i"
        done
} >"$T/con.yaml"

echo "agents: $((N + 1)) (concierge + $N workers)"
first=$(ms con bootstrap --config "$T/con.yaml")
echo "bootstrap, first run:    ${first} ms"
users=$(getent passwd | grep -c '^a-')
echo "agent users created:     $users (uids $(id -u a-w0001)..$(id -u "$(printf 'a-w%04d' "$N")"))"
again=$(ms con bootstrap --config "$T/con.yaml")
echo "bootstrap, repeated:     ${again} ms ($(con bootstrap --config "$T/con.yaml" 2>/dev/null | tail -n 1))"
echo "policy sizes:            bus policy $(stat -c %s /etc/dbus-1/system.d/org.conspiracy.conf) bytes," \
        "polkit rules $(stat -c %s /etc/polkit-1/rules.d/50-conspiracy.rules) bytes," \
        "$(find /usr/share/dbus-1/system-services /usr/local/share/dbus-1/system-services -name 'org.conspiracy.*' \
                2>/dev/null | wc -l) activation files"
check=$(ms con policy check)
echo "con policy check:        ${check} ms ($(con policy check --json | head -c 60)...)"

con up >/dev/null
last=$(printf 'w%04d' "$N")
a=$(date +%s%N)
echo /ping >"/srv/con/agents/$last/inbox/bench.task"
for _ in $(seq 600); do
        compgen -G "/srv/con/agents/$last/outbox/*.response" >/dev/null && break
        sleep 0.05
done
b=$(date +%s%N)
if compgen -G "/srv/con/agents/$last/outbox/*.response" >/dev/null; then
        echo "file drop to $last:      $(((b - a) / 1000000)) ms to the response (agent started by D-Bus activation)"
else
        echo "file drop to $last:      no response within 30 s"
fi
if [ -n "$BUILD" ]; then
        # The contract service's first sweep after con up (a drift scan and a policy check of
        # every agent: seconds at 1,000 agents) would share the two cores with the first figure.
        sleep "${BENCH_SETTLE:-15}"
        for w in w0001 "$last"; do
                "$BUILD/bench/bench-bus" submit 1 4 /ping "$w" >/dev/null # its activation out of the way
                out=$("$BUILD/bench/bench-bus" submit 1 "$SUBMITS" /ping "$w")
                p50=$(sed -n 's/.* p50_ms=\([^ ]*\).*/\1/p' <<<"$out")
                p99=$(sed -n 's/.* p99_ms=\([^ ]*\).*/\1/p' <<<"$out")
                echo "Submit to $w, K=1:    p50 ${p50} ms, p99 ${p99} ms ($SUBMITS tasks, Submit -> TaskCompleted)"
        done
fi
echo "router RSS:              $(ps -o rss= -C con-routerd | head -n 1) KiB;" \
        "dbus-daemon RSS: $(ps -o rss= -C dbus-daemon | head -n 1) KiB"
con down >/dev/null
