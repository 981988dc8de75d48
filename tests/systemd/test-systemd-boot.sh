#!/bin/bash
# ConspiracyOS under systemd as PID 1, the way it is deployed: con bootstrap enables and starts
# the fabric (conspiracyos.target), a dropped task is answered, a Submit over the bus activates
# an agent through con-agent@.service, systemd restarts a killed router, and after a reboot the
# fabric is up again without any command.
# Runs inside tests/systemd/con-boot --boots 2 (CON_BOOT is 1, then 2).
. "$(dirname "$0")/../integration/lib.sh"
require_root
if [ "${CON_BOOT:-}" = "" ] || [ "$(cat /proc/1/comm)" != systemd ]; then
        echo "# must run inside tests/systemd/con-boot (systemd as PID 1); skipping"
        LIB_FINISHED=1
        exit 77
fi

wait_for() { # wait_for SECONDS CMD...: until CMD succeeds
        local n=$(($1 * 10))
        shift
        for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
        return 1
}
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
        # systemd-analyze verify only warns (exit 0) on unknown keys: any output is a failure.
        check_output "the units verify without a word" "^verify-clean$" bash -c \
                "out=\$(systemd-analyze verify $fabric_units con-agent@concierge.service 2>&1) && [ -z \"\$out\" ] && echo verify-clean || { echo \"\$out\"; exit 1; }"

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
        check_output "systemctl status names con-agentd" "con-agentd --agent concierge" \
                systemctl status --no-pager con-agent@concierge.service
        check_output "con-send /ping" "pong" con-send /ping

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
        check_output "the generated units verify without a word" "^verify-clean$" bash -c \
                "out=\$(systemd-analyze verify con-cron-strategist.timer con-cron-strategist.service 2>&1) && [ -z \"\$out\" ] && echo verify-clean || { echo \"\$out\"; exit 1; }"
        check "the timer fires within a minute and the scheduled /ping is answered" wait_for 75 bash -c \
                'ls /srv/con/agents/strategist/outbox/*.response'
        check_fail "the timer's run did not fail" systemctl is-failed -q con-cron-strategist.service
        finish
fi

section "after a reboot, with no command run"
for u in $fabric_units; do
        check "$u is active" wait_for 20 systemctl is-active "$u"
done
check "the outbox of the first boot is still there" test -e /srv/con/agents/concierge/outbox/boot1.response
check "drop /ping into /srv/con/inbox" drop_task boot2
check "outbox/boot2.response" wait_for 30 test -e /srv/con/agents/concierge/outbox/boot2.response
check_output "con-send /ping" "pong" con-send /ping
check "the cron agent's timer is active again" systemctl is-active con-cron-strategist.timer

section "con down stops everything it started"
check "con down" con down
for u in $fabric_units con-agent@concierge.service con-cron-strategist.timer; do
        check_fail "$u is inactive" systemctl is-active "$u"
done
check_fail "no con-modeld process is left" pgrep -x con-modeld
finish
