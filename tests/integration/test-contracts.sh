#!/bin/bash
# Health contracts end to end: con-contractd under `con up`, a failing contract's signal, audit
# record and single escalation, recovery, kill_session of a long session, quarantine and release,
# halt_agents until `con resume`, a malformed contract beside good ones, a hanging script, and
# `con healthcheck` right after an edit evaluating the edited contract, and a native check that
# blocks (in its worker) while the service keeps answering the bus.
# Runs as root inside tests/sandbox/con-sandbox (fresh system bus, project installed in /usr).
. "$(dirname "$0")/lib.sh"
require_sandbox
T=$(lib_tmp)
C=/srv/con/contracts

contract() { # contract NAME: stdin -> $C/NAME.yaml, atomically
        cat >"$C/.$1.tmp" && mv "$C/.$1.tmp" "$C/$1.yaml"
}
has_method() { busctl introspect "$1" /org/conspiracy/Agent org.conspiracy.Agent1 2>/dev/null | grep -q "^\.$2 "; }

section "set up: default profile plus an exec agent that sleeps"
check "con bootstrap --profile default" con bootstrap --profile default
check_output "the shipped contracts are all valid (in-process healthcheck)" "summary:" con healthcheck --local
check_fail "... none INVALID" grep -q INVALID <<<"$LIB_OUT"
cat >>/etc/con/con.yaml <<'YAML'
  - name: sleeper
    tier: worker
    mode: on-demand
    runner: exec
    command: [/bin/sleep, "300"]
YAML
check "con bootstrap with the sleeper" con bootstrap
mkdir -p "$T/shipped" && mv "$C"/*.yaml "$T/shipped/"     # only the test's contracts from here on
mkdir -p "$C/scripts"
check "con up" con up
check "con-contractd owns org.conspiracy.Contracts" wait_for 10 busctl status org.conspiracy.Contracts
dbus-monitor --system "type='signal',sender='org.conspiracy.Contracts'" >"$T/monitor" 2>&1 &
MON=$!
sleep 0.5

section "a failing contract: signal, audit, exactly one escalation, recovery"
rm -f /run/con-test-flag
contract T-ALERT <<'YAML'
id: T-ALERT
type: detective
frequency: 1s
scope: system
checks:
  - name: flag_present
    path: {path: /run/con-test-flag}
    on_fail:
      action: alert
      escalate: sysadmin
      message: "test flag missing"
YAML
check "ViolationDetected for T-ALERT" wait_for 10 grep -q '"T-ALERT"' "$T/monitor"
check "... with its message and action" grep -A6 'member=ViolationDetected' "$T/monitor" -q
check "audit record violation.detected" wait_for 5 grep -q '"violation.detected".*"T-ALERT"' /srv/con/logs/audit/audit.jsonl
sleep 4    # several more evaluations while it keeps failing
count_escalations() {
        busctl call org.conspiracy.Sysadmin /org/conspiracy/Agent org.conspiracy.Agent1 ListTasks | grep -o 'contract-T-ALERT-flag_present-[0-9]*' | sort -u | wc -l
}
check "the escalation reached the sysadmin" wait_for 10 test "$(count_escalations)" -ge 1
check_eq "exactly one escalation task" 1 "$(count_escalations)"
check_eq "exactly one ViolationDetected" 1 "$(grep -c 'string "T-ALERT"' <(grep -A1 'member=ViolationDetected' "$T/monitor"))"
touch /run/con-test-flag
check "ViolationCleared after recovery" wait_for 10 grep -q 'member=ViolationCleared' "$T/monitor"
check "audit record violation.cleared" grep -q '"violation.cleared".*"T-ALERT"' /srv/con/logs/audit/audit.jsonl
check_output "con contracts shows T-ALERT passing" "flag_present +pass" con contracts
check_output "con contracts --json" '"T-ALERT"' con contracts --json
check "con healthcheck via the service passes" con healthcheck
rm -f "$C/T-ALERT.yaml"

section "a malformed contract beside good ones"
printf 'id: T-BAD\ntype: detective\nchecks:\n  - name: x\n    command: {run: true}\n    on_fail: {action: explode}\n' | contract T-BAD
contract T-GOOD <<'YAML'
id: T-GOOD
type: detective
frequency: 1s
checks:
  - name: disk
    disk_free: {path: /srv/con, min_pct: 0}
YAML
check "ContractInvalid signal" wait_for 10 grep -q 'member=ContractInvalid' "$T/monitor"
check_status "con healthcheck fails on the invalid contract" 1 con healthcheck
check_output "... naming file:line and the reason" "INVALID $C/T-BAD.yaml:6: .*explode" echo "$LIB_OUT"
check_output "... and still evaluates the good one" "T-GOOD PASS disk" echo "$LIB_OUT"
check "audit record contract.invalid" grep -q '"contract.invalid"' /srv/con/logs/audit/audit.jsonl
rm -f "$C/T-BAD.yaml"

section "con healthcheck evaluates the contracts as they are on disk at the call"
# No pause between an edit and the call: the service must not answer from the version it loaded
# before (its inotify reload waits 0.3 s for writes to settle).
edit_contract() { # edit_contract HOW NAME PATH: T-EDIT with one check NAME on PATH
        local text
        text=$(printf 'id: T-EDIT\ntype: detective\nfrequency: 1h\nchecks:\n  - name: %s\n    path: {path: %s}\n' "$2" "$3")
        if [ "$1" = atomic ]; then
                printf '%s\n' "$text" | contract T-EDIT
        else
                printf '%s\n' "$text" >"$C/T-EDIT.yaml"  # in place: same inode, often the same size
        fi
}
touch /run/con-test-edit
for i in 1 2 3; do
        for how in atomic inplace; do
                edit_contract "$how" "v${i}a" /run/con-test-edit
                check_output "$how edit $i: the new passing version at once" "T-EDIT PASS v${i}a" con healthcheck
                check_fail "... not the previous one" grep -Eq "T-EDIT [A-Z]+ v[0-9]b" <<<"$LIB_OUT"
                edit_contract "$how" "v${i}b" /run/con-test-edit-missing
                check_status "$how edit $i: the new failing version at once" 1 con healthcheck
                check_output "... it is the one reported" "T-EDIT FAIL v${i}b" echo "$LIB_OUT"
                check_fail "... not the previous one" grep -q "v${i}a" <<<"$LIB_OUT"
        done
done
rm -f "$C/T-EDIT.yaml"
check_output "a contract removed a moment before is gone" "T-GOOD PASS disk" con healthcheck
check_fail "... T-EDIT is not reported" grep -q T-EDIT <<<"$LIB_OUT"

section "a hanging script is killed at its timeout; the others are evaluated"
printf '#!/bin/sh\nsleep 100\n' >"$C/scripts/hang.sh"
contract T-HANG <<'YAML'
id: T-HANG
type: detective
frequency: 1h
checks:
  - name: hangs
    script: {path: scripts/hang.sh, timeout: 2s}
YAML
sleep 1
START=$(date +%s)
check_status "con healthcheck exits 1" 1 con healthcheck
check_output "the hanging script fails with its timeout" "timed out after 2 s" echo "$LIB_OUT"
check_output "the good contract was evaluated" "T-GOOD PASS disk" echo "$LIB_OUT"
check "... within 10 s" test $(($(date +%s) - START)) -lt 10
check_fail "no sleep 100 left behind" pgrep -f "sleep 100"
rm -f "$C/T-HANG.yaml" "$C/T-GOOD.yaml"

section "kill_session kills a long session; the agent survives"
if has_method org.conspiracy.Sleeper KillSessions || busctl call org.conspiracy.Sleeper /org/conspiracy/Agent org.conspiracy.Agent1 ListTasks >/dev/null 2>&1 && has_method org.conspiracy.Sleeper KillSessions; then :; fi
check_output "a task for the sleeper" '^s "' busctl call org.conspiracy.Sleeper /org/conspiracy/Agent org.conspiracy.Agent1 Submit s "sleep please"
SLEEP_ID=$(sed -n 's/^s "\(.*\)"$/\1/p' <<<"$LIB_OUT")
check "the session runs as a-sleeper" wait_for 10 pgrep -u a-sleeper -x sleep
if has_method org.conspiracy.Sleeper KillSessions; then
        contract T-KILL <<'YAML'
id: T-KILL
type: detective
frequency: 1s
scope: agent:sleeper
checks:
  - name: long_session
    session_duration: {max: 2s}
    on_fail: {action: kill_session, message: "session too long"}
YAML
        check "ActionTaken kill_session" wait_for 15 grep -q 'string "kill_session"' "$T/monitor"
        check "the session is gone" wait_for 10 bash -c '! pgrep -u a-sleeper -x sleep'
        check_output "the task failed" '"failed"' busctl call org.conspiracy.Sleeper /org/conspiracy/Agent org.conspiracy.Agent1 GetResult s "$SLEEP_ID"
        check "the agent service survived" busctl status org.conspiracy.Sleeper
        check "audit record action.kill_session" grep -q '"action.kill_session"' /srv/con/logs/audit/audit.jsonl
        rm -f "$C/T-KILL.yaml"
else
        echo "# con-agentd has no KillSessions yet: kill_session not exercised"
        pkill -u a-sleeper -x sleep
fi

section "quarantine: refuses work, cannot own its name; release restores it"
check "con quarantine sleeper" con quarantine sleeper --reason "integration test"
check "marker written (a root-owned folder)" test -d /srv/con/state/quarantine/sleeper
check_output "marker holds the reason" "integration test" cat /srv/con/state/quarantine/sleeper/reason
check "activation file moved aside" test -f /srv/con/state/quarantine/sleeper.service
check_fail "... and gone from the bus" test -e /usr/local/share/dbus-1/system-services/org.conspiracy.Sleeper.service
check_output "bus policy denies the name" 'deny own="org.conspiracy.Sleeper"' cat /etc/dbus-1/system.d/org.conspiracy.quarantine.conf
check_output "polkit rule denies a-sleeper" '"a-sleeper"' cat /etc/polkit-1/rules.d/40-conspiracy-quarantine.rules
check "the agent has left the bus" wait_for 15 bash -c '! busctl status org.conspiracy.Sleeper'
check_fail "a task for the quarantined agent is refused" busctl call org.conspiracy.Sleeper /org/conspiracy/Agent org.conspiracy.Agent1 Submit s hi
check_fail "root (the agent service's identity) cannot own org.conspiracy.Sleeper" dbus-send --system --print-reply \
        --dest=org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus.RequestName string:org.conspiracy.Sleeper uint32:4
check_fail "a-sleeper cannot either" as_user a-sleeper dbus-send --system --print-reply \
        --dest=org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus.RequestName string:org.conspiracy.Sleeper uint32:4
check_output "con contracts lists it" "quarantined: sleeper" con contracts
check "audit record action.quarantine" grep -q '"action.quarantine"' /srv/con/logs/audit/audit.jsonl
check "con release sleeper" con release sleeper
check_fail "marker removed" test -e /srv/con/state/quarantine/sleeper
check "activation file restored" test -f /usr/local/share/dbus-1/system-services/org.conspiracy.Sleeper.service
check_fail "bus policy file removed" test -e /etc/dbus-1/system.d/org.conspiracy.quarantine.conf
sleep 1
check "root may own the name again" dbus-send --system --print-reply \
        --dest=org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus.RequestName string:org.conspiracy.Sleeper uint32:4
check_fail "... a-sleeper never (sessions cannot pose as the service)" as_user a-sleeper dbus-send --system --print-reply \
        --dest=org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus.RequestName string:org.conspiracy.Sleeper uint32:4
check_status "con release of an agent that is not quarantined fails" 1 con release sleeper

section "halt_agents stops everything until con resume"
rm -f /run/con-test-flag
contract T-HALT <<'YAML'
id: T-HALT
type: detective
frequency: 1s
checks:
  - name: flag_present
    path: {path: /run/con-test-flag}
    on_fail: {action: halt_agents, message: "halting for the test"}
YAML
check "ActionTaken halt_agents" wait_for 10 grep -q 'string "halt_agents"' "$T/monitor"
check_output "the halt marker holds the reason" "T-HALT" cat /srv/con/state/halt/reason
# What an agent could do with fs.protected_hardlinks=0 (root here): links to the marker's files.
W=/srv/con/agents/sysadmin/workspace    # an agent's folder, on the file system of the markers
check_output "the halt marker (a folder) cannot be hard-linked" "not allowed for directory" \
        sh -c "ln /srv/con/state/halt $W/halt-link 2>&1; true"
check "its reason file can be" ln /srv/con/state/halt/reason "$W/reason-link"
check "... and the marker still reads (the service reloads and reads it again)" \
        busctl call org.conspiracy.Contracts /org/conspiracy/Contracts org.conspiracy.Contracts1 Reload
check_output "... halted: all" "halted: all" con contracts
rm -f "$W/reason-link"
check_output "con contracts: halted all" "halted: all" con contracts
if has_method org.conspiracy.Concierge Halt; then
        check_fail "the concierge refuses work" busctl call org.conspiracy.Concierge /org/conspiracy/Agent org.conspiracy.Agent1 Submit s /ping
else
        echo "# con-agentd has no Halt yet: refusal not exercised"
fi
rm -f "$C/T-HALT.yaml"
check "con resume" con resume
check_fail "the halt marker is gone" test -e /srv/con/state/halt
check "ActionTaken resume" wait_for 5 grep -q 'string "resume"' "$T/monitor"
check_output "the concierge works again" '^s "' busctl call org.conspiracy.Concierge /org/conspiracy/Agent org.conspiracy.Agent1 Submit s /ping
check "audit record resume" grep -q '"event":"resume"' /srv/con/logs/audit/audit.jsonl
check "con audit verify" con audit verify

section "a slow native check runs in a worker: the service answers the bus meanwhile"
# The audit-chain check opens DIR/audit.jsonl; a FIFO there blocks that open until a writer comes,
# as long as we like. Run in the service's event loop, it would stop every bus call.
mkdir -p "$T/slow" && mkfifo "$T/slow/audit.jsonl"
contract T-SLOW <<YAML
id: T-SLOW
type: detective
frequency: 1h
checks:
  - name: blocked
    audit_chain: {dir: $T/slow}
YAML
results() { busctl --timeout=3 get-property org.conspiracy.Contracts /org/conspiracy/Contracts org.conspiracy.Contracts1 Results; }
sleep 1.5       # loaded (inotify, 0.3 s) and started (0.2 s later)
check_output "a property Get is answered while it runs, showing it pending" '"T-SLOW" "blocked" "pending"' results
check "List is answered too" busctl --timeout=3 call org.conspiracy.Contracts /org/conspiracy/Contracts org.conspiracy.Contracts1 List
timeout 5 sh -c ': >"$1"' sh "$T/slow/audit.jsonl"      # a writer comes and goes: the check reads EOF
slow_done() { results | grep -Eq '"T-SLOW" "blocked" "(pass|fail)"'; }
check "the check then finishes, with its result from the worker" wait_for 10 slow_done
rm -f "$C/T-SLOW.yaml"

section "a shell check runs without CAP_NET_ADMIN (the service keeps it for network_drift)"
# Capability 12 is CAP_NET_ADMIN, 1 CAP_DAC_OVERRIDE: the check's own process reports its sets.
SPID=$(pgrep -x con-contractd)
check_output "con-contractd itself holds CAP_NET_ADMIN" '^1$' \
        bash -c "echo \$(( 0x\$(sed -n 's/^CapEff:\t//p' /proc/$SPID/status) >> 12 & 1 ))"
caps_contract | contract T-CAPS
check_output "con healthcheck (through the service): no CAP_NET_ADMIN in any set of the check" "T-CAPS PASS no_net_admin" con healthcheck
check_output "... the check still has the service's other capabilities" "T-CAPS PASS keeps_dac_override" echo "$LIB_OUT"
rm -f "$C/T-CAPS.yaml"

section "access: state-changing methods are root only, reads are open"
id -u outsider >/dev/null 2>&1 || useradd --no-create-home --shell /usr/sbin/nologin outsider
check "anyone may List" as_user outsider busctl call org.conspiracy.Contracts /org/conspiracy/Contracts org.conspiracy.Contracts1 List
check_fail "a user may not Resume" as_user outsider busctl call org.conspiracy.Contracts /org/conspiracy/Contracts org.conspiracy.Contracts1 Resume

kill "$MON" 2>/dev/null
mv "$T/shipped/"*.yaml "$C/"
check "con down" con down
finish
