#!/bin/bash
# The picoclaw runtime (the LLM tool loop in the agent's session) end to end: con-send → concierge
# → its session → org.conspiracy.Models (con-modeld) → the scripted fake LLM server, with real
# tools: a direct answer; an exec whose command fails (the exit code goes back to the model);
# concierge → sysadmin delegation with send_task(wait) and the reply reaching the human; and the
# exec tool finding no key. Runs as root inside tests/sandbox/con-sandbox.
. "$(dirname "$0")/lib.sh"
require_sandbox
FAKE=${CON_BUILD_DIR:?}/tests/fake-llm/con-fake-llm
T=$(lib_tmp)
chmod 0755 "$T"
KEY=sk-toolloop-secret-31415926

answer() { # a final answer in the OpenAI wire format
        printf '{ "choices": [ { "message": { "content": "%s" }, "finish_reason": "stop" } ], "usage": { "prompt_tokens": 5, "completion_tokens": 5 } }' "$1"
}
toolcall() { # toolcall ID NAME ARGS_JSON_AS_STRING
        printf '{ "choices": [ { "message": { "content": null, "tool_calls": [ { "id": "%s", "type": "function", "function": { "name": "%s", "arguments": %s } } ] }, "finish_reason": "tool_calls" } ] }' "$1" "$2" "$3"
}

section "fake LLM server"
P=/v1/chat/completions
# What a hijacked session would run through the exec tool: the model gateway directly, with fresh
# task ids, and a registration of its own.
cat >"$T/hostile.sh" <<'EOF'
#!/bin/sh
ok=0 refused=0
for i in 1 2 3 4 5; do
        if dbus-send --system --print-reply --reply-timeout=30000 --dest=org.conspiracy.Models \
                /org/conspiracy/Models org.conspiracy.Models1.Complete \
                "string:{\"task_id\":\"hostile-$i\",\"messages\":[{\"role\":\"user\",\"content\":\"bigspend-fresh\"}]}" \
                >/dev/null 2>&1; then
                ok=$((ok + 1))
        else
                refused=$((refused + 1))
        fi
done
if dbus-send --system --print-reply --dest=org.conspiracy.Models /org/conspiracy/Models \
        org.conspiracy.Models1.RegisterTask string:concierge string:hostile-reg >/dev/null 2>&1; then
        echo REGISTERED-ITSELF
else
        echo REGISTER-REFUSED
fi
echo "HOSTILE-DONE ok=$ok refused=$refused"
EOF
chmod 0755 "$T/hostile.sh"
cat >"$T/script.json" <<EOF
{ "rules": [
  { "path": "$P", "match": "HOSTILE-DONE", "body": $(answer "hostile run over") },
  { "path": "$P", "match": "bigspend-fresh",
    "body": { "choices": [ { "message": { "content": "expensive" }, "finish_reason": "stop" } ],
              "usage": { "prompt_tokens": 900, "completion_tokens": 100 } } },
  { "path": "$P", "match": "hostile-session",
    "body": $(toolcall call_h exec '"{\"command\":\"sh /srv/con/agents/concierge/workspace/hostile.sh\"}"') },
  { "path": "$P", "match": "spend-the-budget",
    "body": { "choices": [ { "message": { "content": null, "tool_calls": [ { "id": "call_b", "type": "function",
      "function": { "name": "exec", "arguments": "{\"command\":\"echo SPENT-IT\"}" } } ] }, "finish_reason": "tool_calls" } ],
      "usage": { "prompt_tokens": 900, "completion_tokens": 100 } } },
  { "path": "$P", "match": "SPENT-IT", "body": $(answer "BUDGET-NOT-ENFORCED") },
  { "path": "$P", "match": "say-hello-direct", "body": $(answer "Hello human, direct answer.") },
  { "path": "$P", "match": "run-failing-tool",
    "body": $(toolcall call_f exec '"{\"command\":\"ls /nonexistent-toolloop-dir\"}"') },
  { "path": "$P", "match": "Exit code: 2", "body": $(answer "The command failed with exit code 2.") },
  { "path": "$P", "match": "delegate-disk-check",
    "body": $(toolcall call_d send_task '"{\"agent\":\"sysadmin\",\"text\":\"sysadmin-disk-check please\",\"wait\":true}"') },
  { "path": "$P", "match": "sysadmin-disk-check please", "body": $(answer "SYSADMIN-REPORT disks are fine") },
  { "path": "$P", "match": "SYSADMIN-REPORT", "body": $(answer "sysadmin reports: disks are fine (relayed by concierge)") },
  { "path": "$P", "match": "look-for-keys",
    "body": { "choices": [ { "message": { "content": null, "tool_calls": [
      { "id": "k1", "type": "function", "function": { "name": "exec", "arguments": "{\"command\":\"cat /etc/con/env\"}" } },
      { "id": "k2", "type": "function", "function": { "name": "exec", "arguments": "{\"command\":\"env\"}" } },
      { "id": "k3", "type": "function", "function": { "name": "exec",
        "arguments": "{\"command\":\"cat /proc/*/environ 2>/dev/null | tr '\\\\\\\\0' '\\\\\\\\n' | grep -c CON_API_KEY; echo KEYS-LOOKED\"}" } } ] },
      "finish_reason": "tool_calls" } ] } },
  { "path": "$P", "match": "KEYS-LOOKED", "body": $(answer "I looked for keys.") },
  { "path": "$P", "match": "loop-forever",
    "body": $(toolcall call_l exec '"{\"command\":\"true\"}"') },
  { "path": "$P", "match": "Exit code: 0", "body": $(toolcall call_l2 exec '"{\"command\":\"true\"}"') },
  { "path": "$P", "match": "stop-at-length",
    "body": { "choices": [ { "message": { "content": "Partial ans" }, "finish_reason": "length" } ],
              "usage": { "prompt_tokens": 5, "completion_tokens": 5 } } },
  { "path": "$P", "match": "filter-me",
    "body": { "choices": [ { "message": { "content": "" }, "finish_reason": "content_filter" } ] } },
  { "path": "$P", "match": "hang-the-model", "behaviour": "hang" },
  { "path": "$P", "body": $(answer "fallback answer") }
] }
EOF
start_fake_llm

section "bootstrap: concierge and sysadmin on the fake model"
mkdir -p /etc/con
cat >/etc/con/con.yaml <<EOF
system:
  name: toolloop-test
models:
  timeout: 6s
  agents:
    concierge:
      budget_tokens_per_task: 50
base:
  runner: picoclaw
  provider: openrouter          # played by the fake server: CON_API_KEY is OpenRouter's key
  base_url: http://127.0.0.1:$PORT/v1
  model: fake-model
agents:
  - name: concierge
    tier: operator
  - name: sysadmin
    tier: operator
    roles: [sysadmin]
EOF
# The default profile's AGENTS.md layers and skills, with this test's con.yaml.
for d in base tiers roles agents; do
        [ -d "/usr/share/conspiracyos/profiles/default/$d" ] && cp -r "/usr/share/conspiracyos/profiles/default/$d" /etc/con/
done
check "con bootstrap" con bootstrap
check "the concierge's AGENTS.md is installed" test -s /home/a-concierge/AGENTS.md
printf 'CON_API_KEY=%s\n' "$KEY" >/etc/con/env
stat_is "bootstrap made the key file for the gateway; writing keys kept it" /etc/con/env "root:con-models 640"

section "a direct answer"
check_output "con-send prints the model's answer" 'Hello human, direct answer' \
        con-send --timeout 120 "say-hello-direct"
check_output "the model got the system prompt of the concierge" 'You are the agent \\"concierge\\"' \
        jq -c 'select(.body.messages[-1].content | tostring | test("say-hello-direct")) | .body' "$T/fake.log"
check_output "... the task framed as verified (root sent it)" 'Task from verified source' echo "$LIB_OUT"
check_output "... and the tool schemas" '"name":"send_task"' echo "$LIB_OUT"
check_output "... with the installed AGENTS.md in it" '# Concierge' echo "$LIB_OUT"
CONV=/srv/con/agents/concierge/queue/conversations/0 # root's conversations with the concierge
check_output "the conversation was kept, under root's uid" 'say-hello-direct' \
        bash -c "cat $CONV/\$(cat $CONV/.latest).json"
check_output "... in the service's state, not the agent's" '^root 600$' \
        bash -c "stat -c '%U %a' $CONV/\$(cat $CONV/.latest).json"

check_output "the agent service registered the task with the model gateway (budgets are keyed by it)" \
        '^concierge$' jq -r 'select(.event == "model.task_registered") | .agent' /srv/con/logs/models/audit.jsonl
for _ in $(seq 50); do grep -q '"model.task_ended"' /srv/con/logs/models/audit.jsonl && break; sleep 0.1; done
check_output "... and ended it when the session was over" '^concierge$' \
        jq -r 'select(.event == "model.task_ended") | .agent' /srv/con/logs/models/audit.jsonl
check_output "... so its call was charged to that task" '^1 0$' \
        jq -s -r '[.[] | select(.event == "model.call" and .agent == "concierge")] |
                  "\([.[] | select(.task_id != null)] | length) \([.[] | select(.task_id == null)] | length)"' \
        /srv/con/logs/models/audit.jsonl

section "a tool call whose command fails"
check_output "the model's answer after the failed command" 'failed with exit code 2' \
        con-send --timeout 120 "run-failing-tool"
check_output "the tool result fed back has stderr and the exit code" 'No such file or directory.*Exit code: 2' \
        jq 'select(.body.messages[-1].role == "tool") | .body.messages[-1].content' "$T/fake.log"

section "concierge delegates to sysadmin and answers with its result"
check_output "con-send gets the relayed answer" 'sysadmin reports: disks are fine' \
        con-send --timeout 300 "delegate-disk-check"
check_output "the sysadmin's session answered the delegated task (unverified: sent by a-concierge)" \
        'unverified source.*a-concierge' \
        jq -r 'select(.body.messages[-1].content | tostring | test("sysadmin-disk-check please")) | .body.messages[-1].content' "$T/fake.log"
check_output "the concierge's model got the sysadmin's result as the send_task result" \
        'sysadmin finished task .* \(completed\):.{1,2}SYSADMIN-REPORT disks are fine' \
        jq 'select(.body.messages[-1].role == "tool") | .body.messages[-1].content' "$T/fake.log"
check_output "the sysadmin's prompt carries its skills" '## Skill: ' \
        jq -r 'select(.body.messages[-1].content | tostring | test("sysadmin-disk-check please")) | .body.messages[0].content' "$T/fake.log"
check_output "sysadmin's task is recorded as sent by a-concierge" 'a-concierge' \
        busctl --system call org.conspiracy.Sysadmin /org/conspiracy/Agent org.conspiracy.Agent1 ListTasks

section "no key through the exec tool"
check_output "the key hunt ends with an answer" 'I looked for keys' con-send --timeout 120 "look-for-keys"
jq -r 'select(.body.messages[-1].role == "tool") | .body.messages[] | select(.role == "tool") | .content' \
        "$T/fake.log" >"$T/tool-results"
check_output "cat /etc/con/env is refused" 'cat: /etc/con/env: Permission denied' cat "$T/tool-results"
check_output "/proc/*/environ holds no CON_API_KEY the agent can read" '^0$' grep -x 0 "$T/tool-results"
check_fail "no tool result contains the key" grep -F "$KEY" "$T/tool-results"
check_eq "no request body the sessions produced contains the key" "0" \
        "$(jq -c '.body' "$T/fake.log" | grep -cF "$KEY")"
check_output "control: the key did reach the provider as the Bearer token" "Bearer $KEY" \
        jq -r '.headers.authorization' "$T/fake.log"

section "loop detection"
check_fail_output "the same call three times in a row stops the task" 'loop detected' \
        con-send --timeout 120 "loop-forever"

section "a hijacked session calling the gateway with fresh task ids is limited all the same"
# As if the session had written it: in its workspace (its working directory), as the agent user.
check "a script in the concierge's workspace, owned by the agent user" \
        install -o a-concierge -g "$(id -gn a-concierge)" -m 0700 "$T/hostile.sh" /srv/con/agents/concierge/workspace/hostile.sh
check_output "the session runs its calls and finishes" 'hostile run over' con-send --timeout 180 "hostile-session"
jq -r 'select(.body.messages[-1].role == "tool") | .body.messages[-1].content' "$T/fake.log" >"$T/hostile-results"
check_output "... one of five fresh-id calls was answered (the unregistered day's budget of 50), four refused" \
        'HOSTILE-DONE ok=1 refused=4' cat "$T/hostile-results"
check_output "... it could not register a task of its own" 'REGISTER-REFUSED' cat "$T/hostile-results"
check_eq "... the provider was asked once for them" 1 "$(grep -c bigspend-fresh "$T/fake.log")"
check_eq "... each refusal is a record in the gateway's usage log" 4 \
        "$(jq -r 'select(.event == "model.refused") | .task_id' /srv/con/logs/models/audit.jsonl | grep -c '^hostile-')"
check_output "... and so is the registration attempt" '^hostile-reg$' \
        jq -r 'select(.event == "model.register_refused") | .task_id' /srv/con/logs/models/audit.jsonl

section "stop reasons: a cut-off or filtered answer is not a result"
check_status "an answer cut at the token limit: exit status 1" 1 con-send --timeout 120 "stop-at-length"
check_output "... the task failed as truncated, with the provider's reason" \
        'failed: .*truncated: the model.s answer was cut off at the token limit \(stop reason "length", max_tokens 8192\)' \
        echo "$LIB_OUT"
ID=$(sed -n 's/^con-send: task \([^ ]*\) failed.*/\1/p' <<<"$LIB_OUT" | head -n1)
check_output "con task $ID: failed, with the reason" 'failed' con task "${ID:-none}"
check_output "... truncated, stop reason length" 'truncated: .*stop reason "length"' echo "$LIB_OUT"
check_fail "... the cut-off text was not stored as the result" grep -q 'Partial ans' <<<"$LIB_OUT"
check_status "an answer stopped by the content filter: exit status 1" 1 con-send --timeout 120 "filter-me"
check_output "... filtered, with the provider's reason" \
        'filtered: the provider.s content filter stopped the answer \(stop reason "content_filter"\)' echo "$LIB_OUT"

section "a gateway timeout names the gateway's limit"
check_status "a model that never answers: exit status 1" 1 con-send --timeout 120 "hang-the-model"
check_output "... the reason is the gateway's: models.timeout of 6 s" \
        "timed out in the gateway: provider 'openrouter' \(model fake-model\) at .* did not answer within 6 s \(models.timeout" \
        echo "$LIB_OUT"

section "budget exhausted: the task pauses; the session itself tells nobody"
# The notice to the sysadmin comes from con-contractd (test-budget-notice), not from the session.
sys_tasks_from_concierge() {
        busctl --system call org.conspiracy.Sysadmin /org/conspiracy/Agent org.conspiracy.Agent1 ListTasks |
                grep -o '"a-concierge"' | wc -l
}
N0=$(sys_tasks_from_concierge)
check_status "con-send: exit status 1" 1 con-send --timeout 120 "spend-the-budget"
check_output "... the task failed" 'failed' echo "$LIB_OUT"
check_output "... paused, naming the budget" "paused: agent 'concierge' has used up its model budget .*budget_tokens_per_task is 50" \
        echo "$LIB_OUT"
check_output "... and that the contract service notifies the sysadmin" 'The sysadmin is notified by the contract service' \
        echo "$LIB_OUT"
check_eq "the provider was not asked for the refused turn" 0 "$(grep -c BUDGET-NOT-ENFORCED "$T/fake.log")"
sleep 1
check_eq "the session sent the sysadmin no task of its own" "$N0" "$(sys_tasks_from_concierge)"
check_fail "... and left no marker in the workspace" test -e /srv/con/agents/concierge/workspace/.budget-notified
check_output "a task within the budget still works" 'Hello human, direct answer' \
        con-send --timeout 120 "say-hello-direct"

section "without the model gateway, free text fails with the clear message"
# Let the sysadmin finish its notice task first (it needs the gateway).
for _ in $(seq 300); do
        busctl --system call org.conspiracy.Sysadmin /org/conspiracy/Agent org.conspiracy.Agent1 ListTasks |
                grep -Eq '"(queued|running)"' || break
        sleep 0.1
done
mv /usr/share/dbus-1/system-services/org.conspiracy.Models.service "$T/"
busctl --system call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig >/dev/null
check "con-modeld is stopped" bus_stop org.conspiracy.Models
check_status "free text: exit status 1" 1 con-send --timeout 60 "say-hello-direct"
check_output "... the gateway is named as not available" \
        'the model gateway org\.conspiracy\.Models is not available \(org\.freedesktop\.DBus\.Error\.ServiceUnknown' \
        echo "$LIB_OUT"
check_output "built-in commands still work" 'pong' con-send --timeout 60 /ping
mv "$T/org.conspiracy.Models.service" /usr/share/dbus-1/system-services/

section "without a model, free text still fails with the clear message"
sed -i 's/^  model: fake-model$//' /etc/con/con.yaml
check "con bootstrap without a model" con bootstrap
# Restart the concierge so it reads the new config (by its pid, from the bus).
check "the concierge is stopped" bus_stop org.conspiracy.Concierge
check_fail_output "free text: the missing model is named" "has no model configured: set agents\[0\]\.model or base\.model" \
        con-send --timeout 60 "hello without a model"
check_output "built-in commands still work" 'pong' con-send --timeout 60 /ping

kill "$FAKE_PID" 2>/dev/null
finish
