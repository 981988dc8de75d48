#!/bin/bash
# Delegation bounds, end to end with the scripted fake LLM (docs/AGENT.md "Delegation"): a task an
# agent's session sends to another agent carries the chain of the task that session runs, derived
# by the receiving service from the sender's running-task records (never from the call); a cycle
# back to an agent in the chain, a hop beyond system.max_delegation_hops, and a direct Submit from
# a hijacked session are refused as clear tool errors; the child's deadline is at most its
# parent's; the chain (the parent task) is in the child's record. Ping-pong without waiting stays
# bounded. Runs as root inside tests/sandbox/con-sandbox.
. "$(dirname "$0")/lib.sh"
require_sandbox
FAKE=${CON_BUILD_DIR:?}/tests/fake-llm/con-fake-llm
T=$(lib_tmp)
chmod 0755 "$T"
A=/srv/con/agents

answer() { # a final answer in the OpenAI wire format
        printf '{ "choices": [ { "message": { "content": "%s" }, "finish_reason": "stop" } ], "usage": { "prompt_tokens": 5, "completion_tokens": 5 } }' "$1"
}
send() { # send ID AGENT TEXT WAIT: a send_task tool call
        printf '{ "choices": [ { "message": { "content": null, "tool_calls": [ { "id": "%s", "type": "function", "function": { "name": "send_task", "arguments": "{\\"agent\\":\\"%s\\",\\"text\\":\\"%s\\",\\"wait\\":%s}" } } ] }, "finish_reason": "tool_calls" } ] }' "$1" "$2" "$3" "$4"
}
execcall() { # execcall ID COMMAND (no double quotes in it)
        printf '{ "choices": [ { "message": { "content": null, "tool_calls": [ { "id": "%s", "type": "function", "function": { "name": "exec", "arguments": "{\\"command\\":\\"%s\\"}" } } ] }, "finish_reason": "tool_calls" } ] }' "$1" "$2"
}
requests_for() { # the request bodies whose last message contains TEXT
        jq -c --arg t "$1" 'select((.body.messages[-1].content | tostring) | contains($t))' "$T/fake.log"
}
accept_of() { # accept_of AGENT TEXT: the journal's accept record of the task with that text
        jq -c --arg t "$2" 'select(.op == "accept" and .text == $t)' "$A/$1/queue/journal" | tail -n1
}

section "fake LLM server"
P=/v1/chat/completions
W2=org.conspiracy.Worker2
cat >"$T/script.json" <<EOF
{ "rules": [
  { "path": "$P", "match": "SYSADMIN-SAW-CYCLE", "body": $(answer "CYCLE-DONE relayed") },
  { "path": "$P", "match": "would be a cycle", "body": $(answer "SYSADMIN-SAW-CYCLE") },
  { "path": "$P", "match": "cycle-back please", "body": $(send c2 concierge cycle-third true) },
  { "path": "$P", "match": "cycle-start", "body": $(send c1 sysadmin "cycle-back please" true) },

  { "path": "$P", "match": "SYS-RELAY", "body": $(answer "HOPS-DONE relayed") },
  { "path": "$P", "match": "W1-SAW-LIMIT", "body": $(answer "SYS-RELAY") },
  { "path": "$P", "match": "FORGED-CHECKED", "body": $(answer "W1-SAW-LIMIT") },
  { "path": "$P", "match": "system.max_delegation_hops", "body": $(execcall x1 "sh $A/worker1/workspace/forge.sh") },
  { "path": "$P", "match": "hop-three please", "body": $(send h3 worker2 "hop-four please" true) },
  { "path": "$P", "match": "hop-two please", "body": $(send h2 worker1 "hop-three please" true) },
  { "path": "$P", "match": "hops-start", "body": $(send h1 sysadmin "hop-two please" true) },

  { "path": "$P", "match": "Sent task", "body": $(answer "sent on") },
  { "path": "$P", "match": "refused the task", "body": $(answer "PONG-REFUSED") },
  { "path": "$P", "match": "pong-back", "body": $(send p2 concierge "ping-again" false) },
  { "path": "$P", "match": "ping-start", "body": $(send p1 sysadmin "pong-back" false) },
  { "path": "$P", "body": $(answer "fallback answer") }
] }
EOF
# What a hijacked worker1 session runs instead of send_task: straight to worker2's bus name, first
# with a chain of its own making (Deliver has no such key), then a plain Submit.
cat >"$T/forge.sh" <<EOF
#!/bin/sh
busctl --system call $W2 /org/conspiracy/Agent org.conspiracy.Agent1 Deliver 'a{sv}' 2 text s forged-hop chain s '' 2>&1
busctl --system call $W2 /org/conspiracy/Agent org.conspiracy.Agent1 Submit s forged-hop 2>&1
echo FORGED-CHECKED
EOF
chmod 0755 "$T/forge.sh"
start_fake_llm

section "bootstrap: four agents that may task each other, at most 2 hops"
mkdir -p /etc/con
cat >/etc/con/con.yaml <<EOF
system:
  name: delegation-test
  max_delegation_hops: 2
base:
  runner: picoclaw
  provider: compatible
  base_url: http://127.0.0.1:$PORT/v1
  model: fake-model
agents:
  - name: concierge
    tier: operator
  - name: sysadmin
    tier: operator
  - name: worker1
    tier: operator
  - name: worker2
    tier: operator
  - name: spare
    tier: operator
policy:
  grants:
    - {who: sysadmin, may: [task], to: ["*"]}
    - {who: worker1, may: [task], to: ["*"]}
    - {who: worker2, may: [task], to: ["*"]}
EOF
check "con bootstrap" con bootstrap
printf 'CON_API_KEY=sk-delegation-test\n' >/etc/con/env
check "the hijack script in worker1's workspace, owned by the agent user" \
        install -o a-worker1 -g "$(id -gn a-worker1)" -m 0700 "$T/forge.sh" $A/worker1/workspace/forge.sh

section "a cycle back to a waiting agent is refused as a tool error"
check_output "the concierge's answer comes back" 'CYCLE-DONE relayed' con-send --timeout 200 "cycle-start"
check_output "sysadmin's model got the refusal as the send_task result" \
        'DelegationRefused.*agent .concierge. is already in the chain.*would be a cycle' \
        jq -r 'select(.body.messages[-1].role == "tool") | .body.messages[-1].content' "$T/fake.log"
check_fail "... and the concierge never got the cyclic task" grep -q cycle-third "$A/concierge/queue/journal"
CONC_TASK=$(jq -r 'select(.op == "accept" and .text == "cycle-start") | .id' "$A/concierge/queue/journal")
SYS_REC=$(accept_of sysadmin "cycle-back please")
check_eq "the sysadmin's task records its parent (the concierge's task)" "concierge/$CONC_TASK" \
        "$(jq -r .chain <<<"$SYS_REC")"
SYS_DL=$(jq -r .deadline <<<"$SYS_REC")
check "... and got a deadline although none was asked for (the parent's session bound)" test "$SYS_DL" -gt 0
check_output "... which is the chain con task shows" "concierge/$CONC_TASK" \
        jq -r .chain "$A/sysadmin/queue/finished/$(jq -r .id <<<"$SYS_REC").json"
check_eq "... and the transcript (con task --transcript) names the parent" "concierge/$CONC_TASK 1" \
        "$(con task "$(jq -r .id <<<"$SYS_REC")" --transcript --json | jq -r '"\(.parent) \(.hops)"')"
check_output "... in the audit trail too (task.accepted)" "concierge/$CONC_TASK" \
        jq -r 'select(.event == "task.accepted" and .agent == "sysadmin") | .chain' /srv/con/logs/audit/audit.jsonl
check_eq "no running-task record is left once the tasks are over" "" \
        "$(find $A/concierge/queue/running $A/sysadmin/queue/running -type f)"
stat_is "the running records are the service's own" "$A/concierge/queue/running" "root:root 700"

section "the hop limit, and a hijacked session cannot forge a shorter chain"
check_output "the chain of three answers" 'HOPS-DONE relayed' con-send --timeout 300 "hops-start"
check_output "worker1's model got the hop refusal (hop 3 of a limit of 2)" \
        'DelegationRefused.*hop 3 of the chain concierge/[^ ]+ sysadmin/[^ ]+ worker1/[^ ]+, and system.max_delegation_hops' \
        jq -r 'select(.body.messages[-1].role == "tool") | .body.messages[-1].content' "$T/fake.log"
FORGE=$(requests_for FORGED-CHECKED)
check_output "a Deliver with a chain of its own making is refused (no such key)" "Unknown key 'chain'" \
        echo "$FORGE"
check_output "a direct Submit from the session is refused all the same" \
        'Delegation refused: this would be hop 3' echo "$FORGE"
check_fail "worker2 never got a task" test -s "$A/worker2/queue/journal"
W1_REC=$(accept_of worker1 "hop-three please")
check_output "worker1's task carries the whole chain" '^concierge/[^ ]+ sysadmin/[^ ]+$' jq -r .chain <<<"$W1_REC"
SYS2=$(accept_of sysadmin "hop-two please")
check "... and a deadline no later than its parent's" \
        test "$(jq -r .deadline <<<"$W1_REC")" -le "$(jq -r .deadline <<<"$SYS2")"

section "an agent user outside any session counts as one hop"
check_output "a-worker2 may Submit to the concierge (policy)" '^s "' \
        runuser -u a-worker2 -- busctl --system call org.conspiracy.Concierge /org/conspiracy/Agent \
        org.conspiracy.Agent1 Submit s "/ping"
check_eq "... recorded with the chain worker2/-" "worker2/-" "$(accept_of concierge /ping | jq -r .chain)"

section "ping-pong without waiting stays bounded"
BEFORE=$(wc -l <"$T/fake.log")
check_output "the first task answers" 'sent on' con-send --timeout 120 "ping-start"
check "sysadmin's pong ran and its send_task was refused" wait_for 60 bash -c \
        "jq -r '.body.messages[-1].content | tostring' $T/fake.log | grep -q 'concierge refused the task.*would be a cycle'"
sleep 2
check_fail "the concierge never got the ping back" grep -q ping-again "$A/concierge/queue/journal"
check "at most 4 model calls for the whole exchange" test $(($(wc -l <"$T/fake.log") - BEFORE)) -le 4

section "an agent that cannot start because con.yaml is invalid says so (not 'Launch helper exited')"
check "the spare agent has not been started yet" bus_no_owner org.conspiracy.Spare
cp /etc/con/con.yaml "$T/con.yaml.good"
printf 'system:\n  max_delegation_hops: many\n' >>/etc/con/con.yaml
check_fail_output "con-send /ping names the file and what is wrong" \
        "could not be started: the configuration is invalid, /etc/con/con.yaml:[0-9]+:[0-9]+: .*" \
        con-send --to spare --timeout 30 /ping
check_fail "... and not only the launch helper's code" grep -q 'Launch helper exited' <<<"$LIB_OUT"
cp "$T/con.yaml.good" /etc/con/con.yaml
check_output "with the file repaired the same /ping is answered" '^pong$' con-send --to spare --timeout 30 /ping

kill "$FAKE_PID" 2>/dev/null
finish
