#!/bin/bash
# The model gateway con-modeld: D-Bus activation as con-models, keys from /etc/con/env only,
# both wire formats against the scripted fake LLM server, retries, budgets, failures, and that
# an agent cannot find a key anywhere it can look. Runs as root inside tests/sandbox/con-sandbox.
. "$(dirname "$0")/lib.sh"
require_root
if [ "${CON_SANDBOX:-}" != 1 ]; then
        echo "# must run inside tests/sandbox/con-sandbox; skipping"
        LIB_FINISHED=1
        exit 77
fi
FAKE=${CON_BUILD_DIR:?}/tests/fake-llm/con-fake-llm
T=$(lib_tmp)
chmod 0755 "$T"
KEY_C=sk-test-concierge-0123456789
KEY_A=sk-ant-test-9876543210

complete() { # complete USER JSON: Models1.Complete as USER, error names printed
        as_user "$1" dbus-send --system --print-reply --reply-timeout=60000 --dest=org.conspiracy.Models \
                /org/conspiracy/Models org.conspiracy.Models1.Complete "string:$2"
}
log_has() { grep -F -- "$1" "$T/fake.log"; }

section "fake LLM server"
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
  { "path": "/v1/chat/completions", "match": "malformed", "behaviour": "malformed" },
  { "path": "/v1/chat/completions", "match": "hang", "behaviour": "hang" },
  { "path": "/v1/chat/completions", "match": "oversize", "behaviour": "oversize", "size": 9000000 },
  { "path": "/v1/chat/completions", "match": "tool please",
    "body": { "choices": [ { "message": { "content": null, "tool_calls": [ { "id": "call_1", "type": "function",
              "function": { "name": "exec", "arguments": "{\"cmd\":\"ls\"}" } } ] }, "finish_reason": "tool_calls" } ] } },
  { "path": "/v1/chat/completions",
    "body": { "choices": [ { "message": { "content": "Hi from the fake" }, "finish_reason": "stop" } ],
              "usage": { "prompt_tokens": 10, "completion_tokens": 5 }, "model": "fake-model" } },
  { "path": "/v1/messages",
    "body": { "content": [ { "type": "text", "text": "Hi from fake claude" } ], "stop_reason": "end_turn",
              "usage": { "input_tokens": 7, "output_tokens": 4 } } }
] }
EOF
"$FAKE" --script "$T/script.json" --log "$T/fake.log" --idle-timeout 600 >"$T/port" 2>"$T/fake.err" &
FAKE_PID=$!
for _ in $(seq 50); do [ -s "$T/port" ] && break; sleep 0.1; done
PORT=$(head -n1 "$T/port")
check "the fake LLM server listens (port ${PORT:-none})" test -n "$PORT"

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
    provider: compatible
    base_url: http://127.0.0.1:$PORT/v1
    model: fake-model
  - name: sysadmin
    tier: officer
    provider: anthropic
    api_key_env: CON_SYSADMIN_API_KEY
    base_url: http://127.0.0.1:$PORT/v1
    model: claude-fake
EOF
check "con bootstrap" con bootstrap
check_output "the user con-models exists without a login" '^con-models:.*:/nonexistent:/usr/sbin/nologin$' \
        getent passwd con-models
stat_is "the usage log folder" /srv/con/logs/models "con-models:con-models 750"
printf 'CON_API_KEY=%s\nexport CON_AUTH_ANTHROPIC="%s"\n' "$KEY_C" "$KEY_A" >/etc/con/env
stat_is "bootstrap made the key file for the gateway; writing keys kept it" /etc/con/env "root:con-models 640"
check "the activation file is installed" test -f /usr/share/dbus-1/system-services/org.conspiracy.Models.service
check "the bus policy is installed" test -f /usr/share/dbus-1/system.d/org.conspiracy.Models.conf

section "a direct answer (OpenAI wire, activation)"
check_output "as a-concierge: Complete answers" 'Hi from the fake' \
        complete a-concierge '{"messages":[{"role":"user","content":"hello"}]}'
check_output "... as the neutral response" '"stop_reason":"end"' echo "$LIB_OUT"
check_output "the fake server got the key as a Bearer token" "\"authorization\":\"Bearer $KEY_C\"" \
        tail -n1 "$T/fake.log"
check_output "... the configured model" '"model":"fake-model"' tail -n1 "$T/fake.log"
MPID=$(busctl --system call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus \
        GetConnectionUnixProcessID s org.conspiracy.Models | sed -n 's/^u \([0-9][0-9]*\)$/\1/p')
check_output "the gateway runs as con-models (pid ${MPID:-none})" '^con-models$' stat -c %U "/proc/${MPID:-0}"
check_output "tool calls come back with their arguments" '"arguments":{"cmd":"ls"}' \
        complete a-concierge '{"messages":[{"role":"user","content":"tool please"}],"tools":[{"name":"exec","parameters":{"type":"object"}}]}'
check_output "the Usage property counts the concierge" 'concierge' busctl --system get-property \
        org.conspiracy.Models /org/conspiracy/Models org.conspiracy.Models1 Usage

section "Anthropic wire; an agent cannot call as another"
check_output "as a-sysadmin claiming to be concierge: answered as sysadmin (anthropic)" 'Hi from fake claude' \
        complete a-sysadmin '{"agent":"concierge","messages":[{"role":"user","content":"hello"}]}'
check_output "... with its own legacy key in x-api-key" "\"x-api-key\":\"$KEY_A\"" tail -n1 "$T/fake.log"
check_fail "... and no Bearer token" sh -c "tail -n1 '$T/fake.log' | grep -q authorization"
check_output "root may name the agent" 'Hi from the fake' \
        complete root '{"agent":"concierge","messages":[{"role":"user","content":"hello"}]}'
check_fail_output "root without an agent field is refused" 'name the agent' \
        complete root '{"messages":[{"role":"user","content":"hello"}]}'
check_fail_output "a non-agent user is refused" 'AccessDenied|Access denied|not allowed|rejected' \
        complete nobody '{"messages":[{"role":"user","content":"hello"}]}'

section "retries, budgets, failures"
S=$SECONDS
check_output "429 then success" 'after the retry' \
        complete a-concierge '{"messages":[{"role":"user","content":"please-retry"}]}'
check "... Retry-After was honoured (two requests, >= 1 s)" test "$(grep -c please-retry "$T/fake.log")" = 2 -a $((SECONDS - S)) -ge 1
check_output "a task within its budget is answered" 'expensive' \
        complete a-concierge '{"task_id":"t1","messages":[{"role":"user","content":"bigspend"}]}'
N=$(wc -l <"$T/fake.log")
check_fail_output "the next call of that task: BudgetExhausted" \
        'org\.conspiracy\.Models1\.Error\.BudgetExhausted.*budget_tokens_per_task' \
        complete a-concierge '{"task_id":"t1","messages":[{"role":"user","content":"hello"}]}'
check_eq "... without calling the provider" "$N" "$(wc -l <"$T/fake.log")"
check_output "another task still works" 'Hi from the fake' \
        complete a-concierge '{"task_id":"t2","messages":[{"role":"user","content":"hello"}]}'
check_fail_output "malformed JSON from the server: a clear error" 'not a valid openai response.*not valid JSON' \
        complete a-concierge '{"messages":[{"role":"user","content":"malformed"}]}'
check_fail_output "a hanging server: timeout error" 'Timeout.*did not answer within 4 s' \
        complete a-concierge '{"messages":[{"role":"user","content":"hang"}]}'
check_fail_output "a reply over the size cap: error" 'LimitsExceeded.*larger than the limit' \
        complete a-concierge '{"messages":[{"role":"user","content":"oversize"}]}'
check_fail_output "a malformed request names the field" 'InvalidArgs.*messages\[0\]\.role' \
        complete a-concierge '{"messages":[{"role":"robot","content":"x"}]}'
check_output "the usage log records calls" '"event":"model.call"' cat /srv/con/logs/models/audit.jsonl
check_fail "... never the prompt or the answer" grep -Eq 'Hi from the fake|bigspend|please-retry' \
        /srv/con/logs/models/audit.jsonl

section "no key where an agent can look"
check_fail "as a-concierge: cat /etc/con/env fails" as_user a-concierge cat /etc/con/env
check_fail "... env shows no key" as_user a-concierge sh -c "env | grep -E '$KEY_C|$KEY_A'"
check_fail "... /proc/self/environ shows no key" \
        as_user a-concierge sh -c "tr '\\0' '\\n' </proc/self/environ | grep -E '$KEY_C|$KEY_A'"
check_fail "... /proc/<gateway>/environ shows no key" \
        as_user a-concierge sh -c "cat /proc/${MPID:-0}/environ 2>&1 | grep -E '$KEY_C|$KEY_A'"
check_output "control: root's grep finds the key in /etc/con" '/etc/con/env' grep -rlF "$KEY_C" /etc/con
check_eq "... a-concierge's grep finds nothing readable" "" \
        "$(as_user a-concierge sh -c "grep -rslF -e '$KEY_C' -e '$KEY_A' /srv/con /home/a-concierge /etc/con /proc/${MPID:-0}/ 2>/dev/null")"

kill "$FAKE_PID" 2>/dev/null
wait "$FAKE_PID" 2>/dev/null
finish
