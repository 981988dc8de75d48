#!/bin/bash
# The budget notice comes from con-contractd (root), not from the agent's session: an agent the
# policy does not let task the sysadmin (a worker; the default grants let only the concierge and
# root do that) uses up its model budget on the scripted fake LLM; the sysadmin gets exactly one
# notice task for it, even after two refused tasks; a BudgetExhausted signal the agent user emits
# itself is ignored. Runs as root inside tests/sandbox/con-sandbox.
. "$(dirname "$0")/lib.sh"
require_sandbox
FAKE=${CON_BUILD_DIR:?}/tests/fake-llm/con-fake-llm
T=$(lib_tmp)
chmod 0755 "$T"
AUDIT=/srv/con/logs/audit/audit.jsonl

answer() { # answer TEXT [TOKENS]: a final answer in the OpenAI wire format
        printf '{ "choices": [ { "message": { "content": "%s" }, "finish_reason": "stop" } ], "usage": { "prompt_tokens": %s, "completion_tokens": 5 } }' "$1" "${2:-5}"
}

section "fake LLM server and a config with a worker on a small daily budget"
P=/v1/chat/completions
cat >"$T/script.json" <<EOF
{ "rules": [
  { "path": "$P", "match": "spend-the-day", "body": $(answer "SPENT" 1000) },
  { "path": "$P", "match": "Model budget exhausted", "body": $(answer "noted") },
  { "path": "$P", "body": $(answer "fallback answer") }
] }
EOF
start_fake_llm
mkdir -p /etc/con
cat >/etc/con/con.yaml <<EOF
system:
  name: budget-notice-test
models:
  timeout: 6s
  agents:
    scout:
      budget_tokens_per_day: 50
base:
  runner: picoclaw
  provider: openrouter
  base_url: http://127.0.0.1:$PORT/v1
  model: fake-model
agents:
  - name: concierge
    tier: operator
  - name: sysadmin
    tier: operator
    roles: [sysadmin]
  - name: scout
    tier: worker
EOF
check "con bootstrap" con bootstrap
printf 'CON_API_KEY=sk-budget-notice\n' >/etc/con/env
check "con up" con up
check "con-contractd owns org.conspiracy.Contracts" wait_for 10 busctl status org.conspiracy.Contracts

sys_tasks() { # the sysadmin's tasks whose id says budget notice for $1/$2
        busctl --system call org.conspiracy.Sysadmin /org/conspiracy/Agent org.conspiracy.Agent1 ListTasks 2>/dev/null |
                grep -o "budget-$1-$2-[0-9]*" | sort -u | wc -l
}
audited() { grep -c "\"budget.exhausted\".*\"agent\":\"$1\".*\"budget\":\"$2\"" "$AUDIT" 2>/dev/null; }

section "the policy does not let the worker task the sysadmin"
check_fail_output "a-scout's Submit to the sysadmin is refused" '[Dd]enied|not allowed|may not' \
        as_user a-scout busctl --system call org.conspiracy.Sysadmin /org/conspiracy/Agent org.conspiracy.Agent1 \
        Submit s "hello from scout"

section "the worker uses up its day's budget"
check_output "the call that crosses the limit is still answered" 'SPENT' con-send --to scout --timeout 120 "spend-the-day"
check_status "the next task: exit status 1" 1 con-send --to scout --timeout 120 "one more"
check_output "... paused, naming the budget" "paused: agent 'scout' has used up its model budget .*budget_tokens_per_day" \
        echo "$LIB_OUT"
check_output "... the sysadmin is notified by the contract service" 'The sysadmin is notified by the contract service' \
        echo "$LIB_OUT"
has_notice() { [ "$(sys_tasks scout budget_tokens_per_day)" -ge 1 ]; }
check "the sysadmin got the notice task" wait_for 20 has_notice
check_eq "... exactly one" 1 "$(sys_tasks scout budget_tokens_per_day)"
check "... and its session read it (agent and budget named)" wait_for 30 \
        grep -q "Model budget exhausted: agent 'scout' used up its budget_tokens_per_day" "$T/fake.log"
check_fail "... without the task's text" grep -q "Model budget exhausted.*one more" "$T/fake.log"
check_eq "... audited once" 1 "$(audited scout budget_tokens_per_day)"
check_status "a second refused task: exit status 1" 1 con-send --to scout --timeout 120 "yet another"
check_output "... paused again" "paused: agent 'scout' has used up its model budget" echo "$LIB_OUT"
sleep 1
check_eq "... the sysadmin still has one notice" 1 "$(sys_tasks scout budget_tokens_per_day)"
check_eq "... still audited once" 1 "$(audited scout budget_tokens_per_day)"
check_fail "the session keeps no marker in the workspace" test -e /srv/con/agents/scout/workspace/.budget-notified

section "the agent user cannot forge the gateway's signal"
as_user a-scout dbus-send --system --type=signal /org/conspiracy/Models org.conspiracy.Models1.BudgetExhausted \
        string:scout string:budget_cost_per_day >/dev/null 2>&1
as_user a-scout dbus-send --system --type=signal /org/conspiracy/Models org.conspiracy.Models1.BudgetExhausted \
        string:concierge string:budget_tokens_per_task >/dev/null 2>&1
sleep 1
check_eq "no notice for a forged scout/budget_cost_per_day" 0 "$(sys_tasks scout budget_cost_per_day)"
check_eq "no notice for a forged concierge/budget_tokens_per_task" 0 "$(sys_tasks concierge budget_tokens_per_task)"
check_eq "... and no audit record of either" 0 \
        "$(( $(audited scout budget_cost_per_day) + $(audited concierge budget_tokens_per_task) ))"

check "con down" con down
kill "$FAKE_PID" 2>/dev/null
finish
