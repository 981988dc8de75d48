#!/bin/bash
# Task ids are scoped by sender (issue 13, item 2). One member of group con claims an id with
# Deliver; another drops a file of that name into the outer inbox. The second task must not
# vanish: the agent refuses the id (DuplicateTask), the router delivers the file again under a new
# id, the task completes with its own result, and neither user can read or cancel the other's
# task. con-send --id reports the collision; the rules hold across a restart of the agent.
# con-send --priority and --deadline reach a local agent (with Deliver) and are checked.
# Runs as root inside tests/sandbox/con-sandbox.
. "$(dirname "$0")/lib.sh"
require_sandbox
C=org.conspiracy.Concierge
P=/org/conspiracy/Agent
I=org.conspiracy.Agent1
R=(org.conspiracy.Router /org/conspiracy/Router org.conspiracy.Router1)

agent_call() { # agent_call USER METHOD SIG ARGS...: busctl call to the concierge as USER
        local user=$1
        shift
        as_user "$user" busctl --system call "$C" "$P" "$I" "$@"
}
# The id of USER's task (on the concierge) whose id starts with PREFIX-, other than PREFIX itself.
renamed_id() {
        agent_call "$1" ListTasks | grep -oE "\"$2-[A-Za-z0-9._-]+\"" | head -n 1 | tr -d '"'
}

section "fabric up, two members of group con"
check "con bootstrap --profile default" con bootstrap --profile default
for u in first second; do
        id -u "$u" >/dev/null 2>&1 || useradd --no-create-home --shell /usr/sbin/nologin "$u"
        gpasswd -a "$u" con >/dev/null
done
check "con up" con up

section "the attack: first claims collide1, second drops collide1.task"
check_output "first delivers with id collide1" '^s "collide1"$' \
        agent_call first Deliver a{sv} 2 text s "/help" id s collide1
check "first's task completes" wait_for 20 bash -c \
        "runuser -u first -- busctl --system call $C $P $I GetResult s collide1 | grep -q 'Built-in commands'"
check_fail_output "second cannot Deliver under collide1: DuplicateTask naming the id" \
        "DuplicateTask|Task id 'collide1' is already used on agent 'concierge' by another sender" \
        agent_call second Deliver a{sv} 2 text s "/ping" id s collide1
check "second drops collide1.task" as_user second sh -c 'echo /ping > /srv/con/inbox/collide1.task'
check "Rescan" busctl call "${R[@]}" Rescan
check "the file leaves the inbox" wait_for 30 test ! -e /srv/con/inbox/collide1.task
check "... and was not rejected" bash -c '! ls /srv/con/rejected 2>/dev/null | grep -q collide1'
check "second's task is listed under a new id" wait_for 20 bash -c \
        "runuser -u second -- busctl --system call $C $P $I ListTasks | grep -qE '\"collide1-[0-9a-f]{16}\"'"
NEW=$(renamed_id second collide1)
check_eq "the new id is collide1-<16 hex digits>" 1 "$(grep -cE '^collide1-[0-9a-f]{16}$' <<<"$NEW")"
check "second's task completes with its own result" wait_for 20 bash -c \
        "runuser -u second -- busctl --system call $C $P $I GetResult s '$NEW' | grep -q '\"completed\" \"pong\"'"
check_output "first's task is untouched" '"completed" "Built-in commands' agent_call first GetResult s collide1
check_output "the collision is in the audit trail" 'task.id_taken.*collide1' con audit --lines 200
check_output "... and the delivery under the new id" "task.routed.*$NEW" con audit --lines 200

section "neither reads nor cancels the other's task"
check_fail_output "second cannot GetResult collide1" "Access denied.*may not read other users' results" \
        agent_call second GetResult s collide1
check_fail_output "second cannot Cancel collide1" "Access denied.*may not cancel other users' tasks" \
        agent_call second Cancel s collide1
check_fail_output "first cannot GetResult second's task" "Access denied" agent_call first GetResult s "$NEW"
check_fail_output "first cannot Cancel second's task" "Access denied" agent_call first Cancel s "$NEW"
check_output "ListTasks as second" "$NEW" agent_call second ListTasks
check_fail "... does not show collide1" grep -q '"collide1"' <<<"$LIB_OUT"
check_output "ListTasks as first shows collide1" '"collide1"' agent_call first ListTasks
check_fail "... but not second's task" grep -q "$NEW" <<<"$LIB_OUT"

section "con task and con cancel when two agents know one id"
S=org.conspiracy.Sysadmin
check_output "root delivers collide1 to the sysadmin too" '^s "collide1"$' \
        busctl --system call "$S" "$P" "$I" Deliver a{sv} 2 text s "/help" id s collide1
check "... it completes" wait_for 20 bash -c "busctl --system call $S $P $I GetResult s collide1 | grep -q completed"
check_fail_output "root: con task collide1 names both, shows neither (exit 1)" \
        "agents (concierge and sysadmin|sysadmin and concierge) each know a task 'collide1': name one with --agent" \
        con task collide1
check_output "root: con task collide1 --agent sysadmin" 'agent:  sysadmin' con task collide1 --agent sysadmin
check_fail_output "root: con cancel collide1 cancels nothing, names both" "each know a task 'collide1'" con cancel collide1
check_output "root: con cancel collide1 --agent sysadmin" '^Task collide1 on agent sysadmin: completed$' \
        con cancel collide1 --agent sysadmin
check_status "con cancel --agent nobody: usage error" 2 con cancel collide1 --agent nobody
check_output "first: con task collide1 is first's own (the sysadmin's is root's)" 'agent:  concierge' \
        as_user first con task collide1
check_output "first: con cancel collide1 reaches first's own" '^Task collide1 on agent concierge: completed$' \
        as_user first con cancel collide1
check_fail_output "second: con cancel collide1 (first's and root's): refused, not picked" \
        "each know a task 'collide1' of another user" as_user second con cancel collide1

section "an agent that has exited is still asked when a running one refuses the caller"
# first's collide1 is at the concierge, root's at the sysadmin (both on-demand). With the concierge
# gone and the sysadmin running, the sysadmin refuses first: con task and con cancel must still ask
# the concierge (which starts it) and find first's own task.
stop_concierge() { # the concierge exits (as when idle); the sysadmin runs (a call keeps it from idling)
        busctl --system call "$S" "$P" "$I" GetResultInfo s collide1 >/dev/null &&
                bus_owner_pid "$C" >/dev/null && bus_stop "$C"
}
check "the concierge exits, the sysadmin runs" stop_concierge
check "... the sysadmin owns its name" bus_has_owner "$S"
check_output "first: con task collide1 finds first's own at the concierge" 'agent:  concierge' \
        as_user first con task collide1
check "... the sysadmin was running all along (it refused first first)" bus_has_owner "$S"
check "the concierge exits again" stop_concierge
check_output "first: con cancel collide1 reaches first's own at the concierge" \
        '^Task collide1 on agent concierge: completed$' as_user first con cancel collide1

section "con-send --id"
check_status "second: con-send --id collide1 is refused (exit 3)" 3 as_user second con-send --id collide1 /ping
check_output "... saying the id is used by another sender" \
        "task id 'collide1' is already used on agent 'concierge' by another sender" echo "$LIB_OUT"
check_output "first: the same --id again is its own task (nothing new runs)" "Built-in commands" \
        as_user first con-send --id collide1 /ping
check_output "second: a fresh --id works" '^pong$' as_user second con-send --id second-own /ping
check_status "con-send --id with an invalid id: usage error" 2 as_user second con-send --id ../x /ping
DL=$(date -u -d '+1 day' +%Y-%m-%dT%H:%M:%S)
check_output "con-send --priority 9 --deadline: sent with Deliver" '^pong$' \
        as_user second con-send --id meta-1 --priority 9 --deadline "${DL}+00:00" /ping
check_output "... the agent kept both (processed/<id>.task's front matter)" "priority: 9 .*deadline: ${DL}" \
        bash -c 'tr "\n" " " </srv/con/agents/concierge/processed/meta-1.task'
check_fail_output "con-send --deadline already past: the task fails as a .task file's would" 'deadline passed' \
        as_user second con-send --deadline 2020-01-01T00:00:00Z /ping
check_status "con-send --priority 10: usage error" 2 as_user second con-send --priority 10 /ping
check_status "con-send --deadline 'tomorrow': usage error" 2 as_user second con-send --deadline tomorrow /ping

section "a contract escalation whose id a hijacked agent took first"
# The escalation id is contract-<id>-<check>-<since seconds>: predictable. a-concierge may task
# the sysadmin (default policy), so it claims every second of the next 20 first.
S=org.conspiracy.Sysadmin
now=$(date +%s)
claimed=0
for s in $(seq "$now" $((now + 20))); do
        as_user a-concierge busctl --system call "$S" "$P" "$I" Deliver a{sv} 2 text s "/ping" \
                id s "contract-T-IDS-flag_present-$s" >/dev/null 2>&1 && claimed=$((claimed + 1))
done
check_eq "a-concierge claimed 21 escalation ids" 21 "$claimed"
rm -f /run/con-ids-flag
cat >/srv/con/contracts/.T-IDS.tmp <<'YAML'
id: T-IDS
type: detective
frequency: 1s
scope: system
checks:
  - name: flag_present
    path: {path: /run/con-ids-flag}
    on_fail:
      action: alert
      escalate: sysadmin
      message: "ids test flag missing"
YAML
mv /srv/con/contracts/.T-IDS.tmp /srv/con/contracts/T-IDS.yaml
check "the escalation reaches the sysadmin under a new id" wait_for 20 bash -c \
        "busctl call $S $P $I ListTasks | grep -qE '\"contract-T-IDS-flag_present-[0-9]+-[0-9a-f]{16}\"'"
check "... after an escalation.id_taken audit record" grep -q '"escalation.id_taken".*"T-IDS"' \
        /srv/con/logs/audit/audit.jsonl
touch /run/con-ids-flag
rm -f /srv/con/contracts/T-IDS.yaml

section "across a restart of the agent (journal replay)"
check "con down" con down
check "con up" con up
check_fail_output "second still cannot Deliver under collide1" "already used on agent 'concierge' by another sender" \
        agent_call second Deliver a{sv} 2 text s "/ping" id s collide1
check_output "first still gets its own task back" '^s "collide1"$' \
        agent_call first Deliver a{sv} 2 text s "/ping" id s collide1
check_output "... which is still the first one" '"completed" "Built-in commands' agent_call first GetResult s collide1
check "second drops collide1.task again" as_user second sh -c 'echo /ping > /srv/con/inbox/collide1.task'
check "Rescan" busctl call "${R[@]}" Rescan
check "the file leaves the inbox" wait_for 30 test ! -e /srv/con/inbox/collide1.task
check "... and was not rejected" bash -c '! ls /srv/con/rejected 2>/dev/null | grep -q collide1'
check "second now has two collide1-* tasks, both done" wait_for 20 bash -c \
        "[ \$(runuser -u second -- busctl --system call $C $P $I ListTasks | grep -oE '\"collide1-[0-9a-f]{16}\" \"completed\"' | sort -u | wc -l) = 2 ]"

check "con down" con down
if grep -rqE "AddressSanitizer|LeakSanitizer|runtime error" /srv/con/logs 2>/dev/null; then
        check "no sanitizer report in the logs" false
fi
finish
