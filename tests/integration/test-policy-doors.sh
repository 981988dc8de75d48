#!/bin/bash
# One access policy, three doors (docs/POLICY.md), inside tests/sandbox/con-sandbox: for every
# (principal, target agent) the decision of the config (`con policy query`), the inbox ACL as the
# kernel enforces it (runuser touch), polkit's answer (pkcheck on a process of that user) and the
# real bus outcome (busctl call to the D-Bus activated agent as that user: Submit for task, GetResult
# of root's task for read-result, Halt for halt) agree. Then each door is drifted by hand;
# `con policy check` names the drift and `con bootstrap` repairs it; for a workspace opened with
# chmod o+rx, contract CON-POL-001 reports the same drift (both run the one drift checker).
. "$(dirname "$0")/lib.sh"
require_root
if [ "${CON_SANDBOX:-}" != 1 ]; then
        echo "# must run inside tests/sandbox/con-sandbox (it edits /etc/passwd); skipping"
        LIB_FINISHED=1
        exit 77
fi

T=$(lib_tmp)
# The config is written straight to /etc/con/con.yaml, the file the D-Bus activated agents read
# (`con bootstrap --config FILE` would install FILE there too).
mkdir -p /etc/con
CFG=/etc/con/con.yaml
RULES=/etc/polkit-1/rules.d/50-conspiracy.rules
BUSCONF=/etc/dbus-1/system.d/org.conspiracy.conf
AGENTS="concierge sysadmin coder reviewer"

cat >"$CFG" <<'EOF'
system:
  name: poltest
  submitters_group: con
agents:
  - name: concierge
  - name: sysadmin
  - name: coder
  - name: reviewer
policy:
  defaults: true
  grants:
    - {who: coder, may: [task], to: [reviewer]}
    - {who: "user:carol", may: [task], to: [coder, sysadmin]}
    - {who: "group:qa", may: [task, read-result], to: [reviewer]}
    - {who: "user:carol", may: [halt], to: [coder]}
    - {who: "group:qa", may: [contracts-admin]}
# con bootstrap --config installs the default health contracts: a loaded test machine must not
# halt the agents.
contracts:
  system:
    max_load_factor: 1000
    disk_min_free_pct: 0
    mem_min_free_pct: 0
EOF

section "setup"
# Humans: alice is a submitter (group con), bob is not, carol has grants of her own, dave is in qa.
check "group con" groupadd --system con
check "group qa" groupadd qa
check "user alice (in con)" useradd --create-home --groups con alice
check "user bob (outside con)" useradd --create-home bob
check "user carol" useradd --create-home carol
check "user dave (in qa)" useradd --create-home --groups qa dave
check "bootstrap" con bootstrap --config "$CFG"
check_output "policy check passes after bootstrap" '^policy: all four doors match the config \([0-9]+ rules\)$' \
        con policy check --config "$CFG"
check_output "show lists the config grants with their line" 'user:carol +halt +coder +polkit +.*con.yaml:15' \
        con policy show --config "$CFG"
check_output "show --json is JSON with every rule" '"principal":[[:space:]]*"group:qa"' con policy show --json --config "$CFG"
check_status "check needs root" 3 as_user bob con policy check --config "$CFG"

# A process of the user, whose PID polkit can check (setpriv execs: $! is the user's process).
# Its output goes to /dev/null, or $(start_as ...) would wait for it to end.
start_as() {
        setpriv --reuid="$1" --regid="$(id -g "$1")" --init-groups -- sleep 300 </dev/null >/dev/null 2>&1 &
        echo $!
}
allow_or_deny() { if "$@" >/dev/null 2>&1; then echo allow; else echo deny; fi; }
camel() { echo "${1^}"; }
# bus_call USER AGENT METHOD SIG ARGS...: allow on success, deny on the agent's policy refusal
# naming the user; anything else (polkit unavailable, activation failed, ...) is printed and fails
# the comparison.
bus_call() {
        local user=$1 agent=$2 out
        shift 2
        if out=$(cd / && runuser -u "$user" -- busctl --system call "org.conspiracy.$(camel "$agent")" \
                /org/conspiracy/Agent org.conspiracy.Agent1 "$@" 2>&1); then
                echo allow
        elif grep -q "Access denied: user '$user' (uid [0-9]*) may not" <<<"$out"; then
                echo deny
        else
                echo "error: $out"
        fi
}

# The contract service's admin door: Reload changes no state, so it probes contracts-admin.
contracts_call() {
        local user=$1 out
        if out=$(cd / && runuser -u "$user" -- busctl --system call org.conspiracy.Contracts \
                /org/conspiracy/Contracts org.conspiracy.Contracts1 Reload 2>&1); then
                echo allow
        elif grep -q "Access denied: the polkit policy does not allow this caller to perform org.conspiracy.contracts.admin" <<<"$out"; then
                echo deny
        else
                echo "error: $out"
        fi
}

section "fabric up"
check "con up" con up
# One task of root's on every agent (activates it): GetResult of it is someone else's task for
# every principal below.
declare -A root_task
for t in $AGENTS; do
        check_output "root submits to $t (D-Bus activation)" '^s "' \
                busctl --system call "org.conspiracy.$(camel "$t")" /org/conspiracy/Agent org.conspiracy.Agent1 \
                Submit s /ping
        root_task[$t]=$(sed -n 's/^s "\(.*\)"$/\1/p' <<<"$LIB_OUT")
done

section "equivalence: config, file ACL, polkit, bus"
declare -A want=(
        [alice:concierge]=allow [alice:sysadmin]=deny
        [bob:concierge]=deny
        [carol:coder]=allow [carol:sysadmin]=allow [carol:concierge]=deny
        [dave:reviewer]=allow [dave:coder]=deny
        [a-concierge:reviewer]=allow [a-sysadmin:concierge]=allow [a-sysadmin:coder]=deny
        [a-coder:reviewer]=allow [a-reviewer:coder]=deny
)
pids=()
for who in alice bob carol dave a-concierge a-sysadmin a-coder a-reviewer; do
        pid=$(start_as "$who")
        pids+=("$pid")
        for t in $AGENTS; do
                [ "$who" = "a-$t" ] && continue # an agent's own inbox is its own
                cfg=$(allow_or_deny con policy query "$who" task "$t" --config "$CFG")
                file=$(allow_or_deny runuser -u "$who" -- touch "/srv/con/agents/$t/inbox/eq-$who.task")
                rm -f "/srv/con/agents/$t/inbox/eq-$who.task"
                pk=$(allow_or_deny pkcheck --action-id org.conspiracy.agent.task --process "$pid" --detail agent "$t")
                bus=$(bus_call "$who" "$t" Submit s /ping)
                check_eq "$who task $t: config, file ACL, polkit and bus agree ($cfg $file $pk $bus)" \
                        "$cfg $cfg $cfg" "$file $pk $bus"
                if [ -n "${want[$who:$t]:-}" ]; then
                        check_eq "$who task $t is ${want[$who:$t]}" "${want[$who:$t]}" "$cfg"
                fi
                # The other verbs have no file door: config, polkit and the bus agree.
                for verb in read-result halt; do
                        cfg=$(allow_or_deny con policy query "$who" $verb "$t" --config "$CFG")
                        pk=$(allow_or_deny pkcheck --action-id "org.conspiracy.agent.$verb" --process "$pid" \
                                --detail agent "$t")
                        if [ $verb = read-result ]; then
                                bus=$(bus_call "$who" "$t" GetResult s "${root_task[$t]}")
                        else
                                bus=$(bus_call "$who" "$t" Halt s "equivalence test")
                        fi
                        check_eq "$who $verb $t: config, polkit and bus agree ($cfg $pk $bus)" "$cfg $cfg" "$pk $bus"
                        if [ $verb = halt ] && [ "$bus" = allow ]; then
                                check_eq "$who resumes $t (halt grants resume)" allow "$(bus_call "$who" "$t" Resume)"
                        fi
                done
        done
        cfg=$(allow_or_deny con policy query "$who" contracts-admin concierge --config "$CFG")
        pk=$(allow_or_deny pkcheck --action-id org.conspiracy.contracts.admin --process "$pid")
        bus=$(contracts_call "$who")
        check_eq "$who contracts-admin: config, polkit and bus agree ($cfg $pk $bus)" "$cfg $cfg" "$pk $bus"
done
kill "${pids[@]}" 2>/dev/null || true
wait 2>/dev/null || true
check_eq "carol may halt coder" allow "$(allow_or_deny con policy query carol halt coder --config "$CFG")"
check_eq "dave may administer contracts" allow "$(allow_or_deny con policy query dave contracts-admin x --config "$CFG")"
check_eq "root may halt anything (services decide)" allow \
        "$(allow_or_deny con policy query root halt reviewer --config "$CFG")"
check_eq "the outer inbox is the submitters': alice" allow \
        "$(allow_or_deny runuser -u alice -- touch /srv/con/inbox/eq-alice.task)"
check_eq "the outer inbox is the submitters': bob" deny \
        "$(allow_or_deny runuser -u bob -- touch /srv/con/inbox/eq-bob.task)"
rm -f /srv/con/inbox/eq-*.task
check_eq "dave reads root's result on the reviewer over the bus (group:qa read-result)" allow \
        "$(bus_call dave reviewer GetResult s "${root_task[reviewer]}")"
check_eq "carol halted and resumed the coder: it accepts work" allow "$(bus_call a-concierge coder Submit s /ping)"
check "con down" con down

section "drift: a workspace opened to others; con policy check and CON-POL-001 agree (one drift checker)"
POLC="$T/pol-contracts"
mkdir -p "$POLC"
cp /usr/share/conspiracyos/profiles/default/contracts/CON-POL-001.yaml "$POLC/"
WS=/srv/con/agents/coder/workspace
check_output "CON-POL-001 passes after bootstrap" "^CON-POL-001 PASS acl_drift" \
        con healthcheck --local --contracts-dir "$POLC" --config "$CFG"
check "chmod o+rx the coder's workspace" chmod o+rx "$WS"
check_fail_output "con policy check names the workspace" \
        "^drift: $WS: differs from what con bootstrap provisions \\(it would set mode $WS \\(0[0-7]+\\)\\)\$" \
        con policy check --config "$CFG"
check_fail_output "CON-POL-001 fails" "^CON-POL-001 FAIL acl_drift" \
        con healthcheck --local --contracts-dir "$POLC" --config "$CFG"
check_output "... on the same change" "set mode $WS \\(0[0-7]+\\)" echo "$LIB_OUT"
check "bootstrap repairs it" con bootstrap --config "$CFG"
check_output "check passes again" '^policy: all four doors match' con policy check --config "$CFG"
check_output "CON-POL-001 passes again" "^CON-POL-001 PASS acl_drift" \
        con healthcheck --local --contracts-dir "$POLC" --config "$CFG"

section "drift: file door"
check "add an ACL entry by hand" setfacl -m u:a-sysadmin:-wx /srv/con/agents/coder/inbox
check_fail_output "check names the extra entry" \
        '^drift: /srv/con/agents/coder/inbox: ACL has u:a-sysadmin:-wx which the policy does not grant$' \
        con policy check --config "$CFG"
check "remove a granted entry by hand" setfacl -x u:a-coder /srv/con/agents/reviewer/inbox
check_fail_output "check names the missing entry" \
        '^drift: /srv/con/agents/reviewer/inbox: ACL lacks u:a-coder:-wx which the policy grants$' \
        con policy check --config "$CFG"
check "narrow the mask by hand" setfacl -m m::--x /srv/con/agents/concierge/inbox
check_fail_output "check names the masked entry" \
        '^drift: /srv/con/agents/concierge/inbox: ACL has g:con:--x where the policy grants g:con:-wx$' \
        con policy check --config "$CFG"
check_output "bootstrap repairs the ACLs" 'set acl /srv/con/agents/reviewer/inbox' con bootstrap --config "$CFG"
check_output "check passes again" '^policy: all four doors match' con policy check --config "$CFG"

section "drift: polkit rules"
check "edit the rules by hand" sed -i 's/"reviewer"\]/"reviewer", "concierge"]/' "$RULES"
check_fail_output "check names the rules file and line" \
        "^drift: $RULES: line [0-9]+ differs from what the config generates: found '.*\"concierge\"\\]" \
        con policy check --config "$CFG"
check "bootstrap repairs the rules" con bootstrap --config "$CFG"
check_output "check passes again" '^policy: all four doors match' con policy check --config "$CFG"

section "drift: D-Bus policy"
check "edit the bus policy by hand" \
        sed -i 's|<allow own="org.conspiracy.Coder"/>|<allow own="org.conspiracy.Coder"/><allow own="org.conspiracy.Reviewer"/>|' \
        "$BUSCONF"
check_fail_output "check names the bus policy file" "^drift: $BUSCONF: line [0-9]+ differs" \
        con policy check --config "$CFG"
check "remove the rules file" rm "$RULES"
check_fail_output "check names a missing door" "^drift: $RULES: missing; the config generates it" \
        con policy check --config "$CFG"
check "bootstrap repairs both" con bootstrap --config "$CFG"
check_output "check passes again" '^policy: all four doors match' con policy check --config "$CFG"

section "drift: kernel link protection (what the halt and quarantine markers rely on)"
# fs.protected_hardlinks is one setting for the whole machine: the test never writes the real
# one. A file bind-mounted over it (in this sandbox's mount namespace only) reads 0.
LINKS=/proc/sys/fs/protected_hardlinks
echo 0 >"$T/protected_hardlinks"
check "a protected_hardlinks of 0 (bind mount)" mount --bind "$T/protected_hardlinks" "$LINKS"
check_fail_output "check names the setting and why" \
        '^drift: kernel: fs.protected_hardlinks is 0, want 1 \(without it an agent can hard-link any root-owned file it can read' \
        con policy check --config "$CFG"
check_fail_output "CON-POL-002 (the policy check contract) fails" "^CON-POL-002 FAIL" \
        con healthcheck --local --contracts-dir /srv/con/contracts --config "$CFG"
check_output "bootstrap sets it" '^set fs.protected_hardlinks to 1 \(kernel link protection\)$' \
        con bootstrap --config "$CFG"
check_eq "... to 1" 1 "$(cat "$LINKS")"
check_output "check passes again" '^policy: all four doors match' con policy check --config "$CFG"
check "umount" umount "$LINKS"

section "invalid policy"
sed 's/to: \[reviewer\]}$/to: [reviewr]}/' "$CFG" >"$T/bad.yaml"
check_status "bootstrap refuses an unknown agent in to: (exit 4)" 4 con bootstrap --config "$T/bad.yaml"
check_output "with file:line:column" "bad.yaml:[0-9]+:[0-9]+: policy.grants\\[0\\].to\\[0\\]: 'reviewr' is not an agent" \
        echo "$LIB_OUT"

finish
