#!/bin/bash
# The delegation soak (docs/RELIABILITY.md "Delegation soak"): two agents that task each other,
# with and without waiting, driven by the scripted fake LLM for SOAK_SECONDS (default 45; the
# documented full run is 600). Every root task may fan out into at most the agents' refusals: a
# cycle back into the chain is refused, so the tasks, the model calls and the memory of the two
# agent services stay bounded however long it runs. Prints the numbers; fails when a bound is
# broken. Each agent has 4 sessions for the 4 root tasks in flight: with fewer, two chains that
# wait for each other's agent deadlock until send_task's wait (10 min) gives up
# (docs/RELIABILITY.md). Runs as root inside tests/sandbox/con-sandbox:
#   SOAK_SECONDS=600 ctest --test-dir build-asan -R test-soak -V
. "$(dirname "$0")/lib.sh"
require_sandbox
FAKE=${CON_BUILD_DIR:?}/tests/fake-llm/con-fake-llm
T=$(lib_tmp)
chmod 0755 "$T"
DURATION=${SOAK_SECONDS:-45}
# How much the RSS of an agent service may grow. The default allows for the sanitizer build the
# suite runs (ASan keeps up to 256 MiB of freed memory in quarantine); the documented full run
# on a build without sanitizers uses 32 MiB.
RSS_GROWTH_MAX=${SOAK_RSS_GROWTH_KB:-300000}
S=/srv/con/agents

answer() {
        printf '{ "choices": [ { "message": { "content": "%s" }, "finish_reason": "stop" } ], "usage": { "prompt_tokens": 5, "completion_tokens": 5 } }' "$1"
}
send() { # send ID AGENT TEXT WAIT
        printf '{ "choices": [ { "message": { "content": null, "tool_calls": [ { "id": "%s", "type": "function", "function": { "name": "send_task", "arguments": "{\\"agent\\":\\"%s\\",\\"text\\":\\"%s\\",\\"wait\\":%s}" } } ] }, "finish_reason": "tool_calls" } ], "usage": { "prompt_tokens": 5, "completion_tokens": 5 } }' "$1" "$2" "$3" "$4"
}
prop() { # prop AGENT PROPERTY: its value
        busctl --system get-property "org.conspiracy.$2" /org/conspiracy/Agent org.conspiracy.Agent1 "$1" | cut -d' ' -f2
}
rss_kb() { # rss_kb AGENT: VmRSS of its con-agentd
        local pid
        pid=$(pgrep -f "con-agentd --agent $1( |$)" | head -n1)
        [ -n "$pid" ] && awk '/^VmRSS:/ {print $2}' "/proc/$pid/status"
}
pid_of() { pgrep -f "con-agentd --agent $1( |$)" | head -n1; }

section "fake LLM server"
P=/v1/chat/completions
cat >"$T/script.json" <<EOF
{ "rules": [
  { "path": "$P", "match": "refused the task", "body": $(answer "refused-ok") },
  { "path": "$P", "match": "Sent task", "body": $(answer "sent-ok") },
  { "path": "$P", "match": " finished task ", "body": $(answer "relayed-ok") },
  { "path": "$P", "match": "did not finish", "body": $(answer "relayed-failure") },
  { "path": "$P", "match": "ping-wait", "body": $(send a1 beta "pong-wait" true) },
  { "path": "$P", "match": "pong-wait", "body": $(send b1 alpha "ping-again" true) },
  { "path": "$P", "match": "ping-again", "body": $(send a2 beta "pong-wait" true) },
  { "path": "$P", "match": "ping-nowait", "body": $(send a3 beta "pong-nowait" false) },
  { "path": "$P", "match": "pong-nowait", "body": $(send b2 alpha "ping-nowait-back" false) },
  { "path": "$P", "body": $(answer "fallback answer") }
] }
EOF
start_fake_llm 0

section "bootstrap: alpha and beta, each may task the other"
mkdir -p /etc/con
cat >/etc/con/con.yaml <<EOF
system:
  name: soak-test
base:
  runner: picoclaw
  provider: compatible
  base_url: http://127.0.0.1:$PORT/v1
  model: fake-model
agents:
  - name: alpha
    tier: operator
    idle_exit: 1h
    max_sessions: 4
  - name: beta
    tier: operator
    idle_exit: 1h
    max_sessions: 4
policy:
  grants:
    - {who: alpha, may: [task], to: [beta]}
    - {who: beta, may: [task], to: [alpha]}
EOF
check "con bootstrap" con bootstrap
printf 'CON_API_KEY=sk-soak-test\n' >/etc/con/env
check_output "alpha answers" pong con-send --to alpha --timeout 30 /ping
check_output "beta answers" pong con-send --to beta --timeout 30 /ping
# Warm up once each way, then take the baseline.
con-send --to alpha --timeout 60 ping-wait >/dev/null 2>&1
con-send --to alpha --timeout 60 ping-nowait >/dev/null 2>&1
sleep 2
RSS0_A=$(rss_kb alpha) RSS0_B=$(rss_kb beta) PID_A=$(pid_of alpha) PID_B=$(pid_of beta)
CALLS0=$(wc -l <"$T/fake.log")
ACC0_A=$(prop TasksAccepted Alpha) ACC0_B=$(prop TasksAccepted Beta)
echo "# baseline: alpha ${RSS0_A} kB (pid $PID_A), beta ${RSS0_B} kB (pid $PID_B), $CALLS0 model calls"

section "the soak: $DURATION s of root tasks that bounce between the two"
roots=0 failed=0 peak_a=0 peak_b=0 peak_q=0 next_sample=$((SECONDS + 60))
start=$SECONDS
end=$((SECONDS + DURATION))
while ((SECONDS < end)); do
        if ((SECONDS >= next_sample)); then
                echo "# t=$((SECONDS - start)) s: $roots root tasks, RSS alpha $(rss_kb alpha) kB, beta $(rss_kb beta) kB, $(( $(wc -l <"$T/fake.log") - CALLS0 )) model calls"
                next_sample=$((SECONDS + 60))
        fi
        # Four at a time: two that wait for each other, one that does not, one sent to beta directly.
        con-send --to alpha --timeout 120 ping-wait >/dev/null 2>&1 &
        p1=$!
        con-send --to alpha --timeout 120 ping-nowait >/dev/null 2>&1 &
        p2=$!
        con-send --to beta --timeout 120 pong-wait >/dev/null 2>&1 &
        p3=$!
        con-send --to alpha --timeout 120 ping-again >/dev/null 2>&1 &
        p4=$!
        for p in $p1 $p2 $p3 $p4; do wait "$p" || failed=$((failed + 1)); done
        roots=$((roots + 4))
        a=$(rss_kb alpha) b=$(rss_kb beta)
        ((a > peak_a)) && peak_a=$a
        ((b > peak_b)) && peak_b=$b
        q=$(( $(prop QueueLength Alpha) + $(prop QueueLength Beta) ))
        ((q > peak_q)) && peak_q=$q
done
check "the nowait bounces are over" wait_for 30 bash -c \
        "[ \"\$(busctl --system get-property org.conspiracy.Alpha /org/conspiracy/Agent org.conspiracy.Agent1 State)\" = 's \"idle\"' ] &&
         [ \"\$(busctl --system get-property org.conspiracy.Beta /org/conspiracy/Agent org.conspiracy.Agent1 State)\" = 's \"idle\"' ]"
CALLS=$(( $(wc -l <"$T/fake.log") - CALLS0 ))
TASKS=$(( $(prop TasksAccepted Alpha) - ACC0_A + $(prop TasksAccepted Beta) - ACC0_B ))
RSS1_A=$(rss_kb alpha) RSS1_B=$(rss_kb beta)
echo "# soak: $DURATION s, $roots root tasks ($failed did not complete), $TASKS tasks at the two agents, $CALLS model calls"
echo "# per root task: $(awk -v t="$TASKS" -v r="$roots" 'BEGIN {printf "%.2f", t / r}') tasks, $(awk -v c="$CALLS" -v r="$roots" 'BEGIN {printf "%.2f", c / r}') model calls"
echo "# RSS alpha: ${RSS0_A} -> ${RSS1_A} kB (peak $peak_a), beta: ${RSS0_B} -> ${RSS1_B} kB (peak $peak_b); peak queue $peak_q"
echo "# files: $(find $S/alpha/queue/transcripts -type f | wc -l) + $(find $S/beta/queue/transcripts -type f | wc -l) transcripts, journals $(stat -c %s $S/alpha/queue/journal) + $(stat -c %s $S/beta/queue/journal) bytes"

section "bounds"
check "root tasks ran (${roots})" test "$roots" -ge 8
check_eq "every root task completed" 0 "$failed"
# A ping-wait is 3 tasks (alpha, beta, alpha refused: not accepted), ping-nowait 2, pong-wait 2,
# ping-again 2: at most 2.5 per root task on average, never the runaway of issue 14.
check "at most 3 agent tasks per root task ($TASKS for $roots)" test "$TASKS" -le $((roots * 3))
# Model calls: ping-wait 4, ping-nowait 4, pong-wait 4, ping-again 4 (with the refusals' answers).
check "at most 5 model calls per root task ($CALLS for $roots)" test "$CALLS" -le $((roots * 5))
check "nothing was left queued (peak queue $peak_q, at most the 4 + their children)" test "$peak_q" -le 12
check_eq "the same two service processes ran all along (no crash, no restart)" "$PID_A $PID_B" "$(pid_of alpha) $(pid_of beta)"
check "alpha's memory stayed bounded (${RSS0_A} -> ${RSS1_A} kB, growth under $RSS_GROWTH_MAX kB)" \
        test $((RSS1_A - RSS0_A)) -lt "$RSS_GROWTH_MAX"
check "beta's memory stayed bounded (${RSS0_B} -> ${RSS1_B} kB)" test $((RSS1_B - RSS0_B)) -lt "$RSS_GROWTH_MAX"
check_eq "no running-task record is left" "" "$(find $S/alpha/queue/running $S/beta/queue/running -type f)"
check_fail "no session process is left" pgrep -u a-alpha,a-beta

kill "$FAKE_PID" 2>/dev/null
finish
