#!/bin/bash
# The model gateway con-modeld: D-Bus activation as con-models, keys from /etc/con/env only and
# each only to its own provider's host (two fake LLM servers on loopback play OpenRouter and
# Anthropic), both wire formats, retries, failures, budgets keyed by what the gateway knows
# (fresh task ids buy nothing, rejected responses are billed, a restart forgets nothing), and
# that an agent cannot find a key anywhere it can look. Runs as root inside
# tests/sandbox/con-sandbox.
. "$(dirname "$0")/lib.sh"
require_sandbox
FAKE=${CON_BUILD_DIR:?}/tests/fake-llm/con-fake-llm
T=$(lib_tmp)
chmod 0755 "$T"
KEY_C=sk-test-concierge-0123456789
KEY_A=sk-ant-test-9876543210
KEY_O=sk-openai-test-5555555555

complete() { # complete USER JSON: Models1.Complete as USER, error names printed
        as_user "$1" dbus-send --system --print-reply --reply-timeout=60000 --dest=org.conspiracy.Models \
                /org/conspiracy/Models org.conspiracy.Models1.Complete "string:$2"
}
register() { # register USER METHOD AGENT TASK: Models1.RegisterTask / UnregisterTask as USER
        as_user "$1" dbus-send --system --print-reply --dest=org.conspiracy.Models /org/conspiracy/Models \
                "org.conspiracy.Models1.$2" "string:$3" "string:$4"
}
gateway_pid() { bus_owner_pid org.conspiracy.Models; }
requests() { cat "$T/fake.log" "$T/fake2.log" 2>/dev/null | wc -l; }

section "two fake LLM servers"
cat >"$T/script.json" <<'EOF'
{ "rules": [
  { "path": "/v1/chat/completions", "match": "please-retry", "times": 1, "status": 429,
    "headers": { "Retry-After": "1" }, "body": { "error": { "message": "slow down" } } },
  { "path": "/v1/chat/completions", "match": "please-retry",
    "body": { "choices": [ { "message": { "content": "after the retry" }, "finish_reason": "stop" } ],
              "usage": { "prompt_tokens": 3, "completion_tokens": 2 } } },
  { "path": "/v1/chat/completions", "match": "bigspend",
    "body": { "choices": [ { "message": { "content": "expensive" }, "finish_reason": "stop" } ],
              "usage": { "prompt_tokens": 900, "completion_tokens": 100 } } },
  { "path": "/v1/chat/completions", "match": "rejected-but-billed",
    "body": { "choices": [ { "message": { "content": 42 }, "finish_reason": "stop" } ],
              "usage": { "prompt_tokens": 550, "completion_tokens": 50 } } },
  { "path": "/v1/chat/completions", "match": "malformed", "behaviour": "malformed" },
  { "path": "/v1/chat/completions", "match": "hang", "behaviour": "hang" },
  { "path": "/v1/chat/completions", "match": "oversize", "behaviour": "oversize", "size": 9000000 },
  { "path": "/v1/chat/completions", "match": "tool please",
    "body": { "choices": [ { "message": { "content": null, "tool_calls": [ { "id": "call_1", "type": "function",
              "function": { "name": "exec", "arguments": "{\"cmd\":\"ls\"}" } } ] }, "finish_reason": "tool_calls" } ] } },
  { "path": "/v1/chat/completions",
    "body": { "choices": [ { "message": { "content": "Hi from the fake" }, "finish_reason": "stop" } ],
              "usage": { "prompt_tokens": 10, "completion_tokens": 5 }, "model": "fake-model" } }
] }
EOF
cat >"$T/script2.json" <<'EOF'
{ "rules": [
  { "path": "/v1/messages",
    "body": { "content": [ { "type": "text", "text": "Hi from fake claude" } ], "stop_reason": "end_turn",
              "usage": { "input_tokens": 7, "output_tokens": 4 } } }
] }
EOF
"$FAKE" --script "$T/script.json" --log "$T/fake.log" --idle-timeout 600 >"$T/port" 2>"$T/fake.err" &
FAKE_PID=$!
"$FAKE" --script "$T/script2.json" --log "$T/fake2.log" --idle-timeout 600 >"$T/port2" 2>"$T/fake2.err" &
FAKE2_PID=$!
for _ in $(seq 50); do [ -s "$T/port" ] && [ -s "$T/port2" ] && break; sleep 0.1; done
PORT=$(head -n1 "$T/port")
PORT2=$(head -n1 "$T/port2")
check "the fake 'OpenRouter' listens (port ${PORT:-none})" test -n "$PORT"
check "the fake 'Anthropic' listens on another port (${PORT2:-none})" test -n "$PORT2" -a "$PORT2" != "$PORT"

section "bootstrap with a gateway config"
mkdir -p /etc/con
cat >/etc/con/con.yaml <<EOF
system:
  name: modeld-test
models:
  timeout: 4s
  agents:
    concierge:
      budget_tokens_per_task: 500
agents:
  - name: concierge
    tier: operator
    provider: openrouter
    base_url: http://127.0.0.1:$PORT/v1
    model: fake-model
  - name: sysadmin
    tier: officer
    provider: anthropic
    base_url: http://127.0.0.1:$PORT2/v1
    model: claude-fake
  - name: scribe
    tier: worker
    provider: openai
    base_url: http://127.0.0.1:$PORT/v1
    model: gpt-fake
EOF
check "con bootstrap" con bootstrap
check_output "the user con-models exists without a login" '^con-models:.*:/nonexistent:/usr/sbin/nologin$' \
        getent passwd con-models
stat_is "the usage log folder" /srv/con/logs/models "con-models:con-models 750"
# Both keys set: the generic one (for OpenRouter, the default owner) and Anthropic's own.
printf 'CON_API_KEY=%s\nexport CON_AUTH_ANTHROPIC="%s"\n' "$KEY_C" "$KEY_A" >/etc/con/env
stat_is "bootstrap made the key file for the gateway; writing keys kept it" /etc/con/env "root:con-models 640"
check "the activation file is installed" test -f /usr/share/dbus-1/system-services/org.conspiracy.Models.service
check "the bus policy is installed" test -f /usr/share/dbus-1/system.d/org.conspiracy.Models.conf

section "a direct answer (OpenAI wire, activation)"
check_output "as a-concierge: Complete answers" 'Hi from the fake' \
        complete a-concierge '{"messages":[{"role":"user","content":"hello"}]}'
check_output "... as the neutral response" '"stop_reason":"end","provider_stop_reason":"stop"' echo "$LIB_OUT"
check_output "the fake OpenRouter got the generic key as a Bearer token" "\"authorization\":\"Bearer $KEY_C\"" \
        tail -n1 "$T/fake.log"
check_output "... the configured model" '"model":"fake-model"' tail -n1 "$T/fake.log"
MPID=$(gateway_pid)
check_output "the gateway runs as con-models (pid ${MPID:-none})" '^con-models$' stat -c %U "/proc/${MPID:-0}"
check_output "tool calls come back with their arguments" '"arguments":{"cmd":"ls"}' \
        complete a-concierge '{"messages":[{"role":"user","content":"tool please"}],"tools":[{"name":"exec","parameters":{"type":"object"}}]}'
check_output "the Usage property counts the concierge" 'concierge' busctl --system get-property \
        org.conspiracy.Models /org/conspiracy/Models org.conspiracy.Models1 Usage

section "keys strictly per provider"
check_output "as a-sysadmin claiming to be concierge: answered as sysadmin (anthropic)" 'Hi from fake claude' \
        complete a-sysadmin '{"agent":"concierge","messages":[{"role":"user","content":"hello"}]}'
check_output "... with Anthropic's own key in x-api-key, though CON_API_KEY is set too" \
        "\"x-api-key\":\"$KEY_A\"" tail -n1 "$T/fake2.log"
check_fail "... and no Bearer token" sh -c "tail -n1 '$T/fake2.log' | grep -q authorization"
check_fail_output "openai agent without CON_AUTH_OPENAI: refused, naming the variable" \
        "NotConfigured.*no API key for agent 'scribe' \(provider openai\): put CON_AUTH_OPENAI in /etc/con/env \(CON_API_KEY is only sent to the provider named by models.generic_key_provider" \
        complete a-scribe '{"messages":[{"role":"user","content":"hello"}]}'
check_output "... saying the gateway re-reads keys on reload" \
        're-reads its keys on reload: systemctl reload con-modeld, or pkill -HUP con-modeld' echo "$LIB_OUT"
N=$(requests)
printf 'CON_AUTH_OPENAI=%s\n' "$KEY_O" >>/etc/con/env
check "reload the gateway (SIGHUP by its pid ${MPID:-none})" kill -HUP "${MPID:-0}"
for _ in $(seq 50); do complete a-scribe '{"messages":[{"role":"user","content":"hello"}]}' >/dev/null 2>&1 && break; sleep 0.1; done
check_output "after the reload the openai agent is answered" 'Hi from the fake' \
        complete a-scribe '{"messages":[{"role":"user","content":"hello"}]}'
check_output "... with the OpenAI key" "\"authorization\":\"Bearer $KEY_O\"" tail -n1 "$T/fake.log"
sed -i '/^export CON_AUTH_ANTHROPIC=/d' /etc/con/env
check "drop Anthropic's key and reload" kill -HUP "${MPID:-0}"
for _ in $(seq 50); do complete a-sysadmin '{"messages":[{"role":"user","content":"hello"}]}' >/dev/null 2>&1 || break; sleep 0.1; done
N2=$(wc -l <"$T/fake2.log")
check_fail_output "anthropic agent with only the generic key: no key, not the generic one" \
        "no API key for agent 'sysadmin' \(provider anthropic\): put CON_AUTH_ANTHROPIC in /etc/con/env" \
        complete a-sysadmin '{"messages":[{"role":"user","content":"hello"}]}'
check_eq "... and the Anthropic host got no request" "$N2" "$(wc -l <"$T/fake2.log")"
check_eq "no request to the Anthropic host ever carried another provider's key" 0 \
        "$(grep -cF -e "$KEY_C" -e "$KEY_O" "$T/fake2.log")"
check_eq "no request to the OpenRouter/OpenAI host ever carried Anthropic's key" 0 \
        "$(grep -cF "$KEY_A" "$T/fake.log")"
check_eq "the generic key went only with the OpenRouter agent's model" 0 \
        "$(jq -r 'select(.headers.authorization == "Bearer '"$KEY_C"'") | .body.model' "$T/fake.log" | grep -vcx fake-model)"
check_eq "the OpenAI key went only with the OpenAI agent's model" 0 \
        "$(jq -r 'select(.headers.authorization == "Bearer '"$KEY_O"'") | .body.model' "$T/fake.log" | grep -vcx gpt-fake)"
printf 'export CON_AUTH_ANTHROPIC="%s"\n' "$KEY_A" >>/etc/con/env
check "put Anthropic's key back and reload" kill -HUP "${MPID:-0}"

section "who may call"
check_output "root may name the agent" 'Hi from the fake' \
        complete root '{"agent":"concierge","messages":[{"role":"user","content":"hello"}]}'
check_fail_output "root without an agent field is refused" 'name the agent' \
        complete root '{"messages":[{"role":"user","content":"hello"}]}'
check_fail_output "a non-agent user is refused" 'AccessDenied|Access denied|not allowed|rejected' \
        complete nobody '{"messages":[{"role":"user","content":"hello"}]}'

section "retries and failures"
S=$SECONDS
check_output "429 then success" 'after the retry' \
        complete a-concierge '{"messages":[{"role":"user","content":"please-retry"}]}'
check "... Retry-After was honoured (two requests, >= 1 s)" test "$(grep -c please-retry "$T/fake.log")" = 2 -a $((SECONDS - S)) -ge 1
check_fail_output "malformed JSON from the server: a clear error" 'not a valid openai response.*not valid JSON' \
        complete a-concierge '{"messages":[{"role":"user","content":"malformed"}]}'
check_fail_output "a hanging server: timeout error with the configured timeout" 'Timeout.*did not answer within 4 s' \
        complete a-concierge '{"messages":[{"role":"user","content":"hang"}]}'
check_fail_output "a reply over the size cap: error" 'LimitsExceeded.*larger than the limit' \
        complete a-concierge '{"messages":[{"role":"user","content":"oversize"}]}'
check_fail_output "a malformed request names the field" 'InvalidArgs.*messages\[0\]\.role' \
        complete a-concierge '{"messages":[{"role":"robot","content":"x"}]}'

section "budgets: keyed by what the gateway knows"
check_fail_output "an agent cannot register tasks for itself (only its agent service or root)" \
        'AccessDenied.*only root and the agent service' register a-concierge RegisterTask concierge forged1
check_output "... the attempt is in the usage log" '^forged1$' \
        jq -r 'select(.event == "model.register_refused" and .agent == "concierge") | .task_id' \
        /srv/con/logs/models/audit.jsonl
check "root registers task t1 of the concierge as running" register root RegisterTask concierge t1
check_output "a registered task within its budget is answered" 'expensive' \
        complete a-concierge '{"task_id":"t1","messages":[{"role":"user","content":"bigspend"}]}'
N=$(requests)
check_fail_output "the next call of that task: BudgetExhausted" \
        'org\.conspiracy\.Models1\.Error\.BudgetExhausted.*used 1000 tokens on task t1.*budget_tokens_per_task' \
        complete a-concierge '{"task_id":"t1","messages":[{"role":"user","content":"hello"}]}'
check_eq "... without calling the provider" "$N" "$(requests)"
answered=0 refused=0
for i in 1 2 3 4 5 6; do
        if complete a-concierge "{\"task_id\":\"fresh-$i\",\"messages\":[{\"role\":\"user\",\"content\":\"bigspend\"}]}" \
                >"$T/fresh.out" 2>&1; then
                answered=$((answered + 1))
        elif grep -q 'name no task its agent service registered' "$T/fresh.out"; then
                refused=$((refused + 1))
        fi
done
check_eq "six calls with fresh task ids: one answered (the unregistered day's budget of 500)" 1 "$answered"
check_eq "... five refused with BudgetExhausted naming unregistered use" 5 "$refused"
check_eq "... the provider was asked once" "$((N + 1))" "$(requests)"
check_eq "... each refusal is in the usage log" 5 \
        "$(jq -r 'select(.event == "model.refused" and .budget == "budget_tokens_per_task") | .task_id' \
                /srv/con/logs/models/audit.jsonl | grep -c '^fresh-')"
check_fail_output "no task_id at all: refused the same" 'name no task its agent service registered' \
        complete a-concierge '{"messages":[{"role":"user","content":"hello"}]}'
check_output "another agent is not charged" 'Hi from fake claude' \
        complete a-sysadmin '{"task_id":"t1","messages":[{"role":"user","content":"hello"}]}'
check "root registers task t3" register root RegisterTask concierge t3
check_fail_output "a 2xx answer the parser rejects: an error" 'not a valid openai response.*content: must be a string' \
        complete a-concierge '{"task_id":"t3","messages":[{"role":"user","content":"rejected-but-billed"}]}'
check_fail_output "... whose billed 600 tokens were charged to the task" 'used 600 tokens on task t3' \
        complete a-concierge '{"task_id":"t3","messages":[{"role":"user","content":"hello"}]}'
check_output "... and are in the usage log" '"outcome":"error".*"input_tokens":550,"output_tokens":50' \
        grep -F '"task_id":"t3"' /srv/con/logs/models/audit.jsonl
check "the agent service's end of task t1 (as root)" register root UnregisterTask concierge t1
check_fail_output "t1 is no longer registered: its id is unregistered use now" 'name no task its agent service registered' \
        complete a-concierge '{"task_id":"t1","messages":[{"role":"user","content":"hello"}]}'
check_output "the usage log records registrations" '"event":"model.task_registered"' \
        cat /srv/con/logs/models/audit.jsonl

section "a restart of the gateway forgets no budget"
kill "${MPID:-0}"
for _ in $(seq 100); do [ -z "$(gateway_pid)" ] && break; sleep 0.1; done
check_fail_output "after a restart: task t3 is still registered and used up" 'used 600 tokens on task t3' \
        complete a-concierge '{"task_id":"t3","messages":[{"role":"user","content":"hello"}]}'
check "... by a new gateway process" test "$(gateway_pid)" != "${MPID:-0}"
check_fail_output "... and fresh ids are still refused" 'name no task its agent service registered' \
        complete a-concierge '{"task_id":"fresh-after-restart","messages":[{"role":"user","content":"hello"}]}'
MPID=$(gateway_pid)

section "the usage log"
check_output "the usage log records calls" '"event":"model.call"' cat /srv/con/logs/models/audit.jsonl
check_fail "... never the prompt or the answer" grep -Eq 'Hi from the fake|bigspend|please-retry' \
        /srv/con/logs/models/audit.jsonl

section "no key where an agent can look"
check_fail_output "as a-concierge: cat /etc/con/env fails" 'Permission denied' as_user a-concierge cat /etc/con/env
check_fail "... env shows no key" as_user a-concierge sh -c "env | grep -E '$KEY_C|$KEY_A'"
check_fail "... /proc/self/environ shows no key" \
        as_user a-concierge sh -c "tr '\\0' '\\n' </proc/self/environ | grep -E '$KEY_C|$KEY_A'"
check_fail "... /proc/<gateway>/environ shows no key" \
        as_user a-concierge sh -c "cat /proc/${MPID:-0}/environ 2>&1 | grep -E '$KEY_C|$KEY_A'"
check_output "control: root's grep finds the key in /etc/con" '/etc/con/env' grep -rlF "$KEY_C" /etc/con
check_eq "... a-concierge's grep finds nothing readable" "" \
        "$(as_user a-concierge sh -c "grep -rslF -e '$KEY_C' -e '$KEY_A' /srv/con /home/a-concierge /etc/con /proc/${MPID:-0}/ 2>/dev/null")"

kill "$FAKE_PID" "$FAKE2_PID" 2>/dev/null
wait "$FAKE_PID" "$FAKE2_PID" 2>/dev/null
finish
