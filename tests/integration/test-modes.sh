#!/bin/bash
# Agent modes without systemd as PID 1: an on-demand agent is started by D-Bus activation
# (the launch helper, User=root; sessions run as a-NAME) and exits after idle_exit; an always agent started by
# `con up` stays up past its idle_exit; a cron agent gets its cron_task submitted by the
# router's own scheduler. Runs as root inside tests/sandbox/con-sandbox (fresh system bus,
# private /run, so sd_booted() is false; project installed in /usr).
. "$(dirname "$0")/lib.sh"
require_sandbox

proc_user() { # proc_user PID: the user owning the process
        stat -c %U "/proc/$1"
}
proc_gone() { # proc_gone PID: no such process (or only a zombie left)
        [ ! -e "/proc/$1" ] || grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}
agent_call() { # agent_call BUSNAME METHOD SIG ARGS...
        local bn=$1
        shift
        busctl --system call "$bn" /org/conspiracy/Agent org.conspiracy.Agent1 "$@"
}
ticker_done() { # a completed task of the ticker answered "pong"
        grep -lqx pong /srv/con/agents/ticker/outbox/*.response
}

section "configuration with the three modes"
mkdir -p /etc/con
cat >/etc/con/con.yaml <<'EOF'
system:
  name: modes-test
agents:
  - name: concierge
    tier: operator
  - name: sleeper
    mode: on-demand
    idle_exit: 2s
  - name: keeper
    mode: always
    idle_exit: 2s
  - name: ticker
    mode: cron
    cron: "* * * * *"
    cron_task: /ping
    idle_exit: 2s
EOF
check "con bootstrap with the modes config" con bootstrap
SVC=/usr/local/share/dbus-1/system-services
check "activation file of the on-demand agent" test -f $SVC/org.conspiracy.Sleeper.service
check_output "... names the bus name" '^Name=org\.conspiracy\.Sleeper$' cat $SVC/org.conspiracy.Sleeper.service
check_output "... runs con-agentd for the agent" '^Exec=/usr/libexec/conspiracyos/con-agentd --agent sleeper --log-file=/srv/con/logs/daemons/con-agent@sleeper\.log$' \
        cat $SVC/org.conspiracy.Sleeper.service
check_output "... as root, the agent's keeper (sessions run as a-sleeper)" '^User=root$' cat $SVC/org.conspiracy.Sleeper.service
check_output "... with its systemd unit" '^SystemdService=con-agent@sleeper\.service$' \
        cat $SVC/org.conspiracy.Sleeper.service
check_output "activation file of the cron agent" '^User=root$' cat $SVC/org.conspiracy.Ticker.service
check_output "activation file of the always agent" '^User=root$' cat $SVC/org.conspiracy.Keeper.service
check "the launch helper is installed setuid" test -u /usr/lib/dbus-1.0/dbus-daemon-launch-helper
check_fail "PID 1 is not systemd here (no /run/systemd/system)" test -d /run/systemd/system

section "con up (no systemd): router, and the always agent"
check "con up" con up
T_UP=$SECONDS
check "the router owns its name" bus_has_owner org.conspiracy.Router
check "the always agent owns its name after con up" bus_has_owner org.conspiracy.Keeper
KPID=$(bus_owner_pid org.conspiracy.Keeper)
check_output "the always agent's service runs as root (pid ${KPID:-none})" '^root$' proc_user "${KPID:-0}"
check "the on-demand agent is not started by con up" bus_no_owner org.conspiracy.Sleeper
check_output "con status: sleeper activatable" '^sleeper .*activatable' con status
check_output "con status --json" '"keeper"' con status --json

section "on-demand: D-Bus activation, idle exit, activation again"
check_output "Submit to the on-demand agent activates it" '^s "' agent_call org.conspiracy.Sleeper Submit s /ping
check "the on-demand agent owns its name" bus_has_owner org.conspiracy.Sleeper
SPID=$(bus_owner_pid org.conspiracy.Sleeper)
check_output "its service runs as root (pid ${SPID:-none})" '^root$' proc_user "${SPID:-0}"
check_output "its Mode is on-demand" '"on-demand"' busctl --system get-property org.conspiracy.Sleeper \
        /org/conspiracy/Agent org.conspiracy.Agent1 Mode
sleep 1
check "after 1 s (idle_exit 2s) it still owns its name" bus_has_owner org.conspiracy.Sleeper
check "it releases its name once idle for idle_exit" wait_for 10 bus_no_owner org.conspiracy.Sleeper
check "its process is gone" wait_for 10 proc_gone "${SPID:-0}"
check_output "con status: sleeper activatable again" '^sleeper .*activatable' con status
check_output "a new call activates it again" '^s "' agent_call org.conspiracy.Sleeper Submit s /ping
SPID2=$(bus_owner_pid org.conspiracy.Sleeper)
check "a new process (pid ${SPID2:-none})" test -n "$SPID2" -a "${SPID2:-0}" != "${SPID:-0}"
check_output "... as root" '^root$' proc_user "${SPID2:-0}"
check_output "both tasks are done" '"completed".*"completed"' agent_call org.conspiracy.Sleeper ListTasks
check "it exits again when idle" wait_for 10 bus_no_owner org.conspiracy.Sleeper

section "always: stays up past idle_exit"
check_output "its Mode is always" '"always"' busctl --system get-property org.conspiracy.Keeper \
        /org/conspiracy/Agent org.conspiracy.Agent1 Mode
check_output "it answers" '^s "' agent_call org.conspiracy.Keeper Submit s /ping
sleep 5
check "after 2x idle_exit it still owns its name" bus_has_owner org.conspiracy.Keeper
check_eq "... with the same process" "${KPID:-none}" "$(bus_owner_pid org.conspiracy.Keeper)"
check_output "con status: keeper running" '^keeper .*running' con status

section "cron: the router submits the cron_task each minute"
check "a scheduled /ping completed for the cron agent" wait_for $((75 - (SECONDS - T_UP))) ticker_done
check_output "ListTasks: a done task sent by root" '"[^"]*" "completed" "root"' agent_call org.conspiracy.Ticker ListTasks
check "the audit trail has task.scheduled for ticker" \
        bash -c 'grep "task.scheduled" /srv/con/logs/audit/audit.jsonl | grep -q "\"ticker\""'
check "the cron agent exits when idle" wait_for 10 bus_no_owner org.conspiracy.Ticker
check "the always agent is still up" bus_has_owner org.conspiracy.Keeper

check "con down" con down
check "the always agent is stopped" wait_for 15 bus_no_owner org.conspiracy.Keeper
finish
