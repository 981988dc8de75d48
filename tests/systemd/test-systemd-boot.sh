#!/bin/bash
# ConspiracyOS under systemd as PID 1, the way it is deployed: con bootstrap enables and starts
# the fabric (conspiracyos.target), a dropped task is answered, a Submit over the bus activates
# an agent through con-agent@.service, systemd restarts a killed router, a cron agent's timer
# fires, every shipped and generated unit verifies and is in the OK band of `systemd-analyze
# security`, a contract violation halts the agents; after a reboot the fabric is up again without
# any command and the halt is still in force, until `con resume`.
# Runs inside tests/systemd/con-boot --boots 2 (CON_BOOT is 1, then 2).
. "$(dirname "$0")/../integration/lib.sh"
require_root
if [ "${CON_BOOT:-}" = "" ] || [ "$(cat /proc/1/comm)" != systemd ]; then
        echo "# must run inside tests/systemd/con-boot (systemd as PID 1); skipping"
        LIB_FINISHED=1
        exit 77
fi
drop_task() { # drop_task NAME: /ping into the outer inbox, atomically
        printf '/ping\n' >"/srv/con/inbox/.$1.tmp" && mv "/srv/con/inbox/.$1.tmp" "/srv/con/inbox/$1.task"
}
fabric_units="conspiracyos.target con-routerd.service con-contractd.service con-modeld.service"
A="org.conspiracy.Concierge /org/conspiracy/Agent org.conspiracy.Agent1"

if [ "$CON_BOOT" = 1 ]; then
        section "before bootstrap nothing is enabled"
        check_fail "conspiracyos.target is not enabled" systemctl is-enabled conspiracyos.target
        check_fail "con-routerd is not running" systemctl is-active con-routerd.service

        section "con bootstrap enables and starts the fabric"
        check "con bootstrap --profile default" con bootstrap --profile default
        check_output "... says it enabled and started the target" "conspiracyos.target enabled and started" \
                printf '%s' "$LIB_OUT"
        for u in $fabric_units; do
                check "$u is enabled" systemctl is-enabled "$u"
                check "$u is active" wait_for 20 systemctl is-active "$u"
        done
        check "a second bootstrap changes nothing" con bootstrap
        check_output "... and says so" "nothing to change" printf '%s' "$LIB_OUT"
        check_units_verify "the units verify without a word" $fabric_units con-agent@concierge.service

        section "the shipped contracts pass inside con-contractd's sandbox"
        # Through the service (its checks run in the unit's sandbox): a check the sandbox broke
        # (a folder it cannot read, a file it cannot write) would fail here.
        check_output "con healthcheck (Evaluate on con-contractd): every contract passes" \
                "^summary: (1[0-9]|[2-9][0-9]) passed, 0 failed, 0 skipped" con healthcheck
        check_output "the service's own Results: 10 or more checks" "^a\(sssstt\) ([1-9][0-9]+) " \
                busctl --system get-property org.conspiracy.Contracts /org/conspiracy/Contracts \
                org.conspiracy.Contracts1 Results
        check_fail "... none of them fail" grep -q '"fail"' <<<"$LIB_OUT"

        section "a dropped task is answered"
        check "drop /ping into /srv/con/inbox" drop_task boot1
        check "outbox/boot1.response" wait_for 30 test -e /srv/con/agents/concierge/outbox/boot1.response
        check_output "... is the pong" "pong" cat /srv/con/agents/concierge/outbox/boot1.response
        check "the concierge ran as con-agent@concierge" systemctl is-active con-agent@concierge.service

        section "Submit over the bus activates the agent through systemd"
        check "systemctl stop con-agent@concierge" systemctl stop con-agent@concierge.service
        check_fail "... it is inactive" systemctl is-active con-agent@concierge.service
        check_output "busctl call ... Submit s /ping" '^s "' busctl --system call $A Submit s /ping
        check "con-agent@concierge is active again" wait_for 10 systemctl is-active con-agent@concierge.service
        # The unit's main process (not `systemctl status`: its process list, read from the cgroup
        # while the keeper creates its delegated subtree, once failed with EIO).
        check_output "its main process is con-agentd --agent concierge" "con-agentd --agent concierge" bash -c \
                'tr "\0" " " </proc/$(systemctl show -P MainPID con-agent@concierge.service)/cmdline'
        check_output "con-send /ping" "pong" con-send /ping
        # The keeper writes its own task events into the audit log (its unit must let it).
        check "the agent audited the task itself" wait_for 5 bash -c \
                "jq -e -c 'select(.service == \"concierge\" and .event == \"task.completed\")' /srv/con/logs/audit/audit.jsonl"
        check_fail "... and never failed to" bash -c \
                "journalctl -b --no-pager -u con-agent@concierge.service | grep 'audit log'"

        section "con agent add under systemd: con-provisiond activated as its hardened unit"
        check_output "con agent add sysprobe" "agent sysprobe commissioned" con agent add sysprobe --tier worker
        check "con-provisiond.service was activated (SystemdService=)" systemctl is-active con-provisiond.service
        check "a-sysprobe exists" id a-sysprobe
        check "its drop-in is there" test -f /etc/con/con.yaml.d/sysprobe.yaml
        check_output "it answers on the bus (activated through systemd)" '^s "' busctl --system call \
                org.conspiracy.Sysprobe /org/conspiracy/Agent org.conspiracy.Agent1 Submit s /ping
        check "con policy check is clean" con policy check
        check_output "con agent remove sysprobe" "agent sysprobe decommissioned" con agent remove sysprobe
        check_fail "a-sysprobe is gone" id a-sysprobe
        check_fail "... and its unit is not running" systemctl is-active con-agent@sysprobe.service

        section "the journal: priorities and MESSAGE_IDs (docs/LOGGING.md)"
        # task.accepted and task.completed, with the ids as fields and no task text.
        check_output "journalctl MESSAGE_ID=task.accepted finds the agent's event" "CON_AGENT=concierge" \
                journalctl -b -o verbose --no-pager MESSAGE_ID=c8bf5142e01eeb06ca4168f307d7d34d
        check_output "journalctl MESSAGE_ID=task.completed, status done" "CON_STATUS=done" \
                journalctl -b -o verbose --no-pager MESSAGE_ID=b2be746bd3ab4ae343744ff2177cfb7a
        check_fail "... no task text in the events' fields" bash -c "journalctl -b -o verbose --no-pager \
                MESSAGE_ID=c8bf5142e01eeb06ca4168f307d7d34d | grep -E '^ +CON_[A-Z_]+=.*ping'"
        check_output "the ready line is at priority info (6), not error" "^6$" bash -c \
                "journalctl -b -o json --no-pager -u con-routerd.service | jq -r 'select(.MESSAGE | test(\"^Ready\")) | .PRIORITY' | tail -n1"
        check_fail "... and without a timestamp or name prefix of our own" bash -c \
                "journalctl -b -o cat --no-pager -u con-routerd.service | grep -E '^(<[0-9]>|[0-9]{4}-|con-routerd: )'"

        section "systemd restarts a killed router"
        old=$(systemctl show -P MainPID con-routerd.service)
        check "the router has a main pid" test "${old:-0}" -gt 1
        check "kill -9 con-routerd" kill -9 "$old"
        check "systemd restarted it (new main pid)" wait_for 15 bash -c \
                "p=\$(systemctl show -P MainPID con-routerd.service); [ \"\$p\" -gt 1 ] && [ \"\$p\" != $old ] && systemctl is-active -q con-routerd.service"
        check_output "NRestarts counts it" "^[1-9]" systemctl show -P NRestarts con-routerd.service
        check "a task after the restart is answered" drop_task afterkill
        check "outbox/afterkill.response" wait_for 30 test -e /srv/con/agents/concierge/outbox/afterkill.response

        section "a cron agent gets a timer, enabled and started by bootstrap"
        # The profile's commented-out scheduled agent, every minute, with /ping as its task.
        cfg=$(lib_tmp)/cron.yaml
        sed -e 's/^  # - name: strategist/  - name: strategist/' -e 's/^  #   \(tier\|mode\|cron\|cron_task\):/    \1:/' \
                -e 's/^\(    cron:\).*/\1 "* * * * *"/' -e 's|^\(    cron_task:\).*|\1 /ping|' /etc/con/con.yaml >"$cfg"
        check_output "the test config has the cron agent" 'cron: "\* \* \* \* \*"' cat "$cfg"
        check "con bootstrap --config (with a cron agent) --force" con bootstrap --config "$cfg" --force
        check "con-cron-strategist.timer is enabled" systemctl is-enabled con-cron-strategist.timer
        check "con-cron-strategist.timer is active" systemctl is-active con-cron-strategist.timer
        check_units_verify "the generated units verify without a word" con-cron-strategist.timer con-cron-strategist.service
        # The schedule is every minute: its next elapse is less than a minute away.
        check "the timer's next run is within a minute" bash -c \
                'n=$(date -d "$(systemctl show -P NextElapseUSecRealtime con-cron-strategist.timer)" +%s) &&
                 d=$((n - $(date +%s))) && echo "next run in $d s" && [ "$d" -ge 0 ] && [ "$d" -le 60 ]'
        # Rather than wait for that minute, move the timer forward: the same timer, a runtime
        # drop-in (gone at the reboot) that also fires it one second after it starts.
        mkdir -p /run/systemd/system/con-cron-strategist.timer.d
        printf '[Timer]\nOnActiveSec=1s\n' >/run/systemd/system/con-cron-strategist.timer.d/soon.conf
        check "daemon-reload and restart the timer" bash -c \
                'systemctl daemon-reload && systemctl restart con-cron-strategist.timer'
        check "the timer fires and the scheduled /ping is answered" wait_for 30 bash -c \
                'ls /srv/con/agents/strategist/outbox/*.response'
        check_output "... by the timer's service" "^[1-9]" bash -c \
                'systemctl show -P ExecMainExitTimestampMonotonic con-cron-strategist.service'
        check_fail "the timer's run did not fail" systemctl is-failed -q con-cron-strategist.service

        section "every shipped and generated unit verifies and is in the OK band of systemd-analyze security"
        # Every unit the build installs and every unit con bootstrap generated, found by name so a
        # new unit is covered without editing this list; a template is checked as an instance.
        units=$(cd /usr/lib/systemd/system && ls -d con-* conspiracyos.* | sed 's/@\.service$/@concierge.service/')
        units="$units $(cd /etc/systemd/system && ls -d con-cron-*.service con-cron-*.timer)"
        for u in con-agent@concierge.service con-contractd.service con-modeld.service con-routerd.service \
                 conspiracyos.target con-cron-strategist.service con-cron-strategist.timer; do
                check "$u is among them" grep -qxF "$u" <(printf '%s\n' $units)
        done
        for u in $units; do
                check_units_verify "systemd-analyze verify $u is silent" "$u"
                # Exposure is a property of what a service runs; targets and timers run nothing.
                [[ "$u" == *.service ]] || continue
                check_unit_exposure_ok "$u" --offline=yes
        done

        section "the actions that write policy work in con-contractd's sandbox: quarantine, release"
        # The same code as a contract's quarantine action: it writes the bus policy, the polkit
        # rules and moves the activation file, each in a folder the unit must leave writable.
        S="org.conspiracy.Sysadmin /org/conspiracy/Agent org.conspiracy.Agent1"
        check "con quarantine sysadmin" con quarantine sysadmin --reason "systemd tier"
        check "the marker" test -e /srv/con/state/quarantine/sysadmin
        check "the activation file was moved aside" test -e /srv/con/state/quarantine/sysadmin.service
        check_fail "... out of the bus's service folder" test -e /usr/local/share/dbus-1/system-services/org.conspiracy.Sysadmin.service
        check "the quarantine bus policy" test -s /etc/dbus-1/system.d/org.conspiracy.quarantine.conf
        check "the quarantine polkit rules" test -s /etc/polkit-1/rules.d/40-conspiracy-quarantine.rules
        check_fail "the sysadmin takes no task" busctl --system call $S Submit s /ping
        check "con release sysadmin" con release sysadmin
        check "the activation file is back" test -e /usr/local/share/dbus-1/system-services/org.conspiracy.Sysadmin.service
        check_fail "the quarantine polkit rules are gone" test -e /etc/polkit-1/rules.d/40-conspiracy-quarantine.rules
        check_output "the sysadmin takes tasks again" '^s "' busctl --system call $S Submit s /ping

        section "a contract violation and its action: halt_agents"
        rm -f /run/con-boot-flag
        cat >/srv/con/contracts/T-BOOT.yaml.tmp <<'YAML'
id: T-BOOT
type: detective
frequency: 1s
checks:
  - name: flag_present
    path: {path: /run/con-boot-flag}
    on_fail: {action: halt_agents, message: "halted by the systemd tier"}
YAML
        check "a contract that fails at once (no /run/con-boot-flag)" \
                mv /srv/con/contracts/T-BOOT.yaml.tmp /srv/con/contracts/T-BOOT.yaml
        check "the halt marker is written" wait_for 15 test -e /srv/con/state/halt
        check_output "... with the contract's id" "T-BOOT" cat /srv/con/state/halt/reason
        check_output "con contracts: halted all" "halted: all" con contracts
        check_output "the Halted property" '^s "all"' busctl --system get-property org.conspiracy.Contracts \
                /org/conspiracy/Contracts org.conspiracy.Contracts1 Halted
        check_output "the audit trail has the action" '"action.halt_agents"' \
                grep -h '"action.halt_agents"' /srv/con/logs/audit/audit.jsonl
        check_output "journalctl MESSAGE_ID=violation.raised names the contract" "CON_CONTRACT=T-BOOT" \
                journalctl -b -o verbose --no-pager MESSAGE_ID=2e6f37c75a8f55761f59292c246710d6
        check_output "journalctl MESSAGE_ID=action.taken names the action" "CON_ACTION=halt_agents" \
                journalctl -b -o verbose --no-pager MESSAGE_ID=ffe10889b74f0cb3e2c1e79a86673f2c
        check_fail "the concierge refuses work" busctl --system call $A Submit s /ping
        check_output "... because it is halted" "is halted" printf '%s' "$LIB_OUT"
        check "con-contractd is still active (its sandbox allowed the action)" systemctl is-active con-contractd.service
        # The halt outlives its cause: the contract goes, the marker stays for the reboot.
        check "remove the test contract" rm /srv/con/contracts/T-BOOT.yaml
        finish
fi

section "after a reboot, with no command run"
for u in $fabric_units; do
        check "$u is active" wait_for 20 systemctl is-active "$u"
done
check "the outbox of the first boot is still there" test -e /srv/con/agents/concierge/outbox/boot1.response

section "the contract's halt is still in force after the reboot"
check_output "con contracts: halted all" "halted: all" con contracts
check_fail "the concierge, activated again, refuses work" busctl --system call $A Submit s /ping
check_output "... because it is halted" "is halted" printf '%s' "$LIB_OUT"
check "con-agent@concierge was started for it" systemctl is-active con-agent@concierge.service
check_fail "con-send /ping is refused" con-send /ping
check "con resume" con resume
check_fail "the halt marker is gone" test -e /srv/con/state/halt
check_output "con contracts: not halted" "halted: no" con contracts

section "after con resume the fabric works"
check "drop /ping into /srv/con/inbox" drop_task boot2
check "outbox/boot2.response" wait_for 30 test -e /srv/con/agents/concierge/outbox/boot2.response
check_output "con-send /ping" "pong" con-send /ping
check "the cron agent's timer is active again" systemctl is-active con-cron-strategist.timer

section "the tool loop under the hardened unit: the exec tool runs as the agent, without network"
# The concierge on the scripted fake model (loopback, reached by con-modeld): its first answer
# asks for an exec tool call, whose output goes back in the next request, which the fake logs.
T=$(lib_tmp)
tool_cmd='id -un; echo TOOL-$((40+2)); test -e /proc/1/comm && echo SEES-PID1 || echo PID1-HIDDEN;
bash -c "echo >/dev/tcp/127.0.0.1/9" 2>&1 | sed "s/^.*socket: /NET: /"'
# A session that leaves a daemon of its own session id and process group behind, then sleeps.
daemon_cmd='setsid sh -c "sleep 300" </dev/null >/dev/null 2>&1 & sleep 120; echo WOKE'
jq -n --arg cmd "$tool_cmd" --arg daemon "$daemon_cmd" '{ rules: [
  { path: "/v1/chat/completions", match: "TOOL-42",
    body: { choices: [ { message: { content: "TOOLS-DONE" }, finish_reason: "stop" } ] } },
  { path: "/v1/chat/completions", match: "tools-under-systemd",
    body: { choices: [ { message: { content: null, tool_calls: [ { id: "call_s", type: "function",
      function: { name: "exec", arguments: ({ command: $cmd } | tojson) } } ] }, finish_reason: "tool_calls" } ] } },
  { path: "/v1/chat/completions", match: "spawn-a-daemon",
    body: { choices: [ { message: { content: null, tool_calls: [ { id: "call_d", type: "function",
      function: { name: "exec", arguments: ({ command: $daemon } | tojson) } } ] }, finish_reason: "tool_calls" } ] } },
  { path: "/v1/chat/completions",
    body: { choices: [ { message: { content: "fallback answer" }, finish_reason: "stop" } ] } }
] }' >"$T/script.json"
FAKE=$CON_BUILD_DIR/tests/fake-llm/con-fake-llm
start_fake_llm 120
check "point the fabric at it" sed -i "s|^  api_key_env: CON_API_KEY.*|&\n  base_url: http://127.0.0.1:$PORT/v1|" /etc/con/con.yaml
check_output "... in /etc/con/con.yaml" "base_url: http://127.0.0.1:$PORT/v1" cat /etc/con/con.yaml
printf 'CON_API_KEY=sk-systemd-tier\n' >/etc/con/env
check "restart the gateway and the concierge on the new config" \
        systemctl restart con-modeld.service con-agent@concierge.service
check_output "con-send: the model called the exec tool and answered" "TOOLS-DONE" \
        con-send --timeout 60 tools-under-systemd
# The tool's output alone: the last message of the request that answered it (the command text
# is in the request too, in the model's tool call, so the whole log proves nothing).
check "the tool's output went back to the model" bash -c \
        "jq -r 'select(.body.messages[-1].role == \"tool\") | .body.messages[-1].content' '$T/fake.log' >'$T/tool.out' && grep -q '^TOOL-42\$' '$T/tool.out'"
check_output "... it ran as a-concierge" "^a-concierge$" cat "$T/tool.out"
check_output "... seeing only its own processes (ProtectProc=invisible)" "^PID1-HIDDEN$" cat "$T/tool.out"
# Not a refused connection: no IP socket at all.
check_output "... with no network (RestrictAddressFamilies=AF_UNIX)" "^NET: Address family not supported" cat "$T/tool.out"

section "a contract's kill_session kills a whole session in the unit's delegated cgroup"
X=$(busctl --system call $A Submit s spawn-a-daemon | cut -d'"' -f2)
check "a task whose tool leaves a daemon (${X:-no id})" test -n "$X"
check "the daemon runs as a-concierge" wait_for 30 pgrep -u a-concierge -f "sleep 300"
check "... and the tool's sleep" wait_for 30 pgrep -u a-concierge -f "sleep 120"
DAEMON=$(pgrep -u a-concierge -f "sleep 300" | head -n1)
check_output "the daemon is in the session's cgroup below the unit's" \
        "/con-agent@concierge.service/con-concierge/session-$X-" cat "/proc/$DAEMON/cgroup"
rm -f /run/con-boot-kill
cat >/srv/con/contracts/T-KILL.yaml.tmp <<'YAML'
id: T-KILL
type: detective
frequency: 1s
scope: agent:concierge
checks:
  - name: flag_present
    path: {path: /run/con-boot-kill}
    on_fail: {action: kill_session, message: "sessions killed by the systemd tier"}
YAML
check "a contract that fails at once, with kill_session" \
        mv /srv/con/contracts/T-KILL.yaml.tmp /srv/con/contracts/T-KILL.yaml
check "the task failed" wait_for 20 bash -c "busctl --system call $A GetResult s $X | grep -q failed"
check "no process of a-concierge survives, the daemon included" wait_for 10 bash -c '! pgrep -u a-concierge'
check_output "the audit trail has the action" '"action.kill_session"' \
        grep -h '"action.kill_session"' /srv/con/logs/audit/audit.jsonl
check "the agent's service survived" systemctl is-active con-agent@concierge.service
check "remove the test contract" rm /srv/con/contracts/T-KILL.yaml
check_output "the next task is answered" "pong" con-send /ping
kill "$FAKE_PID" 2>/dev/null
wait "$FAKE_PID" 2>/dev/null

section "con down stops everything it started"
check "con down" con down
for u in $fabric_units con-agent@concierge.service con-cron-strategist.timer; do
        check_fail "$u is inactive" systemctl is-active "$u"
done
check_fail "no con-modeld process is left" pgrep -x con-modeld
finish
