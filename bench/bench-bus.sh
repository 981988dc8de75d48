#!/bin/bash
# Bus-door and file-door throughput (not a test), inside the sandbox with a release build; normally
# run through bench/bench-all.sh, which runs it once per bus broker and prints one table:
#
#   tests/sandbox/con-sandbox --build build-bench -- "$PWD/bench/bench-bus.sh" "$PWD/build-bench"
#
# Fabric: the concierge and three workers (on-demand, no-op runtime: the built-in /ping answer).
# For each K in BENCH_K (default 1 16 64 256) and BENCH_ROUNDS rounds (default 3), each run
# BENCH_N tasks (default 5000):
#   bare    bench-bus calls: no-op method calls to a trivial sd-bus service, K in flight (the bus's
#           own ceiling on this machine)
#   submit1 bench-bus submit to the concierge, K tasks in flight from Submit to TaskCompleted;
#           Submit returns once the task is in the agent's journal (fdatasync)
#   submit4 the same, round-robin over the four agents
# Then the file door: BENCH_N files dropped into /srv/con/inbox while the router is stopped
# (SIGSTOP), timed from SIGCONT to the last response in the concierge's outbox; and the
# original's one-process-per-task design (bench-spawn-baseline) on the same disk.
# Every run starts with the agents stopped and their journals removed (nothing to replay; the task
# files of earlier runs stay), each agent then started by one warm-up task.
# BENCH_SRV=ext4-journal puts /srv/con on a fresh ext4 file system with a journal (a loop file on
# the same disk), to tell the file system's cost from the fabric's.
# Prints "ROW name k value..." lines (medians of the rounds, with the range) for bench-all.sh.
set -euo pipefail
BUILD=${1:?usage: bench-bus.sh BUILD_DIR}
N=${BENCH_N:-5000}
ROUNDS=${BENCH_ROUNDS:-3}
KS=${BENCH_K:-1 16 64 256}
BB=$BUILD/bench/bench-bus
AGENTS="concierge w1 w2 w3"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

if [ "${BENCH_SRV:-}" = ext4-journal ]; then
        truncate -s 4G /var/tmp/bench-srv.img
        mkfs.ext4 -q -F -O has_journal /var/tmp/bench-srv.img
        mkdir -p /srv/con
        mount -o loop /var/tmp/bench-srv.img /srv/con
fi
fs=$(stat -f -c %T /srv/con 2>/dev/null || stat -f -c %T /srv)
[ "${BENCH_SRV:-}" != ext4-journal ] || fs="ext4-journal-loop"
echo "INFO broker=${CON_SANDBOX_BUS:-dbus-daemon} srv_fs=$fs disk_fs=${CON_SANDBOX_DISK_FS:-?}" \
        "load=$(cut -d' ' -f1-3 /proc/loadavg) cpus=$(nproc)"

{
        printf 'system:\n  name: bench\n'
        # The default contracts run for real: a loaded machine must not halt the agents.
        printf 'contracts:\n  system:\n    max_load_factor: 1000\n    disk_min_free_pct: 0\n    mem_min_free_pct: 0\n'
        printf 'agents:\n  - name: concierge\n    mode: on-demand\n'
        for a in w1 w2 w3; do printf '  - name: %s\n    tier: worker\n    mode: on-demand\n' "$a"; done
} >"$T/con.yaml"
con bootstrap --config "$T/con.yaml" >/dev/null
con up >/dev/null

# The bare service: root may own org.conspiracy.Bench, anybody may call it (the shape of the
# agents' rules in org.conspiracy.conf).
cat >/etc/dbus-1/system.d/org.conspiracy.Bench.conf <<'EOF'
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy user="root"><allow own="org.conspiracy.Bench"/></policy>
  <policy context="default"><allow send_destination="org.conspiracy.Bench"/></policy>
</busconfig>
EOF
busctl --system call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig >/dev/null
"$BB" serve org.conspiracy.Bench &
serve_pid=$!
for _ in $(seq 100); do busctl --system status org.conspiracy.Bench >/dev/null 2>&1 && break; sleep 0.05; done

pid_of() {
        busctl --system call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus \
                GetConnectionUnixProcessID s "$1" 2>/dev/null | awk '{print $2}'
}
bus_name() { echo "org.conspiracy.$(tr '[:lower:]' '[:upper:]' <<<"${1:0:1}")${1:1}"; }
reset_agents() {
        local a pid
        for a in $AGENTS; do
                pid=$(pid_of "$(bus_name "$a")") || true
                if [ -n "$pid" ]; then
                        kill -TERM "$pid"
                        while kill -0 "$pid" 2>/dev/null; do sleep 0.02; done
                fi
                # Only the journal goes (nothing to replay): the task files stay until the end. On
                # ext4 a deleted inode is skipped by the allocator for a while (recently_deleted),
                # so deleting thousands of files would slow the next run's creates.
                rm -f /srv/con/agents/$a/queue/journal
        done
        sync
        "$BB" submit 4 4 /ping $AGENTS >/dev/null # activation out of the way
}
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p"; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
range() { tr ' ' '\n' | grep . | sort -g | awk 'NR==1 {lo=$1} {hi=$1} END {print lo "-" hi}'; }

# BENCH_COUNT=1 (bench/bench-count.sh, run on the host, attaches strace to the services): one bus
# door run (BENCH_N Submits, BENCH_COUNT_K in flight, default 64, to the concierge) and one file
# door run (BENCH_N files), each announced in $CON_SANDBOX_ARTIFACTS/ready-PHASE and started by go-PHASE, with dbus-monitor
# counting the messages on the bus by type and member.
if [ "${BENCH_COUNT:-0}" = 1 ]; then
        A=${CON_SANDBOX_ARTIFACTS:?BENCH_COUNT needs --artifacts}
        kill "$serve_pid"
        count_phase() { # count_phase NAME CMD...
                local name=$1
                shift
                reset_agents
                dbus-monitor --system --profile >"$T/monitor" 2>/dev/null &
                local mon=$!
                sleep 0.5
                for a in $AGENTS; do echo "$(pid_of "$(bus_name "$a")") con-agentd-$a"; done >"$A/pids-$name"
                echo "$(pid_of org.conspiracy.Router) con-routerd" >>"$A/pids-$name"
                # The broker itself (dbus-broker runs under its launcher, whose pid con-sandbox keeps).
                echo "$(pgrep -x dbus-broker | head -n 1 || true)$(pgrep -x dbus-daemon | head -n 1 || true) bus" >>"$A/pids-$name"
                echo ready >"$A/ready-$name"
                while [ ! -e "$A/go-$name" ]; do sleep 0.05; done
                "$@"
                sleep 0.5
                echo done >"$A/done-$name"
                while [ ! -e "$A/stopped-$name" ]; do sleep 0.05; done
                kill "$mon"
                # --profile: type, timestamp, serial, sender, destination, path, interface, member
                awk '$1 != "#" {print $1, ($1 == "sig" || $1 == "mc") ? $NF : ""}' "$T/monitor" | sort | uniq -c |
                        sed "s/^/MSG $name /"
        }
        filedoor() {
                local router
                router=$(pid_of org.conspiracy.Router)
                kill -STOP "$router"
                for j in $(seq -w 1 "$N"); do printf '/ping\n' >"/srv/con/inbox/count-$j.task"; done
                kill -CONT "$router"
                while (($(find /srv/con/agents/concierge/outbox -name "count-*.response" | wc -l) < N)); do sleep 0.02; done
        }
        count_phase busdoor "$BB" submit "${BENCH_COUNT_K:-64}" "$N" /ping concierge
        count_phase filedoor filedoor
        con down >/dev/null || true
        exit 0
fi

# run NAME K CMD...: ROUNDS runs; prints the ROW line
declare -A rate p50 p99 ack50 ack99
for k in $KS; do
        for v in bare submit1 submit4; do rate[$v]="" p50[$v]="" p99[$v]="" ack50[$v]="" ack99[$v]=""; done
        for i in $(seq "$ROUNDS"); do
                for v in bare submit1 submit4; do
                        # A failed run (a request refused) is reported and the others go on.
                        case $v in
                        bare) out=$("$BB" calls org.conspiracy.Bench "$k" "$N") || true ;;
                        submit1) reset_agents; out=$("$BB" submit "$k" "$N" /ping concierge) || true ;;
                        submit4) reset_agents; out=$("$BB" submit "$k" "$N" /ping $AGENTS) || true ;;
                        esac
                        echo "RUN $v round=$i $out"
                        rate[$v]+=" $(field per_s <<<"$out")"
                        p50[$v]+=" $(field p50_ms <<<"$out")"
                        p99[$v]+=" $(field p99_ms <<<"$out")"
                        ack50[$v]+=" $(field ack_p50_ms <<<"$out")"
                        ack99[$v]+=" $(field ack_p99_ms <<<"$out")"
                done
        done
        for v in bare submit1 submit4; do
                echo "ROW $v $k rate=$(median <<<"${rate[$v]}") rate_range=$(range <<<"${rate[$v]}")" \
                        "p50=$(median <<<"${p50[$v]}") p99=$(median <<<"${p99[$v]}") p99_range=$(range <<<"${p99[$v]}")" \
                        "ack_p50=$(median <<<"${ack50[$v]:- -}") ack_p99=$(median <<<"${ack99[$v]:- -}")"
        done
done
kill "$serve_pid" 2>/dev/null || true

# The file door: files waiting in the inbox, the router released, until the last response.
drops=""
router=$(pid_of org.conspiracy.Router)
for i in $(seq "$ROUNDS"); do
        reset_agents
        kill -STOP "$router"
        for j in $(seq -w 1 "$N"); do printf '/ping\n' >"/srv/con/inbox/bench-$i-$j.task"; done
        sync
        t0=$(date +%s%N)
        kill -CONT "$router"
        while (($(find /srv/con/agents/concierge/outbox -name "bench-$i-*.response" | wc -l) < N)); do sleep 0.02; done
        t1=$(date +%s%N)
        r=$(awk -v n="$N" -v ns=$((t1 - t0)) 'BEGIN {printf "%.0f", n / (ns / 1e9)}')
        echo "RUN filedrop round=$i per_s=$r"
        drops+=" $r"
done
echo "ROW filedrop - rate=$(median <<<"$drops") rate_range=$(range <<<"$drops")"
# Idle memory of each agent two seconds after its last task (before the on-demand agents
# exit idle).
sleep 2
for a in $AGENTS; do
        pid=$(pid_of "$(bus_name "$a")") || true
        [ -n "$pid" ] || continue
        echo "ROW idle-$a - private_dirty_kb=$(awk '/^Private_Dirty:/ {print $2}' /proc/"$pid"/smaps_rollup)" \
                "pss_kb=$(awk '/^Pss:/ {print $2}' /proc/"$pid"/smaps_rollup) rss_kb=$(awk '/^VmRSS:/ {print $2}' /proc/"$pid"/status)"
done

spawns=""
for i in $(seq "$ROUNDS"); do
        B=$(mktemp -d /var/tmp/bench-spawn.XXXXXX)
        out=$("$BUILD/bench/bench-spawn-baseline" run "$B" "$N")
        rm -rf "$B"
        r=$(sed -n 's/.* \([0-9.]*\) tasks\/s/\1/p' <<<"$out" | cut -d. -f1)
        echo "RUN spawn round=$i per_s=$r"
        spawns+=" $r"
done
echo "ROW spawn - rate=$(median <<<"$spawns") rate_range=$(range <<<"$spawns")"

echo "INFO load_after=$(cut -d' ' -f1-3 /proc/loadavg)"
con down >/dev/null || true
