#!/bin/bash
# Two hosts, one conspiracy (docs/MULTIHOST.md): host-a is this sandbox; host-b is a nested
# sandbox (its own root, users, system bus, polkitd and fabric) in a network namespace linked to
# this one by a veth pair with private addresses 10.77.0.1 (host-a) and 10.77.0.2 (host-b),
# nothing else. One nats-server with JetStream listens on host-a's veth address; each host's
# con-meshd connects to it. Shows: a task from alice on host-a answered by sysadmin on host-b
# (con-send --to sysadmin@host-b, and busctl on org.conspiracy.Mesh1), the sender recorded as
# alice@host-a by host-b's agent and audit log; bob, whom host-b's policy does not name, refused
# there; a sender given in the options or the text ignored; only host-b's gateway may name a remote
# sender to an agent. The mesh runs as a user would set it up (docs/MULTIHOST.md): a CA and the NATS
# server's configuration made by con mesh, each host's TLS client certificate made by its con
# bootstrap (host-a holds the CA: issued there; host-b does not: its key and signing request,
# signed on host-a by con mesh sign); TLS required, each host allowed to publish only under its
# own name. Shows that a client without a
# certificate is refused, that host-b's credentials cannot send a task as host-a (the server
# refuses the publish), that a payload naming another origin than the subject's is dropped and
# audited by the receiver, and that the key is root:con-mesh 0640, out of the agents' reach.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/mesh-lib.sh"
require_sandbox
build=${CON_BUILD_DIR:?CON_BUILD_DIR is not set}

T=$(lib_tmp)
SHARED=$T/shared               # host-b's --artifacts folder: its reports and the stop signal
mkdir -p "$SHARED"
NATS_PID=""
HOSTB_PID=""
cleanup() {
        touch "$SHARED/stop" 2>/dev/null
        [ -n "$HOSTB_PID" ] && { timeout 20 tail --pid="$HOSTB_PID" -f /dev/null; kill "$HOSTB_PID" 2>/dev/null; }
        [ -n "$NATS_PID" ] && kill "$NATS_PID" 2>/dev/null
        ip netns del hostb 2>/dev/null
        return 0
}
trap 'cleanup; _lib_exit' EXIT

section "the network: host-b's namespace, a veth pair, private addresses only"
check "ip netns add hostb" ip netns add hostb
check "veth pair host-a <-> host-b" ip link add veth-a type veth peer name veth-b netns hostb
check "host-a is 10.77.0.1" ip addr add 10.77.0.1/24 dev veth-a
check "host-a's end up" ip link set veth-a up
check "host-b is 10.77.0.2" ip -n hostb addr add 10.77.0.2/24 dev veth-b
check "host-b's end up" ip -n hostb link set veth-b up
check "host-b's loopback up" ip -n hostb link set lo up
check_output "no default route on host-a: nothing beyond the two hosts" '^$' ip route show default

section "the mesh's credentials, made by con mesh"
check "con mesh: a CA, host-a's and host-b's certificates, the server's configuration" \
        mesh_pki "$T/pki" 10.77.0.1:4222 host-a host-b
check_output "the CA key is 0600" '^600$' stat -c %a "$T/pki/ca/ca.key"
check_output "host-b's bundle: its key 0600, certificate and the CA's" '^ca.crt host.crt host.key $' \
        bash -c "ls '$T/pki/host-b' | tr '\n' ' '"
check_output "host-b's certificate names host-b, for client authentication, signed by the CA" \
        'OK' openssl verify -CAfile "$T/pki/ca/ca.crt" -purpose sslclient "$T/pki/host-b/host.crt"
check_output "... its name is what verify_and_map maps to the user host-b" 'DNS:host-b' \
        openssl x509 -noout -ext subjectAltName -in "$T/pki/host-b/host.crt"
check_fail_output "con mesh init refuses to make a second CA over the first" 'already exists' \
        con mesh init --ca-dir "$T/pki/ca"
# host-c: a third host's certificate and a NATS user that may only send tasks (its streams are never
# made: it never joins); it stands in for another sending host (the per-host share of host-b's
# task stream, below).
add_host_c() {
        con mesh issue host-c --ca-dir "$T/pki/ca" --out "$T/pki/host-c" >/dev/null &&
                sed -i 's/^  users = \[$/  users = [\n    { user: "host-c", permissions: { publish: { allow: ["con.task.*.host-c"] }, subscribe: { allow: ["_INBOX.host-c.>"] } } }/' \
                        "$T/pki/server/nats.conf" && grep -q 'user: "host-c"' "$T/pki/server/nats.conf"
}
check "... and host-c's certificate, with a NATS user that may only send tasks (it never joins)" add_host_c
check_output "the server's configuration: TLS required, verify_and_map" 'verify_and_map: true' \
        cat "$T/pki/server/nats.conf"
check_output "... host-b may publish only under its own name" '"con.task.\*.host-b", "con.result.\*.host-b"' \
        cat "$T/pki/server/nats.conf"

section "a NATS server with JetStream on host-a"
check "nats-server is installed" command -v nats-server
mesh_nats_start "$T/pki"
NATS_PID=$MESH_NATS_PID
check "nats-server listens on 10.77.0.1:4222" mesh_nats_wait 10.77.0.1 4222
check "... and host-b reaches it" wait_for 5 ip netns exec hostb bash -c 'exec 3<>/dev/tcp/10.77.0.1/4222'
check_output "con mesh streams: the administrator makes host-a's and host-b's streams and con-state" \
        '^con-state: made$' mesh_streams "$T/pki" tls://10.77.0.1:4222

section "host-b: a nested sandbox with its own fabric"
cat >"$T/hostb.sh" <<'HOSTB'
#!/bin/bash
# Runs inside host-b's sandbox; reports to $CON_SANDBOX_ARTIFACTS.
set -u
out=$CON_SANDBOX_ARTIFACTS
step() { echo "$*" >>"$out/steps"; }
cat >/usr/local/bin/mesh-echo <<'EOF'
#!/bin/sh
text=$(cat)
case $text in
*slower*) sleep 10 ;;                   # long enough for host-a's gateway to restart meanwhile
*slow*) sleep 4 ;;                      # long enough to be seen working (and the next one accepted)
esac
case $text in *long-cancel*) sleep 60 ;; esac  # canceled from host-a long before
case $text in *show-meta*) printf 'priority=%s deadline=%s ' "$CON_TASK_PRIORITY" "${CON_TASK_DEADLINE:-none}" ;; esac
printf 'sender=%s agent=%s text=%s\n' "$CON_TASK_SENDER" "$CON_AGENT" "$text"
EOF
chmod 755 /usr/local/bin/mesh-echo
mkdir -p /etc/con
cat >/etc/con/con.yaml <<'EOF'
system:
  name: host-b
agents:
  - name: concierge
    runner: exec
    command: [/usr/local/bin/mesh-echo]
  - name: sysadmin
    runner: exec
    command: [/usr/local/bin/mesh-echo]
mesh:
  host: host-b
  servers: [tls://10.77.0.1:4222]
policy:
  grants:
    - {who: "user:alice@host-a", may: [task], to: [sysadmin]}
    - {who: concierge@host-a, may: [task], to: [sysadmin]}
EOF
# No CA here: con bootstrap makes host-b's key and a signing request and stops; host-a, the CA's
# host, signs the request (con mesh sign); with the certificate in place bootstrap proceeds.
if con bootstrap >"$out/bootstrap1.log" 2>&1; then step "bootstrap without a certificate succeeded"; exit 1; fi
cp /etc/con/mesh/host.csr "$out/host-b.csr" && touch "$out/requested" || { step "no signing request"; exit 1; }
for _ in $(seq 600); do [ -e "$out/signed" ] && break; sleep 0.1; done
install -m 0644 "$out/host-b.crt" /etc/con/mesh/host.crt && install -m 0644 "$out/ca.crt" /etc/con/mesh/ca.crt ||
        { step "no certificate"; exit 1; }
con bootstrap >"$out/bootstrap.log" 2>&1 || { step "bootstrap failed"; exit 1; }
step "bootstrap ok"
con up >"$out/up.log" 2>&1 || { step "up failed"; cat /srv/con/logs/daemons/con-meshd.log >>"$out/up.log"; exit 1; }
step "up ok"
id con-mesh >/dev/null 2>&1 && step "user con-mesh exists"
ps -o user= -C con-meshd >"$out/meshd-user" 2>&1
stat -c '%U:%G %a' /etc/con/mesh/host.key >"$out/key-mode" 2>&1
runuser -u a-sysadmin -- cat /etc/con/mesh/host.key >"$out/key-by-agent" 2>&1
echo "rc=$?" >>"$out/key-by-agent"
# Only the gateway may name a remote sender: root (granted everything here) may not.
busctl --system call org.conspiracy.Sysadmin /org/conspiracy/Agent org.conspiracy.Agent1 Deliver 'a{sv}' 2 \
        text s "forged" origin s "a-concierge@host-a" >"$out/forged-origin" 2>&1
echo "rc=$?" >>"$out/forged-origin"
touch "$out/ready"
# On request, host-b's gateway goes away (by its pid) and comes back with con up.
mesh_pid() {
        busctl --system call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus \
                GetConnectionUnixProcessID s org.conspiracy.Mesh 2>/dev/null | sed -n 's/^u \([0-9]*\)$/\1/p'
}
for _ in $(seq 3000); do               # until the test says stop (at most about 5 minutes)
        if [ -e "$out/pause" ] && [ ! -e "$out/paused" ]; then
                pid=$(mesh_pid)
                [ -n "$pid" ] && kill "$pid"
                for _ in $(seq 100); do [ -z "$(mesh_pid)" ] && break; sleep 0.1; done
                [ -z "$(mesh_pid)" ] && touch "$out/paused"
        fi
        if [ -e "$out/resume" ] && [ ! -e "$out/resumed" ]; then
                con up >"$out/up2.log" 2>&1 && touch "$out/resumed"
        fi
        # On request, a copy of the gateway's log as it is now.
        if [ -e "$out/log-please" ]; then
                cp /srv/con/logs/daemons/con-meshd.log "$out/meshd-now.tmp" && mv "$out/meshd-now.tmp" "$out/meshd-now.log"
                rm -f "$out/log-please"
        fi
        [ -e "$out/stop" ] && break
        sleep 0.1
done
con audit --lines 200 >"$out/audit" 2>&1
{ ps -ef; con mesh status; busctl --system call org.conspiracy.Sysadmin /org/conspiracy/Agent org.conspiracy.Agent1 ListTasks; } >"$out/diag" 2>&1
con audit verify >"$out/audit-verify" 2>&1; echo "rc=$?" >>"$out/audit-verify"
cp /srv/con/logs/daemons/con-meshd.log "$out/meshd.log" 2>/dev/null
cp /srv/con/logs/daemons/con-agent@sysadmin.log "$out/sysadmin.log" 2>/dev/null
touch "$out/done"
HOSTB
chmod 755 "$T/hostb.sh"
src=$(cd "$(dirname "$0")/../.." && pwd)
"$src/tests/sandbox/con-sandbox" --stage "$CON_SANDBOX_STAGE" --netns /run/netns/hostb --artifacts "$SHARED" \
        --with "$T" -- "$T/hostb.sh" >"$T/hostb.out" 2>&1 &
HOSTB_PID=$!
check "host-b's con bootstrap, without the CA, wrote its key and a signing request" wait_for 60 test -e "$SHARED/requested"
check_output "... and stopped, saying what to run on the CA's host" 'con mesh sign host-b.csr --out host-b.crt' \
        cat "$SHARED/bootstrap1.log"
check_output "the CA's host signs host-b's request (con mesh sign)" 'the certificate of host-b' \
        con mesh sign "$SHARED/host-b.csr" --ca-dir "$T/pki/ca" --out "$SHARED/host-b.crt"
check "... and hands over the CA's certificate" bash -c "cp '$T/pki/ca/ca.crt' '$SHARED/ca.crt' && touch '$SHARED/signed'"
check "host-b is up (bootstrap, con up, con-meshd)" wait_for 90 test -e "$SHARED/ready"
check_output "host-b bootstrapped and started" 'up ok' cat "$SHARED/steps"
check_output "host-b made the gateway's user" 'user con-mesh exists' cat "$SHARED/steps"
check_output "host-b's con-meshd runs as con-mesh" '^con-mesh$' cat "$SHARED/meshd-user"
check_output "host-b: root cannot name a remote sender (only the gateway's user may)" \
        "AccessDenied|only the mesh gateway" cat "$SHARED/forged-origin"
check_output "host-b: con bootstrap gave the key to root:con-mesh 0640" '^root:con-mesh 640$' cat "$SHARED/key-mode"
check_output "host-b: its agent cannot read the key" 'Permission denied' cat "$SHARED/key-by-agent"

section "host-a: its fabric with a mesh: section"
# host-a's concierge runs the tool loop on the scripted model (tests/fake-llm): its send_task
# reaches sysadmin@host-b through the mesh gateway.
FAKE=${CON_BUILD_DIR:?}/tests/fake-llm/con-fake-llm
P=/v1/chat/completions
answer() { # a final answer in the OpenAI wire format
        printf '{ "choices": [ { "message": { "content": "%s" }, "finish_reason": "stop" } ], "usage": { "prompt_tokens": 5, "completion_tokens": 5 } }' "$1"
}
toolcall() { # toolcall ID NAME ARGS_JSON_AS_STRING
        printf '{ "choices": [ { "message": { "content": null, "tool_calls": [ { "id": "%s", "type": "function", "function": { "name": "%s", "arguments": %s } } ] }, "finish_reason": "tool_calls" } ] }' "$1" "$2" "$3"
}
cat >"$T/script.json" <<EOF
{ "rules": [
  { "path": "$P", "match": "delegate-to-host-b",
    "body": $(toolcall call_m send_task '"{\"agent\":\"sysadmin@host-b\",\"text\":\"remote-disk-check show-meta\",\"wait\":true}"') },
  { "path": "$P", "match": "sender=a-concierge@host-a agent=sysadmin text=remote-disk-check",
    "body": $(answer "RELAYED-FROM-HOST-B") },
  { "path": "$P", "body": $(answer "fallback answer") }
] }
EOF
start_fake_llm
mkdir -p /etc/con
cat >/etc/con/con.yaml <<EOF
system:
  name: host-a
base:
  runner: picoclaw
  provider: openrouter
  base_url: http://127.0.0.1:$PORT/v1
  model: fake-model
agents:
  - name: concierge
policy:
  grants:
    - {who: "group:con", may: [cancel], to: [concierge]}   # a remote task canceled from the sending host
EOF
mesh_yaml host-a nats://10.77.0.1:4222 >>/etc/con/con.yaml
check_fail_output "con bootstrap refuses a plaintext nats:// server without insecure: true (file, line, key)" \
        "con.yaml:15:[0-9]*: mesh.servers\[0\]: 'nats://10.77.0.1:4222' is plaintext.*insecure: true" con bootstrap
sed -i 's|nats://|tls://|' /etc/con/con.yaml
# host-a is the CA's host: con bootstrap issues host-a's certificate itself.
check "host-a keeps the mesh's CA in /etc/con/mesh-ca" bash -c \
        "install -d -m 0700 /etc/con/mesh-ca && install -m 0600 '$T/pki/ca/ca.key' '$T/pki/ca/ca.crt' /etc/con/mesh-ca/"
check_output "con bootstrap issues host-a's certificate with the CA here" '^write /etc/con/mesh/host.crt$' con bootstrap
check_output "... host-a's client certificate, signed by the mesh's CA" 'OK' \
        openssl verify -CAfile "$T/pki/ca/ca.crt" -purpose sslclient /etc/con/mesh/host.crt
check_output "... named host-a" 'DNS:host-a' openssl x509 -noout -ext subjectAltName -in /etc/con/mesh/host.crt
check "con-mesh user made (mesh: is set)" id con-mesh
printf 'CON_API_KEY=sk-mesh-test\n' >/etc/con/env
check_output "con bootstrap gave the key to root:con-mesh 0640" '^root:con-mesh 640$' \
        stat -c '%U:%G %a' /etc/con/mesh/host.key
check_output "... the certificates stay public" '^root:root 644 root:root 644$' \
        bash -c 'echo $(stat -c "%U:%G %a" /etc/con/mesh/host.crt /etc/con/mesh/ca.crt)'
check "alice and bob, submitters on host-a" bash -c 'useradd -M -G con alice && useradd -M -G con bob'
check_fail_output "host-a's agent cannot read the key" 'Permission denied' runuser -u a-concierge -- cat /etc/con/mesh/host.key
check_fail_output "... nor can alice" 'Permission denied' runuser -u alice -- cat /etc/con/mesh/host.key
check_output "con up starts the mesh gateway" 'mesh: started as host host-a' con up
check_output "org.conspiracy.Mesh1 Host is host-a" '^s "host-a"$' \
        busctl --system get-property org.conspiracy.Mesh /org/conspiracy/Mesh org.conspiracy.Mesh1 Host
check "the gateway is connected" wait_for 15 bash -c \
        'busctl --system get-property org.conspiracy.Mesh /org/conspiracy/Mesh org.conspiracy.Mesh1 Connected | grep -qx "b true"'

section "con mesh status"
check "host-b's gateway joined (its consumer on con-task-host-b)" wait_for 15 bash -c \
        'con mesh status --json | jq -e ".hosts[] | select(.host == \"host-b\") | .joined"'
check_output "con mesh status: connected, this host and host-b, both joined" \
        'connected to tls://10\.77\.0\.1:4222' con mesh status
check_output "... host-a's row (this host), joined" '^host-a \(this\) +yes +0 ' echo "$LIB_OUT"
check_output "... host-b's row, joined, nothing waiting" '^host-b +yes +0 +- ' echo "$LIB_OUT"
check_output "con mesh status --json: this host, connected, its server, retention 7 days" \
        '^host-a true tls://10.77.0.1:4222 604800 true$' \
        bash -c 'con mesh status --json | jq -r "\"\(.host) \(.connected) \(.server) \(.retention_sec) \(.hosts[0].self)\""'
check_output "... any user may ask (no task text in it)" '"host":"host-b"' as_user bob con mesh status --json

section "a task from host-a answered on host-b"
check_output "con-send --to sysadmin@host-b: answered by host-b's sysadmin, sender alice@host-a" \
        '^sender=alice@host-a agent=sysadmin text=hello from a$' \
        as_user alice timeout 30 con-send --timeout 25 --to sysadmin@host-b hello from a
check_output "con-send --json names the agent and the status" '"agent":"sysadmin@host-b","status":"completed"' \
        as_user alice timeout 30 con-send --json --timeout 25 --to sysadmin@host-b second
id=$(as_user alice busctl --system call org.conspiracy.Mesh /org/conspiracy/Mesh org.conspiracy.Mesh1 Submit \
        'ssa{sv}' sysadmin@host-b "by busctl" 1 id s mesh-test-1 | sed -n 's/^s "\(.*\)"$/\1/p')
check_eq "busctl Submit keeps the id given" "mesh-test-1" "$id"
result_of() { # result_of USER ID
        as_user "$1" busctl --system call org.conspiracy.Mesh /org/conspiracy/Mesh org.conspiracy.Mesh1 GetResult s "$2"
}
check "busctl: the result comes back" wait_for 25 bash -c \
        "runuser -u alice -- busctl --system call org.conspiracy.Mesh /org/conspiracy/Mesh org.conspiracy.Mesh1 GetResult s mesh-test-1 | grep -q completed"
check_output "... with host-b's answer" 'sender=alice@host-a agent=sysadmin text=by busctl' result_of alice mesh-test-1
check_fail_output "bob may not read alice's result" 'AccessDenied|not yours' result_of bob mesh-test-1
check_output "the same id again: the same task, not sent twice" '^s "mesh-test-1"$' \
        as_user alice busctl --system call org.conspiracy.Mesh /org/conspiracy/Mesh org.conspiracy.Mesh1 Submit \
        'ssa{sv}' sysadmin@host-b "by busctl" 1 id s mesh-test-1
check_fail_output "bob cannot take alice's id" 'already used by another sender' \
        as_user bob busctl --system call org.conspiracy.Mesh /org/conspiracy/Mesh org.conspiracy.Mesh1 Submit \
        'ssa{sv}' sysadmin@host-b "mine" 1 id s mesh-test-1

section "priority and deadline reach the remote agent, or are refused at the sending door"
DL=$(date -u -d '+1 day' +%Y-%m-%dT%H:%M:%S)
check_output "con-send --priority 7 --deadline: host-b's agent runs it with both (its CON_TASK_PRIORITY, CON_TASK_DEADLINE)" \
        "^priority=7 deadline=${DL}\.000000Z sender=alice@host-a agent=sysadmin text=show-meta\$" \
        as_user alice timeout 30 con-send --timeout 25 --priority 7 --deadline "${DL}Z" --to sysadmin@host-b show-meta
check_output "... a deadline with an offset arrives as the same instant, in UTC" \
        "^priority=5 deadline=${DL}\.250000Z " \
        as_user alice timeout 30 con-send --timeout 25 --deadline "$(date -u -d "${DL}Z +1 hour" +%Y-%m-%dT%H:%M:%S).25+01:00" \
        --to sysadmin@host-b show-meta
check_output "... without them: priority 5, no deadline" "^priority=5 deadline=none " \
        as_user alice timeout 30 con-send --timeout 25 --to sysadmin@host-b show-meta
DLU=$(( $(date -u -d "${DL}Z" +%s) * 1000000 ))
check "busctl Submit with the options priority (y) and deadline (t)" \
        as_user alice busctl --system call org.conspiracy.Mesh /org/conspiracy/Mesh org.conspiracy.Mesh1 Submit \
        'ssa{sv}' sysadmin@host-b "show-meta by busctl" 3 id s mesh-meta-1 priority y 2 deadline t "$DLU"
check "... its result comes back" wait_for 25 bash -c "runuser -u alice -- busctl --system call org.conspiracy.Mesh \
        /org/conspiracy/Mesh org.conspiracy.Mesh1 GetResult s mesh-meta-1 | grep -q completed"
check_output "... run with both" "priority=2 deadline=${DL}\.000000Z sender=alice@host-a" result_of alice mesh-meta-1
check "a .task file with to:, priority and deadline" as_user alice bash -c \
        "printf -- '---\nto: sysadmin@host-b\npriority: 8\ndeadline: ${DL}Z\n---\nshow-meta by file\n' >/srv/con/inbox/.mesh-meta-2 &&
         mv /srv/con/inbox/.mesh-meta-2 /srv/con/inbox/mesh-meta-2.task"
check "... answered" wait_for 25 test -e /srv/con/mesh/outbox/mesh-meta-2.response
check_output "... host-b's agent ran it with the file's priority and deadline" \
        "^priority=8 deadline=${DL}\.000000Z sender=alice@host-a agent=sysadmin text=show-meta by file\$" \
        as_user alice cat /srv/con/mesh/outbox/mesh-meta-2.response
check_fail_output "a deadline already past: the task fails on host-b as a local one does" 'deadline passed' \
        as_user alice timeout 30 con-send --timeout 25 --deadline 2020-01-01T00:00:00Z --to sysadmin@host-b show-meta
check_fail_output "con-send --priority 12: refused before anything is sent" \
        "^con-send: --priority: '12' is not allowed; use a whole number from 0 to 9" \
        as_user alice con-send --priority 12 --to sysadmin@host-b show-meta
check_fail_output "con-send --deadline tomorrow: refused" "^con-send: --deadline: 'tomorrow' is not an RFC 3339 timestamp" \
        as_user alice con-send --deadline tomorrow --to sysadmin@host-b show-meta
check_fail_output "busctl Submit priority 10: refused, as an agent's Deliver refuses it" \
        "Key 'priority': 10 is out of range; allowed are 0 to 9" \
        as_user alice busctl --system call org.conspiracy.Mesh /org/conspiracy/Mesh org.conspiracy.Mesh1 Submit \
        'ssa{sv}' sysadmin@host-b "x" 1 priority y 10
check_fail_output "busctl Submit priority of another type: refused" "Key 'priority' must be of type 'y', got 's'" \
        as_user alice busctl --system call org.conspiracy.Mesh /org/conspiracy/Mesh org.conspiracy.Mesh1 Submit \
        'ssa{sv}' sysadmin@host-b "x" 1 priority s high
check_fail_output "busctl Submit with a deadline the mesh cannot carry (after the year 9999): refused" \
        "Key 'deadline': 18446744073709551615 is not a time the mesh can carry" \
        as_user alice busctl --system call org.conspiracy.Mesh /org/conspiracy/Mesh org.conspiracy.Mesh1 Submit \
        'ssa{sv}' sysadmin@host-b "x" 1 deadline t 18446744073709551615
check_fail_output "busctl Submit with priority twice: refused" "Option 'priority' is given twice" \
        as_user alice busctl --system call org.conspiracy.Mesh /org/conspiracy/Mesh org.conspiracy.Mesh1 Submit \
        'ssa{sv}' sysadmin@host-b "x" 2 priority y 1 priority y 2
check "a to: file with priority 12" as_user alice bash -c \
        "printf -- '---\nto: sysadmin@host-b\npriority: 12\n---\nx\n' >/srv/con/inbox/mesh-meta-3.task"
check "... is rejected by the router" wait_for 20 bash -c 'ls /srv/con/rejected/*mesh-meta-3.task.reason'
check_output "... with the reason" "priority: '12' is not allowed; use a whole number from 0 to 9" \
        bash -c 'cat /srv/con/rejected/*mesh-meta-3.task.reason'

section "the tool loop's send_task to AGENT@HOST"
check_output "host-a's concierge delegates to sysadmin@host-b (send_task) and relays its answer" \
        'RELAYED-FROM-HOST-B' timeout 120 con-send --timeout 110 --to concierge delegate-to-host-b
check_output "the tool result was host-b's answer, sent as a-concierge@host-a" \
        'sysadmin@host-b finished task .* \(completed\):.{1,2}priority=5 deadline=[0-9T:.-]+Z sender=a-concierge@host-a agent=sysadmin text=remote-disk-check show-meta' \
        jq 'select(.body.messages[-1].role == "tool") | .body.messages[-1].content' "$T/fake.log"
# The remote task inherits the session's deadline, as a local child does (docs/AGENT.md): the
# concierge's session may last contracts.system.max_session_min (30 min by default).
remote_deadline() {
        jq -r 'select(.body.messages[-1].role == "tool") | .body.messages[-1].content' "$T/fake.log" |
                sed -n 's/.*priority=5 deadline=\([^ ]*\) sender=a-concierge.*/\1/p' | head -n 1
}
check "... with the concierge's session deadline (after now, within its 30 min)" bash -c \
        "d=\$(date -d '$(remote_deadline)' +%s) && now=\$(date +%s) && test \$d -gt \$now && test \$d -le \$((now + 1800))"

section "the file door: a .task file with to: AGENT@HOST"
check "alice drops a .task file for sysadmin@host-b into the inbox" as_user alice bash -c \
        'printf -- "---\nto: sysadmin@host-b\n---\nby file\n" >/srv/con/inbox/.mesh-file-1 &&
         mv /srv/con/inbox/.mesh-file-1 /srv/con/inbox/mesh-file-1.task'
check "the router handed it over (the file is gone)" wait_for 20 bash -c '! test -e /srv/con/inbox/mesh-file-1.task'
check "the answer comes back as a file, as an agent's outbox/<id>.response" \
        wait_for 25 test -e /srv/con/mesh/outbox/mesh-file-1.response
check_output "... host-b's answer, the sender being the file's owner (alice@host-a)" \
        '^sender=alice@host-a agent=sysadmin text=by file$' as_user alice cat /srv/con/mesh/outbox/mesh-file-1.response
check_fail_output "... which bob cannot read" 'Permission denied' as_user bob cat /srv/con/mesh/outbox/mesh-file-1.response
stat_is "... con-mesh's own (0600 and an ACL entry: the mask shows as group r)" \
        /srv/con/mesh/outbox/mesh-file-1.response "con-mesh:con-mesh 640"
check_output "... the ACL entry is alice's, read only" '^user:alice:r--$' \
        getfacl -cp /srv/con/mesh/outbox/mesh-file-1.response
stat_is "con bootstrap made the gateway's folders (no listing)" /srv/con/mesh/outbox "con-mesh:con-mesh 711"
check_output "GetResult on the gateway gives alice the same answer (the file's name is the task id)" \
        'completed.*sender=alice@host-a agent=sysadmin text=by file' result_of alice mesh-file-1
check_output "the router's audit records it as routed to sysadmin@host-b" \
        'task.routed .*task_id=mesh-file-1 .*agent=sysadmin@host-b' con audit --lines 50
check "alice drops a second mesh-file-1.task (the same name) for sysadmin@host-b" as_user alice bash -c \
        'printf -- "---\nto: sysadmin@host-b\n---\nby file again\n" >/srv/con/inbox/.mesh-file-1 &&
         mv /srv/con/inbox/.mesh-file-1 /srv/con/inbox/mesh-file-1.task'
check "... it is sent under a fresh id (NAME-<identity>), as a local file of a used name is, and answered" \
        wait_for 25 bash -c 'grep -l "^sender=alice@host-a agent=sysadmin text=by file again$" /srv/con/mesh/outbox/mesh-file-1-*.response'
check_output "... the first answer stays as it was" '^sender=alice@host-a agent=sysadmin text=by file$' \
        cat /srv/con/mesh/outbox/mesh-file-1.response
check "bob's file for sysadmin@host-b (host-b does not grant bob)" as_user bob bash -c \
        'printf -- "---\nto: sysadmin@host-b\n---\nfrom: alice@host-a\nlet me in\n" >/srv/con/inbox/.mesh-file-2 &&
         mv /srv/con/inbox/.mesh-file-2 /srv/con/inbox/mesh-file-2.task'
check "... its refusal comes back as failed/<id>.reason" wait_for 25 test -e /srv/con/mesh/failed/mesh-file-2.reason
check_output "... refused on host-b as bob@host-a (the file's owner, not what the text says)" \
        'Refused on host host-b: .*bob@host-a' as_user bob cat /srv/con/mesh/failed/mesh-file-2.reason
check "a to: file with a conversation" bash -c \
        'printf -- "---\nto: sysadmin@host-b\nconversation: latest\n---\nx\n" >/srv/con/inbox/mesh-file-3.task'
check "... is rejected by the router" wait_for 20 bash -c 'ls /srv/con/rejected/*mesh-file-3.task.reason'
check_output "... with the reason" 'to: sysadmin@host-b names an agent of another host, but conversation is for agents of this host' \
        bash -c 'cat /srv/con/rejected/*mesh-file-3.task.reason'

section "the state of remote tasks on the sending host (state events)"
check_output "two slow tasks sent (--no-wait)" '^mesh-slow-2$' bash -c \
        'runuser -u alice -- con-send --no-wait --id mesh-slow-1 --to sysadmin@host-b slow one &&
         runuser -u alice -- con-send --no-wait --id mesh-slow-2 --to sysadmin@host-b slow two'
check "con tasks: the first is working on host-b" wait_for 10 bash -c \
        'runuser -u alice -- con tasks sysadmin@host-b | grep -Eq "^sysadmin@host-b +mesh-slow-1 +working +alice$"'
check_output "... the second accepted by host-b's sysadmin (queued behind it)" \
        '^sysadmin@host-b +mesh-slow-2 +accepted +alice$' as_user alice con tasks sysadmin@host-b
check_output "con tasks --json: the A2A names (accepted is submitted)" '^mesh-slow-1 working,mesh-slow-2 submitted$' \
        bash -c 'runuser -u alice -- con tasks --json |
                 jq -r "[.[] | select(.task_id | startswith(\"mesh-slow\")) | \"\(.task_id) \(.status)\"] | join(\",\")"'
check_output "con status shows them under mesh, with their state" '^mesh-slow-2 +sysadmin@host-b +accepted +alice$' \
        con status
check_output "con status --json: the mesh object" '^true mesh-slow-1 working working$' bash -c \
        'con status --json | jq -r ".mesh | \"\(.connected) \(.tasks[0].task_id) \(.tasks[0].status) \(.tasks[0].state)\""'
check_output "con status: the tasks between hosts (stream con-state), from and to, with their state" \
        '^mesh-slow-2 +alice@host-a +sysadmin@host-b +accepted +[0-9]+s$' con status
check_output "con mesh status --json: the same, with since and age" '^alice@host-a sysadmin@host-b working true$' bash -c \
        'con mesh status --json | jq -r ".tasks[] | select(.task_id == \"mesh-slow-1\") | \"\(.from) \(.to) \(.state) \(.since != null and .age_sec >= 0)\""'
check_output "bob sees his own remote task, not alice's" '^sysadmin@host-b +mesh-file-2 +failed +bob$' \
        as_user bob con tasks
check_fail "... (none of alice's)" grep -q mesh-slow <<<"$LIB_OUT"
check_output "... nor in the tasks between hosts (con status --json as bob): only his own" '^bob@host-a$' bash -c \
        'runuser -u bob -- con status --json | jq -r "[.mesh.all_tasks[].from] | unique | join(\",\")"'
check "both complete" wait_for 20 bash -c \
        'runuser -u alice -- con tasks sysadmin@host-b | grep -Eq "^sysadmin@host-b +mesh-slow-2 +completed +alice$"'
check_output "con task ID: a remote task's status and answer" \
        'agent:  sysadmin@host-b \(another host, through the mesh\).*status: completed.*sender=alice@host-a agent=sysadmin text=slow two' \
        bash -c 'runuser -u alice -- con task mesh-slow-2 | tr "\n" " "'
check_output "con task ID --json: the result object" '^sysadmin@host-b completed$' \
        bash -c 'runuser -u alice -- con task mesh-slow-1 --json | jq -r "\"\(.agent) \(.status)\""'
check_output "con status: the remote tasks' table" '^REMOTE TASK +TO +STATE +SENDER$' con status
check_fail "... no longer lists the finished ones" grep -Eq '^mesh-slow-[12] +sysadmin@host-b' <<<"$LIB_OUT"
check_output "... the tasks between hosts show them ended (for 10 minutes)" \
        '^mesh-slow-2 +alice@host-a +sysadmin@host-b +completed ' bash -c 'con status | grep -E "^mesh-slow-2 "' 

section "host-b's policy decides: bob of host-a is not granted"
check_fail_output "con-send as bob: refused on host-b (the task fails with the reason)" \
        'Refused on host host-b: .*bob@host-a' \
        as_user bob timeout 30 con-send --timeout 25 --to sysadmin@host-b let me in
check_fail_output "alice to host-b's concierge (not granted): refused" 'Refused on host host-b' \
        as_user alice timeout 30 con-send --timeout 25 --to concierge@host-b hi
check_fail_output "an agent host-b does not have: refused" "Refused on host host-b: no agent 'nobody-here' here" \
        as_user alice timeout 30 con-send --timeout 25 --to nobody-here@host-b hi

section "a forged sender is ignored"
check_fail_output "a sender in Submit's options is refused" "Option 'from' is unknown" \
        as_user bob busctl --system call org.conspiracy.Mesh /org/conspiracy/Mesh org.conspiracy.Mesh1 Submit \
        'ssa{sv}' sysadmin@host-b "hi" 1 from s alice@host-a
check_fail_output "sender_uid (the router's, for a file's owner) is root's only" 'only root may set sender_uid' \
        as_user bob busctl --system call org.conspiracy.Mesh /org/conspiracy/Mesh org.conspiracy.Mesh1 Submit \
        'ssa{sv}' sysadmin@host-b "hi" 1 sender_uid u "$(id -u alice)"
check_output "a sender in the text is only text: the task is still bob's, and refused" \
        'Refused on host host-b: .*bob@host-a' \
        bash -c 'printf "from: alice@host-a\nsender: a-concierge@host-a\n\nhi\n" |
                 runuser -u bob -- timeout 30 con-send --timeout 25 --to sysadmin@host-b -; echo "rc=$?"'
check_output "... and exit status 1 (failed)" 'rc=1' echo "$LIB_OUT"

section "mesh identity: TLS and per-host permissions, enforced by the NATS server"
check "the test's NATS client" mesh_probe_install "$build"

section "the gateway's pull, where libnats 3.4.1's batch fetch writes past its array"
# A JetStream server of its own on loopback. 12 messages queued in the subscription by an earlier
# pull request (as one that outlived its fetch leaves them), 5 more arriving from another during
# the fetch: with a batch of 16, libnats 3.4.1's fetch returns 21 (written past its array of 16:
# docs/MULTIHOST.md, "A crash seen once"). mesh_fetch, the gateway's pull, takes one at a time.
nats-server -js -a 127.0.0.1 -p 4399 -sd "$T/js-fetch" -l "$T/nats-fetch.log" &
FETCH_NATS_PID=$!
check "a JetStream server on 127.0.0.1:4399" mesh_nats_wait 127.0.0.1 4399
check_output "12 queued and 5 arriving during the fetch: all 17 fetched, never more than the batch of 1" \
        '^fetched 17 of 17 messages \(12 queued before the first fetch\), at most 1 per fetch \(batch 1\)$' \
        timeout 60 "$MESH_PROBE" nats://127.0.0.1:4399 fetch-queued 12 5
kill "$FETCH_NATS_PID"
wait "$FETCH_NATS_PID" 2>/dev/null
A=(--ca "$T/pki/host-a/ca.crt" --cert "$T/pki/host-a/host.crt" --key "$T/pki/host-a/host.key" --inbox _INBOX.host-a)
B=(--ca "$T/pki/host-b/ca.crt" --cert "$T/pki/host-b/host.crt" --key "$T/pki/host-b/host.key" --inbox _INBOX.host-b)
check_output "host-a's certificate connects (the probe works)" '^ok$' mesh_probe "${A[@]}" tls://10.77.0.1:4222 connect
check_fail_output "a client without a certificate is refused" '^error: connect' \
        mesh_probe --ca "$T/pki/ca/ca.crt" tls://10.77.0.1:4222 connect
check_output "... the server says why" "client didn't provide a certificate" cat "$T/pki/nats.log"
check_fail_output "a plaintext client is refused (TLS required)" '^error: connect' mesh_probe nats://10.77.0.1:4222 connect
# A certificate of another CA, with a host's name: refused too.
check "another CA and a 'host-a' certificate of it" bash -c \
        "con mesh init --ca-dir '$T/rogue/ca' && con mesh issue host-a --ca-dir '$T/rogue/ca' --out '$T/rogue/host-a'"
check_fail_output "a certificate of another CA is refused" '^error: connect' \
        mesh_probe --ca "$T/pki/ca/ca.crt" --cert "$T/rogue/host-a/host.crt" --key "$T/rogue/host-a/host.key" \
        --inbox _INBOX.host-a tls://10.77.0.1:4222 connect
forged='{"v":1,"id":"forged-1","from":"alice@host-a","origin":"host-a","agent":"sysadmin","text":"forged"}'
check_fail_output "host-b's credentials cannot publish a task as host-a: the server refuses" \
        'Permissions Violation for Publish to "con.task.host-b.host-a"' \
        mesh_probe "${B[@]}" --msg-id host-a.forged-1 tls://10.77.0.1:4222 publish con.task.host-b.host-a "$forged"
check_output "... and says so in its log" 'Publish Violation - User "host-b", Subject "con.task.host-b.host-a"' \
        cat "$T/pki/nats.log"
check_fail_output "host-b's credentials cannot read host-a's inboxes (nor any other)" 'Permissions Violation for Subscription' \
        mesh_probe "${B[@]/_INBOX.host-b/_INBOX.host-a}" tls://10.77.0.1:4222 publish con.task.host-a.host-b x
# On its own subject host-b may publish; a payload naming host-a as the origin is a forgery the
# receiver (host-a's gateway) drops and audits.
forged='{"v":1,"id":"forged-2","from":"alice@host-a","origin":"host-a","agent":"concierge","text":"forged"}'
check_output "host-b's credentials may publish on host-b's own subject to host-a (the server lets it)" \
        'stored in stream con-task-host-a' \
        mesh_probe "${B[@]}" --msg-id host-b.forged-2 tls://10.77.0.1:4222 publish con.task.host-a.host-b "$forged"
check "host-a's gateway drops it: the origin is the subject's host-b, not the payload's host-a" wait_for 10 \
        grep -q 'Dropping task forged-2: it claims to come from alice@host-a but host host-b sent it' \
        /srv/con/logs/daemons/con-meshd.log
check_output "... and audits it" 'con-meshd mesh.task.forged .*task_id=forged-2 .*sender=alice@host-a .*sent_by=host-b' \
        con audit --lines 50
check_output "host-a's last 200 audit records have it" 'mesh.task.forged .*task_id=forged-2 ' con audit --lines 200
check_eq "... host-a's concierge never accepted it" 0 "$(grep -c 'task.accepted .*task_id=forged-2 ' <<<"$LIB_OUT")"
# Results likewise: host-b may answer only as host-b.
forged='{"v":1,"id":"forged-3","host":"host-c","agent":"sysadmin","from":"alice@host-a","status":"completed","text":"forged","truncated":false,"replaced":false,"size":6}'
check_output "host-b's credentials publish a result naming host-c on host-b's own subject (stored)" \
        'stored in stream con-result-host-a' \
        mesh_probe "${B[@]}" --msg-id r.host-b.forged-3 tls://10.77.0.1:4222 publish con.result.host-a.host-b "$forged"
check "host-a's gateway drops it: the answering host is the subject's host-b, not host-c" wait_for 10 \
        grep -q 'Dropping the result of task forged-3: it claims to come from host host-c but host host-b sent it' \
        /srv/con/logs/daemons/con-meshd.log
check_output "... and audits it" 'con-meshd mesh.result.forged .*task_id=forged-3 .*sent_by=host-b' con audit --lines 50
check_fail_output "a host that never joined the mesh: refused at once, nothing stored" "host host-c has not joined the mesh" \
        as_user alice timeout 20 con-send --no-wait --to sysadmin@host-c hi

section "a remote task canceled from the sending host"
check_output "alice sends a long task (--no-wait)" '^mesh-cancel-1$' \
        as_user alice con-send --no-wait --id mesh-cancel-1 --to sysadmin@host-b long-cancel-me
check "... it is working on host-b" wait_for 15 bash -c \
        'runuser -u alice -- con tasks sysadmin@host-b | grep -Eq "^sysadmin@host-b +mesh-cancel-1 +working +alice$"'
check_fail_output "bob cannot cancel it (refused by host-a's gateway)" \
        "cancel: the mesh gateway refused to cancel task mesh-cancel-1: Access denied: task 'mesh-cancel-1' is not yours" \
        as_user bob con cancel mesh-cancel-1
cancel_by_carol='{"v":1,"id":"mesh-cancel-1","agent":"sysadmin","from":"alice@host-a","by":"carol@host-a"}'
check "a cancel of it by carol@host-a, with host-a's credentials on host-a's own subject (as a bad gateway would)" \
        mesh_probe "${A[@]}" tls://10.77.0.1:4222 pub con.cancel.host-b.host-a "$cancel_by_carol"
check_fail_output "host-b's credentials cannot publish a cancel as host-a (the server refuses)" \
        'Permissions Violation for Publish to "con.cancel.host-b.host-a"' \
        mesh_probe "${B[@]}" tls://10.77.0.1:4222 pub con.cancel.host-b.host-a \
        '{"v":1,"id":"mesh-cancel-1","agent":"sysadmin","from":"alice@host-a","by":"alice@host-a"}'
check "host-b's credentials, on host-b's own subject, a cancel claiming alice@host-a" \
        mesh_probe "${B[@]}" tls://10.77.0.1:4222 pub con.cancel.host-a.host-b \
        '{"v":1,"id":"forged-4","agent":"concierge","from":"alice@host-a","by":"alice@host-a"}'
check "... host-a's gateway drops it: the subject's host-b is not the canceller's host" wait_for 10 grep -q \
        'Dropping the cancel of task forged-4: it claims to come from alice@host-a but host host-b sent it' \
        /srv/con/logs/daemons/con-meshd.log
check_output "... and audits it" 'con-meshd mesh.cancel.forged .*task_id=forged-4 .*sent_by=host-b' con audit --lines 50
sleep 2
check_output "carol's cancel changed nothing: the task is still working" \
        '^sysadmin@host-b +mesh-cancel-1 +working +alice$' as_user alice con tasks sysadmin@host-b
# "canceling" while the result is on its way; "canceled" when it came back before con cancel asked
# for the state (a few ms on this loopback: seen once under load).
check_output "alice: con cancel ID (a task sent to another host)" \
        '^Task mesh-cancel-1 on agent sysadmin@host-b: cancel(ing|ed)' as_user alice con cancel mesh-cancel-1
check "... the cancel is in the task's record (on disk before con cancel answered: a restart sends it again)" \
        grep -q '"id":"mesh-cancel-1",.*"cancel":"alice@host-a"' /srv/con/mesh/sent/journal
check "... it ends canceled: its result came back" wait_for 15 bash -c \
        "runuser -u alice -- busctl --system call org.conspiracy.Mesh /org/conspiracy/Mesh org.conspiracy.Mesh1 GetResult s mesh-cancel-1 | grep -q '\"canceled\"'"
check_output "... con tasks shows it" '^sysadmin@host-b +mesh-cancel-1 +canceled +alice$' \
        as_user alice con tasks sysadmin@host-b
check_output "con cancel again: it ended, nothing to do (its state)" \
        '^Task mesh-cancel-1 on agent sysadmin@host-b: canceled$' as_user alice con cancel mesh-cancel-1
check_fail_output "con cancel of an id nobody knows (no agent, not the mesh)" \
        "cancel: no agent knows a task 'mesh-no-such'" as_user alice con cancel mesh-no-such
check_output "root of host-a may cancel alice's remote task" '^mesh-cancel-2$' \
        as_user alice con-send --no-wait --id mesh-cancel-2 --to sysadmin@host-b long-cancel-me
check "... once it is accepted there" wait_for 15 bash -c \
        'runuser -u alice -- con tasks sysadmin@host-b | grep -Eq "^sysadmin@host-b +mesh-cancel-2 +(accepted|working) +alice$"'
check_output "... con cancel as root" '^Task mesh-cancel-2 on agent sysadmin@host-b: cancel(ing|ed)' con cancel mesh-cancel-2
check "... it ends canceled" wait_for 15 bash -c \
        "runuser -u alice -- busctl --system call org.conspiracy.Mesh /org/conspiracy/Mesh org.conspiracy.Mesh1 GetResult s mesh-cancel-2 | grep -q '\"canceled\"'"
# One id, two tasks: bob's here and alice's on host-b. Group con holds the policy's cancel grant on
# the concierge (host-a's con.yaml), so the concierge would let alice cancel bob's task: con cancel
# must take alice's own, and reach bob's only with --agent.
check_output "bob: a local task mesh-cancel-own" '^pong$' as_user bob con-send --id mesh-cancel-own /ping
check_output "alice: a remote task mesh-cancel-own" '^mesh-cancel-own$' \
        as_user alice con-send --no-wait --id mesh-cancel-own --to sysadmin@host-b long-cancel-me
check "... once it is accepted there" wait_for 15 bash -c \
        'runuser -u alice -- con tasks sysadmin@host-b | grep -Eq "^sysadmin@host-b +mesh-cancel-own +(accepted|working) +alice$"'
check_output "alice: con cancel mesh-cancel-own cancels her own (remote), not bob's (local)" \
        '^Task mesh-cancel-own on agent sysadmin@host-b: cancel(ing|ed)' as_user alice con cancel mesh-cancel-own
check "... it ends canceled" wait_for 15 bash -c \
        "runuser -u alice -- busctl --system call org.conspiracy.Mesh /org/conspiracy/Mesh org.conspiracy.Mesh1 GetResult s mesh-cancel-own | grep -q '\"canceled\"'"
check_output "alice: con cancel mesh-cancel-own --agent concierge reaches bob's (the grant)" \
        '^Asked concierge to cancel task mesh-cancel-own\.$' as_user alice con cancel mesh-cancel-own --agent concierge
check_output "... bob's task had ended: it stays completed" '^status: completed$' \
        con task mesh-cancel-own --agent concierge

section "a flood from host-b: host-a's gateway stays responsive, its memory and audit log bounded"
# Cancels are plain NATS messages (no stream limits them): host-b's certificate may publish as many
# as it likes on its own subject con.cancel.host-a.host-b (docs/MULTIHOST.md, "Floods").
gw_a=$(bus_owner_pid org.conspiracy.Mesh)
rss_a() { awk '/^VmRSS:/ { print $2 }' "/proc/$gw_a/status"; }
forged_cancels() { grep -c '"event":"mesh.cancel.forged".*"task_id":"flood-' /srv/con/logs/audit/audit.jsonl; }
# get_result_ms: how long host-a's gateway takes to answer alice's GetResult (its loop's answer).
get_result_ms() {
        local t0 t1
        t0=$(date +%s%N)
        runuser -u alice -- timeout 10 busctl --system call org.conspiracy.Mesh /org/conspiracy/Mesh \
                org.conspiracy.Mesh1 GetResult s mesh-cancel-1 >/dev/null || return 1
        t1=$(date +%s%N)
        echo $(((t1 - t0) / 1000000))
}
rss0=$(rss_a)
audits0=$(forged_cancels)
forged='{"v":1,"id":"flood-1","agent":"concierge","from":"alice@host-a","by":"alice@host-a"}'
mesh_probe "${B[@]}" --count 50000 tls://10.77.0.1:4222 pub con.cancel.host-a.host-b "$forged" >"$T/flood.out" 2>&1 &
flood_pid=$!
slowest=0
for _ in 1 2 3 4 5; do
        sleep 0.2
        ms=$(get_result_ms) || ms=99999
        [ "$ms" -gt "$slowest" ] && slowest=$ms
done
wait "$flood_pid"
check_output "host-b sent 50000 forged cancels" '^sent 50000 messages' cat "$T/flood.out"
echo "# GetResult during the flood: slowest of 5 answers ${slowest} ms"
check "... GetResult answered during the flood, each within 2 s (slowest ${slowest} ms)" test "$slowest" -lt 2000
check_output "... and con mesh status (its worker's answer) after it" 'connected to' timeout 5 con mesh status
check_output "host-b sends 200 cancels of 100 kB (larger than any cancel)" '^sent 200 messages of 1000[0-9]{2} bytes' \
        mesh_probe "${B[@]}" --count 200 --pad 100000 tls://10.77.0.1:4222 pub con.cancel.host-a.host-b "$forged"
big_state='{"v":1,"id":"flood-2","host":"host-b","agent":"sysadmin","from":"alice@host-b","state":"accepted"}'
check_fail_output "... a state event of 2 kB: con-state refuses it (its largest message is 1 KiB)" \
        'message size exceeds maximum allowed' \
        mesh_probe "${B[@]}" --pad 2000 tls://10.77.0.1:4222 publish con.state.host-b.host-b.flood-2 "$big_state"
# A con-state without that limit (made before it, not yet changed by con mesh streams): the
# gateways drop the large event unread.
ADMIN=(--ca "$T/pki/ca/ca.crt" --cert "$T/pki/ca/admin.crt" --key "$T/pki/ca/admin.key" --inbox _INBOX._admin)
check_output "... the administrator removes con-state's byte limits (a con-state of before)" '"max_msg_size":-1' \
        mesh_probe "${ADMIN[@]}" tls://10.77.0.1:4222 request '$JS.API.STREAM.UPDATE.con-state' \
        '{"name":"con-state","subjects":["con.state.*.*.*"],"retention":"limits","max_msgs":40000,"max_age":604800000000000,"max_msgs_per_subject":1,"discard":"old","storage":"file"}'
check_output "... then it is stored" 'stored in stream con-state' \
        mesh_probe "${B[@]}" --pad 2000 tls://10.77.0.1:4222 publish con.state.host-b.host-b.flood-2 "$big_state"
check_output "... con mesh streams puts the limits back" '^con-state: changed' mesh_streams "$T/pki" tls://10.77.0.1:4222
ms=$(get_result_ms) || ms=99999
check "... still answers at once (${ms} ms)" test "$ms" -lt 2000
rss1=$(rss_a)
audits1=$(forged_cancels)
echo "# host-a's gateway: VmRSS ${rss0} kB before the flood, ${rss1} kB after; $((audits1 - audits0)) forged-cancel audit records"
if grep -q libasan "/proc/$gw_a/maps"; then
        # AddressSanitizer keeps freed memory in its quarantine (up to 256 MiB): the RSS of an ASan
        # build grows with what it freed, about 95 MB here. The queue's bound shows in the count
        # of cancels dropped while 256 waited (below).
        echo "# not compared: an AddressSanitizer build (its quarantine holds what was freed)"
else
        check "... its memory grew by less than 32 MiB (${rss0} -> ${rss1} kB; 20 MB of large cancels and 50000 small ones sent)" \
                test $((rss1 - rss0)) -lt 32768
fi
check "... at most 10 audit records of the 50000 forged cancels (the per-host budget; the rest counted)" \
        test $((audits1 - audits0)) -ge 1 -a $((audits1 - audits0)) -le 10
check "... and at most 10 log lines" test "$(grep -c 'Dropping the cancel of task flood-1' /srv/con/logs/daemons/con-meshd.log)" -le 10
# The counts come once the budget's interval (10 s) has ended: checked below, after host-b's gateway
# is down and back.

section "host-b's gateway down: the task waits in JetStream"
touch "$SHARED/pause"
check "host-b's gateway stopped" wait_for 15 test -e "$SHARED/paused"
check_output "con-send --no-wait: accepted while host-b is away (JetStream has it)" '^mesh-wait-1$' \
        as_user alice timeout 20 con-send --no-wait --id mesh-wait-1 --to sysadmin@host-b while you were away
sleep 1
check_output "... still submitted: nobody took it" '^ss "submitted" ""$' result_of alice mesh-wait-1
check_output "con mesh status: the task waits in host-b's stream (depth 1), its lag counted" \
        '^1 [0-9]+ true$' bash -c 'con mesh status --json |
                jq -r ".hosts[] | select(.host == \"host-b\") | \"\(.tasks.messages) \(.tasks.lag_sec) \(.tasks.oldest != null)\""'
check_output "... and in the table" '^host-b +yes +1 +[0-9]+s ' con mesh status
# State events: an anonymous client (NATS protocol by hand: CONNECT, PUB, PING/PONG) cannot publish
# at all (the server requires TLS and a certificate); host-b's certificate may publish only on
# con.state.*.host-b.*, and a payload there naming another host than the subject's is dropped.
# forge_state exits 0 when the server answered PONG (took the PUB), 1 when it did not, 2 when it
# could not be reached or did not greet with INFO (so the refusal below is the server's).
forge_state() ( # SUBJECT PAYLOAD (a subshell; a write after the server closed fails, no SIGPIPE)
        trap '' PIPE
        exec 3<>/dev/tcp/10.77.0.1/4222 || exit 2
        read -r -t 5 info <&3
        [[ $info == INFO* ]] || exit 2
        printf 'CONNECT {"verbose":false}\r\nPUB %s %d\r\n%s\r\nPING\r\n' "$1" "${#2}" "$2" >&3
        read -r -t 5 pong <&3
        exec 3<&-
        [[ $pong == PONG* ]]
)
check_status "an anonymous plaintext client cannot publish a state event (TLS required)" 1 forge_state \
        con.state.host-a.host-c.mesh-wait-1 \
        '{"v":1,"id":"mesh-wait-1","host":"host-c","agent":"sysadmin","from":"alice@host-a","state":"working"}'
check_fail_output "host-b's certificate cannot publish a state event as host-c (the server refuses)" \
        'Permissions Violation for Publish to "con.state.host-a.host-c.mesh-wait-1"' mesh_probe "${B[@]}" \
        tls://10.77.0.1:4222 pub con.state.host-a.host-c.mesh-wait-1 \
        '{"v":1,"id":"mesh-wait-1","host":"host-c","agent":"sysadmin","from":"alice@host-a","state":"working"}'
check "a forged state event for mesh-wait-1 (payload host-c, published with host-b's certificate)" \
        mesh_probe "${B[@]}" tls://10.77.0.1:4222 pub con.state.host-a.host-b.mesh-wait-1 \
        '{"v":1,"id":"mesh-wait-1","host":"host-c","agent":"sysadmin","from":"alice@host-a","state":"working"}'
check "... is dropped by host-a's gateway" wait_for 5 grep -q \
        'Dropping a state event of task mesh-wait-1 (alice@host-a to sysadmin@host-c, working): its publisher is neither the task.s origin nor the host that runs it; it came on con.state.host-a.host-b.mesh-wait-1' \
        /srv/con/logs/daemons/con-meshd.log
check_output "... and audited" 'con-meshd mesh.state.forged .*task_id=mesh-wait-1 .*sent_by=host-b' con audit --lines 50
check_fail "... not in the mesh-wide table (root's con mesh status --json)" bash -c \
        'con mesh status --json | jq -r ".tasks[] | select(.task_id == \"mesh-wait-1\") | .to" | grep -q host-c' 
check_output "... the task is still submitted" '^sysadmin@host-b +mesh-wait-1 +submitted +alice$' \
        as_user alice con tasks sysadmin@host-b
# A result must be its task's sender's: one naming bob@host-a for alice's mesh-wait-1 (ids are
# guessable; after a restart bob could have sent one again) never lands in alice's entry.
forged='{"v":1,"id":"mesh-wait-1","host":"host-b","agent":"sysadmin","from":"bob@host-a","status":"completed","text":"for bob","truncated":false,"replaced":false,"size":7}'
check_output "a result of mesh-wait-1 for bob@host-a, from host-b's own subject (stored)" \
        'stored in stream con-result-host-a' \
        mesh_probe "${B[@]}" --msg-id r.host-b.mesh-wait-1-bob tls://10.77.0.1:4222 publish con.result.host-a.host-b "$forged"
check "... is dropped by host-a's gateway: alice sent mesh-wait-1, not bob" wait_for 10 grep -q \
        'Dropping result of task mesh-wait-1 for bob@host-a from sysadmin@host-b: the task went to sysadmin@host-b from alice@host-a' \
        /srv/con/logs/daemons/con-meshd.log
check_output "... alice's task is still submitted" '^ss "submitted" ""$' result_of alice mesh-wait-1
# One sending host's share of host-b's task stream (docs/MULTIHOST.md, "Floods"): the administrator
# allows 2 tasks per sending host; with mesh-wait-1 waiting, alice's second is stored, her third
# refused (the limit and the command named; nothing kept, so the same id may be sent again), and
# host-c's task still stored in host-b's stream: host-a's full share takes nothing from host-c.
C=(--ca "$T/pki/host-c/ca.crt" --cert "$T/pki/host-c/host.crt" --key "$T/pki/host-c/host.key" --inbox _INBOX.host-c)
check_output "the administrator allows 2 tasks per sending host (con mesh streams --max-per-host 2)" \
        'con-task-host-b: changed to the mesh.s settings' mesh_streams "$T/pki" tls://10.77.0.1:4222 --max-per-host 2
check_output "alice's second task for host-b while it is away: stored" '^mesh-full-1$' \
        as_user alice timeout 20 con-send --no-wait --id mesh-full-1 --to sysadmin@host-b second while you were away
check_fail_output "... her third: refused at once, naming the limit and the command that raises it" \
        'The mesh cannot take the task: stream con-task-host-b is full for tasks sent from host-a \(maximum messages per subject exceeded: at most 2 tasks of one sending host wait there until host-b.s gateway takes them\); nothing was stored. The mesh.s administrator raises the limit with con mesh streams --max-per-host N \(mesh.stream_max_per_host\) on the CA.s host' \
        as_user alice timeout 20 con-send --no-wait --id mesh-full-2 --to sysadmin@host-b third while you were away
check_output "... (con-send's exit status: unavailable, try later)" '^rc=5$' \
        bash -c "runuser -u alice -- con-send --no-wait --id mesh-full-2 --to sysadmin@host-b third >/dev/null 2>&1; echo rc=\$?"
check_fail_output "... nothing kept of it" 'The mesh knows no task .mesh-full-2. sent from here' result_of alice mesh-full-2
check_output "host-c's task for host-b meanwhile: stored by JetStream in host-b's stream (its own share)" \
        'stored in stream con-task-host-b seq [0-9]+$' \
        mesh_probe "${C[@]}" --msg-id host-c.full-c-1 tls://10.77.0.1:4222 publish con.task.host-b.host-c \
        '{"v":1,"id":"full-c-1","from":"carol@host-a","origin":"host-a","agent":"sysadmin","text":"host-c claims host-a"}'
check_output "con mesh status: host-b's stream holds the 3 stored tasks" '^3$' bash -c \
        'con mesh status --json | jq -r ".hosts[] | select(.host == \"host-b\") | .tasks.messages"'
check_output "the administrator puts the default back (con mesh streams)" 'con-task-host-b: changed to the mesh.s settings' \
        mesh_streams "$T/pki" tls://10.77.0.1:4222
check_output "... alice sends her third again under its id: stored now" '^mesh-full-2$' \
        as_user alice timeout 20 con-send --no-wait --id mesh-full-2 --to sysadmin@host-b third while you were away
touch "$SHARED/resume"
check "host-b's gateway is back (con up)" wait_for 20 test -e "$SHARED/resumed"
# Within 10 s: a task the stopping gateway fetched but never handled is given back (nak), not left
# to the 30 s ack wait.
check "the waiting task is delivered and answered (within 10 s)" wait_for 10 bash -c \
        "runuser -u alice -- busctl --system call org.conspiracy.Mesh /org/conspiracy/Mesh org.conspiracy.Mesh1 GetResult s mesh-wait-1 | grep -q completed"
check_output "... by host-b's sysadmin, exactly once" 'text=while you were away' result_of alice mesh-wait-1
for id in mesh-full-1 mesh-full-2; do
        check "... and alice's $id too" wait_for 15 bash -c \
                "runuser -u alice -- busctl --system call org.conspiracy.Mesh /org/conspiracy/Mesh org.conspiracy.Mesh1 GetResult s $id | grep -q completed"
done
check_output "con mesh status: host-b's stream is empty again" '^0$' bash -c \
        'con mesh status --json | jq -r ".hosts[] | select(.host == \"host-b\") | .tasks.messages"'

section "host-b's flood, counted: nothing dropped without a count"
# flood_sum REGEX: the sum of the first number of every line of host-a's gateway log matching REGEX.
flood_sum() {
        grep -oE "$1" /srv/con/logs/daemons/con-meshd.log | awk '{ n += $1 } END { print n + 0 }'
}
# Each of the 50000 forged cancels was dropped because 256 waited already, or audited (within the
# budget), or counted in a mesh.flood record; every large cancel and the large state event dropped
# unread, and counted.
flood_accounted() {
        local queued audited counted
        queued=$(flood_sum '[0-9]+ cancels \(256 were waiting')
        audited=$(($(forged_cancels) - audits0))
        counted=$(grep '"event":"mesh.flood".*"sent_by":"host-b","kind":"cancel"' /srv/con/logs/audit/audit.jsonl |
                grep -oE '"count":[0-9]+' | awk -F: '{ n += $2 } END { print n + 0 }')
        echo "dropped $queued, audited $audited, counted $counted"
        [ $((queued + audited + counted)) = 50000 ]
}
check "host-b's forged cancels: each dropped (a full queue), audited or counted in a mesh.flood record" \
        wait_for 15 flood_accounted
echo "# $(flood_accounted)"
check_output "... the large cancels, all 200 dropped unread" '^200$' flood_sum '[0-9]+ cancels and'
check_output "... the large state event dropped unread" '^1$' flood_sum '[0-9]+ state events larger than 1024 bytes'
check "... the mesh.flood record's log line" grep -q 'Host host-b sent [0-9]* more forged, refused or malformed cancel' \
        /srv/con/logs/daemons/con-meshd.log

section "host-a's gateway down: a to: file waits in the inbox, the inbox's other files do not"
mesh_pid_a() { bus_owner_pid org.conspiracy.Mesh; }
pid=$(mesh_pid_a)
check "host-a's gateway stopped (by its pid)" bash -c "kill $pid && for _ in \$(seq 100); do kill -0 $pid 2>/dev/null || exit 0; sleep 0.1; done; exit 1"
check "alice drops a to: file while host-a has no gateway" as_user alice bash -c \
        'printf -- "---\nto: sysadmin@host-b\n---\nafter the outage\n" >/srv/con/inbox/.mesh-file-4 &&
         mv /srv/con/inbox/.mesh-file-4 /srv/con/inbox/mesh-file-4.task'
check "the router keeps it for the next rescan" wait_for 10 grep -q \
        'The mesh gateway cannot take /srv/con/inbox/mesh-file-4.task for sysadmin@host-b now' \
        /srv/con/logs/daemons/con-routerd.log
check "a local file in the same inbox still goes to the concierge at once (no backoff)" bash -c \
        'echo "local while the mesh is away" >/srv/con/inbox/.local-1 && mv /srv/con/inbox/.local-1 /srv/con/inbox/local-1.task &&
         for _ in $(seq 100); do [ -e /srv/con/inbox/local-1.task ] || exit 0; sleep 0.1; done; exit 1'
check "... while the to: file is still there" test -e /srv/con/inbox/mesh-file-4.task
check_file_lacks "... and the router never backed off the concierge for it" \
        'Agent concierge is not available' /srv/con/logs/daemons/con-routerd.log
check_output "con up starts host-a's gateway again" 'mesh: started as host host-a' con up
check "the rescan hands the file over (within 35 s) and its answer comes back" wait_for 45 \
        test -e /srv/con/mesh/outbox/mesh-file-4.response
check_output "... host-b's answer to alice" '^sender=alice@host-a agent=sysadmin text=after the outage$' \
        as_user alice cat /srv/con/mesh/outbox/mesh-file-4.response
check_output "host-a's gateway log has both of its runs (the stopped one's exit included)" '^2$' \
        grep -c 'Ready: Serving the mesh' /srv/con/logs/daemons/con-meshd.log
check_file_lacks "no sanitizer report from host-a's gateway (stopped with tasks, state events and status asked)" \
        'AddressSanitizer|LeakSanitizer|runtime error' /srv/con/logs/daemons/con-meshd.log

section "host-a's gateway restarted: its table of sent tasks survives (the journal /srv/con/mesh/sent/journal)"
stat_is "the gateway's state folder is con-mesh's alone" /srv/con/mesh/sent "con-mesh:con-mesh 700"
stat_is "... and so is the journal of records" /srv/con/mesh/sent/journal "con-mesh:con-mesh 600"
check "... which holds the records (one line each)" grep -q '"op":"put","id":"mesh-slow-2",' /srv/con/mesh/sent/journal
check_fail_output "host-a's agent cannot list the records" 'Permission denied' runuser -u a-concierge -- ls /srv/con/mesh/sent
check_fail_output "... nor read them" 'Permission denied' runuser -u a-concierge -- cat /srv/con/mesh/sent/journal
check_fail_output "... nor plant one" 'Permission denied' \
        runuser -u a-concierge -- sh -c 'echo x >>/srv/con/mesh/sent/journal'
check_fail_output "... nor can alice read hers" 'Permission denied' as_user alice cat /srv/con/mesh/sent/journal
cp /srv/con/mesh/sent/journal "$T/journal-before"
check_fail_output "a second con-meshd beside the running one is refused (the journal's one writer)" \
        'Another con-meshd holds /srv/con/mesh/sent/journal \(one gateway per host\): stop it first' \
        runuser -u con-mesh -- timeout 30 /usr/libexec/conspiracyos/con-meshd
check "... and the journal is as it was" cmp /srv/con/mesh/sent/journal "$T/journal-before"
check "... and the running gateway is still connected" bash -c 'busctl --system get-property org.conspiracy.Mesh \
        /org/conspiracy/Mesh org.conspiracy.Mesh1 Connected | grep -qx "b true"'
check_output "a task read and acknowledged before the restart: con task still shows it and its answer" \
        'agent:  sysadmin@host-b .*status: completed.*sender=alice@host-a agent=sysadmin text=slow two' \
        bash -c 'runuser -u alice -- con task mesh-slow-2 | tr "\n" " "'
check_output "... and con tasks" '^sysadmin@host-b +mesh-test-1 +completed +alice$' as_user alice con tasks sysadmin@host-b
check_output "... GetResult too" 'completed.*text=by busctl' result_of alice mesh-test-1
check_fail_output "... still alice's only" 'AccessDenied|not yours' result_of bob mesh-test-1
check_fail_output "... and bob still cannot take her id" 'already used by another sender' \
        as_user bob busctl --system call org.conspiracy.Mesh /org/conspiracy/Mesh org.conspiracy.Mesh1 Submit \
        'ssa{sv}' sysadmin@host-b "mine" 1 id s mesh-test-1
# restart_gateway_a [COMMAND...]: COMMAND runs while the gateway is stopped.
restart_gateway_a() {
        local pid
        pid=$(mesh_pid_a)
        [ -n "$pid" ] && kill "$pid" || return 1
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        ! kill -0 "$pid" 2>/dev/null || return 1
        if [ $# -gt 0 ]; then "$@" || return 1; fi
        con up >/dev/null &&
                wait_for 15 bash -c 'busctl --system get-property org.conspiracy.Mesh /org/conspiracy/Mesh \
                        org.conspiracy.Mesh1 Connected | grep -qx "b true"'
}
check_output "a slow task sent (--no-wait)" '^mesh-keep-1$' \
        as_user alice con-send --no-wait --id mesh-keep-1 --to sysadmin@host-b slower keep
check "... working on host-b" wait_for 10 bash -c \
        'runuser -u alice -- con tasks sysadmin@host-b | grep -Eq "^sysadmin@host-b +mesh-keep-1 +working +alice$"'
check_output "a long task sent, to be canceled across the restart" '^mesh-cancel-3$' \
        as_user alice con-send --no-wait --id mesh-cancel-3 --to sysadmin@host-b long-cancel-me
check "... stored in host-a's journal" wait_for 10 grep -q '"op":"put","id":"mesh-cancel-3",.*"stored":true' /srv/con/mesh/sent/journal
# While the gateway is stopped: its journal gets a cancel of mesh-cancel-3 (as Cancel writes it, never
# sent yet: as a crash right after Cancel answered leaves it), then half a record (a crash in the
# middle of a write). The restarted gateway must cut the torn record off and send the cancel.
plant_cancel_and_torn() {
        local rec
        rec=$(grep '"op":"put","id":"mesh-cancel-3",' /srv/con/mesh/sent/journal | tail -n 1) && [ -n "$rec" ] &&
                printf '%s\n{"v":1,"op":"forget","id":"mesh-keep-1"' \
                        "${rec/\"op\":\"put\",/\"op\":\"put\",\"cancel\":\"alice@host-a\",}" >>/srv/con/mesh/sent/journal
}
check "host-a's gateway restarted while it runs (a cancel and a torn record left in its journal)" \
        restart_gateway_a plant_cancel_and_torn
check_output "... the torn record was cut off" 'cut off a torn last record' cat /srv/con/logs/daemons/con-meshd.log
check_output "... the cancel asked before the restart is sent again" \
        "1 cancel\(s\) asked before the restart: sent again until their result is back" \
        cat /srv/con/logs/daemons/con-meshd.log
check_output "con tasks still lists it, not yet answered (working, from its record)" \
        '^sysadmin@host-b +mesh-keep-1 +working +alice$' as_user alice con tasks sysadmin@host-b
check_output "... GetResult: working, no text yet" '^ss "working" ""$' result_of alice mesh-keep-1
check "its result arrives after the restart" wait_for 20 bash -c \
        'runuser -u alice -- con tasks sysadmin@host-b | grep -Eq "^sysadmin@host-b +mesh-keep-1 +completed +alice$"'
check_output "... and mesh-cancel-3 ends canceled (the cancel came from the journal)" \
        '^sysadmin@host-b +mesh-cancel-3 +canceled +alice$' \
        bash -c 'for _ in $(seq 150); do runuser -u alice -- con tasks sysadmin@host-b | grep -E " mesh-cancel-3 +canceled " && exit 0; sleep 0.1; done; exit 1'
# A record written before Submit answered, of a task JetStream never acknowledged (the gateway
# stopped in between), as such a crash leaves it: its sender had no answer and sends it again. It is
# an earlier version's record file (one per task): the upgraded gateway moves it into its journal.
check "an earlier version's record file of a task never acknowledged (no \"stored\"), as a crash before the publish leaves it" bash -c \
        'printf "{\"v\":1,\"id\":\"mesh-keep-3\",\"agent\":\"sysadmin\",\"host\":\"host-b\",\"uid\":%s,\"sender\":\"alice\",\"state\":\"submitted\",\"ts\":%s}\n" \
                "$(id -u alice)" "$(date +%s)000000" >/tmp/mesh-keep-3.tmp &&
         install -o con-mesh -g con-mesh -m 0600 /tmp/mesh-keep-3.tmp /srv/con/mesh/sent/mesh-keep-3.sent && rm /tmp/mesh-keep-3.tmp'
check "host-a's gateway restarted after the result" restart_gateway_a
check "... it moved the record file into its journal" bash -c '! test -e /srv/con/mesh/sent/mesh-keep-3.sent &&
        grep -q "\"op\":\"put\",\"id\":\"mesh-keep-3\"," /srv/con/mesh/sent/journal &&
        grep -q "Moved 1 record file(s) of an earlier version into" /srv/con/logs/daemons/con-meshd.log'
check_output "the unacknowledged task is listed (submitted)" '^sysadmin@host-b +mesh-keep-3 +submitted +alice$' \
        as_user alice con tasks sysadmin@host-b
check_output "... sent again under its id, it really goes (and is answered)" \
        '^sender=alice@host-a agent=sysadmin text=sent again$' \
        as_user alice timeout 30 con-send --timeout 25 --id mesh-keep-3 --to sysadmin@host-b sent again
check_output "con task ID: completed, with its answer" \
        'status: completed.*sender=alice@host-a agent=sysadmin text=slower keep' \
        bash -c 'runuser -u alice -- con task mesh-keep-1 | tr "\n" " "'
check_output "con tasks: completed" '^sysadmin@host-b +mesh-keep-1 +completed +alice$' \
        as_user alice con tasks sysadmin@host-b
check_output "... once: no second TaskCompleted after a restart (the result is known already)" '^1$' \
        grep -c 'Task mesh-keep-1 for sysadmin@host-b ended completed' /srv/con/logs/daemons/con-meshd.log

section "a result for a full result stream: sent again until stored, never lost"
# hostb_log_has PATTERN: host-b's gateway log, copied now by host-b's loop, matches.
hostb_log_has() {
        rm -f "$SHARED/meshd-now.log"
        touch "$SHARED/log-please"
        for _ in $(seq 50); do [ -e "$SHARED/meshd-now.log" ] && break; sleep 0.1; done
        grep -Eq -- "$1" "$SHARED/meshd-now.log" 2>/dev/null
}
# While host-a's gateway is stopped, host-b's certificate stores a message in con-result-host-a
# (not a result: host-a's gateway drops it later), filling host-b's share (1); alice's slower task
# ends on host-b meanwhile: its result is refused, logged, and sent again every second.
fill_results() {
        mesh_probe "${B[@]}" --msg-id r.host-b.filler tls://10.77.0.1:4222 publish con.result.host-a.host-b filler |
                grep -q 'stored in stream con-result-host-a' &&
                wait_for 40 hostb_log_has 'result of task mesh-rfull-1.*stream con-result-host-a is full for results sent from host-b \(maximum messages per subject exceeded: at most 1 results of one sending host wait there until host-a.s gateway takes them\)'
}
check_output "the administrator allows 1 result per sending host (con mesh streams --max-per-host 1)" \
        'con-result-host-a: changed to the mesh.s settings' mesh_streams "$T/pki" tls://10.77.0.1:4222 --max-per-host 1
check_output "alice sends host-b a slower task" '^mesh-rfull-1$' \
        as_user alice timeout 20 con-send --no-wait --id mesh-rfull-1 --to sysadmin@host-b slower: answered into a full stream
check "host-a's gateway stopped, host-b's share of con-result-host-a filled, host-b's gateway logs its result refused and sends it again; host-a's gateway started" \
        restart_gateway_a fill_results
check "alice's task completes: host-a's gateway took the filler, and the result sent again was stored" wait_for 15 bash -c \
        "runuser -u alice -- busctl --system call org.conspiracy.Mesh /org/conspiracy/Mesh org.conspiracy.Mesh1 GetResult s mesh-rfull-1 | grep -q completed"
check_output "... with host-b's answer" 'text=slower: answered into a full stream' result_of alice mesh-rfull-1
check_output "host-a's gateway, started while its streams allow 1 per sending host, warned and served them (other limits)" \
        'warning: stream con-task-host-a has max age .*stream con-result-host-a has max age 604800 s, 1 replica\(s\), duplicate window 600 s and other limits \(no max messages, max messages per subject 1, max bytes 134217728, max message size 2101248, discard new per subject\), not 604800 s and 1 replica\(s\) \(mesh.retention, mesh.replicas\) and the limits no max messages, max messages per subject 10000, max bytes 134217728, max message size 2101248, discard new per subject \(mesh.stream_max_bytes, mesh.stream_max_per_host\): the mesh.s administrator sets them with con mesh streams' \
        cat /srv/con/logs/daemons/con-meshd.log
check "host-a's gateway dropped the filler" grep -q 'Dropping a malformed result message on con.result.host-a.host-b' \
        /srv/con/logs/daemons/con-meshd.log
check_output "the administrator puts the default back (con mesh streams)" 'con-result-host-a: changed to the mesh.s settings' \
        mesh_streams "$T/pki" tls://10.77.0.1:4222
section "a result lost on the way: the sending gateway asks for it again (mesh.result_wait)"
# JetStream once lost a stored result (docs/MULTIHOST.md, "A result lost on the way"). Here the
# result really goes: host-a's gateway is frozen (SIGSTOP) while the task ends on host-b, and the
# result host-b stored in con-result-host-a is taken from there (host-a's own credentials, its
# gateway's consumer) before the gateway wakes. It sees the task's final state event in con-state,
# waits mesh.result_wait (3 s here) and asks host-b, which sends the result again.
check "host-a's gateway restarted with mesh.result_wait: 3s" \
        restart_gateway_a bash -c 'printf "  result_wait: 3s\n" >>/etc/con/con.yaml'
ADM=(--ca "$T/pki/ca/ca.crt" --cert "$T/pki/ca/admin.crt" --key "$T/pki/ca/admin.key" --inbox _INBOX._admin)
# lose_result ID: with host-a's gateway frozen, waits for ID's result in con-result-host-a and takes it
# (fetched and acknowledged with the gateway's consumer: gone from the work queue, never delivered).
lose_result() {
        local out
        out=$(mesh_probe "${A[@]}" tls://10.77.0.1:4222 next con-result-host-a 'con.result.host-a.*' 25) || return 1
        echo "$out" | head -c 300
        grep -q "^con.result.host-a.host-b .*\"id\":\"$1\"" <<<"$out"
}
results_stored_a() {
        mesh_probe "${ADM[@]}" tls://10.77.0.1:4222 request '$JS.API.STREAM.INFO.con-result-host-a' '' |
                sed -n 's/.*"state":{"messages":\([0-9]*\),.*/\1/p'
}
check_output "a slow task sent (--no-wait)" '^mesh-lost-1$' \
        as_user alice con-send --no-wait --id mesh-lost-1 --to sysadmin@host-b slower lost
check "... working on host-b" wait_for 10 bash -c \
        'runuser -u alice -- con tasks sysadmin@host-b | grep -Eq "^sysadmin@host-b +mesh-lost-1 +working +alice$"'
pid=$(mesh_pid_a)
check "host-a's gateway frozen (SIGSTOP)" kill -STOP "$pid"
check_output "host-b stores the result in con-result-host-a; it is taken from there before host-a's gateway can fetch it" \
        '"id":"mesh-lost-1"' lose_result mesh-lost-1
check_output "... con-result-host-a holds nothing now (the administrator's stream info)" '^0$' results_stored_a
check "host-a's gateway resumes (SIGCONT)" kill -CONT "$pid"
check "the result arrives all the same: con tasks shows mesh-lost-1 completed" wait_for 30 bash -c \
        'runuser -u alice -- con tasks sysadmin@host-b | grep -Eq "^sysadmin@host-b +mesh-lost-1 +completed +alice$"'
check_output "... with host-b's answer" 'completed.*sender=alice@host-a agent=sysadmin text=slower lost' \
        result_of alice mesh-lost-1
check_output "host-a's gateway asked host-b for it, once the wait was over" \
        'Task mesh-lost-1 for sysadmin@host-b ended there [0-9.]+ s ago, but its result has not come: asking host-b to send it again \(request 1;' \
        cat /srv/con/logs/daemons/con-meshd.log
check_output "... and logged that it came" 'Task mesh-lost-1: its result came after 1 request\(s\) to host-b to send it again' \
        cat /srv/con/logs/daemons/con-meshd.log
check_output "... audited the request once (mesh.result.asked)" \
        '^1$' bash -c "con audit --lines 400 | grep -c 'con-meshd mesh.result.asked .*task_id=mesh-lost-1 .*sender=alice@host-a .*host=host-b'"
check_eq "the task completed exactly once for its sender (one TaskCompleted)" 1 \
        "$(grep -c 'Task mesh-lost-1 for sysadmin@host-b ended completed' /srv/con/logs/daemons/con-meshd.log)"
asks_lost_1() { grep -c 'Task mesh-lost-1 for sysadmin@host-b ended there' /srv/con/logs/daemons/con-meshd.log; }
n_asks=$(asks_lost_1)
sleep 7
check_eq "... and no more requests once it came (none in the next 7 s, the backoff's next being 6 s)" "$n_asks" "$(asks_lost_1)"
check_output "carol@host-a asking host-b for alice's result under its id: nothing sent (refused on host-b)" '^ok$' \
        mesh_probe "${A[@]}" tls://10.77.0.1:4222 pub con.cancel.host-b.host-a \
        '{"v":1,"id":"mesh-lost-1","agent":"sysadmin","from":"carol@host-a","by":"carol@host-a","resend":true}'
# The same across a restart: the restarted gateway knows from its journal that the task has no
# result, and from con-state (read again) that it ended on host-b.
check_output "a second slow task sent" '^mesh-lost-2$' \
        as_user alice con-send --no-wait --id mesh-lost-2 --to sysadmin@host-b slower lost again
check "... working on host-b" wait_for 10 bash -c \
        'runuser -u alice -- con tasks sysadmin@host-b | grep -Eq "^sysadmin@host-b +mesh-lost-2 +working +alice$"'
pid=$(mesh_pid_a)
check "host-a's gateway frozen (SIGSTOP)" kill -STOP "$pid"
check_output "its result is taken from con-result-host-a" '"id":"mesh-lost-2"' lose_result mesh-lost-2
check "host-a's gateway stopped (SIGTERM, SIGCONT) and started again (con up)" bash -c \
        "kill -TERM $pid && kill -CONT $pid && for _ in \$(seq 100); do kill -0 $pid 2>/dev/null || exit 0; sleep 0.1; done; exit 1"
check_output "... con up" 'mesh: started as host host-a' con up
check "the result arrives after the restart" wait_for 30 bash -c \
        'runuser -u alice -- con tasks sysadmin@host-b | grep -Eq "^sysadmin@host-b +mesh-lost-2 +completed +alice$"'
check_output "... with host-b's answer" 'completed.*text=slower lost again' result_of alice mesh-lost-2
check_output "... asked for by the restarted gateway" \
        'Task mesh-lost-2 for sysadmin@host-b ended there [0-9.]+ s ago, but its result has not come: asking host-b to send it again \(request 1;' \
        cat /srv/con/logs/daemons/con-meshd.log
check_eq "... completed exactly once" 1 \
        "$(grep -c 'Task mesh-lost-2 for sysadmin@host-b ended completed' /srv/con/logs/daemons/con-meshd.log)"
check_file_lacks "no sanitizer report from host-a's gateway (frozen, asking again, restarted)" \
        'AddressSanitizer|LeakSanitizer|runtime error' /srv/con/logs/daemons/con-meshd.log

section "retention: mesh.sent_retention cleans old answers and records"
check "the answers are there before" bash -c 'test -e /srv/con/mesh/outbox/mesh-file-1.response &&
        test -e /srv/con/mesh/failed/mesh-file-2.reason && grep -q "\"op\":\"put\",\"id\":\"mesh-file-1\"," /srv/con/mesh/sent/journal'
check "an answer without a record (as written before records were kept)" bash -c \
        'echo stray >/srv/con/mesh/outbox/stray-1.response && touch -d "-1 hour" /srv/con/mesh/outbox/stray-1.response'
check_fail "host-a's gateway found its streams exactly the mesh's (no warning so far but the one of the full result stream)" \
        bash -c "grep -E 'has max age|not the mesh' /srv/con/logs/daemons/con-meshd.log | grep -v 'max messages per subject 1, max bytes' | grep ."
check "mesh.sent_retention: 3s and mesh.retention: 1d in host-a's con.yaml (the mesh: section is its last)" \
        bash -c 'printf "  sent_retention: 3s\n  retention: 1d\n" >>/etc/con/con.yaml && sleep 3.5'
check "host-a's gateway restarted with it" restart_gateway_a
# Only the administrator changes a stream (docs/MULTIHOST.md): the streams keep 7 days for now.
check_output "the changed mesh.retention does not change host-a's streams: a warning names the command" \
        'stream con-task-host-a has max age 604800 s, 1 replica\(s\), duplicate window 600 s, not 86400 s and 1 replica\(s\) \(mesh.retention, mesh.replicas\): the mesh.s administrator sets them with con mesh streams' \
        cat /srv/con/logs/daemons/con-meshd.log
check_output "... its result stream and con-state likewise" \
        'stream con-result-host-a has max age.*stream con-state has max age' cat /srv/con/logs/daemons/con-meshd.log

section "a stream that is not the mesh's (made with the administrator's credentials): not served through"
stop_gateway_a() {
        local pid
        pid=$(mesh_pid_a)
        [ -n "$pid" ] && kill "$pid" || return 1
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
        return 1
}
check "host-a's gateway stopped" stop_gateway_a
check_output "the administrator's credentials remove host-a's task stream" '"success":true' \
        mesh_probe "${ADM[@]}" tls://10.77.0.1:4222 request '$JS.API.STREAM.DELETE.con-task-host-a' ''
check_output "... and make it again with a source (it would copy host-c's tasks)" '"sources":\[\{"name":"con-task-host-c"' \
        mesh_probe "${ADM[@]}" tls://10.77.0.1:4222 request '$JS.API.STREAM.CREATE.con-task-host-a' \
        '{"name":"con-task-host-a","subjects":["con.task.host-a.*"],"retention":"workqueue","storage":"file","sources":[{"name":"con-task-host-c"}]}'
check_output "host-a's gateway started again" 'mesh: started as host host-a' con up
check "... does not serve through that stream: it says why and what to run, and tries again" wait_for 10 grep -q \
        'Not serving the mesh through a stream that is not the mesh.s (retrying): stream con-task-host-a has sources (it copies other streams); not the mesh.s stream .*con mesh streams --check on the CA.s host shows it, --replace makes it anew' \
        /srv/con/logs/daemons/con-meshd.log
check_output "... not connected" '^b false$' \
        busctl --system get-property org.conspiracy.Mesh /org/conspiracy/Mesh org.conspiracy.Mesh1 Connected
check_output "... audited (mesh.stream.refused, the stream and why)" \
        'con-meshd mesh.stream.refused .*stream=con-task-host-a' con audit --lines 20
check_fail_output "con mesh streams --check reports it on the CA's host (exit 1)" \
        '^con-task-host-a: stream con-task-host-a has sources .*--replace removes it, with the messages it holds' \
        mesh_streams "$T/pki" tls://10.77.0.1:4222 --check
check_output "con mesh streams --replace (mesh.retention 1d of this con.yaml) makes it anew, the rest changed to 1d" \
        '^con-task-host-a: replaced \(it was not the mesh.s\)$' \
        con mesh streams --ca-dir "$T/pki/ca" --server tls://10.77.0.1:4222 --replace
check_output "... con-state too" "^con-state: changed to the mesh's settings$" echo "$LIB_OUT"
check "host-a's gateway connects by itself (it tried again)" wait_for 15 bash -c \
        'busctl --system get-property org.conspiracy.Mesh /org/conspiracy/Mesh org.conspiracy.Mesh1 Connected | grep -qx "b true"'
check_eq "... audited once, not at every try" 1 "$(con audit --lines 200 | grep -c 'mesh.stream.refused')"
check "the old answers are gone" bash -c '! test -e /srv/con/mesh/outbox/mesh-file-1.response &&
        ! test -e /srv/con/mesh/failed/mesh-file-2.reason && ! test -e /srv/con/mesh/outbox/stray-1.response'
check "... and their records (forgotten in the journal)" bash -c \
        'grep -q "\"op\":\"forget\",\"id\":\"mesh-file-1\"}" /srv/con/mesh/sent/journal &&
         grep -q "\"op\":\"forget\",\"id\":\"mesh-keep-1\"}" /srv/con/mesh/sent/journal'
check_fail_output "... so is the task for con task" "no agent knows a task 'mesh-keep-1'" \
        as_user alice con task mesh-keep-1
check_output "the gateway said so in its log" 'Forgot [0-9]+ sent task\(s\) and their answers' \
        cat /srv/con/logs/daemons/con-meshd.log
check_output "a new task is answered and kept for the retention" \
        '^sender=alice@host-a agent=sysadmin text=kept a while$' \
        as_user alice timeout 30 con-send --timeout 25 --id mesh-keep-2 --to sysadmin@host-b kept a while
check "... its record is there" grep -q '"op":"put","id":"mesh-keep-2",' /srv/con/mesh/sent/journal
check "... and goes by itself after 3 s (the retention timer)" wait_for 10 \
        grep -q '"op":"forget","id":"mesh-keep-2"}' /srv/con/mesh/sent/journal
check_file_lacks "every state event host-a's gateways published was stored by JetStream (none dropped after its tries)" \
        'Dropping a state event on [^ ]+ after' /srv/con/logs/daemons/con-meshd.log
check_file_lacks "no sanitizer report from host-a's restarted gateways" \
        'AddressSanitizer|LeakSanitizer|runtime error' /srv/con/logs/daemons/con-meshd.log

section "without a mesh: section the gateway has nothing to do"
printf 'agents:\n  - name: concierge\n' >"$T/nomesh.yaml"
check_fail_output "con-meshd refuses to run without mesh:" 'has no mesh: section' \
        /usr/libexec/conspiracyos/con-meshd --config "$T/nomesh.yaml"
check_output "con bootstrap made the gateway's user from mesh: (sysusers.d)" '^u con-mesh ' \
        cat /etc/sysusers.d/conspiracyos.conf

section "host-b floods con-state: host-a's table of remote states keeps host-a's rows"
# The table (10000 rows) is fair per publishing host (docs/MULTIHOST.md, "The state of remote
# tasks"): host-b's certificate publishes 10500 believable state events (tasks it claims to run for
# a user of host-a); host-a's gateway reads them all, and what goes is host-b's oldest rows, not
# host-a's. Last in the test: every restart of host-a's gateway reads con-state again.
# other_rows: host-a's table (root's con mesh status --json) without host-b's flood.
other_rows() { con mesh status --json | jq -r '[.tasks[] | select(.task_id | startswith("qflood-") | not) | "\(.task_id) \(.from) \(.to)"] | sort | join(",")'; }
rows_before=$(other_rows)
check "host-a's table has rows of host-a's own tasks" test "$(tr ',' '\n' <<<"$rows_before" | grep -c '^mesh-')" -ge 10
check_output "host-b's certificate publishes 10500 state events about tasks it claims to run" '^sent 10500 messages' \
        mesh_probe "${B[@]}" --count 10500 --seq tls://10.77.0.1:4222 pub 'con.state.host-a.host-b.qflood-%N' \
        '{"v":1,"id":"qflood-%N","host":"host-b","agent":"sysadmin","from":"mallory@host-a","state":"working"}'
flood_start=$(date +%s%N)
check "host-a's gateway reads them all (the last one is in its table)" wait_for 180 bash -c \
        'con mesh status --json | jq -e ".tasks[] | select(.task_id == \"qflood-10500\")" >/dev/null'
echo "# host-a's gateway read host-b's 10500 state events in $((($(date +%s%N) - flood_start) / 1000000)) ms"
check_eq "... its table is full: 10000 rows" 10000 "$(con mesh status --json | jq '.tasks | length')"
check_eq "... every row of the other hosts' tasks is still there" "$rows_before" "$(other_rows)"
check_fail "... what went is host-b's oldest rows (qflood-1)" bash -c \
        'con mesh status --json | jq -e ".tasks[] | select(.task_id == \"qflood-1\")"'

section "host-b's records"
touch "$SHARED/stop"
check "host-b wrote its records" wait_for 30 test -e "$SHARED/done"
# Whether the stopping gateway had been handed mesh-wait-1 depends on timing (issue 20): said, not checked.
grep -h 'Stopping: ' "$SHARED/meshd.log" | sed 's/^/# host-b: /'
check_file_lacks "host-b's stopping gateway gave back what it had been handed (no unconfirmed nak)" \
        'could not confirm giving back' "$SHARED/meshd.log"
check_output "host-b's audit log names the remote sender" 'sysadmin task.accepted .* sender=alice@host-a' cat "$SHARED/audit"
check_file_lacks "... and never bob (refused before anything was queued)" 'bob@host-a' "$SHARED/audit"
check_output "host-b's audit chain verifies" 'rc=0' cat "$SHARED/audit-verify"
check_output "host-b's gateway passed alice's cancel to its agent (audited)" \
        'con-meshd mesh.task.cancel .*task_id=mesh-cancel-1 .*sender=alice@host-a .*by=alice@host-a' cat "$SHARED/audit"
check_output "... and root@host-a's" 'con-meshd mesh.task.cancel .*task_id=mesh-cancel-2 .*by=root@host-a' cat "$SHARED/audit"
check_output "host-b refused carol's cancel of alice's task (audited)" \
        'con-meshd mesh.cancel.refused .*task_id=mesh-cancel-1 .*sender=alice@host-a .*by=carol@host-a .*sent_by=host-a' \
        cat "$SHARED/audit"
check_output "... and logged it" 'Refusing the cancel of task mesh-cancel-1 by carol@host-a: only its sender alice@host-a or root@host-a may' \
        cat "$SHARED/meshd.log"
check_output "host-b's sysadmin ended mesh-cancel-1 as canceled" 'sysadmin task.completed .*task_id=mesh-cancel-1 .*status=canceled' \
        cat "$SHARED/audit"
check_output "host-b's gateway logged the refusal" 'refused by agent sysadmin' cat "$SHARED/meshd.log"
check_file_lacks "no sanitizer report from host-b's gateway (stopped and started again)" \
        'AddressSanitizer|LeakSanitizer|runtime error' "$SHARED/meshd.log"
check_eq "host-b's sysadmin accepted the waiting task once" 1 \
        "$(grep -c 'task.accepted .*task_id=mesh-wait-1 ' "$SHARED/audit")"
check_output "host-b's gateway dropped host-c's task (it claimed host-a) and audited it: it was in host-b's stream" \
        'con-meshd mesh.task.forged .*task_id=full-c-1 .*sent_by=host-c' cat "$SHARED/audit"
check_output "host-b sent mesh-lost-1's result again when host-a's gateway asked (logged)" \
        'Sending the result of task mesh-lost-1 of alice@host-a at agent sysadmin \(completed\) to host-a again' \
        cat "$SHARED/meshd.log"
check_eq "... once (and mesh-lost-2's once)" "1 1" \
        "$(grep -c 'Sending the result of task mesh-lost-1 ' "$SHARED/meshd.log") $(grep -c 'Sending the result of task mesh-lost-2 ' "$SHARED/meshd.log")"
check_output "... under a fresh message id, stored again by JetStream (two stored results of mesh-lost-1)" '^2$' \
        grep -c 'Result of task mesh-lost-1 stored for host-a as sequence [1-9]' "$SHARED/meshd.log"
check_output "... audited once (mesh.result.resend)" '^1$' \
        grep -c 'con-meshd mesh.result.resend .*task_id=mesh-lost-1 .*sender=alice@host-a .*status=completed' "$SHARED/audit"
check_output "carol's request for alice's result was refused (logged)" \
        "Refusing host host-a's request to send the result of task mesh-lost-1 of carol@host-a again: agent sysadmin holds no such task of that sender" \
        cat "$SHARED/meshd.log"
check_output "... and audited" 'con-meshd mesh.result.resend-refused .*task_id=mesh-lost-1 .*sender=carol@host-a .*sent_by=host-a' \
        cat "$SHARED/audit"
check_file_lacks "host-b's gateway never put a result's text in its log" 'text=slower lost' "$SHARED/meshd.log"

if [ "${LIB_FAILED}" != 0 ]; then
        grep -h -i 'cancel' "$SHARED/meshd.log" /srv/con/logs/daemons/con-meshd.log | sed 's/^/# cancel: /'
        mesh_probe "${B[@]}" tls://10.77.0.1:4222 request '$JS.API.CONSUMER.INFO.con-task-host-b.con-meshd' '' | sed 's/^/# consumer: /'
        mesh_probe "${ADM[@]}" tls://10.77.0.1:4222 request '$JS.API.STREAM.INFO.con-task-host-b' '' | sed 's/^/# stream: /'
        sed 's/^/# diag: /' "$SHARED/diag"
        tail -n 20 "$SHARED/sysadmin.log" | sed 's/^/# sysadmin: /'
        for f in "$T/hostb.out" "$SHARED/meshd.log" "$T/pki/nats.log" /srv/con/logs/daemons/con-meshd.log; do
                [ -f "$f" ] && { echo "# --- $f"; tail -n 30 "$f" | sed 's/^/#   /'; }
        done
fi
finish
