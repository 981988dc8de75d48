#!/bin/bash
# The bus fabric end to end: con bootstrap + con up, con-send, Submit over busctl with its
# TaskCompleted signal, GetResult access, the durable file drop through the router, group
# membership for the outer inbox, and the audit trail (verify, tamper detection).
# Runs as root inside tests/sandbox/con-sandbox (fresh system bus, project installed in /usr).
. "$(dirname "$0")/lib.sh"
require_sandbox
T=$(lib_tmp)

section "bring the fabric up"
check "con bootstrap --profile default" con bootstrap --profile default
# Users before any agent starts: a member of the submitters group and an outsider.
id -u contest >/dev/null 2>&1 || useradd --no-create-home --shell /usr/sbin/nologin contest
id -u outsider >/dev/null 2>&1 || useradd --no-create-home --shell /usr/sbin/nologin outsider
gpasswd -a contest con >/dev/null
check "con up" con up
# The first Evaluate after start must answer with every contract evaluated, none "pending".
check "the first Evaluate after con up evaluates every contract" bash -c \
        'out=$(busctl --system call org.conspiracy.Contracts /org/conspiracy/Contracts org.conspiracy.Contracts1 Evaluate) &&
         ! grep -q "\"pending\"" <<<"$out" && grep -q "CON-SYS-001" <<<"$out"'
check_output "con status shows the router running" "router +running" con status
check_output "con status --json is JSON" '"router"' con status --json
check_output "con agents lists the concierge" "^concierge " con agents
check_output "con agents lists the sysadmin" "^sysadmin " con agents
check_output "con agents --json" '"name":[[:space:]]*"concierge"' con agents --json
check "con --help lists the fabric verbs" bash -c "con --help | grep -q route-inbox"
check "con up twice is fine" con up

section "con-send"
check_output "con-send /agents names the concierge" "concierge" con-send /agents
check_output "... and the sysadmin" "sysadmin" con-send /agents
check_output "con-send --json" '"status":"completed"' con-send --json /ping
check_output "con-send reads stdin" "." bash -c "echo /ping | con-send -"
check_output "con-send --no-wait prints an id" '^[A-Za-z0-9]' con-send --no-wait /ping
check_status "con-send usage error: 2" 2 con-send --to Not_An_Agent hi
check_fail "con-send to an agent that does not exist fails" con-send --to nosuchagent /ping

section "Submit over busctl, TaskCompleted follows, no text in signals"
dbus-monitor --system "type='signal',interface='org.conspiracy.Agent1'" \
        "type='signal',sender='org.conspiracy.Router'" >"$T/monitor" 2>&1 &
MON=$!
sleep 0.5
SECRET="/ping marker-$RANDOM$RANDOM"
check_output "Submit returns an id" '^s "' busctl call org.conspiracy.Concierge /org/conspiracy/Agent \
        org.conspiracy.Agent1 Submit s "$SECRET"
ID=$(sed -n 's/^s "\(.*\)"$/\1/p' <<<"$LIB_OUT")
check "TaskCompleted signal for $ID" wait_for 30 grep -q "$ID" "$T/monitor"
check "TaskCompleted is in the monitor output" wait_for 10 grep -q "member=TaskCompleted" "$T/monitor"
check_output "GetResult as the submitter (root)" '^ss "completed"' busctl call org.conspiracy.Concierge \
        /org/conspiracy/Agent org.conspiracy.Agent1 GetResult s "$ID"

check_output "a con member can submit" '^s "' as_user contest busctl call org.conspiracy.Concierge \
        /org/conspiracy/Agent org.conspiracy.Agent1 Submit s "/ping"
UID_ID=$(sed -n 's/^s "\(.*\)"$/\1/p' <<<"$LIB_OUT")
check "... and the task completes" wait_for 30 grep -q "$UID_ID" "$T/monitor"
check_output "the submitter reads the result" '"completed"' as_user contest busctl call org.conspiracy.Concierge \
        /org/conspiracy/Agent org.conspiracy.Agent1 GetResult s "$UID_ID"
check_fail "another user cannot read it" as_user outsider busctl call org.conspiracy.Concierge \
        /org/conspiracy/Agent org.conspiracy.Agent1 GetResult s "$UID_ID"
check_fail "another user cannot read root's task" as_user outsider busctl call org.conspiracy.Concierge \
        /org/conspiracy/Agent org.conspiracy.Agent1 GetResult s "$ID"
check_output "con task ID shows it to root" "status: completed" con task "$ID"
check_output "con tasks lists it" "$ID" con tasks concierge

section "durable file drop through the router"
printf '/ping\n' >/srv/con/inbox/.hello.tmp
mv /srv/con/inbox/.hello.tmp /srv/con/inbox/hello.task
check "root's drop: outbox/hello.response" wait_for 30 test -e /srv/con/agents/concierge/outbox/hello.response
check "root's drop: processed/hello.task" wait_for 10 test -e /srv/con/agents/concierge/processed/hello.task
check_fail "root's drop: gone from the inbox" test -e /srv/con/inbox/hello.task
check "TaskRouted signal for hello" grep -q '"hello"' "$T/monitor"

check "a con member can drop a task" as_user contest bash -c 'printf "/ping\n" >/srv/con/inbox/member.task'
check "member's drop: outbox/member.response" wait_for 30 test -e /srv/con/agents/concierge/outbox/member.response
check "member's drop: processed/member.task" wait_for 10 test -e /srv/con/agents/concierge/processed/member.task
check_fail "a non-member cannot drop a task" as_user outsider bash -c 'printf "/ping\n" >/srv/con/inbox/outsider.task'
check_fail "... and nothing arrives" test -e /srv/con/inbox/outsider.task

section "no task text in any signal"
check_fail "the Submit text is not in any signal" grep -q "marker-" "$T/monitor"

section "con route-inbox (one pass)"
con down >/dev/null
check_output "con status: router stopped" "router +stopped" con status
printf '/ping\n' >/srv/con/inbox/once.task
check "con route-inbox" con route-inbox
check_fail "once.task was routed" test -e /srv/con/inbox/once.task
check "once.task is answered" wait_for 30 test -e /srv/con/agents/concierge/outbox/once.response
check "the agent audited its completion with the router down" wait_for 10 bash -c \
        'jq -c "select(.event == \"task.completed\" and .task_id == \"once\" and .service == \"concierge\")" /srv/con/logs/audit/audit.jsonl | grep -q .'
check "con up again" con up

section "audit trail"
kill "$MON" 2>/dev/null
check_output "con audit prints routing records" "task.routed" con audit --lines 200
check_output "con audit has the agents' records" "task.completed" con audit --lines 200
check_fail "no task text in the audit log" grep -q "marker-" /srv/con/logs/audit/audit.jsonl
stat_is "the audit log is root's" /srv/con/logs/audit/audit.jsonl "root:root 640"
check_fail "an agent cannot append to it" as_user a-concierge bash -c 'echo x >>/srv/con/logs/audit/audit.jsonl'
check_output "con audit verify passes" "chain intact" con audit verify
con down >/dev/null
cp /srv/con/logs/audit/audit.jsonl "$T/audit.orig"
sed -i '2s/"task\./"tusk./' /srv/con/logs/audit/audit.jsonl
check_status "a tampered log fails verification (exit 1)" 1 con audit verify
check_output "... naming the first bad record" "line 2" echo "$LIB_OUT"
cp "$T/audit.orig" /srv/con/logs/audit/audit.jsonl
check "restored log verifies again" con audit verify

section "con down stops the model gateway too"
check "the model gateway starts by bus activation" busctl --system call org.freedesktop.DBus /org/freedesktop/DBus \
        org.freedesktop.DBus StartServiceByName su org.conspiracy.Models 0
check "con down" con down
check_output "... stopped the gateway" "model gateway: stopped" echo "$LIB_OUT"
check "no con-modeld process is left" bash -c \
        'for _ in $(seq 50); do pgrep -x con-modeld >/dev/null || exit 0; sleep 0.1; done; exit 1'
finish
