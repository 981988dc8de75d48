#!/bin/bash
# The network door (docs/NETWORK.md), inside tests/sandbox/con-sandbox (its own network
# namespace): con bootstrap generates `table inet conspiracyos`, whose output chain matches the
# sending socket's owner. An agent with network none (or the default, gateway) sends nothing:
# TCP, UDP and ICMP (ping has cap_net_raw) to loopback and to a veth peer in a second namespace
# made here all fail at once (EPERM, or EHOSTUNREACH for a TCP connect: the table rejects with
# ICMP admin-prohibited, which never leaves the host), while root reaches the same servers; an allow-listed agent
# reaches only its CIDR:port. Bootstrap twice leaves one table; a deleted or altered table is
# named by `con policy check` and repaired by `con bootstrap`; `nft delete table` removes it.
# Only loopback and 10.77.0.0/24 on the veth pair are ever used.
. "$(dirname "$0")/lib.sh"
require_sandbox # it edits /etc/passwd and the netfilter tables

mkdir -p /etc/con
CFG=/etc/con/con.yaml
cat >"$CFG" <<'EOF'
system:
  name: nettest
agents:
  - name: shut
    network: none
  - name: quiet
  - name: lister
    network: ["10.77.0.0/24:8443", "api.example.com:443"]
  - name: runner
    runner: exec
    command: [/usr/local/libexec/con-test-network/try]
EOF

# A client and servers that say exactly what happened (errno names), so a refusal by the kernel
# (EPERM) is never mistaken for a server that is not there.
NET=/usr/local/lib/con-net-test.py
mkdir -p /usr/local/lib
cat >"$NET" <<'EOF'
import errno, socket, sys
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
def fail(e):
    print("error", errno.errorcode.get(e.errno, "timeout") if e.errno else "timeout", e)
    sys.exit(1)
if mode == "serve-tcp":
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port)); s.listen(16)
    print("ready", flush=True)
    while True:
        c, _ = s.accept(); c.sendall(b"hello\n"); c.close()
elif mode == "serve-udp":
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((host, port))
    while True:
        d, a = s.recvfrom(100); s.sendto(b"echo " + d, a)
elif mode == "tcp":
    s = socket.socket(fam, socket.SOCK_STREAM); s.settimeout(3)
    try:
        s.connect((host, port)); print("connected", s.recv(100).decode().strip())
    except OSError as e:
        fail(e)
elif mode == "udp":
    s = socket.socket(fam, socket.SOCK_DGRAM); s.settimeout(3)
    try:
        s.sendto(b"ping", (host, port)); print("answer", s.recv(100).decode())
    except OSError as e:
        fail(e)
EOF
chmod 0755 "$NET"
# The exec runner of agent `runner`: a task's session (forked by con-agentd, a-runner,
# no_new_privs, its own cgroup) tries the veth peer directly, as a client that ignores any
# proxy would.
mkdir -p /usr/local/libexec/con-test-network
cat >/usr/local/libexec/con-test-network/try <<EOF
#!/bin/sh
echo "uid \$(id -un)"
python3 $NET tcp 10.77.0.2 9000
python3 $NET udp 10.77.0.2 9000
exit 0
EOF
chmod 0755 /usr/local/libexec/con-test-network /usr/local/libexec/con-test-network/try

section "setup: servers on loopback and on a veth peer"
check "loopback up" ip link set lo up
check "namespace peer" ip netns add peer
check "veth pair" ip link add con-v0 type veth peer name con-v1
check "peer end in namespace peer" ip link set con-v1 netns peer
check "address 10.77.0.1" ip addr add 10.77.0.1/24 dev con-v0
check "con-v0 up" ip link set con-v0 up
check "address 10.77.0.2 (peer)" ip netns exec peer ip addr add 10.77.0.2/24 dev con-v1
check "con-v1 up (peer)" ip netns exec peer ip link set con-v1 up
check "lo up (peer)" ip netns exec peer ip link set lo up
PIDS=()
cleanup() {
        for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
        ip netns del peer 2>/dev/null
        ip link del con-v0 2>/dev/null
}
trap 'cleanup; _lib_exit' EXIT
python3 "$NET" serve-tcp 127.0.0.1 7000 >/dev/null & PIDS+=($!)
python3 "$NET" serve-udp 127.0.0.1 7001 >/dev/null & PIDS+=($!)
for port in 8443 9000; do
        ip netns exec peer python3 "$NET" serve-tcp 10.77.0.2 $port >/dev/null & PIDS+=($!)
        ip netns exec peer python3 "$NET" serve-udp 10.77.0.2 $port >/dev/null & PIDS+=($!)
done
for i in $(seq 50); do
        python3 "$NET" tcp 10.77.0.2 9000 >/dev/null 2>&1 && python3 "$NET" tcp 127.0.0.1 7000 >/dev/null 2>&1 && break
        sleep 0.1
done
check_output "root reaches the veth peer before bootstrap" '^connected hello' python3 "$NET" tcp 10.77.0.2 9000

section "bootstrap generates the table"
check_output "con bootstrap creates the table" 'create nftables table inet conspiracyos \(network door: 4 agents' \
        con bootstrap --config "$CFG"
check "bootstrap again" con bootstrap --config "$CFG"
check_fail "... without a warning about the host-name entry (the egress gateway serves it)" grep -q 'host name' <<<"$LIB_OUT"
check_output "a second bootstrap changes nothing in the table" '^bootstrap: nothing to change' con bootstrap --config "$CFG"
check_eq "one table" "$(nft list tables | grep -c conspiracyos)" 1
check_output "policy check passes" '^policy: all four doors match' con policy check --config "$CFG"
check_output "policy show: the network door of each agent" \
        'a-lister +allow-list +10\.77\.0\.0/24:8443, the egress gateway 127\.0\.0\.1:3128 for api\.example\.com:443$' \
        con policy show --config "$CFG"
check_output "policy show: none and gateway send nothing" 'a-shut +none +nothing' con policy show --config "$CFG"
check "policy show --json: the network door" jq -e -n 'input | .network[] | select(.user == "a-lister") |
        .network == "allow-list" and .kernel == ["10.77.0.0/24:8443"] and .via_gateway == ["api.example.com:443"]' \
        <<<"$(con policy show --json --config "$CFG")"
SHUT=$(id -u a-shut) QUIET=$(id -u a-quiet) LISTER=$(id -u a-lister)
check_output "the table drops a-shut's packets" "meta skuid $SHUT reject with icmpx 3 comment \"agent shut: network none\"" \
        nft -n list table inet conspiracyos
check_output "the table drops a-quiet's packets (gateway is the default)" "meta skuid $QUIET reject with icmpx 3 comment \"agent quiet: network gateway\"" \
        nft -n list table inet conspiracyos
check_output "a-lister: the egress gateway's port on loopback" "meta skuid $LISTER ip daddr 127.0.0.1 tcp dport 3128 accept comment \"agent lister: egress gateway\"" \
        nft -n list table inet conspiracyos
check_output "a-lister: its CIDR:port" "meta skuid $LISTER ip daddr 10.77.0.0/24 meta l4proto \{ 6, 17 \} th dport 8443 accept" \
        nft -n list table inet conspiracyos

section "none and gateway agents send nothing"
for a in shut quiet; do
        check_fail_output "a-$a: TCP to 127.0.0.1 refused by the kernel" 'error E(PERM|HOSTUNREACH)' runuser -u a-$a -- python3 "$NET" tcp 127.0.0.1 7000
        check_fail_output "a-$a: UDP to 127.0.0.1 refused" 'error E(PERM|HOSTUNREACH)' runuser -u a-$a -- python3 "$NET" udp 127.0.0.1 7001
        check_fail_output "a-$a: TCP to the veth peer refused" 'error E(PERM|HOSTUNREACH)' runuser -u a-$a -- python3 "$NET" tcp 10.77.0.2 9000
        check_fail_output "a-$a: UDP to the veth peer refused" 'error E(PERM|HOSTUNREACH)' runuser -u a-$a -- python3 "$NET" udp 10.77.0.2 9000
        check_fail_output "a-$a: ping (cap_net_raw) refused" 'Operation not permitted|100% packet loss' \
                runuser -u a-$a -- ping -n -c 1 -W 1 10.77.0.2
done
check_fail_output "a-shut: ping of loopback refused" 'Operation not permitted|100% packet loss' \
        runuser -u a-shut -- ping -n -c 1 -W 1 127.0.0.1
check_fail_output "a-shut: no raw socket without ping's capability" 'error E(PERM|HOSTUNREACH)' \
        runuser -u a-shut -- python3 -c 'import socket,errno
try: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
except OSError as e: print("error", errno.errorcode[e.errno]); raise SystemExit(1)'

section "an agent's session (exec runner, through con-agentd) is refused the same way"
check_output "con-send --to runner: the session runs as a-runner" '^uid a-runner' con-send --to runner --timeout 60 go
check_eq "... its TCP and UDP were refused by the kernel" 2 "$(grep -cE '^error E(PERM|HOSTUNREACH)' <<<"$LIB_OUT")"

section "root and other users are unaffected"
check_output "root: TCP to 127.0.0.1" '^connected hello' python3 "$NET" tcp 127.0.0.1 7000
check_output "root: UDP to 127.0.0.1" '^answer echo ping' python3 "$NET" udp 127.0.0.1 7001
check_output "root: TCP to the veth peer" '^connected hello' python3 "$NET" tcp 10.77.0.2 9000
check_output "root: UDP to the veth peer" '^answer echo ping' python3 "$NET" udp 10.77.0.2 9000
check "root: ping of the veth peer" ping -n -c 1 -W 2 10.77.0.2
check_output "nobody: TCP to the veth peer" '^connected hello' runuser -u nobody -- python3 "$NET" tcp 10.77.0.2 9000
check_output "con-models: TCP to the veth peer" '^connected hello' runuser -u con-models -- python3 "$NET" tcp 10.77.0.2 9000

section "an allow-listed agent reaches only its CIDR:port"
check_output "a-lister: TCP to 10.77.0.2:8443" '^connected hello' runuser -u a-lister -- python3 "$NET" tcp 10.77.0.2 8443
check_output "a-lister: UDP to 10.77.0.2:8443" '^answer echo ping' runuser -u a-lister -- python3 "$NET" udp 10.77.0.2 8443
check_fail_output "a-lister: TCP to 10.77.0.2:9000 refused" 'error E(PERM|HOSTUNREACH)' runuser -u a-lister -- python3 "$NET" tcp 10.77.0.2 9000
check_fail_output "a-lister: UDP to 10.77.0.2:9000 refused" 'error E(PERM|HOSTUNREACH)' runuser -u a-lister -- python3 "$NET" udp 10.77.0.2 9000
check_fail_output "a-lister: TCP to 127.0.0.1:7000 refused" 'error E(PERM|HOSTUNREACH)' runuser -u a-lister -- python3 "$NET" tcp 127.0.0.1 7000
check_fail_output "a-lister: ping refused" 'Operation not permitted|100% packet loss' \
        runuser -u a-lister -- ping -n -c 1 -W 1 10.77.0.2

section "drift: a deleted or altered table is named and repaired"
check "delete the table" nft delete table inet conspiracyos
check_fail_output "policy check names the missing table" \
        '^drift: nftables table inet conspiracyos: missing; the config generates it \(run con bootstrap\)' \
        con policy check --config "$CFG"
check_output "a-shut can connect while the table is gone (the check is not vacuous)" '^connected hello' \
        runuser -u a-shut -- python3 "$NET" tcp 10.77.0.2 9000
check_output "con bootstrap repairs it" 'create nftables table inet conspiracyos' con bootstrap --config "$CFG"
check_fail_output "a-shut is cut off again" 'error E(PERM|HOSTUNREACH)' runuser -u a-shut -- python3 "$NET" tcp 10.77.0.2 9000
check "insert an accept rule for a-shut" nft insert rule inet conspiracyos output meta skuid "$SHUT" accept
check_fail_output "policy check names the altered table" \
        "^drift: nftables table inet conspiracyos: line 4 is 'meta skuid $SHUT accept' where the config generates" \
        con policy check --config "$CFG"
check_output "con bootstrap replaces it" 'replace nftables table inet conspiracyos' con bootstrap --config "$CFG"
check_output "policy check passes again" '^policy: all four doors match' con policy check --config "$CFG"
check_fail_output "a-shut is cut off again" 'error E(PERM|HOSTUNREACH)' runuser -u a-shut -- python3 "$NET" tcp 10.77.0.2 9000

section "the config changes: a-shut gets an allow-list"
sed -i 's|^    network: none$|    network: ["10.77.0.2/32:9000"]|' "$CFG"
check_fail_output "policy check names the difference" '^drift: nftables table inet conspiracyos: line ' \
        con policy check --config "$CFG"
check_output "con bootstrap replaces the table" 'replace nftables table inet conspiracyos' con bootstrap --config "$CFG"
check_eq "still one table" "$(nft list tables | grep -c conspiracyos)" 1
check_output "a-shut: TCP to 10.77.0.2:9000 now allowed" '^connected hello' runuser -u a-shut -- python3 "$NET" tcp 10.77.0.2 9000
check_fail_output "a-shut: 10.77.0.2:8443 still refused" 'error E(PERM|HOSTUNREACH)' runuser -u a-shut -- python3 "$NET" tcp 10.77.0.2 8443

section "removal"
check "nft delete table inet conspiracyos removes it" nft delete table inet conspiracyos
check_eq "no table" "$(nft list tables | grep -c conspiracyos)" 0
check_output "a-quiet can connect without the table" '^connected hello' runuser -u a-quiet -- python3 "$NET" tcp 10.77.0.2 9000

finish
