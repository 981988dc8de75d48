#!/bin/bash
# The daemons' logs without systemd (docs/LOGGING.md): `con up` starts the system bus, the router
# and the contract service with a clean environment and a log file each; dbus-daemon's activation
# starts the agents and the model gateway with --log-file. Every line of every file is
# timestamped, the files are root's (the gateway's is con-models'), an exported CON_API_KEY
# reaches no daemon's environment, and the installed logrotate file rotates them (copytruncate:
# the daemons go on writing into the same path). Also the common options of the skeleton.
# Runs as root inside tests/sandbox/con-sandbox.
. "$(dirname "$0")/lib.sh"
require_sandbox
T=$(lib_tmp)
L=/srv/con/logs/daemons
ML=/srv/con/logs/models/con-modeld.log
LIBEXEC=/usr/libexec/conspiracyos
# 2026-12-06T07:44:24.123456Z con-routerd[42] info: ...
TS='^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z con-[a-z]+\[[0-9]+\] (emerg|alert|crit|err|warning|notice|info|debug): '

bus_alive() { busctl --system status >/dev/null 2>&1; }
# all_lines_stamped FILE: non-empty, and every line carries the timestamp prefix.
all_lines_stamped() {
        [ -s "$1" ] || { echo "$1 is empty or missing"; return 1; }
        if grep -vEq "$TS" "$1"; then
                echo "lines without a timestamp in $1:"
                grep -vE "$TS" "$1" | head -5
                return 1
        fi
}
# no_key_in PID...: none of the processes has CON_API_KEY (or its value) in its environment.
no_key_in() {
        local p bad=0
        for p in "$@"; do
                if tr '\0' '\n' <"/proc/$p/environ" | grep -qE "^CON_API_KEY=|$SECRET"; then
                        echo "pid $p ($(cat /proc/$p/comm)) has the key in its environment"
                        bad=1
                fi
        done
        return $bad
}

section "the skeleton's common options"
for d in con-routerd con-contractd con-modeld con-agentd; do
        check_output "$d --version" "^$d [0-9]" $LIBEXEC/$d --version
        check_output "$d --help lists --log-level" "--log-level LEVEL" $LIBEXEC/$d --help
        check_status "$d --log-level=bogus is a usage error (2)" 2 $LIBEXEC/$d --log-level=bogus
        check_status "$d with an unknown option: 2" 2 $LIBEXEC/$d --no-such-option
done
check_output "con-routerd --bus-introspect" "org.conspiracy.Router1" $LIBEXEC/con-routerd --bus-introspect
check_output "con-contractd --bus-introspect" "org.conspiracy.Contracts1" $LIBEXEC/con-contractd --bus-introspect
check_output "con-agentd --bus-introspect" "org.conspiracy.Agent1" $LIBEXEC/con-agentd --bus-introspect
check_output "con-modeld --bus-introspect" "org.conspiracy.Models1" $LIBEXEC/con-modeld --bus-introspect
check_status "con-routerd with an unexpected argument: 2" 2 $LIBEXEC/con-routerd extra

section "con up without systemd, with a key in the admin's environment"
check "con bootstrap --profile default" con bootstrap --profile default
stat_is "the daemons' log folder is root's alone" $L "root:root 700"
# con up starts the system bus too when it is down: stop the sandbox's.
kill "$(cat /run/con-sandbox-dbus.pid)"
check "the sandbox's bus is down" wait_for 10 bash -c '! busctl --system status'
SECRET="sk-logtest-$RANDOM$RANDOM"
export CON_API_KEY=$SECRET
check_output "con up starts the bus" "bus: started" con up
unset CON_API_KEY
check "the bus answers" wait_for 10 bus_alive
check "the model gateway is activated (as con-models, with --log-file)" busctl --system call org.freedesktop.DBus \
        /org/freedesktop/DBus org.freedesktop.DBus StartServiceByName su org.conspiracy.Models 0
check "con-send /ping is answered (the concierge runs)" con-send /ping

section "one timestamped log file per daemon"
for f in $L/con-routerd.log $L/con-contractd.log $L/con-agent@concierge.log $ML; do
        check "$f: every line timestamped" all_lines_stamped "$f"
done
check_output "the router's file says it is ready" "con-routerd\[[0-9]+\] info: Ready: Routing" cat $L/con-routerd.log
check_output "the agent's file says it is ready" "con-agentd\[[0-9]+\] info: Ready" cat "$L/con-agent@concierge.log"
check_output "the gateway's file says it is ready" "con-modeld\[[0-9]+\] info: Ready" cat $ML
stat_is "the router's log is root's" $L/con-routerd.log "root:root 640"
stat_is "the gateway's log is con-models'" $ML "con-models:con-models 640"
check_fail "an agent's user cannot read the daemons' logs" as_user a-concierge cat $L/con-routerd.log
check_fail "... nor list them" as_user a-concierge ls $L
check_fail "... nor read the gateway's" as_user a-concierge cat $ML
check_fail "no debug lines at the default level" grep -h " debug: " $L/*.log $ML

section "no CON_API_KEY in any daemon's environment"
pids=$(pgrep -x 'con-routerd|con-contractd|con-agentd|con-modeld|dbus-daemon' | tr '\n' ' ')
check_output "the daemons run (router, contracts, agent, gateway, bus)" "[0-9]+ [0-9]+ [0-9]+ [0-9]+ [0-9]+" echo "$pids"
for n in con-routerd con-contractd con-agentd con-modeld dbus-daemon; do
        check "$n is running" pgrep -x $n
done
# shellcheck disable=SC2086
check "none of them has the key" no_key_in $pids
CON_API_KEY=$SECRET sleep 60 &
control=$!
# Until the fork has exec'd sleep, /proc/PID/environ is still the shell's (no key in it).
wait_for 5 bash -c "test \"\$(cat /proc/$control/comm)\" = sleep"
check_fail "(control: the check finds a key where there is one)" no_key_in $control
kill $control
R=$(pgrep -x con-routerd)
check_output "the router's environment is PATH (and LANG) only" '^PATH=' bash -c "tr '\\0' '\\n' </proc/$R/environ"
check_eq "... nothing else" "" "$(tr '\0' '\n' </proc/$R/environ | grep -vE '^(PATH|LANG|CON_LOG_LEVEL)=')"

section "logrotate"
check "the logrotate file is installed" test -f /etc/logrotate.d/conspiracyos
check_output "logrotate -d accepts it and sees the daemons' logs" "con-routerd.log" \
        logrotate -d -s "$T/state" /etc/logrotate.d/conspiracyos
check_fail "... without errors" bash -c "logrotate -d -s '$T/state' /etc/logrotate.d/conspiracyos 2>&1 | grep -i '^error'"
before=$(stat -c %s $L/con-routerd.log)
check "logrotate -f rotates them" logrotate -f -s "$T/state" /etc/logrotate.d/conspiracyos
check_output "the router's old lines are in the rotated file" "Ready: Routing" bash -c "cat $L/con-routerd.log-*"
check_eq "the live file was truncated" 0 "$(stat -c %s $L/con-routerd.log)"
check "the gateway's log was rotated too" bash -c "ls $ML-*"
stat_is "... the live file still con-models'" $ML "con-models:con-models 640"
check_output "... and the copy too" "^con-models:con-models 640$" bash -c "stat -c '%U:%G %a' $ML-*"
# The router goes on writing into the truncated file (O_APPEND: from its start, no hole).
mkfifo /srv/con/inbox/after-rotation.task
check "a bad drop is logged after the rotation" wait_for 20 grep -q "Rejected" $L/con-routerd.log
check "... timestamped, in a file without a hole" all_lines_stamped $L/con-routerd.log
check "the size before the rotation was not zero" test "$before" -gt 0

section "con down"
check "con down" con down
check "the router logged nothing unexpected" all_lines_stamped $L/con-routerd.log
if grep -rqE "AddressSanitizer|LeakSanitizer|runtime error" /srv/con/logs 2>/dev/null; then
        check "no sanitizer report in the logs" false
fi
finish
