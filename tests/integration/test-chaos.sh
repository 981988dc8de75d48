#!/bin/bash
# Faults: nothing acknowledged is lost, nothing completes twice.
#
# CHAOS_TASKS tasks (default 1500; the documented full run is 10000) go in as file drops (into
# /srv/con/inbox and the agents' inboxes, as root and as a member of group con) and as Submit
# calls (agent-caller, as root and as the member) to three agents: the concierge and pinger
# (built-in /ping, no session) and runner (the exec runner, one process per task). Meanwhile a
# driver kill -9s the router, the agents, the contract service, the model gateway and the clients
# at random moments and restarts what does not come back by itself (con up: router, contract
# service; agents are activated again by the next call); half-way the bus itself is restarted
# once and polkitd is killed once. At the end: every acknowledged Submit id and every dropped
# file completed exactly once (outbox/<id>.response, the agents' journals, the audit log),
# con audit verify passes, and no temp or half-written file is left under /srv/con.
#
# Then disk full: /srv/con is a size-limited tmpfs; with it full, Submit is refused with a clear
# error, the router leaves dropped files in the inbox, the disk contract reports it, nothing
# acknowledged is lost, and service resumes once space returns.
#
# Bounded: CHAOS_TIMEOUT seconds (default 600) for the whole load and drain; CHAOS_RATE tasks per
# second (default 40) for all streams together. CHAOS_SEED makes the kill schedule repeatable.
# Prints the figures: sent, acknowledged, completed, lost, duplicated, restarts survived. Runs as
# root inside tests/sandbox/con-sandbox; the full run (docs/RELIABILITY.md):
#
#   CHAOS_TASKS=10000 CHAOS_TIMEOUT=1500 ctest --test-dir build-asan -R test-chaos -V
. "$(dirname "$0")/lib.sh"
require_sandbox
T=$(lib_tmp)
chmod 755 "$T"
N=${CHAOS_TASKS:-1500}
RATE=${CHAOS_RATE:-40}     # tasks per second, all streams together
TIMEOUT=${CHAOS_TIMEOUT:-600}
RANDOM=${CHAOS_SEED:-$$}
build=${CON_BUILD_DIR:?CON_BUILD_DIR is not set}
caller=/usr/local/libexec/con-test/agent-caller
install -D -m 0755 "$build/tests/integration/agent-caller" "$caller"
AGENTS="concierge runner pinger"
S=/srv/con
DEADLINE=$((SECONDS + TIMEOUT))

camel() { echo "org.conspiracy.$(tr '[:lower:]' '[:upper:]' <<<"${1:0:1}")${1:1}"; }
wait_for() { # wait_for SECONDS CMD...
        local end=$((SECONDS + $1))
        shift
        while ((SECONDS < end)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
        return 1
}

# /srv/con on a file system of its own, so the disk-full phase can fill it (and nothing of the
# host's disk is at stake). Big enough for the load; the last phase fills what is left.
SIZE=$((64 + N / 25))M
mkdir -p $S
mount -t tmpfs -o "size=$SIZE,mode=0755" con-srv $S

section "fabric up: concierge, pinger (built-ins) and runner (exec runner)"
mkdir -p /etc/con/contracts
# The disk contract of the default profile, checked every 2 s.
sed 's/^frequency:.*/frequency: 2s/' /usr/share/conspiracyos/profiles/default/contracts/CON-SYS-001.yaml \
        >/etc/con/contracts/CON-SYS-001.yaml
cat >/etc/con/con.yaml <<'EOF'
system:
  name: chaos-test
contracts:
  system:
    disk_min_free_pct: 0
    mem_min_free_pct: 0
    max_load_factor: 1000
    healthcheck_interval: 2s
agents:
  - name: concierge
    tier: operator
    idle_exit: 5s
  - name: sysadmin
    tier: operator
    roles: [sysadmin]
  - name: pinger
    idle_exit: 3s
  - name: runner
    runner: exec
    command: [/bin/sh, -c, 'echo "$CON_TASK_ID" >>runs.log; echo "ran $CON_TASK_ID"']
    exec_timeout: 30s
    max_sessions: 4
    idle_exit: 3s
EOF
check "con bootstrap" con bootstrap
id -u member >/dev/null 2>&1 || useradd --no-create-home --shell /usr/sbin/nologin member
gpasswd -a member con >/dev/null
check "con up" con up
check_output "a first task answers" pong con-send /ping

# ---- load ----

# Each of the 7 streams sends in chunks of 10, one chunk every PAUSE seconds.
PAUSE=$(awk -v r="$RATE" 'BEGIN { printf "%.2f", 70 / r }')

# drop_stream NAME USER DIR TEXT COUNT: COUNT files NAME-00001.task.. into DIR as USER, written
# under a dot name and renamed (a writer's temp name is never picked up).
drop_stream() {
        local name=$1 user=$2 dir=$3 text=$4 count=$5
        runuser -u "$user" -- bash -c '
                for i in $(seq -f "%05g" 1 "$4"); do
                        printf "%s\n" "$3" >"$2/.$1-$i.tmp" && mv "$2/.$1-$i.tmp" "$2/$1-$i.task" && echo "$1-$i"
                        [ "${i: -1}" = 0 ] && sleep "$5"
                done' drop "$name" "$dir" "$text" "$count" "$PAUSE" >"$T/drops.$name"
}

# submit_stream NAME USER BUSNAME TEXT COUNT: COUNT Submits through agent-caller, restarted in
# chunks; the driver kills it at random. Writes "ok ID" lines to T/acks.NAME and the number of
# calls made (acknowledged or not, the one in flight when killed included) to T/sent.NAME.
submit_stream() {
        local name=$1 user=$2 dest=$3 text=$4 count=$5 done=0 sent=0 chunk out rc
        : >"$T/acks.$name"
        while ((done < count && SECONDS < DEADLINE)); do
                chunk=$((count - done < 10 ? count - done : 10))
                out="$T/out.$name"
                runuser -u "$user" -- "$caller" "$dest" < <(yes "submit $text" | head -n "$chunk") >"$out" 2>/dev/null
                rc=$?
                local k
                k=$(wc -l <"$out")
                grep '^ok ' "$out" >>"$T/acks.$name"
                grep '^error ' "$out" >>"$T/errors.$name"
                ((rc != 0 && k < chunk)) && k=$((k + 1)) # the call in flight when it died
                done=$((done + k))
                sent=$((sent + k))
                sleep "$PAUSE"
        done
        echo "$sent" >"$T/sent.$name"
}

D=$((N / 2 / 4))          # per drop stream
B=$(((N - 4 * D) / 3))    # per Submit stream
LAST=$((N - 4 * D - 3 * B))
section "load: $((4 * D)) file drops and $((3 * B + LAST)) Submits, with faults"
start=$SECONDS
pids=()
drop_stream d0 root $S/inbox /ping "$D" & pids+=($!)
drop_stream d1 member $S/inbox /ping "$D" & pids+=($!)
drop_stream d2 root $S/agents/pinger/inbox /ping "$D" & pids+=($!)
drop_stream d3 root $S/agents/runner/inbox job "$D" & pids+=($!)
submit_stream s0 root org.conspiracy.Concierge /ping "$B" & pids+=($!)
submit_stream s1 member org.conspiracy.Concierge /ping "$B" & pids+=($!)
submit_stream s2 root org.conspiracy.Runner job "$((B + LAST))" & pids+=($!)

load_running() {
        local p
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done
        return 1
}

# The driver: kill -9 something every 0.2..1.2 s while the load runs.
restarts=0 bus_restarted=0 polkit_killed=0
declare -A kills=()
kill_name() { # kill_name LABEL BUSNAME
        local p
        p=$(bus_owner_pid "$2")
        [ -n "$p" ] || return 1
        kill -9 "$p" 2>/dev/null || return 1
        kills[$1]=$((${kills[$1]:-0} + 1))
        restarts=$((restarts + 1))
        echo "$(date +%T.%N) kill -9 $1 ($p)" >>"$T/driver.log"
}
while load_running && ((SECONDS < DEADLINE)); do
        sleep "0.$((2 + RANDOM % 10))"
        if ((!bus_restarted)) && (($(cat "$T"/drops.* 2>/dev/null | wc -l) > 2 * D)); then
                # Half-way: the bus goes down and comes back; every service must reconnect or be
                # restarted by con up. Then polkitd dies once (bus-activated again).
                bp=$(cat /run/dbus/pid 2>/dev/null || cat /run/con-sandbox-dbus.pid)
                kill -9 "$bp"
                echo "$(date +%T.%N) kill -9 dbus-daemon ($bp)" >>"$T/driver.log"
                sleep 0.5
                con up >>"$T/driver.log" 2>&1
                bus_restarted=1
                restarts=$((restarts + 1))
                sleep 1
                # polkitd is bus-activated: make sure it runs, then kill it.
                busctl --system introspect org.freedesktop.PolicyKit1 /org/freedesktop/PolicyKit1/Authority \
                        >/dev/null 2>&1
                kill_name polkitd org.freedesktop.PolicyKit1 && polkit_killed=1
                continue
        fi
        case $((RANDOM % 8)) in
        0) kill_name router org.conspiracy.Router && { sleep "0.$((RANDOM % 5))"; con up >>"$T/driver.log" 2>&1; } ;;
        1) kill_name concierge org.conspiracy.Concierge ;;
        2) kill_name runner org.conspiracy.Runner ;;
        3) kill_name pinger org.conspiracy.Pinger ;;
        4) kill_name contractd org.conspiracy.Contracts && con up >>"$T/driver.log" 2>&1 ;;
        5) # the model gateway: activated by a client, killed
                busctl --system call org.conspiracy.Models /org/conspiracy/Models org.conspiracy.Models1 \
                        Usage >/dev/null 2>&1
                kill_name modeld org.conspiracy.Models ;;
        *) # a client: one of the agent-caller processes
                cp=$(pgrep -x agent-caller | shuf -n 1 --random-source=<(yes "$RANDOM"))
                if [ -n "$cp" ] && kill -9 "$cp" 2>/dev/null; then
                        kills[client]=$((${kills[client]:-0} + 1))
                        restarts=$((restarts + 1))
                        echo "$(date +%T.%N) kill -9 client ($cp)" >>"$T/driver.log"
                fi ;;
        esac
done
wait "${pids[@]}"
echo "# load done after $((SECONDS - start)) s; driver: $(for k in "${!kills[@]}"; do printf '%s=%s ' "$k" "${kills[$k]}"; done)"
check_eq "the bus was restarted once" 1 "$bus_restarted"
check_eq "polkitd was killed once" 1 "$polkit_killed"
check "con up after the faults" con up
# Nothing left over from before the bus restart: one router, one contract service, at most one
# process per agent (an old one still holding the queue lock would block its successor).
procs() { # procs NAME [USER]: how many processes run the program NAME
        pgrep -c -x "$1" ${2:+-u "$2"} || true
}
check_eq "one con-routerd" 1 "$(procs con-routerd)"
check_eq "one con-contractd" 1 "$(procs con-contractd)"
n=$(procs con-modeld)
check "at most one con-modeld ($n)" test "$n" -le 1
for a in $AGENTS; do
        n=$(procs con-agentd "a-$a")
        check "at most one con-agentd for $a ($n)" test "$n" -le 1
done

# ---- drain ----

inboxes_empty() {
        local n
        n=$(find $S/inbox $S/agents/*/inbox -maxdepth 1 -name '*.task' | wc -l)
        ((n == 0)) || { echo "$n files left in the inboxes"; return 1; }
}
cat "$T"/acks.s0 "$T"/acks.s1 | sed 's/^ok /concierge /' >"$T/acked"
sed 's/^ok /runner /' "$T/acks.s2" >>"$T/acked"
for s in d0 d1; do sed 's/^/concierge /' "$T/drops.$s"; done >>"$T/acked"
sed 's/^/pinger /' "$T/drops.d2" >>"$T/acked"
sed 's/^/runner /' "$T/drops.d3" >>"$T/acked"
all_done() { # every accepted task has its outbox response
        local missing
        missing=$(while read -r a id; do [ -e "$S/agents/$a/outbox/$id.response" ] || echo "$a $id"; done <"$T/acked" | wc -l)
        ((missing == 0)) || { echo "$missing accepted tasks have no response yet"; return 1; }
}
remaining=$((DEADLINE - SECONDS))
((remaining < 120)) && remaining=120
check "every dropped file leaves its inbox" wait_for "$remaining" inboxes_empty
check "every accepted task completes" wait_for "$remaining" all_done
echo "# drained after $((SECONDS - start)) s"
# Every agent once more, so each replays its journal after the last kill.
for a in $AGENTS; do busctl --system call "$(camel "$a")" /org/conspiracy/Agent org.conspiracy.Agent1 Submit s /ping >/dev/null 2>&1; done
sleep 1
check "con down" con down

# ---- the books ----

section "exactly once, by id"
sent=$((4 * D))
for s in s0 s1 s2; do sent=$((sent + $(cat "$T/sent.$s"))); done
acked=$(wc -l <"$T/acked")
sort "$T/acked" | uniq -d >"$T/acked-twice"
check_eq "no id was acknowledged twice" "" "$(head -n 5 "$T/acked-twice")"
lost=0 completed=0 failed=0
while read -r a id; do
        if [ -e "$S/agents/$a/outbox/$id.response" ]; then
                completed=$((completed + 1))
        elif [ -e "$S/agents/$a/failed/$id.task" ]; then
                failed=$((failed + 1))
                echo "failed: $a $id: $(cat "$S/agents/$a/failed/$id.reason")" >>"$T/failed"
        else
                lost=$((lost + 1))
                echo "$a $id" >>"$T/lost"
        fi
done <"$T/acked"
check_eq "no accepted task lost" 0 "$lost"
[ -s "$T/failed" ] && head -n 5 "$T/failed" | sed 's/^/# /'
check_eq "no accepted task failed" 0 "$failed"
check_eq "nothing was rejected" 0 "$(find $S/rejected -type f 2>/dev/null | wc -l)"

# The agents' own books: at most one "end" record per id in each journal (compaction keeps one
# "known" record instead), and one finished record per id.
for a in $AGENTS; do
        grep -ho '"op":"end","id":"[^"]*"' "$S/agents/$a/queue/journal" | sort | uniq -d
done >"$T/dup-ends"
check_eq "no task ended twice in a journal" "" "$(head -n 5 "$T/dup-ends")"

# The audit trail: no task completed twice. Each agent audits its own completions after the
# journal commit, router or not; a kill -9 between the commit and the append loses those records.
jq -r 'select(.event == "task.completed") | .agent + " " + .task_id' $S/logs/audit/audit.jsonl | sort >"$T/audit-done"
uniq -d "$T/audit-done" >"$T/audit-dups"
check_eq "no task completed twice in the audit log" "" "$(head -n 5 "$T/audit-dups")"
audited=$(sort -u "$T/acked" | comm -12 - <(sort -u "$T/audit-done") | wc -l)
check "con audit verify" con audit verify

# The exec runner: a session interrupted by a kill of its agent runs again (at least once for
# sessions); count those separately from duplicated completions.
sort $S/agents/runner/workspace/runs.log | uniq -d >"$T/reruns"
reruns=$(wc -l <"$T/reruns")
duplicated=$(($(wc -l <"$T/dup-ends") + $(wc -l <"$T/audit-dups")))

section "no half-written file under /srv/con"
find $S -name '.*' ! -name '.' >"$T/temps"
check_eq "no temp file left over" "" "$(head -n 5 "$T/temps")"
find $S/agents/*/outbox $S/agents/*/processed $S/agents/*/queue/finished -type f -empty >"$T/empty"
check_eq "no zero-length task file" "" "$(head -n 5 "$T/empty")"
bad_json() { # every finished record and every journal line is whole JSON
        local a
        for a in $AGENTS sysadmin; do
                [ -d "$S/agents/$a/queue" ] || continue
                find "$S/agents/$a/queue/finished" -name '*.json' -print0 | xargs -0 -r cat | jq -e . >/dev/null ||
                        { echo "agents/$a/queue/finished: bad JSON"; return 1; }
                if [ -f "$S/agents/$a/queue/journal" ]; then
                        jq -e . "$S/agents/$a/queue/journal" >/dev/null ||
                                { echo "agents/$a/queue/journal: bad JSON line"; return 1; }
                fi
        done
        jq -e . $S/logs/audit/audit.jsonl >/dev/null || { echo "audit.jsonl: bad JSON line"; return 1; }
}
check "every JSON record under /srv/con is whole" bad_json

echo "# figures: sent $sent, acknowledged $acked, completed $completed, failed $failed, lost $lost," \
        "duplicated $duplicated, re-run after a crash of their agent $reruns, completions in the audit log" \
        "$audited, restarts survived $restarts ($(for k in "${!kills[@]}"; do printf '%s %s, ' "$k" "${kills[$k]}"; done)bus 1)," \
        "seconds $((SECONDS - start))"

# ---- disk full ----

section "disk full"
check "con up" con up
check_output "a task answers before the disk fills" pong con-send /ping
# Room for at least one more task in the last page of the concierge's journal, so that one
# Submit is acknowledged on the full disk while its outbox file cannot be written.
for _ in $(seq 1 30); do
        js=$(($(stat -c %s $S/agents/concierge/queue/journal) % 4096))
        ((js > 0 && js < 3000)) && break
        con-send /ping >/dev/null
done
# A task too large for what is left of any journal page (the runner's inbox): dropped once the
# disk is full (a rename needs no space).
{ echo job; head -c 6000 /dev/zero | tr '\0' x; echo; } >$S/agents/runner/inbox/.full-1.tmp
# Fill what is left (tmpfs keeps nothing back for root): one big file, then one page at a time,
# so that only the last partly used pages of the files already there have room.
dd if=/dev/zero of=$S/filler bs=1M status=none 2>/dev/null
fill_pages() {
        local i=0
        while dd if=/dev/zero of="$S/filler.$1.$i" bs=4k count=1 status=none 2>/dev/null; do i=$((i + 1)); done
        rm -f "$S/filler.$1.$i"
}
fill_pages a
check_fail "the file system is full" sh -c "echo x >$S/probe"
check_output "a Submit that fits in the journal's last page is acknowledged" '^ok ' \
        "$caller" org.conspiracy.Concierge <<<"submit /ping"
id0=$(sed -n 's/^ok //p' <<<"$LIB_OUT")
check_fail "... its outbox file cannot be written" test -e "$S/agents/concierge/outbox/$id0.response"
truncate -s -24K $S/filler # six pages back
check "... and is written, by the running agent, once there is space" \
        wait_for 10 test -e "$S/agents/concierge/outbox/$id0.response"
fill_pages c
submit_until_refused() { # a few records may still fit in the journal's last page
        local i
        for i in $(seq 1 100); do
                echo "submit /ping" | "$caller" org.conspiracy.Concierge >"$T/full-submit" 2>&1
                grep -q '^ok ' "$T/full-submit" || { cat "$T/full-submit"; return 0; }
                sed -n 's/^ok /concierge /p' "$T/full-submit" >>"$T/full-acked"
        done
        echo "100 Submits accepted on a full disk"
        return 1
}
: >"$T/full-acked"
check_output "Submit is refused with a clear error" "^error org\.conspiracy\.Agent1\.Error\.StorageFailed .*No space left on device" submit_until_refused
echo "#   $LIB_OUT"
echo "# $(wc -l <"$T/full-acked") Submits were acknowledged before the journal filled up"
# Now the disk contract (CON-SYS-001, on the file system of /srv/con) with a threshold: it halts
# the agents, which would refuse the Submits above for that reason instead.
sed -i 's/^\( *disk_min_free_pct:\).*/\1 5/' /etc/con/con.yaml
kill "$(bus_owner_pid org.conspiracy.Contracts)"
wait_for 10 test -z "$(bus_owner_pid org.conspiracy.Contracts)"
check "con up starts the contract service on the full disk" con up
mv $S/agents/runner/inbox/.full-1.tmp $S/agents/runner/inbox/full-1.task
busctl --system call org.conspiracy.Router /org/conspiracy/Router org.conspiracy.Router1 Rescan >/dev/null 2>&1
sleep 4
check "the router leaves the file in the inbox" test -f $S/agents/runner/inbox/full-1.task
check_fail_output "the disk contract reports it" 'CON-SYS-001.*FAIL' con healthcheck
echo "#   $(grep CON-SYS-001 <<<"$LIB_OUT")"
rm -f $S/filler $S/filler.*
check "the disk contract passes once space returns" wait_for 30 con healthcheck
con resume >/dev/null 2>&1 # the contract halted the agents (sticky, as it says)
check "service resumes when space returns" wait_for 60 test -e $S/agents/runner/outbox/full-1.response
check_output "Submit works again" '^s "' \
        busctl --system call org.conspiracy.Concierge /org/conspiracy/Agent org.conspiracy.Agent1 Submit s /ping
# The concierge exited when its journal write failed; the call above started it again, and it
# wrote the files of the tasks it had acknowledged before.
full_acked_done() {
        local a id
        while read -r a id; do [ -e "$S/agents/$a/outbox/$id.response" ] || { echo "$id lost"; return 1; }; done <"$T/full-acked"
}
check "the tasks acknowledged while the disk filled up complete" wait_for 60 full_acked_done
check "con audit verify after the disk was full" con audit verify
find $S -name '.*' ! -name '.' >"$T/temps"
check_eq "no temp file left over after the disk was full" "" "$(head -n 5 "$T/temps")"

con down >/dev/null 2>&1
if ((LIB_FAILED > 0)); then
        echo "# the last lines of the router's and the contract service's logs:"
        tail -n 15 $S/logs/daemons/con-routerd.log $S/logs/daemons/con-contractd.log 2>/dev/null | sed 's/^/#   /'
        cp -a $S/logs "${CHAOS_KEEP_LOGS:-/dev/null}" 2>/dev/null
fi
umount -l $S
finish
