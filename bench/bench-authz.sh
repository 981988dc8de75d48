#!/bin/bash
# Authorization benchmark (not a test): authorized Submit throughput with the polkit decision cache
# vs the same path with authorization off (con-agentd --no-authz), side by side in one run, plus the
# first-call latency (uid lookup + polkit CheckAuthorization on a new connection). Release build:
#
#   cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release && cmake --build build-release -j2
#   tests/sandbox/con-sandbox --build build-release -- bench/bench-authz.sh build-release
#
# The caller is a member of the submitters group (polkit rule: group con -> concierge task) on one
# connection (tests/integration/agent-caller), BENCH_N Submits of /ping, BENCH_P in flight.
set -euo pipefail
BUILD=${1:?usage: bench-authz.sh BUILD_DIR}
N=${BENCH_N:-20000}
P=${BENCH_P:-64}
ROUNDS=${BENCH_ROUNDS:-3}
C=org.conspiracy.Concierge
caller=/usr/local/libexec/con-test/agent-caller
install -D -m 0755 "$BUILD/tests/integration/agent-caller" "$caller"

con bootstrap --profile default >/dev/null
id -u benchuser >/dev/null 2>&1 || useradd --no-create-home --shell /usr/sbin/nologin benchuser
gpasswd -a benchuser con >/dev/null
con up >/dev/null
con-send /ping >/dev/null # activation and polkitd out of the way
exe=$(sed -n 's/^Exec=\([^ ]*\).*/\1/p' /usr/share/dbus-1/system-services/$C.service)

agent_pid() {
        busctl --system call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus \
                GetConnectionUnixProcessID s $C 2>/dev/null | awk '{print $2}'
}
stop_agent() {
        local pid
        pid=$(agent_pid) || true
        [ -n "$pid" ] || return 0
        kill -TERM "$pid"
        while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
}
start_agent() { # start_agent [--no-authz]
        runuser -u a-concierge -- "$exe" --agent concierge "$@" 2>/dev/null &
        for _ in $(seq 100); do [ -n "$(agent_pid)" ] && return 0; sleep 0.05; done
        echo "con-agentd did not start" >&2
        exit 1
}
run() { # run LABEL [--no-authz]
        local label=$1
        shift
        stop_agent
        start_agent "$@"
        out=$(printf 'bench 1 1 /ping\nbench %s %s /ping\n' "$N" "$P" | runuser -u benchuser -- "$caller" $C)
        first=$(sed -n '1s/.*first_ms=\([0-9.]*\).*/\1/p' <<<"$out")
        rate=$(sed -n '2s/.*per_s=\([0-9]*\).*/\1/p' <<<"$out")
        ok=$(sed -n '2s/.*ok=\([0-9]*\).*/\1/p' <<<"$out")
        echo "BENCH-AUTHZ $label first_call_ms=$first submits_per_s=$rate ok=$ok/$N"
        eval "${label//-/_}_rates+=\" $rate\""
}

authz_rates="" no_authz_rates=""
run warmup # journal, page cache and polkitd warm; not counted
warmup_rates=""
for _ in $(seq "$ROUNDS"); do
        run authz
        run no-authz --no-authz
done
stop_agent
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
a=$(median <<<"$authz_rates")
b=$(median <<<"$no_authz_rates")
echo "BENCH-AUTHZ median authz=$a no_authz=$b ratio=$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.0f%%", 100 * a / b}')"
con down >/dev/null || true
