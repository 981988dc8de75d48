#!/bin/bash
# Live reconfiguration and the agent UID block (issue 16): con bootstrap --config FILE without a
# profile installs the default health contracts and puts agent users in 60000..60999; with the
# fabric up, an agent added to the config is served at once (its inbox watched, no restart), one
# removed is forgotten; a broken con.yaml is refused on Reload/SIGHUP by the router, the contract
# service and the gateway, which keep the configuration they had, and con status shows why.
# Runs as root inside tests/sandbox/con-sandbox (fresh system bus, project installed in /usr).
. "$(dirname "$0")/lib.sh"
require_sandbox
T=$(lib_tmp)
inbox_empty() { [ -z "$(find "$1" -maxdepth 1 -name '*.task' -print -quit)" ]; }
router_reload() { busctl --system call org.conspiracy.Router /org/conspiracy/Router org.conspiracy.Router1 Reload; }

write_config() { # write_config AGENT...: concierge plus the agents named
        {
                # The default contracts run for real: a loaded test machine must not halt the agents.
                printf 'system:\n  name: reconfig\n'
                printf 'contracts:\n  system:\n    max_load_factor: 1000\n    disk_min_free_pct: 0\n    mem_min_free_pct: 0\n'
                printf 'agents:\n  - name: concierge\n    mode: on-demand\n'
                for a in "$@"; do printf '  - name: %s\n    mode: on-demand\n' "$a"; done
        } >"$T/con.yaml"
}

section "con bootstrap --config FILE without a profile"
write_config sysadmin
check "bootstrap --config" con bootstrap --config "$T/con.yaml"
check "the default profile's health contracts are installed in /srv/con/contracts" \
        test -f /srv/con/contracts/CON-SYS-001.yaml
check "... and in /etc/con/contracts, so later runs keep them" test -f /etc/con/contracts/CON-SYS-001.yaml
check_eq "... all of them" "$(ls /usr/share/conspiracyos/profiles/default/contracts | sort)" \
        "$(ls /srv/con/contracts | grep -v '^scripts$' | sort)"
uid_c=$(id -u a-concierge)
check "agent users come from the agent block (60000..60999)" test "$uid_c" -ge 60000 -a "$uid_c" -le 60999

section "fabric up"
check "con up" con up
check "the router runs" wait_for 10 busctl --system status org.conspiracy.Router
check "the contract service runs" wait_for 10 busctl --system status org.conspiracy.Contracts
check "the gateway starts (bus activation)" busctl --system get-property org.conspiracy.Models \
        /org/conspiracy/Models org.conspiracy.Models1 Pending
ROUTER_PID=$(busctl --system status org.conspiracy.Router | sed -n 's/^PID=//p')
check "con healthcheck runs the default contracts" bash -c 'con healthcheck | grep -q CON-SYS-001'

section "an agent added to con.yaml is served without a restart"
write_config sysadmin helper
check_output "con bootstrap reloads the running router" "reload con-routerd" \
        con bootstrap --config "$T/con.yaml" --force
check "a-helper exists" id a-helper
echo /ping >/srv/con/agents/helper/inbox/first.task
check "a .task in the new agent's inbox is routed within 3 s" wait_for 3 inbox_empty /srv/con/agents/helper/inbox
check "... and answered" wait_for 20 bash -c 'ls /srv/con/agents/helper/outbox/*.response'
check_eq "the router was not restarted" "$ROUTER_PID" \
        "$(busctl --system status org.conspiracy.Router | sed -n 's/^PID=//p')"

section "an agent removed from con.yaml is forgotten"
write_config sysadmin
check "bootstrap without helper" con bootstrap --config "$T/con.yaml" --force
echo /ping >/srv/con/agents/helper/inbox/after.task
sleep 3
check "a file in the removed agent's inbox stays there" test -f /srv/con/agents/helper/inbox/after.task
rm -f /srv/con/agents/helper/inbox/after.task
check "... and it comes back when re-added (SIGHUP)" bash -c "
        printf '  - name: helper\n    mode: on-demand\n' >>/etc/con/con.yaml && kill -HUP $ROUTER_PID"
echo /ping >/srv/con/agents/helper/inbox/again.task
check "... routed again" wait_for 3 inbox_empty /srv/con/agents/helper/inbox

section "a broken con.yaml is refused and the running configuration kept"
cp /etc/con/con.yaml "$T/good.yaml"
printf 'system:\n  nmae: broken\nagents:\n  - name: concierge\n' >/etc/con/con.yaml
check_fail_output "Reload of the router fails with the reason" "system.nmae: unknown key" router_reload
check_fail_output "Reload of the contract service fails" "system.nmae" busctl --system call \
        org.conspiracy.Contracts /org/conspiracy/Contracts org.conspiracy.Contracts1 Reload
check_fail_output "Reload of the gateway fails" "system.nmae" busctl --system call \
        org.conspiracy.Models /org/conspiracy/Models org.conspiracy.Models1 Reload
check_status "con status: exit 4 (invalid configuration)" 4 con status
status() { con status "$@"; true; }
check_output "con status shows the file's error" "does not load: .*system.nmae: unknown key" status
check_output "con status shows the router kept its configuration" "con-routerd refused its last reload.*system.nmae" \
        status
check_output "... the contract service too" "con-contractd refused its last reload" status
check_output "... and the gateway" "con-modeld refused its last reload" status
check_output "con status --json lists them" '"source":"con-routerd"' status --json
echo /ping >/srv/con/agents/helper/inbox/kept.task
check "the router still routes to helper (the old configuration)" wait_for 3 inbox_empty /srv/con/agents/helper/inbox
check_fail "a non-root caller may not reload the router" as_user nobody busctl --system call \
        org.conspiracy.Router /org/conspiracy/Router org.conspiracy.Router1 Reload

section "a fixed con.yaml clears the error"
cp "$T/good.yaml" /etc/con/con.yaml
check "Reload succeeds" router_reload
check "SIGHUP of the gateway reloads it" bash -c 'kill -HUP "$(busctl --system status org.conspiracy.Models | sed -n "s/^PID=//p")"'
check "Reload of the contract service succeeds" busctl --system call \
        org.conspiracy.Contracts /org/conspiracy/Contracts org.conspiracy.Contracts1 Reload
check "con status: no error left" wait_for 5 bash -c '! con status | grep -q "refused its last reload"'
check "con status exits 0" con status

section "a failed bootstrap is rolled back"
cp /etc/con/con.yaml "$T/before.yaml"
getent passwd | sort >"$T/passwd.before"
getent group | sort >"$T/group.before"
write_config sysadmin helper late1 late2
# CON_TEST_BOOTSTRAP_FAIL_AT=N: a failure injected before the Nth change (tests only)
check_fail_output "a failure injected after the users were created: exit 1, rolled back" \
        "/srv/con/agents/late.*failure injected.*rolled back" \
        env CON_TEST_BOOTSTRAP_FAIL_AT=12 con bootstrap --config "$T/con.yaml" --force
check_fail "no user a-late1 is left" id a-late1
check_fail "no user a-late2 is left" id a-late2
check_eq "the users are as before" "$(cat "$T/passwd.before")" "$(getent passwd | sort)"
check_eq "the groups are as before" "$(cat "$T/group.before")" "$(getent group | sort)"
check "no folder of the new agents is left" test ! -e /srv/con/agents/late1 -a ! -e /srv/con/agents/late2
check_same_file "/etc/con/con.yaml is the one before" "$T/before.yaml" /etc/con/con.yaml
check "then the same bootstrap without the failure works" con bootstrap --config "$T/con.yaml" --force
check "a-late2 exists now" id a-late2

check "con down" con down
check "the services logged to /srv/con/logs/daemons" test -s /srv/con/logs/daemons/con-routerd.log
check_fail "no sanitizer report in the services' logs (reloads included)" \
        grep -rqE "AddressSanitizer|LeakSanitizer|runtime error" /srv/con/logs/daemons
finish
