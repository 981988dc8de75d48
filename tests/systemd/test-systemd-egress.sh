#!/bin/bash
# The network door under systemd as PID 1 (docs/NETWORK.md, "Under systemd"): the agent units of
# agents that use the egress gateway get the generated drop-in (the host's network namespace, IP
# to 127.0.0.1 and their address entries only, AF_UNIX AF_INET AF_INET6); their sessions reach an
# allowed server through con-egressd while direct connections are refused, by the nftables table
# and, with the table deleted, by the unit's IPAddressDeny; `none` and `gateway` agents' sessions
# have no IP socket at all. con-contractd (host namespace, CAP_NET_ADMIN, AF_NETLINK) checks the
# table (CON-NET-001 of the default profile) and cuts a quarantined agent at once.
# Runs inside tests/systemd/con-boot (one boot). Servers: a veth pair to a namespace made here
# (10.77.0.0/24) inside the machine's own network; never an outside address.
. "$(dirname "$0")/../integration/lib.sh"
require_root
if [ "${CON_BOOT:-}" = "" ] || [ "$(cat /proc/1/comm)" != systemd ]; then
        echo "# must run inside tests/systemd/con-boot (systemd as PID 1); skipping"
        LIB_FINISHED=1
        exit 77
fi
PROXY=3128

section "setup: servers on a veth peer"
NET=/usr/local/lib/con-net-probe.py
mkdir -p /usr/local/lib /usr/local/libexec/con-test-egress
cat >"$NET" <<'EOF'
import errno, socket, sys
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "serve":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port)); s.listen(16)
    while True:
        c, _ = s.accept(); c.settimeout(5)
        try:
            head = c.recv(4096)
            body = b"hello from %s:%d\n" % (host.encode(), port)
            if b" /svc/" in head.split(b"\r\n")[0]:
                # A credentialed service: whether the key was the one given (never the key).
                key = [l.split(b":", 1)[1].strip() for l in head.split(b"\r\n") if l.lower().startswith(b"x-api-key:")]
                body = b"service saw key [%s]\n" % (b"ok" if key == [sys.argv[4].encode()] else b"wrong")
            c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        except OSError:
            pass
        c.close()
try:                        # tcp HOST PORT: a direct connection, the errno name when refused
    s = socket.socket(); s.settimeout(3)
    s.connect((host, port)); s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    print("direct %s:%d connected" % (host, port), s.recv(200).decode().split("\n")[-2])
except OSError as e:
    print("direct %s:%d error %s" % (host, port, errno.errorcode.get(e.errno, "timeout") if e.errno else "timeout"))
EOF
# The exec runner of every test agent: one session that tries each way out and says what happened.
cat >/usr/local/libexec/con-test-egress/probe <<EOF
#!/bin/sh
echo "uid \$(id -un) proxy \${HTTP_PROXY:-none}"
curl -sS -m 10 -f http://allowed.example.test:8080/ 2>&1 | sed 's/^/via-proxy allowed: /'
curl -sS -m 10 -f http://denied.example.test:8080/ 2>&1 | sed 's/^/via-proxy denied: /'
python3 $NET tcp 10.77.0.2 9443
python3 $NET tcp 10.77.0.2 8080
python3 $NET tcp 10.77.0.3 9443
python3 $NET tcp 127.0.0.1 $PROXY
exit 0
EOF
chmod 0755 /usr/local/libexec/con-test-egress /usr/local/libexec/con-test-egress/probe "$NET"
cat >>/etc/hosts <<'EOF'
10.77.0.2 allowed.example.test denied.example.test
EOF
check "loopback up" ip link set lo up
check "namespace peer" ip netns add peer
check "veth pair" ip link add con-e0 type veth peer name con-e1
check "peer end in namespace peer" ip link set con-e1 netns peer
check "address 10.77.0.1" ip addr add 10.77.0.1/24 dev con-e0
check "con-e0 up" ip link set con-e0 up
check "addresses 10.77.0.2 and .3 (peer)" bash -c \
        'ip netns exec peer ip addr add 10.77.0.2/24 dev con-e1 && ip netns exec peer ip addr add 10.77.0.3/24 dev con-e1'
check "con-e1 and lo up (peer)" bash -c 'ip netns exec peer ip link set con-e1 up && ip netns exec peer ip link set lo up'
PIDS=()
cleanup() {
        for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
        ip netns del peer 2>/dev/null
        ip link del con-e0 2>/dev/null
}
trap 'cleanup; _lib_exit' EXIT
SECRET=s3cr3t-$RANDOM$RANDOM
for a in 10.77.0.2:8080 10.77.0.2:9443 10.77.0.3:9443; do
        ip netns exec peer python3 "$NET" serve "${a%:*}" "${a#*:}" "$SECRET" >/dev/null 2>&1 & PIDS+=($!)
done
for a in 10.77.0.2:8080 10.77.0.2:9443 10.77.0.3:9443; do
        check "root reaches the server on $a" wait_for 10 bash -c "python3 $NET tcp ${a%:*} ${a#*:} | grep -q connected"
done

section "con bootstrap: the default profile plus agents with each network policy"
check "con bootstrap --profile default" con bootstrap --profile default
CFG=$(lib_tmp)/con.yaml
cp /etc/con/con.yaml "$CFG"
cat >>"$CFG" <<'EOF'
  - name: fetcher
    tier: worker
    runner: exec
    command: [/usr/local/libexec/con-test-egress/probe]
    network: ["allowed.example.test:8080", "10.77.0.2/32:9443"]
  - name: shut
    tier: worker
    runner: exec
    command: [/usr/local/libexec/con-test-egress/probe]
    network: none
  - name: quiet
    tier: worker
    runner: exec
    command: [/usr/local/libexec/con-test-egress/probe]
EOF
cat >>"$CFG" <<'EOF'
egress:
  services:
    echo:
      base_url: http://allowed.example.test:8080/svc
      header: X-Api-Key
      secret: TEST_ECHO_TOKEN
      agents: [fetcher]
EOF
set_secret() { # the admin replaces the key file (root:con-models 0640 after bootstrap)
        printf 'CON_API_KEY=unused\nTEST_ECHO_TOKEN=%s\n' "$1" >/etc/con/env.new && chmod 0640 /etc/con/env.new &&
                chown root:con-models /etc/con/env.new && mv /etc/con/env.new /etc/con/env
}
printf 'CON_API_KEY=unused\nTEST_ECHO_TOKEN=%s\n' "$SECRET" >/etc/con/env
check_output "the agents are appended to the agents: list" "name: quiet" bash -c "sed -n '/^agents:/,\$p' '$CFG'"
check "con bootstrap --config (three more agents)" con bootstrap --config "$CFG" --force
check_output "... wrote fetcher's network drop-in" "write /etc/systemd/system/con-agent@fetcher.service.d/50-con-network.conf" \
        printf '%s' "$LIB_OUT"
check_fail "no drop-in for the none agent" test -e /etc/systemd/system/con-agent@shut.service.d/50-con-network.conf
check_fail "no drop-in for the gateway agent" test -e /etc/systemd/system/con-agent@quiet.service.d/50-con-network.conf
check "con-egressd is active" wait_for 20 systemctl is-active con-egressd.service
check_output "fetcher's unit: the host's network" "^no$" systemctl show -P PrivateNetwork con-agent@fetcher.service
check_output "... IP families" "AF_INET" systemctl show -P RestrictAddressFamilies con-agent@fetcher.service
check_output "... IP only to 127.0.0.1 and its address entry" "^(127\.0\.0\.1/32 10\.77\.0\.2/32|10\.77\.0\.2/32 127\.0\.0\.1/32)$" \
        systemctl show -P IPAddressAllow con-agent@fetcher.service
check_output "shut's unit: no network" "^yes$" systemctl show -P PrivateNetwork con-agent@shut.service
check_units_verify "the units verify without a word" con-agent@fetcher.service con-contractd.service con-egressd.service
for u in con-agent@fetcher.service con-contractd.service con-egressd.service; do
        check_unit_exposure_ok "$u" --offline=yes
done

section "an allow-list agent's session under systemd: the proxy yes, direct no"
check "con-send --to fetcher (its exec session)" con-send --to fetcher --timeout 60 go
OUT=$LIB_OUT
check_output "... ran as a-fetcher with the proxy variables" "^uid a-fetcher proxy http://127.0.0.1:$PROXY$" echo "$OUT"
check_output "... the allowed server answered through the proxy" "^via-proxy allowed: hello from 10.77.0.2:8080$" echo "$OUT"
check_output "... the name not on its list was refused by the proxy (403)" "^via-proxy denied: .*403" echo "$OUT"
check_output "... its address entry is reached directly" "^direct 10.77.0.2:9443 connected hello from 10.77.0.2:9443$" echo "$OUT"
check_output "... the allowed name's server, directly, is refused" "^direct 10.77.0.2:8080 error (EHOSTUNREACH|EPERM)$" echo "$OUT"
check_output "... an address not on its list is refused" "^direct 10.77.0.3:9443 error (EHOSTUNREACH|EPERM)$" echo "$OUT"
check "con-agent@fetcher ran it" systemctl is-active con-agent@fetcher.service
check "the proxy recorded fetcher's allowed request" jq -e -s \
        'map(select(.event == "egress.request" and .agent == "fetcher" and .decision == "allowed" and .host == "allowed.example.test")) | length > 0' \
        /srv/con/logs/audit/audit.jsonl

section "a credentialed service under the hardened gateway unit; a new secret on con bootstrap"
check_output "a-fetcher calls the service; the gateway added the key" "^service saw key \\[ok\\]$" \
        runuser -u a-fetcher -- curl -sS -f -m 10 --noproxy '*' "http://127.0.0.1:$PROXY/echo/x"
EPID=$(systemctl show -P MainPID con-egressd.service)
check "a new secret in /etc/con/env" set_secret "rotated-$SECRET"
check_output "con bootstrap tells the gateway" "^reload con-egressd$" con bootstrap
check "the gateway read it through its keeper (journal)" wait_for 5 bash -c \
        "journalctl -b --no-pager -u con-egressd.service | grep -q \"Reloaded the services' secrets from /etc/con/env (2 variables)\""
check_output "the service gets the new key (the test server knows only the old one)" "^service saw key \\[wrong\\]$" \
        runuser -u a-fetcher -- curl -sS -f -m 10 --noproxy '*' "http://127.0.0.1:$PROXY/echo/x"
check "the old secret again" set_secret "$SECRET"
check "systemctl reload con-egressd" systemctl reload con-egressd.service
check "the old key again (within 5 s)" wait_for 5 bash -c \
        "runuser -u a-fetcher -- curl -sS -f -m 10 --noproxy '*' http://127.0.0.1:$PROXY/echo/x | grep -q '^service saw key \\[ok\\]$'"
check_eq "the same gateway process" "$(systemctl show -P MainPID con-egressd.service)" "$EPID"
check_fail "no failure of the keeper in the journal" bash -c \
        "journalctl -b --no-pager -u con-egressd.service | grep -E 'keeper|Cannot read /etc/con/env'"

section "the unit's layer: IPAddressDeny=any with the drop-in's IPAddressAllow"
check_output "fetcher's unit denies every other address" "^(0\.0\.0\.0/0 ::/0|::/0 0\.0\.0\.0/0)$" systemctl show -P IPAddressDeny con-agent@fetcher.service
# systemd enforces IPAddressDeny= with cgroup BPF programs, which need the unified (v2) cgroup
# hierarchy; a machine booted on a host with the legacy or hybrid hierarchy (this tier's nspawn on
# such a host) runs without them. Where it can, the test sees the unit refuse what the table is
# no longer there to refuse; where it cannot, it checks that this is the reason.
probe=$(systemd-run --quiet --wait --pipe -p IPAddressDeny=any -p User=nobody python3 "$NET" tcp 10.77.0.3 9443 2>&1)
check "nft delete table inet conspiracyos" nft delete table inet conspiracyos
check "con-send --to fetcher" con-send --to fetcher --timeout 60 go
OUT=$LIB_OUT
check_output "... while the table is gone the listed address's other port connects (the table is the port layer)" \
        "^direct 10.77.0.2:8080 connected" echo "$OUT"
if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
        check_output "a transient unit with IPAddressDeny=any is refused (systemd's IP firewall works here)" \
                "error EPERM$" echo "$probe"
        check_output "... an address not on fetcher's list: refused by its unit (EPERM)" \
                "^direct 10.77.0.3:9443 error EPERM$" echo "$OUT"
else
        echo "# systemd's IP firewall cannot run in this machine (cgroup hierarchy $(stat -fc %T /sys/fs/cgroup), not cgroup2fs):"
        echo "# the unit's IPAddressDeny is set (above) but not enforced here; the nftables table is."
        check_output "... and indeed a transient unit with IPAddressDeny=any connects here" "connected" echo "$probe"
fi

section "con-contractd sees the host's table: CON-NET-001 of the default profile"
check_fail_output "con healthcheck (through con-contractd): CON-NET-001 fails" \
        "^CON-NET-001 FAIL network_table" con healthcheck
check_output "... the table is missing, it says" "inet conspiracyos: missing" echo "$LIB_OUT"
check "con bootstrap repairs the table" con bootstrap
check_output "... says so" "create nftables table inet conspiracyos" printf '%s' "$LIB_OUT"
check_output "con healthcheck: every contract passes, CON-NET-001 among them" \
        "^summary: (1[0-9]|[2-9][0-9]) passed, 0 failed, 0 skipped" con healthcheck
check_output "... CON-NET-001 among them" "^CON-NET-001 PASS network_table" echo "$LIB_OUT"

D=/etc/systemd/system/con-agent@fetcher.service.d/50-con-network.conf
check "an edit of fetcher's drop-in (IP to anywhere)" sed -i 's|^IPAddressAllow=10.77.0.2/32$|IPAddressAllow=0.0.0.0/0|' "$D"
check_fail_output "con healthcheck (con-contractd): CON-NET-001 names it" \
        "$D: line [0-9]+ differs from what the config generates: found 'IPAddressAllow=0.0.0.0/0'" con healthcheck
check_output "con bootstrap rewrites it" "write $D" con bootstrap
check_output "con healthcheck: every contract passes again" "^summary: (1[0-9]|[2-9][0-9]) passed, 0 failed, 0 skipped" \
        con healthcheck
# A shell check runs in the same sandbox without CAP_NET_ADMIN (12), which the service keeps for
# the native check above; CAP_DAC_OVERRIDE (1) stays.
caps_contract >/srv/con/contracts/.T-CAPS.tmp
mv /srv/con/contracts/.T-CAPS.tmp /srv/con/contracts/T-CAPS.yaml
check_output "con healthcheck (con-contractd): a shell check has no CAP_NET_ADMIN in any set" \
        "^T-CAPS PASS no_net_admin" con healthcheck
check_output "... the service's other capabilities stay" "^T-CAPS PASS keeps_dac_override" echo "$LIB_OUT"
check_output "... while CON-NET-001 (native, nft) still passes" "^CON-NET-001 PASS network_table" echo "$LIB_OUT"
rm -f /srv/con/contracts/T-CAPS.yaml

section "quarantine cuts the agent's network at once under systemd, release restores it"
check "con quarantine fetcher" con quarantine fetcher --reason "systemd egress tier"
check "the table has the cut within 5 s (con-contractd ran nft)" wait_for 5 bash -c \
        "nft -n list table inet conspiracyos | grep -q 'agent fetcher: network cut (quarantined)'"
check "con release fetcher" con release fetcher
check "the cut is gone within 5 s" wait_for 5 bash -c \
        "! nft -n list table inet conspiracyos | grep -q 'network cut'"
check_output "con policy check: no drift (the table included)" '^policy: all four doors match the config' con policy check

section "none and gateway agents' sessions: no IP socket at all"
for a in shut quiet; do
        check "con-send --to $a" con-send --to $a --timeout 60 go
        check_output "... ran as a-$a without proxy variables" "^uid a-$a proxy none$" echo "$LIB_OUT"
        check_output "... cannot reach the proxy (no AF_INET)" "^direct 127.0.0.1:$PROXY error EAFNOSUPPORT$" echo "$LIB_OUT"
        check_output "... nor any server" "^direct 10.77.0.2:9443 error EAFNOSUPPORT$" echo "$LIB_OUT"
        check_fail "... and curl got nothing" grep -q "hello from" <<<"$LIB_OUT"
done

section "an agent whose allow-list goes loses its drop-in; its running unit restarts"
check "con-send --to fetcher (its unit runs)" con-send --to fetcher --timeout 60 go
check "fetcher's unit is running" systemctl is-active con-agent@fetcher.service
OLD=$(systemctl show -P MainPID con-agent@fetcher.service)
sed -i 's|^    network: \["allowed.example.test:8080", "10.77.0.2/32:9443"\]|    network: none|' "$CFG"
check_output "fetcher is network: none in the test config" "network: none" grep -A4 "name: fetcher" "$CFG"
check "con bootstrap --config --force" con bootstrap --config "$CFG" --force
check_output "... removed the drop-in and restarted the unit" "try-restart con-agent@fetcher.service" printf '%s' "$LIB_OUT"
check_fail "the drop-in is gone" test -e /etc/systemd/system/con-agent@fetcher.service.d/50-con-network.conf
check_output "the unit has no network again" "^yes$" systemctl show -P PrivateNetwork con-agent@fetcher.service
check "con-send --to fetcher" con-send --to fetcher --timeout 60 go
check_output "... its session has no IP socket" "^direct 10.77.0.2:9443 error EAFNOSUPPORT$" echo "$LIB_OUT"
check "the unit was restarted (a new main process)" bash -c "[ \"\$(systemctl show -P MainPID con-agent@fetcher.service)\" != '$OLD' ]"
finish
