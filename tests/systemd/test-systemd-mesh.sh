#!/bin/bash
# The mesh gateway under systemd as PID 1 (docs/MULTIHOST.md, docs/DEPLOY.md): con bootstrap with
# a mesh: section enables and starts con-meshd.service, which starts as root, opens the audit log
# and drops to con-mesh: the running process has uid con-mesh and no capability left, it is
# connected to a local nats-server (TLS, the configuration `con mesh server-config` made), it
# writes audit records (a task forged by another host's credentials is audited), its unit verifies
# and is in the OK band of `systemd-analyze security`; a task host-b sends is refused or, granted,
# answered by an exec agent of host-a (con-agent@echo), the result on host-b's result stream.
# The second host is emulated by the test's NATS client (tests/integration/mesh-probe) holding
# host-b's credentials: a gateway never sends to its own host (docs/MULTIHOST.md).
# Runs inside tests/systemd/con-boot (one boot); the server listens on the machine's loopback.
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/../integration/mesh-lib.sh"
require_root
if [ "${CON_BOOT:-}" = "" ] || [ "$(cat /proc/1/comm)" != systemd ]; then
        echo "# must run inside tests/systemd/con-boot (systemd as PID 1); skipping"
        LIB_FINISHED=1
        exit 77
fi
T=$(lib_tmp)
U=con-meshd.service

section "setup: the mesh's credentials (con mesh) and a nats-server on loopback"
# Debian's nats-server package starts its own server (nats-server.service) on 4222 in this
# machine; the mesh's server here is a second one, on 4223.
check "loopback up" ip link set lo up
check "con mesh init / issue host-a host-b / server-config (127.0.0.1:4223)" \
        mesh_pki "$T/pki" 127.0.0.1:4223 host-a host-b
mesh_nats_start "$T/pki"
trap 'kill "$MESH_NATS_PID" 2>/dev/null; _lib_exit' EXIT
check "nats-server accepts connections" mesh_nats_wait 127.0.0.1 4223
check_output "con mesh streams: the administrator makes host-a's and host-b's streams and con-state" \
        '^con-state: made$' mesh_streams "$T/pki" tls://127.0.0.1:4223
check "host-a's credentials in /etc/con/mesh" mesh_install_creds "$T/pki/host-a"

section "con bootstrap with a mesh: section enables and starts con-meshd"
check "con bootstrap --profile default" con bootstrap --profile default
check_fail "without mesh: the unit is not enabled" systemctl is-enabled -q "$U"
# An exec agent that answers with what it was given, host-b's alice granted to it, and mesh:.
cat >/usr/local/bin/mesh-echo <<'EOS'
#!/bin/sh
printf 'sender=%s agent=%s text=%s\n' "$CON_TASK_SENDER" "$CON_AGENT" "$(cat)"
EOS
chmod 0755 /usr/local/bin/mesh-echo
CFG=$T/con.yaml
cp /etc/con/con.yaml "$CFG"
cat >>"$CFG" <<'EOS'
  - name: echo
    tier: worker
    runner: exec
    command: [/usr/local/bin/mesh-echo]
policy:
  grants:
    - {who: "user:alice@host-b", may: [task], to: [echo]}
EOS
mesh_yaml host-a tls://127.0.0.1:4223 >>"$CFG"
check_output "con.yaml: agent echo, a grant, mesh: host-a" "^  host: host-a$" cat "$CFG"
check "con bootstrap --config --force" con bootstrap --config "$CFG" --force
check "$U is enabled" systemctl is-enabled "$U"
check "$U is active (systemd started it)" wait_for 20 systemctl is-active "$U"
check_output "the key is root:con-mesh 0640" "^root:con-mesh 640$" stat -c '%U:%G %a' /etc/con/mesh/host.key

section "the running gateway: uid con-mesh, no capabilities"
PID=$(systemctl show -P MainPID "$U")
check "a main process" test "${PID:-0}" -gt 0
check_output "Uid: con-mesh (real, effective, saved, fs)" "^Uid:	$(id -u con-mesh)	$(id -u con-mesh)	$(id -u con-mesh)	$(id -u con-mesh)$" \
        grep '^Uid:' "/proc/$PID/status"
check_output "Gid: con-mesh" "^Gid:	$(id -g con-mesh)	$(id -g con-mesh)	$(id -g con-mesh)	$(id -g con-mesh)$" \
        grep '^Gid:' "/proc/$PID/status"
check_output "no supplementary groups" "^Groups:[[:space:]]*$" grep '^Groups:' "/proc/$PID/status"
for c in CapInh CapPrm CapEff CapAmb; do
        check_output "$c is 0" "^$c:	0000000000000000$" grep "^$c:" "/proc/$PID/status"
done
check_output "the bounding set is CAP_SETUID CAP_SETGID only" "^CapBnd:	00000000000000c0$" grep '^CapBnd:' "/proc/$PID/status"
check_output "NoNewPrivs" "^NoNewPrivs:	1$" grep '^NoNewPrivs:' "/proc/$PID/status"
check_output "Seccomp filter" "^Seccomp:	2$" grep '^Seccomp:' "/proc/$PID/status"
check_output "it (PID $PID) owns org.conspiracy.Mesh on the system bus" "^PID=$PID$" \
        busctl --system status org.conspiracy.Mesh

section "connected: con mesh status"
check "con mesh status --json: connected (within 20 s)" wait_for 20 bash -c \
        'con mesh status --json | jq -e ".connected == true"'
check_output "con mesh status: host-a connected" "host host-a, connected to tls://127.0.0.1:4223" con mesh status

section "its audit records: a task forged with host-b's credentials"
check "the test's NATS client" mesh_probe_install "$CON_BUILD_DIR"
B=(--ca "$T/pki/host-b/ca.crt" --cert "$T/pki/host-b/host.crt" --key "$T/pki/host-b/host.key" --inbox _INBOX.host-b)
forged='{"v":1,"id":"forged-sd","from":"alice@host-a","origin":"host-a","agent":"concierge","text":"forged"}'
check_output "host-b publishes on its own subject to host-a (stored)" 'stored in stream con-task-host-a' \
        mesh_probe "${B[@]}" --msg-id host-b.forged-sd tls://127.0.0.1:4223 publish con.task.host-a.host-b "$forged"
check "the gateway (as con-mesh) audits it" wait_for 15 bash -c \
        "con audit --lines 50 | grep -q 'con-meshd mesh.task.forged .*task_id=forged-sd .*sent_by=host-b'"
check_output "... in the hash-chained log it opened as root" '"event":"mesh.task.forged"' \
        grep forged-sd /srv/con/logs/audit/audit.jsonl
check "con audit verify: the chain holds" con audit verify
check_output "the same main process (no restart)" "^$PID$" systemctl show -P MainPID "$U"
check_fail "the unit never failed" bash -c "journalctl -b --no-pager -u $U | grep -E 'Failed with result|status=[1-9]'"

section "a task from host-b is answered by host-a's gateway"
# host-b's streams were made by the administrator (con mesh streams above).
task='{"v":1,"id":"remote-sd","from":"alice@host-b","origin":"host-b","agent":"concierge","text":"hello from host-b"}'
check_output "host-b sends alice@host-b's task to concierge@host-a (stored)" 'stored in stream con-task-host-a' \
        mesh_probe "${B[@]}" --msg-id host-b.remote-sd tls://127.0.0.1:4223 publish con.task.host-a.host-b "$task"
check_output "host-a's gateway answers on host-b's result stream" '^con.result.host-b.host-a \{' \
        mesh_probe "${B[@]}" tls://127.0.0.1:4223 next con-result-host-b 'con.result.host-b.*' 30
check_output "... refused: concierge is not granted to alice@host-b" \
        '"id":"remote-sd","host":"host-a","agent":"concierge","from":"alice@host-b","status":"failed","text":"Refused on host host-a: Access denied' \
        echo "$LIB_OUT"
task='{"v":1,"id":"remote-ok","from":"alice@host-b","origin":"host-b","agent":"echo","text":"hello from host-b"}'
check_output "host-b sends alice@host-b's task to echo@host-a (granted)" 'stored in stream con-task-host-a' \
        mesh_probe "${B[@]}" --msg-id host-b.remote-ok tls://127.0.0.1:4223 publish con.task.host-a.host-b "$task"
check_output "host-a's echo agent answers it, with the sender alice@host-b" \
        '"id":"remote-ok","host":"host-a","agent":"echo","from":"alice@host-b","status":"completed","text":"sender=alice@host-b agent=echo text=hello from host-b' \
        mesh_probe "${B[@]}" tls://127.0.0.1:4223 next con-result-host-b 'con.result.host-b.*' 60
check "con-agent@echo ran it (systemd)" bash -c \
        "journalctl -b --no-pager -u con-agent@echo.service | grep -q 'Started'"

section "a task sent from host-a: its record on disk under the hardened unit (docs/MULTIHOST.md)"
check "alice, a submitter on host-a" useradd -M -G con alice
check_output "alice's Submit to sysadmin@host-b is answered (JetStream stored it, its record synced)" \
        '^s "sent-sd"$' as_user alice busctl --system call org.conspiracy.Mesh /org/conspiracy/Mesh \
        org.conspiracy.Mesh1 Submit 'ssa{sv}' sysadmin@host-b "from host-a" 1 id s sent-sd
check_output "the record is in the journal, con-mesh's, in its 0700 folder" '^con-mesh:con-mesh 600 con-mesh:con-mesh 700$' \
        bash -c 'grep -q "\"op\":\"put\",\"id\":\"sent-sd\",.*\"stored\":true" /srv/con/mesh/sent/journal &&
                 echo $(stat -c "%U:%G %a" /srv/con/mesh/sent/journal /srv/con/mesh/sent)'
check_fail_output "... which alice cannot read" 'Permission denied' as_user alice cat /srv/con/mesh/sent/journal

section "the unit verifies and is in the OK band of systemd-analyze security"
check_units_verify "systemd-analyze verify $U is silent" "$U"
check_unit_exposure_ok "$U"     # the running unit (not --offline)

section "systemctl restart: back as con-mesh, connected"
check "systemctl restart $U" systemctl restart "$U"
check "active again" wait_for 20 systemctl is-active "$U"
PID2=$(systemctl show -P MainPID "$U")
check "a new process" test "$PID2" != "$PID"
check_output "... uid con-mesh, CapEff 0" "^CapEff:	0000000000000000$" bash -c \
        "grep -q '^Uid:	$(id -u con-mesh)	' /proc/$PID2/status && grep '^CapEff:' /proc/$PID2/status"
check "... connected (within 20 s)" wait_for 20 bash -c 'con mesh status --json | jq -e ".connected == true"'
check_output "alice's task sent before the restart: still known, still waiting" '^ss "submitted" ""$' \
        as_user alice busctl --system call org.conspiracy.Mesh /org/conspiracy/Mesh org.conspiracy.Mesh1 GetResult s sent-sd
result='{"v":1,"id":"sent-sd","host":"host-b","agent":"sysadmin","from":"alice@host-a","status":"completed","text":"done on b","truncated":false,"replaced":false,"size":9}'
check_output "host-b answers it (stored in con-result-host-a)" 'stored in stream con-result-host-a' \
        mesh_probe "${B[@]}" --msg-id r.host-b.sent-sd tls://127.0.0.1:4223 publish con.result.host-a.host-b "$result"
check "alice's GetResult: completed, with host-b's answer" wait_for 20 bash -c \
        "runuser -u alice -- busctl --system call org.conspiracy.Mesh /org/conspiracy/Mesh org.conspiracy.Mesh1 GetResult s sent-sd | grep -qx 'ss \"completed\" \"done on b\"'"
check "systemctl restart $U (after the result)" systemctl restart "$U"
check "... alice's result is still there" wait_for 20 bash -c \
        "runuser -u alice -- busctl --system call org.conspiracy.Mesh /org/conspiracy/Mesh org.conspiracy.Mesh1 GetResult s sent-sd | grep -qx 'ss \"completed\" \"done on b\"'"
check_fail "the unit never failed" bash -c "journalctl -b --no-pager -u $U | grep -E 'Failed with result|status=[1-9]'"
finish
