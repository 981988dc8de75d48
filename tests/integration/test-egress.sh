#!/bin/bash
# The egress gateway, con-egressd (docs/NETWORK.md), inside tests/sandbox/con-sandbox (its own
# network namespace): con up starts it as con-egress on 127.0.0.1:3128; the kernel lets
# allow-list agents reach only that port; the gateway learns the calling agent from the kernel
# (the client socket's owner, NETLINK_SOCK_DIAG), resolves names itself and lets through only
# that agent's list, for CONNECT and for plain http:// requests alike, with one audit record per
# request naming the agent (and, for a session, its task). A veth pair to a namespace made here
# (10.77.0.0/24; names in /etc/hosts) holds the servers; never an outside address.
. "$(dirname "$0")/lib.sh"
require_sandbox # it edits /etc/passwd, /etc/hosts and the netfilter tables

PROXY=3128
AUDIT=/srv/con/logs/audit/audit.jsonl
mkdir -p /etc/con
CFG=/etc/con/con.yaml
cat >"$CFG" <<'EOF'
system:
  name: egresstest
agents:
  - name: fetcher
    network: ["allowed.example.test:8080", "*.suffix.test:8080", "local.example.test:7000", "10.77.0.2/32:9443"]
  - name: other
    network: ["other.example.test:8080"]
  - name: shut
    network: none
  - name: quiet
  - name: svconly
  - name: runner
    runner: exec
    command: [/usr/local/libexec/con-test-egress/fetch]
    network: ["allowed.example.test:8080"]
egress:
  services:
    echo:
      base_url: http://allowed.example.test:8080/svc
      header: X-Api-Key
      prefix: "Key "
      secret: TEST_ECHO_TOKEN
      agents: [fetcher, runner, svconly, shut]
EOF
# The service's secret, with the model keys (root:con-models 0640 after bootstrap).
SECRET=s3cr3t-$RANDOM$RANDOM
printf 'TEST_ECHO_TOKEN=%s\n' "$SECRET" >/etc/con/env
cat >>/etc/hosts <<'EOF'
10.77.0.2 allowed.example.test other.example.test denied.example.test a.suffix.test
127.0.0.1 local.example.test
EOF

# Clients that say exactly what happened: through the proxy (CONNECT, plain http:// by hand,
# curl with the proxy variables) and direct (errno names, so a refusal by the kernel is never
# mistaken for a server that is not there).
NET=/usr/local/lib/con-egress-test.py
mkdir -p /usr/local/lib
cat >"$NET" <<'EOF'
import errno, socket, sys
mode = sys.argv[1]
def fail(e):
    print("error", errno.errorcode.get(e.errno, "timeout") if e.errno else "timeout", e)
    sys.exit(1)
def proxy():
    s = socket.socket(); s.settimeout(5)
    try:
        s.connect(("127.0.0.1", int(sys.argv[2])))
    except OSError as e:
        fail(e)
    return s
def read_all(s):
    data = b""
    while True:
        try:
            d = s.recv(65536)
        except OSError:
            break
        if not d:
            break
        data += d
    return data.decode(errors="replace")
if mode == "connect":       # connect PROXYPORT HOST:PORT
    s = proxy()
    s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (sys.argv[3], sys.argv[3])).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        d = s.recv(1)
        if not d: break
        head += d
    print(head.split(b"\r\n")[0].decode())
    if b" 200 " not in head.split(b"\r\n")[0]:
        print(read_all(s)); sys.exit(1)
    host = sys.argv[3].rsplit(":", 1)[0]
    s.sendall(("GET /hello HTTP/1.0\r\nHost: %s\r\n\r\n" % host).encode())
    print(read_all(s))
elif mode == "plain":       # plain PROXYPORT URL
    s = proxy()
    host = sys.argv[3].split("/")[2]
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nProxy-Connection: keep-alive\r\n\r\n" % (sys.argv[3], host)).encode())
    out = read_all(s); print(out)
    sys.exit(0 if out.startswith("HTTP/1.0 200") or out.startswith("HTTP/1.1 200") else 1)
elif mode == "serve-http":  # a small web server (python3-minimal has no http.server)
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[2], int(sys.argv[3]))); s.listen(16)
    while True:
        c, _ = s.accept(); c.settimeout(5); head = b""
        try:
            while b"\r\n\r\n" not in head:
                d = c.recv(4096)
                if not d: break
                head += d
            body = b"hello from peer\n"
            path = head.split(b" ")[1] if b" " in head else b""
            if path.startswith(b"/svc/"):
                # A credentialed service: say which key and body arrived (the test compares).
                hd = head.split(b"\r\n\r\n", 1)
                lines = hd[0].split(b"\r\n")[1:]
                key = [l.split(b":", 1)[1].strip() for l in lines if l.lower().startswith(b"x-api-key:")]
                want = [int(l.split(b":", 1)[1]) for l in lines if l.lower().startswith(b"content-length:")]
                got = hd[1] if len(hd) > 1 else b""
                while want and len(got) < want[0]:
                    d = c.recv(4096)
                    if not d: break
                    got += d
                # Never echo the key itself (answers end up in results): only whether it was right.
                seen = b"ok" if key == [b"Key " + sys.argv[4].encode()] else b"wrong" if key else b"none"
                body = b"service saw key [" + seen + b"] path " + path + b" body [" + got + b"]\n"
            elif path != b"/hello":
                body = b"request line " + head.split(b"\r\n")[0] + b"\n"
            c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        except OSError:
            pass
        c.close()
elif mode == "serve-tcp":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[2], int(sys.argv[3]))); s.listen(16)
    while True:
        c, _ = s.accept(); c.sendall(b"hello from tcp\n"); c.close()
elif mode == "serve-udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[2], int(sys.argv[3])))
    while True:
        d, a = s.recvfrom(100); s.sendto(b"echo " + d, a)
elif mode == "get":         # get HOST PORT: GET /hello directly
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect((sys.argv[2], int(sys.argv[3]))); s.sendall(b"GET /hello HTTP/1.0\r\n\r\n"); print(read_all(s))
    except OSError as e:
        fail(e)
elif mode == "tcp":
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect((sys.argv[2], int(sys.argv[3]))); print("connected", s.recv(100).decode().strip())
    except OSError as e:
        fail(e)
elif mode == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
    try:
        s.sendto(b"ping", (sys.argv[2], int(sys.argv[3]))); print("answer", s.recv(100).decode())
    except OSError as e:
        fail(e)
EOF
chmod 0755 "$NET"
# The exec runner of agent `runner`: its session (forked by con-agentd as a-runner) fetches through
# the proxy named by the variables the session was given.
mkdir -p /usr/local/libexec/con-test-egress
cat >/usr/local/libexec/con-test-egress/fetch <<EOF
#!/bin/sh
echo "uid \$(id -un) task \$CON_TASK_ID"
echo "proxy \$https_proxy \$HTTP_PROXY"
curl -sS -f http://allowed.example.test:8080/hello 2>&1
curl -sS -f http://denied.example.test:8080/hello 2>&1
echo "env-secret \$(env | grep -c s3cr3t)"
curl -sS -f --noproxy '*' http://127.0.0.1:\${HTTP_PROXY##*:}/echo/from-session 2>&1
exit 0
EOF
chmod 0755 /usr/local/libexec/con-test-egress /usr/local/libexec/con-test-egress/fetch

section "setup: servers on a veth peer and on loopback"
check "loopback up" ip link set lo up
check "namespace peer" ip netns add peer
check "veth pair" ip link add con-e0 type veth peer name con-e1
check "peer end in namespace peer" ip link set con-e1 netns peer
check "address 10.77.0.1" ip addr add 10.77.0.1/24 dev con-e0
check "con-e0 up" ip link set con-e0 up
check "address 10.77.0.2 (peer)" ip netns exec peer ip addr add 10.77.0.2/24 dev con-e1
check "con-e1 up (peer)" ip netns exec peer ip link set con-e1 up
check "lo up (peer)" ip netns exec peer ip link set lo up
PIDS=()
cleanup() {
        for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
        ip netns del peer 2>/dev/null
        ip link del con-e0 2>/dev/null
}
trap 'cleanup; _lib_exit' EXIT
ip netns exec peer python3 "$NET" serve-http 10.77.0.2 8080 "$SECRET" >/dev/null 2>&1 & PIDS+=($!)
ip netns exec peer python3 "$NET" serve-tcp 10.77.0.2 9443 >/dev/null 2>&1 & PIDS+=($!)
ip netns exec peer python3 "$NET" serve-udp 10.77.0.2 53 >/dev/null 2>&1 & PIDS+=($!)
python3 "$NET" serve-tcp 127.0.0.1 7000 >/dev/null 2>&1 & PIDS+=($!)
check "the peer's web server answers root" wait_for 10 python3 "$NET" get 10.77.0.2 8080
check "the peer's TCP server answers root" wait_for 10 python3 "$NET" tcp 10.77.0.2 9443
check "the loopback server answers root" wait_for 10 python3 "$NET" tcp 127.0.0.1 7000

section "bootstrap and con up start the gateway"
check "con bootstrap" con bootstrap --config "$CFG"
check "bootstrap made the gateway's user con-egress" id con-egress
check_fail "con-egress is not in group con" sh -c 'id -nG con-egress | tr " " "\n" | grep -qx con'
check_output "the table lets a-fetcher reach the proxy" \
        "meta skuid $(id -u a-fetcher) ip daddr 127.0.0.1 tcp dport $PROXY accept comment \"agent fetcher: egress gateway\"" \
        nft -n list table inet conspiracyos
check_eq "... and not a-shut or a-quiet" "$(nft -n list table inet conspiracyos | grep -cE "skuid ($(id -u a-shut)|$(id -u a-quiet)) ip daddr 127")" 0
check_output "policy show names the gateway for host entries" \
        "a-fetcher +allow-list +10\.77\.0\.2:9443, the egress gateway 127\.0\.0\.1:$PROXY for allowed\.example\.test:8080" \
        con policy show --config "$CFG"
check_output "policy check passes" '^policy: all four doors match' con policy check --config "$CFG"
check_output "con up starts the egress gateway" "^egress gateway: started on 127.0.0.1 port $PROXY" con up
check_output "con-egressd runs as con-egress" '^con-egress$' ps -o user= -C con-egressd

section "an allow-listed host through the proxy"
check_output "a-fetcher: CONNECT allowed.example.test:8080" '^HTTP/1.1 200 Connection established' \
        runuser -u a-fetcher -- python3 "$NET" connect $PROXY allowed.example.test:8080
check_output "... and the tunnel carries the server's answer" 'hello from peer' echo "$LIB_OUT"
check_output "a-fetcher: plain GET http://allowed.example.test:8080/hello (origin form upstream)" 'hello from peer' \
        runuser -u a-fetcher -- python3 "$NET" plain $PROXY http://allowed.example.test:8080/hello
check_output "a-fetcher: a suffix entry (*.suffix.test)" 'hello from peer' \
        runuser -u a-fetcher -- python3 "$NET" plain $PROXY http://a.suffix.test:8080/hello
check_output "a-fetcher: an address entry through the proxy" 'hello from tcp' \
        runuser -u a-fetcher -- python3 "$NET" connect $PROXY 10.77.0.2:9443
check_output "a-fetcher: curl with the proxy variable" '^hello from peer' \
        runuser -u a-fetcher -- env http_proxy=http://127.0.0.1:$PROXY curl -sS -f http://allowed.example.test:8080/hello
check_output "a-fetcher: curl through the CONNECT tunnel (-p)" '^hello from peer' \
        runuser -u a-fetcher -- curl -sS -f -p -x http://127.0.0.1:$PROXY http://a.suffix.test:8080/hello
sleep 0.3
check "the audit log has an allowed CONNECT record for fetcher, with bytes" jq -e -s \
        'map(select(.event == "egress.request" and .agent == "fetcher" and .method == "CONNECT" and .host == "allowed.example.test"
                    and .port == 8080 and .decision == "allowed" and .bytes_in > 0 and .bytes_out > 0)) | length >= 1' "$AUDIT"

section "hosts not on the list are refused, CONNECT and plain HTTP alike"
check_fail_output "a-fetcher: CONNECT denied.example.test:8080 refused (403)" '^HTTP/1.1 403 Forbidden' \
        runuser -u a-fetcher -- python3 "$NET" connect $PROXY denied.example.test:8080
check_output "... with a clear reason" 'agent fetcher may not reach denied.example.test:8080 \(not on its network allow-list' echo "$LIB_OUT"
check_fail_output "a-fetcher: plain GET http://denied.example.test:8080/ refused (403)" '^HTTP/1.1 403 Forbidden' \
        runuser -u a-fetcher -- python3 "$NET" plain $PROXY http://denied.example.test:8080/hello
check_fail_output "a-fetcher: a listed host on another port refused" '^HTTP/1.1 403 Forbidden' \
        runuser -u a-fetcher -- python3 "$NET" connect $PROXY allowed.example.test:9443
check_fail_output "a-fetcher: the bare suffix (suffix.test) is not below it" '^HTTP/1.1 403 Forbidden' \
        runuser -u a-fetcher -- python3 "$NET" connect $PROXY suffix.test:8080
check_fail_output "a-fetcher: an address not listed, through the proxy" '^HTTP/1.1 403 Forbidden' \
        runuser -u a-fetcher -- python3 "$NET" connect $PROXY 10.77.0.2:8080
check_fail_output "a-fetcher: a listed name that resolves to loopback is not followed there" \
        'resolves to a local address' runuser -u a-fetcher -- python3 "$NET" connect $PROXY local.example.test:7000
check_fail_output "a-fetcher: the proxy itself is no way to this host's services" '^HTTP/1.1 403 Forbidden' \
        runuser -u a-fetcher -- python3 "$NET" connect $PROXY 127.0.0.1:7000
sleep 0.3
check "audit: the denied CONNECT names the agent, host and port" jq -e -s \
        'map(select(.event == "egress.request" and .agent == "fetcher" and .method == "CONNECT" and .host == "denied.example.test"
                    and .port == 8080 and .decision == "denied" and .status == 403 and .uid > 0)) | length == 1' "$AUDIT"
check "audit: the denied plain GET too" jq -e -s \
        'map(select(.event == "egress.request" and .agent == "fetcher" and .method == "GET" and .host == "denied.example.test"
                    and .decision == "denied")) | length == 1' "$AUDIT"
check_fail "audit: no record carries content (no path, no body)" grep -q 'hello' "$AUDIT"

section "one agent cannot use another's allow-list"
check_fail_output "a-other: allowed.example.test (fetcher's) refused" '^HTTP/1.1 403 Forbidden' \
        runuser -u a-other -- python3 "$NET" connect $PROXY allowed.example.test:8080
check_output "a-other: its own other.example.test works" 'hello from peer' \
        runuser -u a-other -- python3 "$NET" plain $PROXY http://other.example.test:8080/hello
check_fail_output "a-fetcher: other.example.test (other's) refused" '^HTTP/1.1 403 Forbidden' \
        runuser -u a-fetcher -- python3 "$NET" plain $PROXY http://other.example.test:8080/hello
check_fail_output "root is no agent: the proxy refuses it" 'is not an agent of this system' \
        python3 "$NET" connect $PROXY allowed.example.test:8080

section "the kernel: clients that ignore the proxy, none and gateway agents"
check_fail_output "a-fetcher: direct TCP to the web server (ignoring the proxy) refused by the kernel" 'error E(PERM|HOSTUNREACH)' \
        runuser -u a-fetcher -- python3 "$NET" tcp 10.77.0.2 8080
check_fail_output "a-fetcher: DNS (UDP 53) to the peer refused" 'error E(PERM|HOSTUNREACH)' \
        runuser -u a-fetcher -- python3 "$NET" udp 10.77.0.2 53
check_fail_output "a-fetcher: loopback besides the proxy refused" 'error E(PERM|HOSTUNREACH)' \
        runuser -u a-fetcher -- python3 "$NET" tcp 127.0.0.1 7000
check_output "a-fetcher: its address entry directly (kernel allows it)" '^connected hello from tcp' \
        runuser -u a-fetcher -- python3 "$NET" tcp 10.77.0.2 9443
for a in shut quiet; do
        check_fail_output "a-$a: the proxy port refused by the kernel" 'error E(PERM|HOSTUNREACH)' \
                runuser -u a-$a -- python3 "$NET" tcp 127.0.0.1 $PROXY
        check_fail_output "a-$a: TCP to the web server refused" 'error E(PERM|HOSTUNREACH)' \
                runuser -u a-$a -- python3 "$NET" tcp 10.77.0.2 8080
        check_fail_output "a-$a: DNS (UDP 53) refused" 'error E(PERM|HOSTUNREACH)' \
                runuser -u a-$a -- python3 "$NET" udp 10.77.0.2 53
        check_fail_output "a-$a: ping refused" 'Operation not permitted|100% packet loss' \
                runuser -u a-$a -- ping -n -c 1 -W 1 10.77.0.2
done
check_output "root: direct to the web server" 'hello from peer' python3 "$NET" get 10.77.0.2 8080
check_output "root: UDP to the peer" '^answer echo ping' python3 "$NET" udp 10.77.0.2 53
check_output "con-egress (the gateway's user): direct to the web server" 'hello from peer' runuser -u con-egress -- python3 "$NET" get 10.77.0.2 8080
check_output "con-models: direct to the web server" 'hello from peer' runuser -u con-models -- python3 "$NET" get 10.77.0.2 8080

section "an agent's session gets the proxy variables; its records name the task"
check_output "con-send --to runner: the session fetched through the proxy" 'hello from peer' \
        con-send --to runner --timeout 60 go
check_output "... as a-runner, with https_proxy and HTTP_PROXY set" "^proxy http://127.0.0.1:$PROXY http://127.0.0.1:$PROXY" echo "$LIB_OUT"
check_output "... and denied.example.test was refused" 'error: 403' echo "$LIB_OUT"
TASK=$(sed -n 's/^uid a-runner task \([^ ]*\)$/\1/p' <<<"$LIB_OUT")
check "the session knew its task (${TASK:-none})" test -n "$TASK"
sleep 0.5
check "audit: runner's allowed request names its task" jq -e -s --arg t "$TASK" \
        'map(select(.event == "egress.request" and .agent == "runner" and .task_id == $t and .decision == "allowed"
                    and .via == "proxy")) | length == 1' "$AUDIT"
check "audit: so does its call of the credentialed service" jq -e -s --arg t "$TASK" \
        'map(select(.event == "egress.request" and .agent == "runner" and .task_id == $t and .decision == "allowed"
                    and .via == "echo")) | length == 1' "$AUDIT"
check "audit: runner's denied request names its task" jq -e -s --arg t "$TASK" \
        'map(select(.event == "egress.request" and .agent == "runner" and .task_id == $t and .decision == "denied"
                    and .host == "denied.example.test")) | length == 1' "$AUDIT"
check "the audit chain verifies" con audit verify

section "a credentialed service: the gateway adds the secret, no agent holds it"
check_output "a-fetcher: GET /echo/... reaches the service with the key added" \
        "^service saw key \\[ok\\] path /svc/repos/x\\?page=2 body \\[\\]" \
        runuser -u a-fetcher -- curl -sS -f --noproxy '*' "http://127.0.0.1:$PROXY/echo/repos/x?page=2"
check_output "a-fetcher: POST with a body" "^service saw key \\[ok\\] path /svc/issues body \\[\\{\"title\": \"t\"\\}\\]" \
        runuser -u a-fetcher -- curl -sS -f --noproxy '*' -H 'Content-Type: application/json' -d '{"title": "t"}' \
        "http://127.0.0.1:$PROXY/echo/issues"
check_fail_output "a-other (not named by the service) is refused" 'agent other may not use the service echo' \
        runuser -u a-other -- sh -c "curl -sS --noproxy '*' http://127.0.0.1:$PROXY/echo/repos/x; exit 1"
check_fail_output "... with 403" '^HTTP/1.1 403' runuser -u a-other -- curl -sS -i -f --noproxy '*' "http://127.0.0.1:$PROXY/echo/repos/x"
check_fail_output "an unknown service is refused" 'may not use the service nosuch' \
        runuser -u a-fetcher -- sh -c "curl -sS --noproxy '*' http://127.0.0.1:$PROXY/nosuch/x; exit 1"
check_fail_output "a-shut cannot reach the service endpoint at all (kernel)" 'error E(PERM|HOSTUNREACH)' \
        runuser -u a-shut -- python3 "$NET" tcp 127.0.0.1 $PROXY
check_output "a-svconly (network gateway, named by the service) may reach the gateway" \
        "meta skuid $(id -u a-svconly) ip daddr 127.0.0.1 tcp dport $PROXY accept" nft -n list table inet conspiracyos
check_output "... and uses the service" "^service saw key \\[ok\\] path /svc/x" \
        runuser -u a-svconly -- curl -sS -f --noproxy '*' "http://127.0.0.1:$PROXY/echo/x"
check_fail_output "... but no host through the proxy (its list is empty)" '^HTTP/1.1 403' \
        runuser -u a-svconly -- python3 "$NET" connect $PROXY allowed.example.test:8080
check_fail_output "... nor directly" 'error E(PERM|HOSTUNREACH)' runuser -u a-svconly -- python3 "$NET" tcp 10.77.0.2 8080
check_output "policy show: the gateway for its service" "a-svconly +gateway +the egress gateway 127\\.0\\.0\\.1:$PROXY for services: echo" \
        con policy show
check_output "a-shut (network none) named by the service stays cut off" 'a-shut +none +nothing' con policy show
check_fail "no agent can read the key file" runuser -u a-fetcher -- cat /etc/con/env
check_fail "con-egress cannot read it either (read by root at start)" runuser -u con-egress -- cat /etc/con/env
check_eq "no agent process has the secret in its environment" \
        "$(for p in $(pgrep -u "$(id -u a-fetcher),$(id -u a-runner),$(id -u a-other)"); do cat /proc/$p/environ 2>/dev/null; done | grep -c "$SECRET")" 0
check_eq "nothing under /srv/con or /home holds it" "$(grep -rl "$SECRET" /srv/con /home 2>/dev/null | wc -l)" 0
check_output "the runner's session uses the service; its environment has no secret" '^env-secret 0$' \
        con-send --to runner --timeout 60 go
check_output "... and the service answered it" "^service saw key \\[ok\\] path /svc/from-session" echo "$LIB_OUT"
sleep 0.5
check "audit: the service calls are recorded (via echo, allowed, bytes)" jq -e -s \
        'map(select(.event == "egress.request" and .agent == "fetcher" and .via == "echo" and .decision == "allowed"
                    and .host == "allowed.example.test" and .status == 200 and .bytes_in > 0)) | length == 2' "$AUDIT"
check "audit: the refusal names the agent and the service" jq -e -s \
        'map(select(.event == "egress.request" and .agent == "other" and .host == "echo" and .decision == "denied")) | length == 2' "$AUDIT"
check_fail "audit: the secret is in no record" grep -q "$SECRET" "$AUDIT"

section "SIGHUP: a changed allow-list takes effect without a restart"
echo "10.77.0.2 later.example.test" >>/etc/hosts
check_fail_output "a-other: later.example.test is not on its list yet" '^HTTP/1.1 403' \
        runuser -u a-other -- python3 "$NET" connect $PROXY later.example.test:8080
sed -i 's|network: \["other.example.test:8080"\]|network: ["other.example.test:8080", "later.example.test:8080"]|' "$CFG"
EPID=$(pgrep -x con-egressd)
check "SIGHUP to con-egressd (pid ${EPID:-none})" kill -HUP "$EPID"
check "it reloads (its log says so)" wait_for 5 grep -q 'Reloaded: 6 agents' /srv/con/logs/daemons/con-egressd.log
check_output "a-other: later.example.test now works" '^HTTP/1.1 200 Connection established' \
        runuser -u a-other -- python3 "$NET" connect $PROXY later.example.test:8080
check_eq "the same process" "$(pgrep -x con-egressd)" "$EPID"
sed -i 's|^egress:$|  - name: newbie\n    network: ["later.example.test:8080"]\negress:|' "$CFG"
check_output "con bootstrap of a new agent tells the gateway to reload" '^reload con-egressd$' con bootstrap
check_output "a-newbie: through the proxy at once" '^HTTP/1.1 200 Connection established' \
        runuser -u a-newbie -- python3 "$NET" connect $PROXY later.example.test:8080
check_fail_output "a-newbie: only its own list" '^HTTP/1.1 403' \
        runuser -u a-newbie -- python3 "$NET" connect $PROXY allowed.example.test:8080

section "a changed secret and egress.port take effect on con bootstrap, without a restart"
EPID=$(pgrep -x con-egressd)
LOG=/srv/con/logs/daemons/con-egressd.log
# The admin replaces the key file (a new file renamed over it, as editors do): same owner and
# mode, so bootstrap has nothing to change, and still tells the gateway.
set_secret() {
        printf 'TEST_ECHO_TOKEN=%s\n' "$1" >/etc/con/env.new && chown --reference=/etc/con/env /etc/con/env.new &&
                chmod --reference=/etc/con/env /etc/con/env.new && mv /etc/con/env.new /etc/con/env
}
check "a new secret in /etc/con/env" set_secret "rotated-$SECRET"
n=$(grep -c "Reloaded the services' secrets" "$LOG")
check_output "con bootstrap (nothing else changed) tells the gateway" '^reload con-egressd$' con bootstrap
check_output "... and has nothing else to change" 'nothing to change' echo "$LIB_OUT"
check "the gateway read the secrets again through its keeper (its log)" wait_for 5 bash -c \
        "[ \$(grep -c \"Reloaded the services' secrets from /etc/con/env (1 variable)\" '$LOG') -gt $n ]"
check_output "the service gets the new key now (the test server knows only the old one)" \
        "^service saw key \\[wrong\\] path /svc/rotated" \
        runuser -u a-fetcher -- curl -sS -f --noproxy '*' "http://127.0.0.1:$PROXY/echo/rotated"
check "the old secret again" set_secret "$SECRET"
check "SIGHUP alone does it too" kill -HUP "$EPID"
check "... (its log)" wait_for 5 bash -c "[ \$(grep -c \"Reloaded the services' secrets\" '$LOG') -gt \$(( $n + 1 )) ]"
check_output "the service gets the old key again" "^service saw key \\[ok\\] path /svc/back" \
        runuser -u a-fetcher -- curl -sS -f --noproxy '*' "http://127.0.0.1:$PROXY/echo/back"
check_eq "the same process throughout" "$(pgrep -x con-egressd)" "$EPID"
check_output "the keeper (con-egress-keys) is the gateway's child, root without capabilities" "^0 0000000000000000 0000000000000000$" \
        bash -c "k=\$(pgrep -x -P $EPID con-egress-keys) && echo \$(stat -c %u /proc/\$k) \$(sed -n 's/^Cap\(Eff\|Prm\):\t//p' /proc/\$k/status)"
check_output "con-egressd itself runs as con-egress" "^con-egress$" ps -o user= -p "$EPID"
KPID=$(pgrep -x -P "$EPID" con-egress-keys)
check "SIGHUP to the gateway and its keeper at once (as systemctl kill -s HUP does)" kill -HUP "$EPID" "$KPID"
check "the gateway read the secrets again (its log)" wait_for 5 bash -c \
        "[ \$(grep -c \"Reloaded the services' secrets\" '$LOG') -gt \$(( $n + 2 )) ]"
check_eq "... through the same keeper, which ignores SIGHUP" "$(pgrep -x -P "$EPID" con-egress-keys)" "$KPID"
check_fail "no 'keeper is gone' in its log" grep -q "The secrets keeper is gone" "$LOG"

sed -i 's|^egress:$|egress:\n  port: 3129|' "$CFG"
check_output "egress.port 3129 in the config" "^  port: 3129" cat "$CFG"
check_output "con bootstrap: the table and the gateway follow" '^reload con-egressd$' con bootstrap
check_output "the table lets agents reach the new port" "ip daddr 127.0.0.1 tcp dport 3129 accept" \
        nft -n list table inet conspiracyos
check "the gateway listens on 3129 (its log)" wait_for 5 grep -q "Listening on 127.0.0.1 port 3129 now (was $PROXY)" "$LOG"
check_output "a-fetcher: through the proxy on the new port" '^HTTP/1.1 200 Connection established' \
        runuser -u a-fetcher -- python3 "$NET" connect 3129 allowed.example.test:8080
check_output "ss sees the gateway listening on 3129" "127.0.0.1:3129" ss -Hltn
check_fail "nobody listens on the old port any more" bash -c "ss -Hltn | grep -F '127.0.0.1:$PROXY '"
check_eq "the same process" "$(pgrep -x con-egressd)" "$EPID"
sed -i '/^  port: 3129$/d' "$CFG"
check_output "back to the default port" '^reload con-egressd$' con bootstrap
check "the gateway listens on $PROXY again" wait_for 5 grep -q "Listening on 127.0.0.1 port $PROXY now (was 3129)" "$LOG"
check_output "a-fetcher: through the proxy on $PROXY" '^HTTP/1.1 200 Connection established' \
        runuser -u a-fetcher -- python3 "$NET" connect $PROXY allowed.example.test:8080

section "quarantine cuts the agent's network at once; release restores it"
check "con quarantine fetcher" con quarantine fetcher --reason "egress test"
check "the table cuts a-fetcher (within 5 s)" wait_for 5 sh -c \
        "nft -n list table inet conspiracyos | grep -q 'meta skuid $(id -u a-fetcher) reject with icmpx 3 comment \"agent fetcher: network cut (quarantined)\"'"
check_eq "... and lets nothing of it through" "$(nft -n list table inet conspiracyos | grep -c "skuid $(id -u a-fetcher) .*accept")" 0
check_fail_output "a-fetcher: the proxy port refused by the kernel" 'error E(PERM|HOSTUNREACH)' \
        runuser -u a-fetcher -- python3 "$NET" tcp 127.0.0.1 $PROXY
check_fail_output "a-fetcher: its address entry refused too" 'error E(PERM|HOSTUNREACH)' \
        runuser -u a-fetcher -- python3 "$NET" tcp 10.77.0.2 9443
check_output "a-other is not cut" 'hello from peer' \
        runuser -u a-other -- python3 "$NET" plain $PROXY http://other.example.test:8080/hello
check_output "policy check agrees (the table follows the markers)" '^policy: all four doors match' con policy check
check "con release fetcher" con release fetcher
check "the cut is lifted (within 5 s)" wait_for 5 sh -c \
        "nft -n list table inet conspiracyos | grep -q 'skuid $(id -u a-fetcher) ip daddr 127.0.0.1 tcp dport $PROXY accept'"
check_output "a-fetcher: through the proxy again" '^HTTP/1.1 200 Connection established' \
        runuser -u a-fetcher -- python3 "$NET" connect $PROXY allowed.example.test:8080

section "a contract watches the table (network_drift)"
CDIR=$(lib_tmp)
cat >"$CDIR/CON-NET-001.yaml" <<'YAML'
id: CON-NET-001
description: The network door's nftables table is what the config generates.
type: detective
frequency: 1m
scope: system
checks:
  - name: network_table
    network_drift: {}
    on_fail:
      action: alert
      message: "The nftables table inet conspiracyos is missing or altered. Run con policy check, then con bootstrap."
YAML
check "network_drift passes on the table bootstrap made" jq -e \
        '.results | map(select(.check == "network_table" and .status == "pass")) | length == 1' \
        <<<"$(con healthcheck --contracts-dir "$CDIR" --json)"
check "delete the table" nft delete table inet conspiracyos
check_fail_output "network_drift fails and says the table is missing" 'inet conspiracyos: missing' \
        con healthcheck --contracts-dir "$CDIR"
check_output "con bootstrap repairs it" 'create nftables table inet conspiracyos' con bootstrap
check "insert an accept rule for a-shut" nft insert rule inet conspiracyos output meta skuid "$(id -u a-shut)" accept
check_fail_output "network_drift names the altered line" "line 4 is 'meta skuid $(id -u a-shut) accept'" \
        con healthcheck --contracts-dir "$CDIR"
check_output "con bootstrap replaces it" 'replace nftables table inet conspiracyos' con bootstrap
D=/etc/systemd/system/con-agent@fetcher.service.d/50-con-network.conf
check_output "bootstrap wrote fetcher's unit drop-in (the second layer under systemd)" "^IPAddressAllow=10.77.0.2/32$" cat "$D"
check "an edit of the drop-in" sed -i 's|^IPAddressAllow=10.77.0.2/32$|IPAddressAllow=0.0.0.0/0|' "$D"
check "a drop-in for quiet (network: gateway)" bash -c \
        "mkdir -p /etc/systemd/system/con-agent@quiet.service.d && cp '$D' /etc/systemd/system/con-agent@quiet.service.d/"
check_fail_output "network_drift names the edited drop-in" "$D: line [0-9]+ differs from what the config generates: found 'IPAddressAllow=0.0.0.0/0'" \
        con healthcheck --contracts-dir "$CDIR"
check_output "... and the one the config does not generate" \
        "con-agent@quiet.service.d/50-con-network.conf: the config does not generate it" echo "$LIB_OUT"
check_fail_output "con policy check agrees" "drift: $D: line" con policy check
check_eq "... with exit status 1 (drift)" 1 "$LIB_RC"
check_output "con bootstrap repairs the one" "write $D" con bootstrap
check_output "... and removes the other" "remove /etc/systemd/system/con-agent@quiet.service.d/50-con-network.conf" echo "$LIB_OUT"
check "network_drift passes again" jq -e \
        '.results | map(select(.check == "network_table" and .status == "pass")) | length == 1' \
        <<<"$(con healthcheck --contracts-dir "$CDIR" --json)"

section "the gateway keeps only the secrets egress.services name, and none without a service"
# The key file holds the model providers' keys too: the gateway (which handles the agents'
# traffic) must not keep them, and with no service at all it asks for nothing.
EPID=$(pgrep -x con-egressd)
check "a model key next to the service's secret" bash -c "printf 'CON_API_KEY=model-%s\nTEST_ECHO_TOKEN=%s\n' '$SECRET' '$SECRET' >/etc/con/env.new &&
        chown --reference=/etc/con/env /etc/con/env.new && chmod --reference=/etc/con/env /etc/con/env.new && mv /etc/con/env.new /etc/con/env"
check "SIGHUP" kill -HUP "$EPID"
check "the gateway read 2 variables and kept 1 (its log)" wait_for 5 grep -q \
        "Reloaded the services' secrets from /etc/con/env (2 variables); kept 1, those egress.services name" "$LOG"
check_output "the service still gets its key" "^service saw key \\[ok\\] path /svc/kept" \
        runuser -u a-fetcher -- curl -sS -f --noproxy '*' "http://127.0.0.1:$PROXY/echo/kept"
n=$(grep -c "Reloaded the services' secrets" "$LOG")
r=$(grep -c "Reloaded: " "$LOG")
check "no egress.services in the config" sed -i '/^egress:$/,$d' "$CFG"
check_fail "... (none left)" grep -q "secret:" "$CFG"
check "SIGHUP" kill -HUP "$EPID"
check "the gateway reloads (its log)" wait_for 5 bash -c "[ \$(grep -c 'Reloaded: ' '$LOG') -gt $r ]"
check "... and drops the secrets it held (its log)" wait_for 5 grep -q \
        "No egress.services any more: the services' secrets are dropped" "$LOG"
sleep 0.5
check_eq "... without asking its keeper for the key file" "$(grep -c "Reloaded the services' secrets" "$LOG")" "$n"
check_eq "the same process" "$(pgrep -x con-egressd)" "$EPID"

section "con down stops it"
check_output "con down stops the egress gateway" '^egress gateway: stopped' con down
check_fail "no con-egressd left" pgrep -x con-egressd
check "con-egressd logged to /srv/con/logs/daemons" test -s /srv/con/logs/daemons/con-egressd.log
check_fail "no sanitizer report in its log (a leak is reported at exit)" \
        grep -qE "AddressSanitizer|LeakSanitizer|runtime error" /srv/con/logs/daemons/con-egressd.log

finish
