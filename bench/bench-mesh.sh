#!/bin/bash
# Mesh benchmark (not a test): a task to an agent of another host against a task to a local
# agent, in one run. As root from the top of the checkout, with a build without sanitizers:
#
#   cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCON_SANITIZE=OFF -DBUILD_TESTING=OFF
#   cmake --build build-bench -j2
#   tests/sandbox/con-sandbox --build build-bench -- "$PWD/bench/bench-mesh.sh" build-bench
#
# (on a shared machine, inside a private network namespace as the integration tests are:
#   unshare --net sh -c 'ip link set lo up && tests/sandbox/con-sandbox ...')
#
# (inside, the current folder is /: the script's path must be absolute; BUILD_DIR may be relative
# to the checkout.) BENCH_N=200 BENCH_BURST=500 is the short version.
#
# Two hosts as in tests/integration/test-mesh.sh: host-a is the sandbox, host-b a nested sandbox
# (its own root, system bus and fabric) in a network namespace made here, linked by a veth pair
# with the private addresses 10.79.0.1 / 10.79.0.2 and nothing else. One nats-server with
# JetStream (file storage) on host-a's address; both gateways connect to it with TLS and their own
# certificates (con mesh init / issue / server-config, through tests/integration/mesh-lib.sh, as
# in the tests). Every task is /ping
# (the agent's built-in answer, no runner), so the figures are the fabric's and the mesh's:
#   local     user bench of host-a -> concierge of host-a (org.conspiracy.Concierge Submit)
#   remote    bench of host-a -> sysadmin@host-b (org.conspiracy.Mesh Submit: host-a's gateway,
#             JetStream, host-b's gateway, host-b's agent, and the result back the same way)
# For each: Submit -> TaskCompleted p50/p99/max over BENCH_N sequential tasks (default 1000), then
# BENCH_BURST tasks (default 2000) submitted one after another without waiting, tasks/s from the
# first Submit to the last TaskCompleted (bench/bench-latency.c). Prints the load average before
# and after: the machine may be shared. BENCH_STRACE=PATH then counts host-a's gateway's system calls
# over BENCH_N more sequential remote tasks (strace -c -f; not part of the figures).
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:?usage: bench-mesh.sh BUILD_DIR}
[[ "$BUILD" = /* ]] || BUILD=$src/$BUILD
N=${BENCH_N:-1000}
BURST=${BENCH_BURST:-2000}
LAT=$BUILD/bench/bench-latency
[ "${CON_SANDBOX:-}" = 1 ] || { echo "bench-mesh.sh: run it inside tests/sandbox/con-sandbox (see the top of this file)" >&2; exit 2; }
[ -x "$LAT" ] || { echo "bench-mesh.sh: no $LAT (build the bench targets)" >&2; exit 2; }
T=$(mktemp -d /var/tmp/bench-mesh.XXXXXX)
SHARED=$T/shared
mkdir -p "$SHARED"
NATS_PID="" HOSTB_PID=""
cleanup() {
        touch "$SHARED/stop"
        [ -n "$HOSTB_PID" ] && { timeout 20 tail --pid="$HOSTB_PID" -f /dev/null || kill "$HOSTB_PID"; } 2>/dev/null
        if [ -n "${BENCH_LOGS:-}" ]; then      # BENCH_LOGS=DIR (made visible with --artifacts DIR) keeps the logs
                cp "$SHARED"/*.log "$T/pki/nats.log" /srv/con/logs/daemons/con-meshd.log "$BENCH_LOGS/" 2>/dev/null
        fi
        [ -n "$NATS_PID" ] && kill "$NATS_PID" 2>/dev/null
        ip netns del bench-b 2>/dev/null
        rm -rf "$T"
}
trap cleanup EXIT
wait_for() { # SECONDS CMD...
        local n=$(($1 * 10))
        shift
        for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
        echo "bench-mesh.sh: timed out: $*" >&2
        return 1
}

echo "INFO $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at the start;" \
     "$(nats-server --version)"
ip netns add bench-b
ip link add veth-a type veth peer name veth-b netns bench-b
ip addr add 10.79.0.1/24 dev veth-a
ip link set veth-a up
ip -n bench-b addr add 10.79.0.2/24 dev veth-b
ip -n bench-b link set veth-b up
ip -n bench-b link set lo up
. "$src/tests/integration/mesh-lib.sh"
mesh_pki "$T/pki" 10.79.0.1:4222 host-a host-b
mesh_nats_start "$T/pki"
NATS_PID=$MESH_NATS_PID
mesh_nats_wait 10.79.0.1 4222
mesh_streams "$T/pki" tls://10.79.0.1:4222 >/dev/null || { echo "con mesh streams failed" >&2; exit 1; }
mesh_install_creds_script "$T/pki/host-b" >"$T/creds-b.sh"

cat >"$T/hostb.sh" <<'HOSTB'
#!/bin/bash
set -u
out=$CON_SANDBOX_ARTIFACTS
mkdir -p /etc/con
bash "$1" || exit 1     # host-b's certificate, key and the CA in /etc/con/mesh
cat >/etc/con/con.yaml <<'EOF'
system:
  name: host-b
  max_queued_per_sender: 100000   # every remote task counts as the gateway's: a burst must fit
agents:
  - name: sysadmin
    mode: always
mesh:
  host: host-b
  servers: [tls://10.79.0.1:4222]
policy:
  grants:
    - {who: "user:bench@host-a", may: [task], to: [sysadmin]}
EOF
{ con bootstrap && con up; } >"$out/up.log" 2>&1 || exit 1
touch "$out/ready"
while [ ! -e "$out/stop" ]; do sleep 0.2; done
cp /srv/con/logs/daemons/con-meshd.log "$out/meshd-b.log"
cp /srv/con/logs/daemons/con-agent@sysadmin.log "$out/sysadmin-b.log"
touch "$out/done"
HOSTB
chmod 755 "$T/hostb.sh"
"$src/tests/sandbox/con-sandbox" --stage "$CON_SANDBOX_STAGE" --netns /run/netns/bench-b --artifacts "$SHARED" \
        --with "$T" -- "$T/hostb.sh" "$T/creds-b.sh" >"$T/hostb.out" 2>&1 &
HOSTB_PID=$!

mkdir -p /etc/con
mesh_install_creds "$T/pki/host-a"
cat >/etc/con/con.yaml <<'EOF'
system:
  name: host-a
  max_queued_per_sender: 100000
agents:
  - name: concierge
    mode: always
mesh:
  host: host-a
  servers: [tls://10.79.0.1:4222]
EOF
con bootstrap >/dev/null
useradd -M -G con bench         # the submitter (root has no name other hosts can grant)
con up >/dev/null
connected() { busctl get-property org.conspiracy.Mesh /org/conspiracy/Mesh org.conspiracy.Mesh1 Connected | grep -qx "b true"; }
wait_for 30 connected
hostb_ready() { test -e "$SHARED/ready" || ! kill -0 "$HOSTB_PID"; }   # ready, or gone
wait_for 120 hostb_ready || true
test -e "$SHARED/ready" || { cat "$T/hostb.out" "$SHARED/up.log" >&2 2>/dev/null; exit 1; }

# Activation, the streams and the consumers out of the way.
lat() { (cd / && runuser -u bench -- "$LAT" "$@"); }
lat concierge 20 /ping >/dev/null
wait_for 30 lat sysadmin@host-b 20 /ping

echo "== local: concierge of host-a"
lat concierge "$N" /ping "$BURST"
echo "== remote: sysadmin@host-b through both gateways and JetStream"
lat sysadmin@host-b "$N" /ping "$BURST"
echo "INFO load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"

# BENCH_STRACE=PATH (a strace binary, absolute; the sandbox's root has none: copy the host's and
# its libunwind libraries into one folder of the checkout, they are found there): after the
# figures (strace slows what it traces), the system calls of host-a's gateway (strace -c -f) over
# BENCH_N more sequential remote tasks: what a waiting caller pays for.
if [ -n "${BENCH_STRACE:-}" ]; then
        gw=""
        for p in $(pidof con-meshd); do         # host-b's gateway is in a nested PID namespace
                [ "$(readlink "/proc/$p/ns/pid")" = "$(readlink /proc/self/ns/pid)" ] && gw=$p
        done
        [ -n "$gw" ] || { echo "bench-mesh.sh: no con-meshd of host-a" >&2; exit 1; }
        LD_LIBRARY_PATH=$(dirname "$BENCH_STRACE") "$BENCH_STRACE" -c -f -o "$T/strace-a.txt" -p "$gw" &
        strace_pid=$!
        sleep 1                                 # attached to every thread
        echo "== strace -c -f of host-a's gateway over $N sequential tasks to sysadmin@host-b"
        lat sysadmin@host-b "$N" /ping
        kill -INT "$strace_pid"
        wait "$strace_pid" || true
        cat "$T/strace-a.txt"
fi
