#!/bin/bash
# Transcripts, progress, task states and cancel, end to end with the scripted fake LLM (docs/AGENT.md
# "Transcripts", "States and properties"): con-send --progress shows each step from TaskProgress;
# con task ID --transcript [--json] shows the model, each turn's tokens, the tool call with its
# arguments, exit code and output size, cost and duration; the transcript is root's file the agent
# user cannot read, and another user cannot fetch it; states carry the A2A names on the bus and in
# JSON; con cancel kills a running session with its tool. Runs as root inside tests/sandbox/con-sandbox.
. "$(dirname "$0")/lib.sh"
require_sandbox
FAKE=${CON_BUILD_DIR:?}/tests/fake-llm/con-fake-llm
T=$(lib_tmp)
chmod 0755 "$T"
A=/srv/con/agents/concierge
C=org.conspiracy.Concierge
P=/org/conspiracy/Agent
I=org.conspiracy.Agent1

answer() { # a final answer in the OpenAI wire format
        printf '{ "choices": [ { "message": { "content": "%s" }, "finish_reason": "stop" } ], "usage": { "prompt_tokens": 5, "completion_tokens": 5 } }' "$1"
}
execcall() { # execcall ID COMMAND (no double quotes in it)
        printf '{ "choices": [ { "message": { "content": null, "tool_calls": [ { "id": "%s", "type": "function", "function": { "name": "exec", "arguments": "{\\"command\\":\\"%s\\"}" } } ] }, "finish_reason": "tool_calls" } ], "usage": { "prompt_tokens": 7, "completion_tokens": 3 } }' "$1" "$2"
}
state_of() { busctl --system call $C $P $I GetResult s "$1" | cut -d'"' -f2; }

section "fake LLM server"
PA=/v1/chat/completions
cat >"$T/script.json" <<EOF
{ "rules": [
  { "path": "$PA", "match": "Exit code: 2", "body": $(answer "TRANSCRIPT-DONE") },
  { "path": "$PA", "match": "transcript-task", "body": $(execcall t1 "ls /nonexistent-transcript-dir") },
  { "path": "$PA", "match": "slow-cancel", "body": $(execcall s1 "sleep 347") },
  { "path": "$PA", "body": $(answer "fallback answer") }
] }
EOF
start_fake_llm

section "bootstrap: the concierge on the fake model, with prices"
mkdir -p /etc/con
cat >/etc/con/con.yaml <<EOF
system:
  name: transcript-test
models:
  price_per_mtok_in: 3.0
  price_per_mtok_out: 15.0
base:
  runner: picoclaw
  provider: compatible
  base_url: http://127.0.0.1:$PORT/v1
  model: fake-model
agents:
  - name: concierge
    tier: operator
EOF
check "con bootstrap" con bootstrap
printf 'CON_API_KEY=sk-transcript-test\n' >/etc/con/env
id -u alice >/dev/null 2>&1 || useradd --no-create-home --shell /usr/sbin/nologin alice
gpasswd -a alice con >/dev/null

section "progress while it runs, the A2A state in JSON"
con-send --progress --json --timeout 120 transcript-task >"$T/send.json" 2>"$T/progress"
check_output "con-send --json prints the completed task" '"status":"completed"' cat "$T/send.json"
ID=$(jq -r .task_id "$T/send.json")
check_output "... and its answer" 'TRANSCRIPT-DONE' cat "$T/send.json"
check_output "--progress showed the first model turn" 'concierge: turn 1, waiting for the model' cat "$T/progress"
check_output "... the tool" 'concierge: turn 1, running a tool' cat "$T/progress"
check_output "... and the second turn" 'concierge: turn 2, waiting for the model' cat "$T/progress"
check_output "ListTasks says completed" "\"$ID\" \"completed\" \"root\"" busctl --system call $C $P $I ListTasks
check_output "con tasks --json too" '^completed$' bash -c "con tasks concierge --json | jq -r '.[] | select(.task_id == \"$ID\") | .status'"

section "the transcript"
check "con task --transcript --json" bash -c "con task '$ID' --transcript --json >$T/transcript.json"
J=$(cat "$T/transcript.json")
check_eq "status" completed "$(jq -r .status <<<"$J")"
check_eq "model" fake-model "$(jq -r .model <<<"$J")"
check_eq "two turns, one tool call" "2 1" "$(jq -r '"\(.turns) \(.tool_calls)"' <<<"$J")"
check_eq "tokens in and out (7+5, 3+5)" "12 8" "$(jq -r '"\(.tokens_in) \(.tokens_out)"' <<<"$J")"
check_eq "cost from the configured prices" "0.000156" "$(jq -r '.cost * 1000000 | round / 1000000' <<<"$J")"
check_eq "the tool step: exec, its exit code" "exec 2" "$(jq -r '.steps[] | select(.ev == "tool") | "\(.tool) \(.exit)"' <<<"$J")"
check_output "... its arguments" 'nonexistent-transcript-dir' jq -r '.steps[] | select(.ev == "tool") | .args' <<<"$J"
check "... the size of its output, not the output" test "$(jq -r '.steps[] | select(.ev == "tool") | .bytes' <<<"$J")" -gt 10
check_fail "the output itself is not in the transcript" grep -q 'No such file' <<<"$J"
check "a duration" test "$(jq -r .duration_ms <<<"$J")" -ge 0
check_eq "no chain: root sent it" "null 0" "$(jq -r '"\(.chain) \(.hops)"' <<<"$J")"
check_output "the human form lists the tool call and its exit code" 'tool exec .*nonexistent-transcript-dir.* -> exit 2' \
        con task "$ID" --transcript
check_output "... and the cost" 'cost: +\$0.000156' echo "$LIB_OUT"

section "transcripts are root's records"
stat_is "the transcript folder" "$A/queue/transcripts" "root:root 700"
stat_is "the transcript file" "$A/queue/transcripts/$ID.json" "root:root 600"
check_fail_output "the agent user cannot read it" 'Permission denied' runuser -u a-concierge -- cat "$A/queue/transcripts/$ID.json"
check_fail_output "... nor write one" 'Permission denied' runuser -u a-concierge -- sh -c "echo x >$A/queue/transcripts/forged.json"
check_fail_output "another user cannot fetch root's transcript" 'Access denied' \
        runuser -u alice -- busctl --system call $C $P $I GetTranscript s "$ID"
runuser -u alice -- con-send --json --timeout 60 "alice asks" >"$T/alice" 2>&1
check_output "alice's own task" 'fallback answer' cat "$T/alice"
AID=$(jq -r .task_id "$T/alice")
check_output "... whose transcript she may read" 'sender.{1,6}alice' \
        runuser -u alice -- busctl --system call $C $P $I GetTranscript s "$AID"
check_output "a built-in's transcript has no steps" '"steps":\[\]' bash -c "con task \$(con-send --json /ping | jq -r .task_id) --transcript --json"

section "con cancel"
SID=$(con-send --no-wait --json slow-cancel | jq -r .task_id)
check "a task whose tool sleeps (${SID:-none})" test -n "$SID"
check "its tool runs (sleep 347 as a-concierge)" wait_for 60 pgrep -u a-concierge -f 'sleep 347'
check_eq "its state is working" working "$(state_of "$SID")"
check_output "con cancel" "Task $SID on agent concierge: (canceling|canceled)" con cancel "$SID"
check "the task ends canceled" wait_for 20 bash -c "[ \"\$(busctl --system call $C $P $I GetResult s $SID | cut -d'\"' -f2)\" = canceled ]"
check_fail "no process of the session is left" pgrep -u a-concierge -f 'sleep 347'
check_output "con cancel of a finished task says so" "Task $ID on agent concierge: completed" con cancel "$ID"
check_fail_output "con cancel of an unknown id" "no agent knows a task 'nope-42'" con cancel nope-42
check_eq "the canceled task's transcript says canceled" canceled "$(con task "$SID" --transcript --json | jq -r .status)"

kill "$FAKE_PID" 2>/dev/null
finish
