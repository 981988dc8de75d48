#!/bin/bash
# Authorization benchmark (not a test): authorized Submit throughput with the polkit decision cache
# vs the same path with authorization off (con-agentd --no-authz), side by side in one run, plus the
# first-call latency (uid lookup + polkit CheckAuthorization on a new connection). Release build:
#
#   cmake -S . -B build-authz-rel -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF
#   cmake --build build-authz-rel -j2
#   tests/sandbox/con-sandbox --build build-authz-rel -- bench/bench-authz.sh build-authz-rel
#
# The caller is a member of the submitters group (polkit rule: group con -> concierge task) on one
# connection (bench-authz-caller = tests/integration/agent-caller), BENCH_N Submits of /ping,
# BENCH_P in flight. BENCH_ROUNDS (default 5, at least 5) rounds, each one run with authorization
# and one with --no-authz back to back, the order alternating from round to round; the ratio is
# taken per round (both runs saw the same machine load) and the median of the ratios is reported
# with their range, so the noise of the shared machine is visible.
set -euo pipefail
BUILD=${1:?usage: bench-authz.sh BUILD_DIR}
N=${BENCH_N:-20000}
P=${BENCH_P:-64}
ROUNDS=${BENCH_ROUNDS:-5}
[ "$ROUNDS" -ge 5 ] || { echo "BENCH_ROUNDS must be at least 5" >&2; exit 2; }
C=org.conspiracy.Concierge
caller=/usr/local/libexec/con-test/agent-caller
src=$BUILD/bench/bench-authz-caller
[ -x "$src" ] || src=$BUILD/tests/integration/agent-caller
install -D -m 0755 "$src" "$caller"

con bootstrap --profile default >/dev/null
id -u benchuser >/dev/null 2>&1 || useradd --no-create-home --shell /usr/sbin/nologin benchuser
gpasswd -a benchuser con >/dev/null
con up >/dev/null
con-send /ping >/dev/null # activation and polkitd out of the way
exe=$(sed -n 's/^Exec=\([^ ]*\).*/\1/p' /usr/local/share/dbus-1/system-services/$C.service)

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
        "$exe" --agent concierge "$@" 2>/dev/null & # as root: sessions run as a-concierge
        for _ in $(seq 100); do [ -n "$(agent_pid)" ] && return 0; sleep 0.05; done
        echo "con-agentd did not start" >&2
        exit 1
}
# Wait until the agent has answered every accepted task (the Submits are accepted faster than the
# /ping answers are written): otherwise the next run, after a restart, pays the previous run's
# backlog, and whichever variant runs second in a round is measured against a busy agent.
drain() {
        local q s
        for _ in $(seq 1200); do
                q=$(busctl --system get-property $C /org/conspiracy/Agent org.conspiracy.Agent1 QueueLength)
                s=$(busctl --system get-property $C /org/conspiracy/Agent org.conspiracy.Agent1 State)
                [ "$q" = "u 0" ] && [ "$s" = 's "idle"' ] && return 0
                sleep 0.5
        done
        echo "the concierge did not drain its queue within 10 minutes ($q, $s)" >&2
        exit 1
}
run() { # run LABEL [--no-authz]: sets $rate
        local label=$1 out first ok
        shift
        stop_agent
        # Same starting state for every run: no finished tasks to replay or to share directories with
        # (otherwise every run is slower than the one before, whatever its variant).
        find /srv/con/agents/concierge/outbox /srv/con/agents/concierge/processed -mindepth 1 -delete
        find /srv/con/agents/concierge -maxdepth 3 -name journal -type f -delete
        start_agent "$@"
        out=$(printf 'bench 1 1 /ping\nbench %s %s /ping\n' "$N" "$P" | runuser -u benchuser -- "$caller" $C)
        first=$(sed -n '1s/.*first_ms=\([0-9.]*\).*/\1/p' <<<"$out")
        rate=$(sed -n '2s/.*per_s=\([0-9]*\).*/\1/p' <<<"$out")
        ok=$(sed -n '2s/.*ok=\([0-9]*\).*/\1/p' <<<"$out")
        echo "BENCH-AUTHZ $label first_call_ms=$first submits_per_s=$rate ok=$ok/$N"
        [ "$ok" = "$N" ] || { echo "BENCH-AUTHZ $label: only $ok of $N Submits succeeded" >&2; exit 1; }
        drain
        if [ "$label" = authz ]; then firsts+=" $first"; else firsts_off+=" $first"; fi
}

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
range() { tr ' ' '\n' | grep . | sort -g | awk 'NR==1 {lo=$1} {hi=$1} END {print lo "-" hi}'; }
run warmup # journal, page cache and polkitd warm; not counted
firsts="" firsts_off=""
authz_rates="" no_authz_rates="" ratios=""
for i in $(seq "$ROUNDS"); do
        if [ $((i % 2)) = 1 ]; then
                run authz && a=$rate
                run no-authz --no-authz && b=$rate
        else
                run no-authz --no-authz && b=$rate
                run authz && a=$rate
        fi
        r=$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.1f", 100 * a / b}')
        echo "BENCH-AUTHZ round $i authz=$a no_authz=$b ratio=$r%"
        authz_rates+=" $a" no_authz_rates+=" $b" ratios+=" $r"
done
stop_agent
echo "BENCH-AUTHZ rounds=$ROUNDS N=$N P=$P" \
        "authz median=$(median <<<"$authz_rates") range=$(range <<<"$authz_rates")" \
        "no_authz median=$(median <<<"$no_authz_rates") range=$(range <<<"$no_authz_rates")"
echo "BENCH-AUTHZ first_call_ms (new connection, agent just started, polkitd warm)" \
        "authz median=$(median <<<"$firsts") range=$(range <<<"$firsts")" \
        "no_authz median=$(median <<<"$firsts_off") range=$(range <<<"$firsts_off")"
m=$(median <<<"$ratios")
echo "BENCH-AUTHZ ratio median=$m% range=$(range <<<"$ratios")% target>=80%" \
        "$(awk -v m="$m" 'BEGIN {print (m >= 80 ? "met" : "NOT met")}')"
con down >/dev/null || true
