#!/bin/bash
# Conversations, context bounds and malformed tool arguments of the picoclaw runtime, end to end
# with the scripted fake LLM (docs/AGENT.md "Conversations"): a second sender's model request
# never holds the first sender's text; --continue works for the same sender and is refused for
# another sender's conversation; a failed task is not replayed; concurrent sessions of one
# conversation keep both turns; large tasks do not break the next ones (the provider's context
# limit is the fake's min_body rule); malformed tool arguments become a tool error and the task
# completes (both wire formats); /new and /forget; the file door's conversation: front matter.
# Runs as root inside tests/sandbox/con-sandbox.
. "$(dirname "$0")/lib.sh"
require_sandbox
FAKE=${CON_BUILD_DIR:?}/tests/fake-llm/con-fake-llm
T=$(lib_tmp)
chmod 0755 "$T"
LIMIT=450000 # the fake provider's context limit, in request bytes

answer() { # a final answer in the OpenAI wire format
        printf '{ "choices": [ { "message": { "content": "%s" }, "finish_reason": "stop" } ], "usage": { "prompt_tokens": 5, "completion_tokens": 5 } }' "$1"
}
# The request bodies whose last message contains TEXT, one JSON line each.
requests_for() {
        jq -c --arg t "$1" 'select((.body.messages[-1].content | tostring) | contains($t))' "$T/fake.log"
}

section "fake LLM server"
P=/v1/chat/completions
cat >"$T/script.json" <<EOF
{ "rules": [
  { "path": "$P", "min_body": $LIMIT, "status": 400,
    "body": { "error": { "type": "invalid_request_error", "code": "context_length_exceeded",
              "message": "This model's maximum context length is exceeded" } } },
  { "path": "$P", "match": "alice-fails-now", "status": 400,
    "body": { "error": { "type": "invalid_request_error", "message": "scripted failure" } } },
  { "path": "$P", "match": "bad-args-please",
    "body": { "choices": [ { "message": { "content": null, "tool_calls": [ { "id": "call_bad", "type": "function",
      "function": { "name": "exec", "arguments": "{\"command\": ls -l" } } ] }, "finish_reason": "tool_calls" } ] } },
  { "path": "$P", "match": "the arguments are not a JSON object", "body": $(answer "RECOVERED from the bad arguments") },
  { "path": "$P", "match": "slow-turn", "delay_ms": 1500, "body": $(answer "slow answer") },
  { "path": "/v1/messages", "match": "bad-input-please",
    "body": { "type": "message", "role": "assistant", "stop_reason": "tool_use",
              "content": [ { "type": "tool_use", "id": "toolu_bad", "name": "list_dir", "input": "[\"/\"]" } ],
              "usage": { "input_tokens": 5, "output_tokens": 5 } } },
  { "path": "/v1/messages", "match": "the arguments are not a JSON object",
    "body": { "type": "message", "role": "assistant", "stop_reason": "end_turn",
              "content": [ { "type": "text", "text": "ANTHROPIC RECOVERED" } ],
              "usage": { "input_tokens": 5, "output_tokens": 5 } } },
  { "path": "$P", "body": $(answer "fine answer") }
] }
EOF
start_fake_llm

section "bootstrap: the concierge on the fake model, a window of 100000 tokens, two sessions"
mkdir -p /etc/con
cat >/etc/con/con.yaml <<EOF
system:
  name: mind-test
base:
  runner: picoclaw
  provider: compatible
  base_url: http://127.0.0.1:$PORT/v1
  model: fake-model
  context_window: 100000
agents:
  - name: concierge
    tier: operator
    max_sessions: 2
  - name: scribe
    provider: anthropic
EOF
check "con bootstrap" con bootstrap
printf 'CON_API_KEY=sk-mind-test\nCON_AUTH_ANTHROPIC=sk-ant-mind-test\n' >/etc/con/env
for u in alice bob; do
        id -u "$u" >/dev/null 2>&1 || useradd --no-create-home --shell /usr/sbin/nologin "$u"
        gpasswd -a "$u" con >/dev/null
done
ALICE_UID=$(id -u alice)
SESS=/srv/con/agents/concierge/queue/conversations
WS=/srv/con/agents/concierge/workspace

section "an install of an earlier version: conversations in the workspace are removed unread"
OLD_TURN='{"messages":[{"role":"user","content":"planted-4242"}]}'
check "a-concierge plants a conversation in the old place" as_user a-concierge bash -c \
        "mkdir -p $WS/sessions/$ALICE_UID && echo '$OLD_TURN' >$WS/sessions/$ALICE_UID/old.json &&
         echo old >$WS/sessions/$ALICE_UID/.latest"

section "a second sender never gets the first sender's text"
check_output "alice's task is answered" 'fine answer' as_user alice con-send --json --timeout 120 "alice-secret-4711 hello"
A1=$(jq -r .task_id <<<"$LIB_OUT")
check "... her conversation is named after the task" test -n "$A1"
check_output "bob's task is answered" 'fine answer' as_user bob con-send --json --timeout 120 "bob-question-1"
B1=$(jq -r .task_id <<<"$LIB_OUT")
check_eq "the model got one request for bob's task" 1 "$(requests_for bob-question-1 | wc -l)"
check_fail "... without alice's text" grep -q alice-secret-4711 <<<"$(requests_for bob-question-1)"
check_output "... and with bob's own" 'bob-question-1' requests_for bob-question-1
check_output "root's task is answered" 'fine answer' con-send --timeout 120 "root-task-1"
check_fail "... without alice's or bob's text" grep -Eq 'alice-secret-4711|bob-question-1' <<<"$(requests_for root-task-1)"
check_output "alice's new task (no --continue) starts afresh" 'fine answer' \
        as_user alice con-send --timeout 120 "alice-fresh-2"
check_fail "... without her first task's text" grep -q alice-secret-4711 <<<"$(requests_for alice-fresh-2)"
stat_is "the conversations are in the service's state" "$SESS" "root:root 700"
stat_is "... per sender uid" "$SESS/$ALICE_UID" "root:root 700"
stat_is "... one file per conversation" "$SESS/$ALICE_UID/$A1.json" "root:root 600"
check_output "... with her task in it" 'alice-secret-4711' cat "$SESS/$ALICE_UID/$A1.json"
check_fail "the workspace's sessions/ of the earlier version is gone" test -e "$WS/sessions"
check_fail "... its planted text never reached a request" grep -q planted-4242 "$T/fake.log"

section "the agent user cannot reach the conversations (runuser -u a-concierge)"
check_fail "list the senders' folders" as_user a-concierge ls "$SESS"
check_fail "list alice's conversations" as_user a-concierge ls "$SESS/$ALICE_UID"
check_fail "read alice's conversation" as_user a-concierge cat "$SESS/$ALICE_UID/$A1.json"
check_fail "read bob's conversation" as_user a-concierge cat "$SESS/$(id -u bob)/$B1.json"
check_fail "read alice's latest" as_user a-concierge cat "$SESS/$ALICE_UID/.latest"
check_fail "overwrite alice's conversation" as_user a-concierge \
        bash -c "echo '{\"messages\":[]}' >$SESS/$ALICE_UID/$A1.json"
check_fail "plant a conversation for bob" as_user a-concierge \
        bash -c "echo '{\"messages\":[]}' >$SESS/$(id -u bob)/planted.json"
check_fail "replace the conversations folder" as_user a-concierge mv "$SESS" "$SESS.old"
check_output "alice's conversation is unchanged" 'alice-secret-4711' cat "$SESS/$ALICE_UID/$A1.json"

section "--continue: the same sender only"
check_output "alice continues her first conversation by id" 'fine answer' \
        as_user alice con-send --continue="$A1" --timeout 120 "alice-followup-3"
check_output "... the model got her earlier task and its answer" 'alice-secret-4711 hello.*fine answer.*alice-followup-3' \
        requests_for alice-followup-3
check_output "alice continues her latest conversation" 'fine answer' \
        as_user alice con-send --continue --timeout 120 "alice-latest-4"
check_output "... which is the first one (continued last)" 'alice-secret-4711.*alice-followup-3.*alice-latest-4' \
        requests_for alice-latest-4
check_output "--id and --continue together" 'fine answer' \
        as_user alice con-send --id alice-named-15 --continue="$A1" --timeout 120 "alice-with-id-15"
check_output "... in her conversation" 'alice-secret-4711.*alice-latest-4.*alice-with-id-15' requests_for alice-with-id-15
check_fail_output "bob naming alice's conversation is refused" \
        "refused: bob has no conversation '$A1' with agent 'concierge'" \
        as_user bob con-send --continue="$A1" --timeout 120 "bob-steals-5"
check_eq "... and the model never saw that task" 0 "$(requests_for bob-steals-5 | wc -l)"
check_fail_output "an id that is no conversation id is refused by con-send" "is not a conversation id" \
        as_user bob con-send --continue=../1000/x --timeout 120 "bob-path-6"
check_fail_output "... and by the agent (Deliver)" "InvalidArgs|not a conversation id" \
        as_user bob busctl --system call org.conspiracy.Concierge /org/conspiracy/Agent org.conspiracy.Agent1 \
        Deliver 'a{sv}' 2 text s x conversation s ../x
check_output "bob's --continue takes his own latest" 'fine answer' \
        as_user bob con-send --continue --timeout 120 "bob-latest-7"
check_output "... which has his first task" 'bob-question-1.*bob-latest-7' requests_for bob-latest-7
check_fail "... and nothing of alice's" grep -q alice <<<"$(requests_for bob-latest-7)"

section "a failed task is not replayed"
check_status "alice's failing task fails" 1 as_user alice con-send --continue --timeout 120 "alice-fails-now"
check_output "alice continues" 'fine answer' as_user alice con-send --continue --timeout 120 "alice-after-failure-8"
check_fail "... the failed task is not in the request" grep -q alice-fails-now <<<"$(requests_for alice-after-failure-8)"
check_output "... her completed turns are" 'alice-latest-4' requests_for alice-after-failure-8
check_fail "... nor in the conversation file" grep -q alice-fails-now "$SESS/$ALICE_UID/$A1.json"

section "two sessions of one conversation at once keep both turns"
as_user alice con-send --continue --timeout 120 "slow-turn-A" >"$T/slow-a" 2>&1 &
SA=$!
as_user alice con-send --continue --timeout 120 "slow-turn-B" >"$T/slow-b" 2>&1 &
SB=$!
wait $SA; RA=$?
wait $SB; RB=$?
check_eq "both concurrent tasks are answered" "0 0" "$RA $RB"
check_fail "... they overlapped: B's session loaded the conversation before A's turn was kept" \
        grep -q slow-turn-A <<<"$(requests_for slow-turn-B)"
check_fail "... and A's before B's" grep -q slow-turn-B <<<"$(requests_for slow-turn-A)"
check_output "the next turn is answered" 'fine answer' as_user alice con-send --continue --timeout 120 "after-both-9"
check_output "... and has both concurrent turns" 'slow-turn-A' requests_for after-both-9
check_output "... both" 'slow-turn-B' requests_for after-both-9

section "large tasks in one conversation do not break the next ones"
big() { # big TAG BYTES: a task of about BYTES bytes
        printf '%s ' "$1"
        head -c "$2" /dev/zero | tr '\0' 'x'
}
check_output "a first large task (120 kB)" 'fine answer' \
        bash -c "$(declare -f big); big big-1 120000 | (cd / && runuser -u alice -- con-send --json --timeout 120 -)"
BIG=$(jq -r .task_id <<<"$LIB_OUT")
for n in 2 3 4; do
        check_output "large task $n of 4 in the same conversation" 'fine answer' \
                bash -c "$(declare -f big); big big-$n 120000 | (cd / && runuser -u alice -- con-send --continue=$BIG --timeout 120 -)"
done
check_eq "no request reached the provider's context limit" "" \
        "$(jq -c "select(.body_bytes >= $LIMIT) | .seq" "$T/fake.log")"
check_output "the fourth request left the oldest turns out, with the marker" \
        "Earlier messages of this conversation were left out" requests_for big-4
check_fail "... big-1 is not in it" grep -q '"big-1 ' <<<"$(requests_for big-4)"
check_output "a 900 kB task is answered too" 'fine answer' \
        bash -c "$(declare -f big); big huge-5 900000 | (cd / && runuser -u alice -- con-send --continue=$BIG --timeout 120 -)"
check_output "... the model got its head and tail and where the whole text is" \
        'the whole text is in /srv/con/agents/concierge/workspace/tool-output/'"$ALICE_UID/" requests_for huge-5
check_eq "... and no request reached the limit" "" "$(jq -c "select(.body_bytes >= $LIMIT) | .seq" "$T/fake.log")"
check_output "the conversation file stays bounded" '^[0-9]+$' stat -c %s "$SESS/$ALICE_UID/$BIG.json"
check "... below the window" test "$LIB_OUT" -lt "$LIMIT"
check_output "a fifth task in the same conversation still works" 'fine answer' \
        as_user alice con-send --continue="$BIG" --timeout 120 "after-big-10"

section "malformed tool arguments become a tool error; the task completes"
check_output "the task completes with the model's recovery" 'RECOVERED from the bad arguments' \
        as_user alice con-send --timeout 120 "bad-args-please"
check_output "the tool result told the model what was wrong" \
        'exec: the arguments are not a JSON object \(invalid JSON\): \{\\"command\\": ls -l' \
        jq -c 'select(.body.messages[-1].role == "tool") | .body.messages[-1]' "$T/fake.log"
check_output "... as an error result for the call" '"tool_call_id":"call_bad"' echo "$LIB_OUT"

check_output "the same on the Anthropic wire (input a string): the task completes" 'ANTHROPIC RECOVERED' \
        con-send --to scribe --timeout 120 "bad-input-please"
check_output "... the tool result told the model" \
        'list_dir: the arguments are not a JSON object \(a string\)' \
        jq -c 'select(.path == "/v1/messages") | .body.messages[-1]' "$T/fake.log"
check_output "... as an error for its call" '"tool_use_id":"toolu_bad".*"is_error":true' echo "$LIB_OUT"

section "the file door: conversation: in the front matter"
check "con up (the router)" con up
as_user alice bash -c "printf -- '---\nconversation: $A1\n---\nfile-door-followup-11\n' >/srv/con/inbox/alice-fd.task"
check "the file task is answered" wait_for 60 test -e /srv/con/agents/concierge/outbox/alice-fd.response
check_output "... inside alice's conversation" 'alice-secret-4711.*file-door-followup-11' requests_for file-door-followup-11

section "/new and /forget"
check_output "/new" 'starts a new conversation' as_user alice con-send --timeout 60 /new
check_output "--continue after /new starts afresh" 'fine answer' \
        as_user alice con-send --continue --timeout 120 "after-new-12"
check_fail "... without her earlier turns" grep -Eq 'alice-secret-4711|big-|slow-turn' <<<"$(requests_for after-new-12)"
check_output "--continue=ID still returns to an old one" 'fine answer' \
        as_user alice con-send --continue="$A1" --timeout 120 "back-to-old-13"
check_output "... with its turns" 'alice-secret-4711' requests_for back-to-old-13
check_output "/forget deletes alice's conversations" 'Deleted [0-9]+ conversations of yours with agent concierge' \
        as_user alice con-send --timeout 60 /forget
check_fail "... her directory is gone" test -e "$SESS/$ALICE_UID"
check_fail_output "... her old conversation can no longer be continued" "has no conversation '$A1'" \
        as_user alice con-send --continue="$A1" --timeout 120 "after-forget-14"
check_output "... bob's conversations are untouched" 'bob-question-1' cat "$SESS/$(id -u bob)/$B1.json"

kill "$FAKE_PID" 2>/dev/null
finish
