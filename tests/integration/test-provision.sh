#!/bin/bash
# Commissioning agents at run time (issue 16, docs/PROVISIONING.md): con-provisiond
# (org.conspiracy.Provisioner1, bus activated) through `con agent add|remove|list`. researcher is
# commissioned by root: user, folders, ACLs, AGENTS.md; a task reaches it by file drop and on the
# bus with no restart; the concierge may task it; con policy check is clean. The concierge itself
# is refused; bad names are refused with a clear error; a failure injected before each change of
# a commission leaves no trace; two commissions at once are safe; decommission removes it (an
# archive when asked); con bootstrap afterwards keeps a commissioned agent. Last, the sysadmin
# agent commissions `scout` itself through its commission_agent tool (scripted fake model).
# Runs as root inside tests/sandbox/con-sandbox (fresh system bus, project installed in /usr).
. "$(dirname "$0")/lib.sh"
require_sandbox
T=$(lib_tmp)
chmod 0755 "$T"
FAKE=${CON_BUILD_DIR:?}/tests/fake-llm/con-fake-llm
PROVISIOND=/usr/libexec/conspiracyos/con-provisiond
inbox_empty() { [ -z "$(find "$1" -maxdepth 1 -name '*.task' -print -quit)" ]; }
provisioner() { # provisioner VERB ARGS...: busctl VERB on the Provisioner object
        local verb=$1
        shift
        busctl --system "$verb" org.conspiracy.Provisioner /org/conspiracy/Provisioner org.conspiracy.Provisioner1 "$@"
}
# start_provisiond [VAR=VALUE...]: a con-provisiond of our own (the environment is the test hook).
start_provisiond() {
        stop_provisiond
        env "$@" $PROVISIOND --log-file "$T/provisiond.log" &
        OWN=$!
        wait_for 10 busctl --system status org.conspiracy.Provisioner
}
stop_provisiond() {
        local pid
        pid=$(busctl --system status org.conspiracy.Provisioner 2>/dev/null | sed -n 's/^PID=//p')
        [ -n "$pid" ] && kill "$pid"
        [ -n "${OWN:-}" ] && wait "$OWN" 2>/dev/null
        OWN=""
        wait_for 10 bash -c '! busctl --system status org.conspiracy.Provisioner'
}
# What a commission may change, without times: users and groups (not the "-" backups), owners,
# modes and ACLs of the trees, the content of the generated files, the network door's table.
snapshot() {
        {
                cat /etc/passwd /etc/group /etc/shadow /etc/gshadow 2>/dev/null | cut -d: -f1,3,4
                find /srv/con /home /etc/con /etc/dbus-1/system.d /etc/polkit-1/rules.d /etc/sysusers.d \
                        /usr/local/share/dbus-1/system-services /etc/systemd/system \
                        -path /srv/con/logs -prune -o -path /srv/con/state -prune -o -printf '%p %u:%g %m %y\n' | sort
                getfacl -R -p /srv/con/agents /srv/con/inbox 2>/dev/null
                find /etc/con /etc/dbus-1/system.d /etc/polkit-1/rules.d /etc/sysusers.d \
                        /usr/local/share/dbus-1/system-services -type f -exec sha256sum {} + | sort
                nft list table inet conspiracyos 2>/dev/null
        } >"$1"
}

section "fabric up"
check "con bootstrap --profile default" con bootstrap --profile default
check "con up" con up
check "the router runs" wait_for 10 busctl --system status org.conspiracy.Router
ROUTER_PID=$(busctl --system status org.conspiracy.Router | sed -n 's/^PID=//p')
check_output "con agent list: the profile's agents (bus activation of con-provisiond)" \
        'concierge +operator +/etc/con/con.yaml' con agent list

section "commission researcher as root"
printf 'You research questions and answer with sources.\n\n"quoted" `ticks` $(not a shell) ---\n' >"$T/instr.md"
check_output "con agent add researcher" "agent researcher commissioned" \
        con agent add researcher --tier worker --instructions "$T/instr.md"
check_output "... it printed the changes (con bootstrap's lines)" "create user a-researcher" echo "$LIB_OUT"
check "a-researcher exists" id a-researcher
uid=$(id -u a-researcher)
check "... with a UID of the agent block" test "$uid" -ge 60000 -a "$uid" -le 60999
check "... in group workers" bash -c 'id -nG a-researcher | grep -qw workers'
stat_is "its folder is its keeper's" /srv/con/agents/researcher "root:root 711"
stat_is "its workspace is its own" /srv/con/agents/researcher/workspace "a-researcher:agents 700"
check_output "its inbox lets the concierge drop tasks (ACL)" "user:a-concierge:-wx" getfacl -p /srv/con/agents/researcher/inbox
stat_is "AGENTS.md is root's, read-only" /home/a-researcher/AGENTS.md "root:root 444"
check_output "AGENTS.md carries the instructions, as file content" '\$\(not a shell\) ---' cat /home/a-researcher/AGENTS.md
check "the drop-in was written" test -f /etc/con/con.yaml.d/researcher.yaml
check_output "con agent list: researcher, commissioned" \
        'researcher +worker +/etc/con/con.yaml.d/researcher.yaml \(commissioned\)' con agent list
check_output "the Agents property lists it" '"researcher"' provisioner get-property Agents
check "con policy check is clean" con policy check

section "researcher answers, with no restart"
echo /ping >/srv/con/agents/researcher/inbox/first.task
check "a file dropped into its inbox is routed" wait_for 5 inbox_empty /srv/con/agents/researcher/inbox
check "... and answered" wait_for 20 bash -c 'ls /srv/con/agents/researcher/outbox/*.response'
check_output "busctl call org.conspiracy.Researcher Submit" 's "' busctl --system call org.conspiracy.Researcher \
        /org/conspiracy/Agent org.conspiracy.Agent1 Submit s /ping
check_output "the concierge may task it" 's "' as_user a-concierge busctl --system call org.conspiracy.Researcher \
        /org/conspiracy/Agent org.conspiracy.Agent1 Submit s /ping
check_eq "the router was not restarted" "$ROUTER_PID" "$(busctl --system status org.conspiracy.Router | sed -n 's/^PID=//p')"

section "who may commission"
check_fail_output "the concierge is refused (polkit)" "Access denied|not authorized|AccessDenied|denied" \
        as_user a-concierge con agent add spy
check_fail "... and nothing was made" id a-spy
check_fail_output "the sysadmin may not grant what it may not do itself" "may not task 'researcher' itself" \
        as_user a-sysadmin con agent add helper --may-task researcher
check_output "the sysadmin may commission within its own rights" "agent helper commissioned" \
        as_user a-sysadmin con agent add helper --may-task concierge --network none
check_fail_output "an unknown key of the a{sv} spec is refused" "'colour': unknown key" \
        provisioner call CommissionAgent 'sa{sv}' x1 1 colour s red
check_fail_output "a value of the wrong type is refused" "tier: expected a string" \
        provisioner call CommissionAgent 'sa{sv}' x1 1 tier u 3

section "bad names are refused with a clear error"
for bad in ../etc Researcher 'a b' router x--y "$(printf 'x\ny')" abcdefghijklmnopqrstuvwxyz1234; do
        check_fail_output "name '$bad'" "is not a valid agent name" con agent add "$bad"
done
check_fail_output "an existing agent" "agent 'concierge' already exists" con agent add concierge
useradd -r -M -s /usr/sbin/nologin a-mallory
check_fail_output "an existing user that is not an agent" "the user 'a-mallory' already exists" con agent add mallory
check_fail_output "a bad value names the drop-in and the key" "researcher2.yaml:[0-9]+:[0-9]+: agents\[0\].tier: 'boss'" \
        con agent add researcher2 --tier boss
check "... and nothing was made" test ! -e /etc/con/con.yaml.d/researcher2.yaml
head -c 70000 /dev/zero | tr '\0' x >"$T/big.md"
check_fail_output "instructions over 64 KiB" "larger than 64 KiB" con agent add big --instructions "$T/big.md"
check_fail_output "removing an agent of con.yaml" "defined in /etc/con/con.yaml" con agent remove concierge

section "a failure injected before each change leaves no trace"
snapshot "$T/before"
# Step N fails before the Nth change of the bootstrap run; the first N that does not fail is one
# past the last change.
traces=0
steps=0
for n in $(seq 1 60); do
        start_provisiond CON_TEST_BOOTSTRAP_FAIL_AT=$n
        out=$(con agent add probe --tier worker 2>&1) && break
        steps=$n
        grep -q "rolled back" <<<"$out" || { echo "# step $n: $out"; traces=$((traces + 1)); }
        snapshot "$T/after"
        cmp -s "$T/before" "$T/after" || { echo "# step $n left a trace:"; diff "$T/before" "$T/after" | head -5; traces=$((traces + 1)); }
done
check "a commission has many steps to fail at ($steps)" test "$steps" -gt 10
check_eq "each of the $steps steps failed, was rolled back and left nothing" 0 "$traces"
check "past the last step the commission succeeds" id a-probe
start_provisiond CON_TEST_PROVISION_FAIL_RETIRE=1
check_fail_output "a failed retire says what was done and what not" "removed from the configuration, but: test" \
        con agent remove probe
check "... the drop-in is gone" test ! -e /etc/con/con.yaml.d/probe.yaml
stop_provisiond
check "con policy check is clean" con policy check

section "two commissions at once"
con agent add twin-a --tier worker >"$T/a.out" 2>&1 &
A=$!
con agent add twin-b --tier worker >"$T/b.out" 2>&1 &
B=$!
check "the first succeeded" wait "$A"
check "the second succeeded" wait "$B"
check "both users exist, with different UIDs" test "$(id -u a-twin-a)" != "$(id -u a-twin-b)"
check "both drop-ins are there" test -f /etc/con/con.yaml.d/twin-a.yaml -a -f /etc/con/con.yaml.d/twin-b.yaml
check "con policy check is clean" con policy check

section "decommission"
check_output "con agent remove twin-b" "agent twin-b decommissioned" con agent remove twin-b
check_fail "a-twin-b is gone" id a-twin-b
check "its folder is gone" test ! -e /srv/con/agents/twin-b
check "its home is gone" test ! -e /home/a-twin-b
check "its drop-in is gone" test ! -e /etc/con/con.yaml.d/twin-b.yaml
check_fail "its bus name is no longer activatable" busctl --system call org.conspiracy.TwinB /org/conspiracy/Agent \
        org.conspiracy.Agent1 Submit s /ping
check_output "con agent remove researcher --archive" "archive /srv/con/archive/researcher-" \
        con agent remove researcher --archive
check_fail "a-researcher is gone" id a-researcher
check "its files are kept in the archive" bash -c 'test -d /srv/con/archive/researcher-*/workspace'
check "the archive is root's alone" bash -c 'test "$(stat -c %a /srv/con/archive)" = 700'
check "con policy check is clean" con policy check

section "con bootstrap keeps a commissioned agent"
check_output "con bootstrap" "bootstrap: " con bootstrap
check "a-twin-a is still there" id a-twin-a
check "... and its drop-in" test -f /etc/con/con.yaml.d/twin-a.yaml
cp /etc/con/con.yaml "$T/main.yaml"
check "con bootstrap --config FILE --force (a new con.yaml) keeps it too" con bootstrap --config "$T/main.yaml" --force
check "a-twin-a is still there" id a-twin-a
check_output "con agent list still lists it" "twin-a .*\(commissioned\)" con agent list
echo /ping >/srv/con/agents/twin-a/inbox/late.task
check "... and it is still served" wait_for 20 bash -c 'ls /srv/con/agents/twin-a/outbox/*.response'
check "con policy check is clean" con policy check


section "the sysadmin commissions an agent through its commission_agent tool (scripted model)"
answer() { # a final answer in the OpenAI wire format
        printf '{ "choices": [ { "message": { "content": "%s" }, "finish_reason": "stop" } ], "usage": { "prompt_tokens": 5, "completion_tokens": 5 } }' "$1"
}
commission() { # commission ID NAME: a commission_agent tool call
        printf '{ "choices": [ { "message": { "content": null, "tool_calls": [ { "id": "%s", "type": "function", "function": { "name": "commission_agent", "arguments": "{\\"name\\":\\"%s\\",\\"tier\\":\\"worker\\",\\"instructions\\":\\"You scout the logs.\\",\\"network\\":[\\"none\\"]}" } } ] }, "finish_reason": "tool_calls" } ] }' "$1" "$2"
}
P=/v1/chat/completions
cat >"$T/script.json" <<JSON
{ "rules": [
  { "path": "$P", "match": "Commissioned agent scout", "body": $(answer "SCOUT-READY") },
  { "path": "$P", "match": "commission_agent: refused", "body": $(answer "SCOUT-REFUSED") },
  { "path": "$P", "match": "please commission a scout", "body": $(commission k1 scout) },
  { "path": "$P", "body": $(answer "fallback answer") }
] }
JSON
start_fake_llm
# The installed profile with a model: the sysadmin's role and skills stay in /etc/con.
cat >/etc/con/con.yaml <<YAML
system:
  name: provision-test
contracts:
  system:
    max_load_factor: 1000
    disk_min_free_pct: 0
    mem_min_free_pct: 0
base:
  runner: picoclaw
  provider: compatible
  base_url: http://127.0.0.1:$PORT/v1
  model: fake-model
agents:
  - name: concierge
    tier: operator
  - name: sysadmin
    tier: operator
    roles: [sysadmin]
YAML
check "con bootstrap with the model" con bootstrap
check_output "the sysadmin's answer: its tool commissioned scout" "SCOUT-READY" \
        con-send --to sysadmin --timeout 120 "please commission a scout"
check "the model was offered commission_agent" grep -q '"name":"commission_agent"' "$T/fake.log"
check "a-scout exists" id a-scout
check "its drop-in is there" test -f /etc/con/con.yaml.d/scout.yaml
check_output "the instructions are in its AGENTS.md" "You scout the logs." cat /home/a-scout/AGENTS.md
check_output "con agent list: scout, commissioned" "scout .*\(commissioned\)" con agent list
check_output "scout answers on the bus" 's "' busctl --system call org.conspiracy.Scout /org/conspiracy/Agent \
        org.conspiracy.Agent1 Submit s /ping
check "con policy check is clean" con policy check
kill "$FAKE_PID" 2>/dev/null

finish
