#!/bin/bash
# Assume breach inside an agent (docs/SECURITY.md): a hijacked session is an attacker running
# shell commands as a-concierge. The same attack script runs twice: through the exec tool of a
# session driven by a scripted model, and directly with runuser -u a-concierge. It tries to read
# another sender's task and result, overwrite a response, append a forged record to the journal
# (then the service is killed with SIGKILL and activated again to replay it), rename or add
# skills, and take the agent's bus name. Every attempt must fail, and honest tasks sent
# meanwhile complete with their true result. Then Cancel and KillSessions of sessions whose exec
# tool left a double-forked daemon: no process of a-concierge survives; nor when the service is
# killed with SIGKILL under such a session (the next start kills what it left).
# Runs as root inside tests/sandbox/con-sandbox.
. "$(dirname "$0")/lib.sh"
require_sandbox
FAKE=${CON_BUILD_DIR:?}/tests/fake-llm/con-fake-llm
T=$(lib_tmp)
chmod 0755 "$T"
C=org.conspiracy.Concierge
P=/org/conspiracy/Agent
I=org.conspiracy.Agent1
A=/srv/con/agents/concierge
BIN=/usr/local/libexec/con-test
mkdir -p "$BIN"

submit() { # submit USER TEXT: prints the task id
        as_user "$1" busctl --system call "$C" "$P" "$I" Submit s "$2" | sed -n 's/^s "\(.*\)"$/\1/p'
}
service_pid() { bus_owner_pid "$C"; }
# The processes of a-concierge (exit status 1 when none), with their parent, state (Z: dead, not yet
# reaped by its parent) and age, so that a failed check shows what was left.
agent_procs() { ps -u a-concierge -o pid=,ppid=,stat=,etime=,args=; }
# The cgroup2 folder of process PID (the sandbox's cgroup2 mount joined with its "0::" line): where
# the agent really put it, whatever other con-concierge folders the host has.
proc_cgroup_dir() {
        local mnt path
        mnt=$(findmnt -n -t cgroup2 -o TARGET | head -n1)
        path=$(sed -n 's/^0:://p' "/proc/$1/cgroup")
        [ -n "$mnt" ] && [ -n "$path" ] && printf '%s%s\n' "$mnt" "$path"
}

answer() {
        printf '{ "choices": [ { "message": { "content": "%s" }, "finish_reason": "stop" } ], "usage": { "prompt_tokens": 5, "completion_tokens": 5 } }' "$1"
}
exec_call() { # exec_call ID COMMAND (no quotes or backslashes in COMMAND)
        printf '{ "choices": [ { "message": { "content": null, "tool_calls": [ { "id": "%s", "type": "function", "function": { "name": "exec", "arguments": "{\\"command\\":\\"%s\\"}" } } ] }, "finish_reason": "tool_calls" } ] }' "$1" "$2"
}

section "set-up: a scripted model, the concierge with skills, two human senders"
cat >"$BIN/hostile.sh" <<'EOF'
#!/bin/sh
# One attacker, many attempts: "held:" when the system refused, "BREACH:" when it did not.
A=/srv/con/agents/concierge
VICTIM_CONV=$(cat /run/con-test-victim-conv)
VICTIM=${VICTIM:-$(cat /run/con-test-victim)}
VUID=$(id -u member)
CONV=$A/queue/conversations
try() { # try WHAT CMD...: the attempt must fail
        what=$1
        shift
        if "$@" >/dev/null 2>&1; then echo "BREACH: $what"; else echo "held: $what"; fi
}
id -un
try "list the outbox" ls "$A/outbox"
try "read a response of another sender" cat "$A/outbox/$VICTIM.response"
try "read a processed task of another sender" cat "$A/processed/$VICTIM.task"
try "overwrite a response" sh -c "echo FORGED >$A/outbox/$VICTIM.response"
try "replace a response" sh -c "echo FORGED >$HOME/f.$$ && mv -f $HOME/f.$$ $A/outbox/$VICTIM.response"
try "delete a response" rm -f "$A/outbox/$VICTIM.response"
try "plant a response" sh -c "echo FORGED >$A/outbox/planted1.response"
try "read the journal" cat "$A/queue/journal"
try "append a forged record to the journal" sh -c \
        "echo '{\"op\":\"accept\",\"id\":\"planted1\",\"uid\":0,\"text\":\"/status\"}' >>$A/queue/journal"
try "list the finished records" ls "$A/queue/finished"
try "forge a finished record" sh -c "echo '{\"op\":\"known\",\"id\":\"planted1\",\"uid\":0,\"status\":\"done\"}' >$A/queue/finished/planted1.json"
try "move the queue away" mv "$A/queue" "$A/queue.old"
try "list the senders' conversations" ls "$CONV"
try "list another sender's conversations" ls "$CONV/$VUID"
try "read another sender's conversation" cat "$CONV/$VICTIM_CONV"
try "edit another sender's conversation" sh -c "echo '{\"messages\":[]}' >$CONV/$VICTIM_CONV"
try "plant a conversation for another sender" sh -c "echo '{\"messages\":[]}' >$CONV/$VUID/planted1.json"
try "list its own sender's conversations (root's)" ls "$CONV/0"
try "read its own sender's latest" cat "$CONV/0/.latest"
try "write to a session's turn pipe" sh -c \
        'p=$(pgrep -u a-concierge -x con-session | head -n1); [ -n "$p" ] && echo x >/proc/$p/fd/4'
pgrep -u a-concierge -x con-session >/dev/null && echo "a session is there"
try "read the inbox" ls "$A/inbox"
try "add a skill" sh -c "echo INJECTED-SKILL >$A/skills/evil.md"
try "change a skill" sh -c "echo INJECTED-SKILL >>$A/skills/heartbeat-audit.md"
try "rename the skills folder" mv "$A/skills" "$A/skills.old"
try "make a skills folder of its own" mkdir "$A/skills2"
try "change AGENTS.md" sh -c "echo INJECTED-SKILL >>/home/a-concierge/AGENTS.md"
try "own the agent's bus name" busctl --system call org.freedesktop.DBus /org/freedesktop/DBus \
        org.freedesktop.DBus RequestName su org.conspiracy.Concierge 4
# The workspace is the agent's own: a skill planted there must not reach a prompt.
mkdir -p "$HOME/skills" && echo "## INJECTED-SKILL" >"$HOME/skills/evil.md"
echo HOSTILE-DONE
EOF
cat >"$BIN/spawn.sh" <<'EOF'
#!/bin/sh
# A daemon that leaves the tool's process group (double fork, new session), then a long sleep.
setsid sh -c 'sleep 300 &'
sleep 120
EOF
chmod 0755 "$BIN/hostile.sh" "$BIN/spawn.sh"

PCH=/v1/chat/completions
cat >"$T/script.json" <<EOF
{ "rules": [
  { "path": "$PCH", "match": "HOSTILE-DONE", "body": $(answer "hostile session finished") },
  { "path": "$PCH", "match": "run-hostile-session", "body": $(exec_call h1 "$BIN/hostile.sh") },
  { "path": "$PCH", "match": "spawn-a-daemon", "body": $(exec_call s1 "$BIN/spawn.sh") },
  { "path": "$PCH", "match": "honest-question", "body": $(answer "HONEST-ANSWER-42") },
  { "path": "$PCH", "body": $(answer "fallback answer") }
] }
EOF
start_fake_llm

mkdir -p /etc/con
cat >/etc/con/con.yaml <<EOF
system:
  name: hostile-test
base:
  runner: picoclaw
  provider: compatible
  base_url: http://127.0.0.1:$PORT/v1
  model: fake-model
agents:
  - name: concierge
    tier: operator
    roles: [sysadmin]
    max_sessions: 2
EOF
for d in base tiers roles agents; do
        [ -d "/usr/share/conspiracyos/profiles/default/$d" ] && cp -r "/usr/share/conspiracyos/profiles/default/$d" /etc/con/
done
printf 'CON_API_KEY=sk-hostile\n' >/etc/con/env
check "con bootstrap" con bootstrap
id -u member >/dev/null 2>&1 || useradd --no-create-home --shell /usr/sbin/nologin member
id -u member2 >/dev/null 2>&1 || useradd --no-create-home --shell /usr/sbin/nologin member2
gpasswd -a member con >/dev/null
gpasswd -a member2 con >/dev/null
check "the concierge has root-owned skills" test -s "$A/skills/heartbeat-audit.md"

section "an honest task of another sender"
VICTIM=$(submit member honest-question)
check "member submits (id ${VICTIM:-none})" test -n "$VICTIM"
check "... it completes" wait_for 60 bash -c "[ \"\$(runuser -u member -- busctl --system call $C $P $I GetResult s $VICTIM | cut -d'\"' -f2)\" = completed ]"
echo "$VICTIM" >/run/con-test-victim
echo "$(id -u member)/$VICTIM.json" >/run/con-test-victim-conv
chmod 0644 /run/con-test-victim /run/con-test-victim-conv
stat_is "its conversation is kept by the service" "$A/queue/conversations/$(id -u member)/$VICTIM.json" "root:root 600"
check_output "... with the task and the answer" 'honest-question.*HONEST-ANSWER-42' \
        cat "$A/queue/conversations/$(id -u member)/$VICTIM.json"
check_output "the sender reads its response file (ACL)" '^HONEST-ANSWER-42$' as_user member cat "$A/outbox/$VICTIM.response"
check_output "... and its processed task" 'honest-question' as_user member cat "$A/processed/$VICTIM.task"
check_fail_output "another member cannot read it" 'Permission denied' as_user member2 cat "$A/outbox/$VICTIM.response"
check_fail_output "... nor the processed task" 'Permission denied' as_user member2 cat "$A/processed/$VICTIM.task"
stat_is "the response is root's" "$A/outbox/$VICTIM.response" "root:root 640"
check_output "... with a read entry for its sender only" "^user:member:r--$" getfacl -p "$A/outbox/$VICTIM.response"

section "the hostile session, through the exec tool"
H=$(submit root run-hostile-session)
check "the hostile task (id ${H:-none}) completes" wait_for 60 bash -c "[ \"\$(busctl --system call $C $P $I GetResult s $H | cut -d'\"' -f2)\" = completed ]"
jq -r '.body.messages[] | select(.role == "tool") | .content' "$T/fake.log" >"$T/tool-out"
check_output "the session ran as a-concierge" '^a-concierge$' cat "$T/tool-out"
check_output "it got to the end of the script" 'HOSTILE-DONE' cat "$T/tool-out"
check_fail "no attempt succeeded" grep BREACH "$T/tool-out"
check_output "... the turn pipe was tried on a live session" '^a session is there$' cat "$T/tool-out"
check_eq "every attempt was refused (27)" 27 "$(grep -c '^held: ' "$T/tool-out")"

section "the same attacks, directly as a-concierge (runuser)"
check_output "runuser: the script ran to its end" 'HOSTILE-DONE' \
        as_user a-concierge env VICTIM="$VICTIM" HOME="$A/workspace" "$BIN/hostile.sh"
DIRECT=$LIB_OUT
check_fail "no attempt succeeded" grep BREACH <<<"$DIRECT"
check_eq "every attempt was refused (27)" 27 "$(grep -c '^held: ' <<<"$DIRECT")"
check_output "the victim's conversation is unchanged" 'honest-question.*HONEST-ANSWER-42' \
        cat "$A/queue/conversations/$(id -u member)/$VICTIM.json"
check_fail "... and nothing was planted" test -e "$A/queue/conversations/$(id -u member)/planted1.json"
check "the planted workspace skill exists (the workspace is the agent's)" test -f "$A/workspace/skills/evil.md"

section "restart: kill -9, activate again with a bus call, nothing forged is replayed"
OLD=$(service_pid)
check "the service runs as root (pid ${OLD:-none})" test "$(stat -c %U "/proc/${OLD:-0}")" = root
kill -9 "${OLD:-0}"
check "it is gone" wait_for 10 bash -c "! busctl --system status $C"
check_output "a member's Submit activates it again" '.' submit member honest-question
SECOND=$LIB_OUT
check "a new process" test "$(service_pid)" != "$OLD"
check_fail "no planted1 task" busctl --system call "$C" "$P" "$I" GetResult s planted1
check_fail "ListTasks has no planted1" grep -q planted1 <(busctl --system call "$C" "$P" "$I" ListTasks)
check_output "the honest task still has its true result" 'HONEST-ANSWER-42' \
        as_user member busctl --system call "$C" "$P" "$I" GetResult s "$VICTIM"
check "the second honest task completes" wait_for 60 bash -c "runuser -u member -- busctl --system call $C $P $I GetResult s $SECOND | grep -q HONEST-ANSWER-42"
check_fail "a-concierge cannot own the name while the service is down either" \
        as_user a-concierge busctl --system call org.freedesktop.DBus /org/freedesktop/DBus \
        org.freedesktop.DBus RequestName su "$C" 4

section "replay trusts only the service's own journal"
# Simulate a journal someone else could write (what a session would need to forge it).
printf '%s\n' '{"op":"accept","id":"planted2","uid":0,"text":"/status"}' >>"$A/queue/journal"
chmod 0666 "$A/queue/journal"
kill -9 "$(service_pid)"
check "the service is gone" wait_for 10 bash -c "! busctl --system status $C"
check_output "activated again" '.' submit root /ping
check_fail "planted2 was not replayed" busctl --system call "$C" "$P" "$I" GetResult s planted2
check "the untrusted journal is kept aside" bash -c "ls $A/queue/journal.untrusted-*"
stat_is "the new journal is the service's" "$A/queue/journal" "root:root 600"
check_output "the honest task's result survives (finished record)" 'HONEST-ANSWER-42' \
        as_user member busctl --system call "$C" "$P" "$I" GetResult s "$VICTIM"

section "the next prompt: only root's skills"
N=$(submit root honest-question)
check "a task after the attacks completes" wait_for 60 bash -c "busctl --system call $C $P $I GetResult s $N | grep -q HONEST-ANSWER-42"
jq -r 'select(.body.messages[-1].content | tostring | test("honest-question")) | .body.messages[0].content' \
        "$T/fake.log" | tail -c 200000 >"$T/last-system"
check_output "the prompt carries the shipped skills" '## Skill: heartbeat-audit' cat "$T/last-system"
check_fail "... and nothing planted" grep -q INJECTED-SKILL "$T/last-system"

section "Cancel kills the whole session: a double-forked daemon and the tool's sleep"
X=$(submit root spawn-a-daemon)
check "the daemon runs as a-concierge" wait_for 30 pgrep -u a-concierge -f "sleep 300"
check "... and the tool's sleep" wait_for 30 pgrep -u a-concierge -f "sleep 120"
DAEMON=$(pgrep -u a-concierge -f "sleep 300" | head -n1)
check_fail "the daemon left the session's process group" test "$(ps -o pgid= -p "$DAEMON" | tr -d ' ')" = \
        "$(ps -o pgid= -p "$(pgrep -u a-concierge -f "sleep 120" | head -n1)" | tr -d ' ')"
SESS=$(proc_cgroup_dir "$DAEMON")
check "... but not the session's cgroup (${SESS:-none})" bash -c "[[ '$SESS' == /*/con-concierge/session-$X-* ]] && test -d '$SESS'"
check "Cancel" busctl --system call "$C" "$P" "$I" Cancel s "$X"
check "the task is cancelled" wait_for 20 bash -c "busctl --system call $C $P $I GetResult s $X | grep -q canceled"
check_fail "no process of a-concierge survives" agent_procs
check_fail "the session's cgroup is removed" test -d "$SESS"

section "KillSessions too"
Y=$(submit root spawn-a-daemon)
check "the daemon runs again" wait_for 30 pgrep -u a-concierge -f "sleep 300"
check "... and the tool's sleep" wait_for 30 pgrep -u a-concierge -f "sleep 120"
# What runs now, for the log when the next check fails (it once found a second session).
busctl --system call "$C" "$P" "$I" ListTasks | tr '(' '\n' | grep -E 'running|working' || true
agent_procs || true
check_output "KillSessions kills one session" '^u 1$' busctl --system call "$C" "$P" "$I" KillSessions s "hostile test"
check "the task failed" wait_for 20 bash -c "busctl --system call $C $P $I GetResult s $Y | grep -q failed"
check_fail "no process of a-concierge survives" agent_procs
check "the service survived" busctl --system status "$C"
check_output "an honest task after that still completes" 'HONEST-ANSWER-42' \
        bash -c "id=\$(busctl --system call $C $P $I Submit s honest-question | cut -d'\"' -f2); for i in \$(seq 100); do busctl --system call $C $P $I GetResult s \$id | grep HONEST && break; sleep 0.2; done"

section "a session the killed service left behind dies at the next start"
Z=$(submit root spawn-a-daemon)
check "the daemon runs again" wait_for 30 pgrep -u a-concierge -f "sleep 300"
check "... and the tool's sleep" wait_for 30 pgrep -u a-concierge -f "sleep 120"
OLD=$(pgrep -u a-concierge -f "sleep 300" | head -n1)
OLD_CG=$(proc_cgroup_dir "$OLD")
check "the daemon is in the session's cgroup (${OLD_CG:-none})" bash -c "[[ '$OLD_CG' == /*/con-concierge/session-$Z-* ]] && test -d '$OLD_CG'"
kill -9 "$(service_pid)"
check "the service is gone" wait_for 10 bash -c "! busctl --system status $C"
check "... and its session's daemon runs on" kill -0 "$OLD"
check_output "activated again" '.' submit root /ping
check "the old session's daemon is killed" wait_for 10 bash -c "! kill -0 $OLD 2>/dev/null"
check_fail "... and its cgroup removed" test -d "$OLD_CG"
# The replay queued the task again (its second try): that session is the service's own.
check "the task runs again" wait_for 30 bash -c "busctl --system call $C $P $I GetResult s $Z | grep -q working"
check "Cancel it" busctl --system call "$C" "$P" "$I" Cancel s "$Z"
check "the task is cancelled" wait_for 20 bash -c "busctl --system call $C $P $I GetResult s $Z | grep -q canceled"
check_fail "no process of a-concierge survives" agent_procs

kill "$FAKE_PID" 2>/dev/null
finish
