#!/bin/bash
# Results are always readable, whatever bytes a runner or a tool produced (issue 13 item 3, issue 14
# items 1 and 9): exec-runner agents that print "a" followed by 600,000 "é" (1,200,001 bytes, cut
# at 1 MiB in the middle of a character), raw \377 bytes and a NUL, and raw bytes on stderr; the
# results are read back with con-send, con task (--json: truncated, replaced, the original size),
# GetResult over the bus, after a restart of the agent and from the file door's outbox. Then the
# tool loop with the scripted model (tests/fake-llm): a tool result of printf '\377' and a
# read_file of a Latin-1 file reach the model as U+FFFD with a note, never fail the task, never go
# raw into the conversation files, and the next task of the agent still works, also one that
# continues a conversation written with raw bytes. Last, the retention (system.result_retention):
# finished tasks older than it lose their files and GetResult says NoSuchTask, newer ones stay; a
# restart while the agent is busy (its journal not compacted, still holding the removed task) does
# not bring it back, and a task sent again under its id is the one kept. Then system.result_max:
# another sender's result survives root's flood, removed by passes that start early. Runs as root inside
# tests/sandbox/con-sandbox.
. "$(dirname "$0")/lib.sh"
require_sandbox
FAKE=${CON_BUILD_DIR:?}/tests/fake-llm/con-fake-llm
T=$(lib_tmp)
chmod 0755 "$T"
A=/org/conspiracy/Agent
I=org.conspiracy.Agent1

answer() { # a final answer in the OpenAI wire format
        printf '{ "choices": [ { "message": { "content": "%s" }, "finish_reason": "stop" } ], "usage": { "prompt_tokens": 5, "completion_tokens": 5 } }' "$1"
}
toolcall() { # toolcall ID NAME ARGS_JSON_AS_STRING
        printf '{ "choices": [ { "message": { "content": null, "tool_calls": [ { "id": "%s", "type": "function", "function": { "name": "%s", "arguments": %s } } ] }, "finish_reason": "tool_calls" } ] }' "$1" "$2" "$3"
}
utf8_ok() { iconv -f UTF-8 -t UTF-8 "$1" >/dev/null; }

section "runners that print what they like"
# Where the agent users can reach them (/usr is the sandbox's overlay; the scratch folder is not).
R=/usr/local/libexec/con-test-results
mkdir -p "$R"
chmod 0755 "$R"
cat >"$R/bigout" <<'EOF'
#!/bin/sh
printf a
yes 'é' | head -n 600000 | tr -d '\n'
EOF
cat >"$R/rawout" <<'EOF'
#!/bin/sh
printf '\377\376 raw\000nul\n'
EOF
cat >"$R/rawerr" <<'EOF'
#!/bin/sh
printf 'bad \377 byte' >&2
exit 3
EOF
chmod 0755 "$R/bigout" "$R/rawout" "$R/rawerr"
"$R/bigout" >"$T/bigout.raw"
check_eq "the big runner prints 1,200,001 bytes" 1200001 "$(stat -c %s "$T/bigout.raw")"

section "fake LLM server"
P=/v1/chat/completions
cat >"$T/script.json" <<EOF
{ "rules": [
  { "path": "$P", "match": "run-raw-byte", "body": $(toolcall call_r exec '"{\"command\":\"printf \u0027\\\\377\u0027\"}"') },
  { "path": "$P", "match": "read-latin1", "body": $(toolcall call_l read_file "\"{\\\"path\\\":\\\"$R/latin1.txt\\\"}\"") },
  { "path": "$P", "match": "shown as U+FFFD", "body": $(answer "RAW-BYTE-SEEN") },
  { "path": "$P", "match": "say-hello", "body": $(answer "HELLO-AFTER") },
  { "path": "$P", "body": $(answer "fallback answer") }
] }
EOF
check "the script is valid JSON" jq . "$T/script.json"
check_output "... the model will run printf '\\377'" "^printf '\\\\377'\$" \
        jq -r '.rules[0].body.choices[0].message.tool_calls[0].function.arguments | fromjson | .command' "$T/script.json"
printf 'caf\351 cr\350me\n' >"$R/latin1.txt"
chmod 0644 "$R/latin1.txt"
start_fake_llm

section "bootstrap"
mkdir -p /etc/con
cat >/etc/con/con.yaml <<EOF
system:
  name: results-test
base:
  runner: picoclaw
  provider: compatible
  base_url: http://127.0.0.1:$PORT/v1
  model: fake-model
agents:
  - name: concierge
    tier: operator
  - name: bigout
    tier: worker
    mode: on-demand
    runner: exec
    command: [$R/bigout]
  - name: rawout
    tier: worker
    mode: on-demand
    runner: exec
    command: [$R/rawout]
  - name: rawerr
    tier: worker
    mode: on-demand
    runner: exec
    command: [$R/rawerr]
EOF
check "con bootstrap" con bootstrap
printf 'CON_API_KEY=sk-results-test\n' >/etc/con/env

section "a response of 1,200,001 bytes, cut at 1 MiB in the middle of an é"
con-send --to bigout --timeout 120 go >"$T/big.out" 2>"$T/big.err"
check_eq "con-send --to bigout: done (exit status 0)" 0 "$?"
check "... it printed valid UTF-8" utf8_ok "$T/big.out"
check_output "... starting with the runner's output" '^aéééé' head -c 11 "$T/big.out"
check_output "... ending with the mark: the original size and what was kept" \
        '^\[truncated: 1200001 bytes, the first [0-9]+ kept\]$' tail -n 1 "$T/big.out"
KEPT=$(tail -n 1 "$T/big.out" | sed -n 's/.*the first \([0-9]*\) kept.*/\1/p')
check "... nearly 1 MiB of it (${KEPT:-none} bytes)" test "${KEPT:-0}" -gt 1048000
check_eq "... the kept part is exactly what the runner printed first" "$(head -c "$KEPT" "$T/bigout.raw" | sha256sum)" \
        "$(head -c "$KEPT" "$T/big.out" | sha256sum)"
SIZE=$(stat -c %s "$T/big.out")
check "... within 1 MiB (plus con-send's newline): $SIZE bytes" test "$SIZE" -le $((1048576 + 1)) -a "$SIZE" -gt 1048000
ID=$(busctl --system --json=short call org.conspiracy.Bigout $A $I ListTasks | jq -r '.data[0][-1][0]')
check "the task id is listed ($ID)" test -n "$ID"
check_output "con task --json: truncated, the original size, not replaced" \
        '^true true false 1200001$' \
        bash -c "con task '$ID' --json | jq -r '[.status == \"completed\", .truncated, .replaced, .size] | map(tostring) | join(\" \")'"
check_output "con task says it was truncated" 'result: 1200001 bytes from the runner, truncated' con task "$ID"
check_output "GetResult over the bus works" '^ss "completed"' busctl --system call org.conspiracy.Bigout $A $I GetResult s "$ID"
check "the file door's response is valid UTF-8" utf8_ok "/srv/con/agents/bigout/outbox/$ID.response"
check "bigout restarts" bus_stop org.conspiracy.Bigout
check_output "after the restart (replay), con task --json still says so" '^true 1200001$' \
        bash -c "con task '$ID' --json | jq -r '[.truncated, .size] | map(tostring) | join(\" \")'"

section "raw bytes and a NUL on stdout"
con-send --to rawout --timeout 120 go >"$T/raw.out" 2>"$T/raw.err"
check_eq "con-send --to rawout: done (exit status 0)" 0 "$?"
check "... valid UTF-8" utf8_ok "$T/raw.out"
check_eq "... each invalid byte and the NUL became U+FFFD" "$(printf '\357\277\275\357\277\275 raw\357\277\275nul')" \
        "$(cat "$T/raw.out")"
RID=$(busctl --system --json=short call org.conspiracy.Rawout $A $I ListTasks | jq -r '.data[0][-1][0]')
check_output "con task --json: replaced, not truncated, the original size" '^false true 11$' \
        bash -c "con task '$RID' --json | jq -r '[.truncated, .replaced, .size] | map(tostring) | join(\" \")'"

section "raw bytes on stderr: the failure reason"
check_fail_output "con-send --to rawerr fails with the reason, the byte replaced" \
        "exited with status 3: bad $(printf '\357\277\275') byte" con-send --to rawerr --timeout 120 go
EID=$(busctl --system --json=short call org.conspiracy.Rawerr $A $I ListTasks | jq -r '.data[0][-1][0]')
check_output "con task --json: failed, replaced" '^"failed" true$' \
        bash -c "con task '$EID' --json | jq -c '.status, .replaced' | paste -sd' '"

section "the tool loop: a tool result that is not UTF-8"
check_output "a tool result of printf '\\377' does not fail the task" 'RAW-BYTE-SEEN' \
        con-send --timeout 120 "run-raw-byte"
check_output "the model got U+FFFD and the note, not the raw byte" \
        "^\"$(printf '\357\277\275')\\\\n\[bytes that were not valid UTF-8 are shown as U\+FFFD\]\\\\nExit code: 0\"$" \
        jq '.body.messages[-1] | select(.role == "tool") | .content' "$T/fake.log"
check "every request the model got was valid UTF-8" utf8_ok "$T/fake.log"
SESS=/srv/con/agents/concierge/queue/conversations # the service's own (docs/AGENT.md)
HIST=$(find "$SESS" -name '*.json' | head -n 1)
check "the conversation was written (${HIST:-none})" test -n "$HIST"
for h in $(find "$SESS" -name '*.json'); do
        check "... $h holds no raw bytes" utf8_ok "$h"
done
check_output "the next task of the concierge still works" 'HELLO-AFTER' con-send --timeout 120 "say-hello next"
check_output "a read_file of a Latin-1 file does not fail the task" 'RAW-BYTE-SEEN' \
        con-send --timeout 120 "read-latin1"
check_output "... the model got the text with U+FFFD" "caf$(printf '\357\277\275') cr$(printf '\357\277\275')me" \
        jq -r '.body.messages[-1] | select(.role == "tool") | .content' "$T/fake.log"

section "a conversation written with raw bytes (before this fix) is read, not fatal"
HIST="$SESS/0/$(cat "$SESS/0/.latest").json"
check "root's latest conversation is there ($HIST)" test -f "$HIST"
printf '{"version":2,"messages":[{"role":"user","content":"old \377"},{"role":"assistant","content":null,"tool_calls":[{"id":"c1","name":"exec","arguments":{"command":"printf x"}}]},{"role":"tool","tool_call_id":"c1","content":"\377"},{"role":"assistant","content":"old answer \303"}]}' \
        >"$HIST"
chown root: "$HIST"
chmod 0600 "$HIST"
check_output "continuing it works" 'HELLO-AFTER' con-send --continue --timeout 120 "say-hello after poison"
check "every request the model got was valid UTF-8" utf8_ok "$T/fake.log"
check_output "... and the old turns reached the model, replaced" "old answer $(printf '\357\277\275')" \
        jq -r 'select(.body.messages[-1].content | tostring | test("say-hello after poison")) | .body.messages[] | .content // empty' \
        "$T/fake.log"
check_output "two more tasks work" 'HELLO-AFTER' con-send --continue --timeout 120 "say-hello again"
check_output "..." 'HELLO-AFTER' con-send --timeout 120 "say-hello once more"
for h in $(find "$SESS" -name '*.json'); do
        check "... $h holds no raw bytes" utf8_ok "$h"
done

section "retention: finished tasks past system.result_retention are removed, recent ones kept"
# With a retention of 5 s: a new task's files stay within the 5 s, then go, and GetResult says so;
# a task 3 s younger stays (the check runs every 1.25 s: at least 1.5 s to spare); rawout's task
# above ($RID), in memory at the restart, goes too. A slow task keeps rawout busy meanwhile, so
# its journal is not compacted and still holds the removed task across a restart.
O=/srv/con/agents/rawout
files_of() { # files_of ID: the files of a done task of rawout that exist
        local f
        for f in "$O/queue/finished/$1.json" "$O/outbox/$1.response" "$O/processed/$1.task"; do
                [ -e "$f" ] && echo "$f"
        done
        return 0
}
# A task saying "slow" waits until $R/release exists.
printf '#!/bin/sh\nif grep -q slow; then\n\twhile [ ! -e %s/release ]; do sleep 0.1; done\nfi\n%s\n' \
        "$R" "printf '\\377\\376 raw\\000nul\\n'" >"$R/rawout"
check_output "rawout's runner still prints the same bytes" '^ff fe 20 72 61 77 00 6e 75 6c 0a$' \
        bash -c "echo go | '$R/rawout' | od -An -tx1 | tr -s ' \n' ' ' | sed 's/^ //; s/ \$//'"
check_eq "the files of $RID are there" 3 "$(files_of "$RID" | wc -l)"
check "system.result_retention: 5s" sed -i 's/^  name: results-test$/&\n  result_retention: 5s/' /etc/con/con.yaml
check "rawout restarts (it reads the retention at start)" bus_stop org.conspiracy.Rawout
check_output "a new task of rawout" 'raw' con-send --to rawout --timeout 120 go
NEW=$(busctl --system --json=short call org.conspiracy.Rawout $A $I ListTasks | jq -r '.data[0][-1][0]')
check "... its id is listed (${NEW:-none}), not $RID's" test -n "$NEW" -a "$NEW" != "$RID"
check_eq "$NEW (just finished): its files are there" 3 "$(files_of "$NEW" | wc -l)"
check_output "... GetResult of $NEW works" '^ss "completed"' busctl --system call org.conspiracy.Rawout $A $I GetResult s "$NEW"
sleep 3
check_output "a second task, 3 s later" 'raw' con-send --to rawout --timeout 120 go
NEW2=$(busctl --system --json=short call org.conspiracy.Rawout $A $I ListTasks | jq -r '.data[0][-1][0]')
SLOW=$(con-send --to rawout --no-wait slow)
check "a slow task keeps rawout busy (${SLOW:-none})" test -n "$SLOW"
check "$NEW's files go once it finished 5 s ago (the check every 1.25 s)" \
        wait_for 8 test ! -e "$O/queue/finished/$NEW.json"
check_eq "... all of them" "" "$(files_of "$NEW")"
check_eq "... $NEW2's stay (${NEW2:-none})" 3 "$(files_of "$NEW2" | wc -l)"
check_eq "$RID (older still, in memory at the restart): its files were removed too" "" "$(files_of "$RID")"
check_fail_output "... GetResult of $RID: NoSuchTask, saying why" \
        "org.conspiracy.Agent1.Error.NoSuchTask: Agent 'rawout' knows no task '$RID' \(never sent there, or finished and removed: an agent keeps finished tasks for system.result_retention" \
        dbus-send --system --print-reply --dest=org.conspiracy.Rawout $A $I.GetResult string:"$RID"
check_fail_output "GetResult of $NEW now: NoSuchTask, not a crash" "knows no task '$NEW' \(never sent there, or finished and removed" \
        busctl --system call org.conspiracy.Rawout $A $I GetResult s "$NEW"
check_fail_output "con task $NEW says it is not known" "$NEW" con task "$NEW"
check_output "the agent's log says what it removed" \
        'Removed [0-9]+ finished task\(s\) and their files .*finished more than 5s ago \(system.result_retention\)' \
        cat /srv/con/logs/daemons/con-agent@rawout.log
check_output "rawout is busy with $SLOW" '^(submitted|working)$' bash -c "con task '$SLOW' --json | jq -r .status"
check "... so its journal was not compacted: it still holds $NEW" \
        grep -Eq "\"op\":\"(accept|known)\",\"id\":\"$NEW\"" "$O/queue/journal"
check "... and the record that it was removed" grep -q "\"op\":\"forget\",\"id\":\"$NEW\"" "$O/queue/journal"
check_output "the id $NEW is free again: a new task under it is accepted" "^$NEW\$" \
        con-send --to rawout --no-wait --id "$NEW" "go again"
check "rawout is killed while busy (no compaction on the way out)" bus_stop org.conspiracy.Rawout KILL
check_output "after the restart (replay of that journal), $NEW is the new task, waiting behind $SLOW" \
        '^(submitted|working)$' bash -c "con task '$NEW' --json | jq -r .status"
check_eq "... the removed task's files were not written again" "" "$(files_of "$NEW")"
touch "$R/release"
check "once $SLOW is let go, the new $NEW completes" \
        wait_for 60 bash -c "con task '$NEW' --json | jq -e '.status == \"completed\"'"
check "... its files are the new task's" grep -q 'go again' "$O/processed/$NEW.task"
check_eq "... all of them" 3 "$(files_of "$NEW" | wc -l)"

section "result_max: shared between senders, a flood removes only its flooder's results, passes start early"
# system.result_max 6 and a retention of 1 h: passes come every 15 min, unless a tenth of
# result_max finished since the last one began (here every task). The concierge (another sender:
# its agent user) sends one task, root then floods rawout with 15: the concierge's result stays,
# root's oldest go within seconds, not 15 minutes later. The 6 tasks in memory (result_max of
# them) are never removed: at most 7 records stay.
check "system.result_retention: 1h, system.result_max: 6" \
        sed -i 's/^  result_retention: 5s$/  result_retention: 1h\n  result_max: 6/' /etc/con/con.yaml
check "rawout restarts (it reads them at start)" bus_stop org.conspiracy.Rawout
OTHER=$(as_user a-concierge con-send --to rawout --no-wait "another sender's task")
check "the concierge's task ($OTHER) completes" \
        wait_for 60 bash -c "con task '$OTHER' --json | jq -e '.status == \"completed\"'"
check_eq "... its files are there" 3 "$(files_of "$OTHER" | wc -l)"
removed_before=$(grep -c 'Removed [0-9]* finished task' /srv/con/logs/daemons/con-agent@rawout.log)
flood() {
        local i
        for i in $(seq 1 15); do con-send --to rawout --timeout 60 "flood $i" >/dev/null || return 1; done
}
check "root sends 15 tasks, one after the other" flood
check "within seconds at most 7 records are left" \
        wait_for 10 bash -c "((\$(find '$O/queue/finished' -name '*.json' | wc -l) <= 7))"
echo "# $(find "$O/queue/finished" -name '*.json' | wc -l) records in $O/queue/finished"
check_eq "... the concierge's task and its files stay" 3 "$(files_of "$OTHER" | wc -l)"
check_output "... GetResult of it as root still works" '^ss "completed"' \
        busctl --system call org.conspiracy.Rawout $A $I GetResult s "$OTHER"
removed_after=$(grep -c 'Removed [0-9]* finished task.*shared fairly between the senders' \
        /srv/con/logs/daemons/con-agent@rawout.log)
check "the log says what was removed ($removed_before lines before the flood, $removed_after after)" \
        test "$removed_after" -gt "$removed_before"

kill "$FAKE_PID" 2>/dev/null
finish
