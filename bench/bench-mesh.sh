#!/bin/bash
# Mesh benchmark (not a test): a task to an agent of another host against a task to a local
# agent, in one run. As root from the top of the checkout, with a build without sanitizers:
#
#   cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCON_SANITIZE=OFF -DBUILD_TESTING=OFF
#   cmake --build build-bench -j2
#   tests/sandbox/con-sandbox --build build-bench -- "$PWD/bench/bench-mesh.sh" build-bench
#   tests/sandbox/con-sandbox --build build-bench -- "$PWD/bench/bench-mesh.sh" --cluster build-bench
#
# (on a shared machine, inside a private network namespace as the integration tests are:
#   unshare --net sh -c 'ip link set lo up && tests/sandbox/con-sandbox ...')
#
# (inside, the current folder is /: the script's path must be absolute; BUILD_DIR may be relative
# to the checkout.) BENCH_N=200 BENCH_BURST=500 is the short version.
#
# Without --cluster, two hosts as in tests/integration/test-mesh.sh and one nats-server: host-a is
# the sandbox, host-b a nested sandbox (its own root, system bus and fabric) in a network namespace
# made here, linked by a veth pair with the private addresses 10.79.0.1 / 10.79.0.2 and nothing
# else; one nats-server with JetStream (file storage) on host-a's address, the streams with one
# replica. With --cluster, three hosts and a three-node JetStream cluster as in
# tests/integration/test-mesh-cluster.sh (the same functions of mesh-lib.sh): host-b and host-c
# nested sandboxes in namespaces on a bridge of host-a's (10.78.0.1-3), each host its own fabric
# and its own nats-server, the three one cluster (routes over TLS verified both ways), every
# gateway listing the three servers, the streams made by the administrator with
# `con mesh streams --replicas 3`; then (unless BENCH_R1=0) the administrator changes them
# (con mesh streams --replicas N [HOST...], on the same cluster, gateways and connections) and the
# remote figures are taken again, three times: host-b's streams alone with 3 copies (con-state and
# host-a's result stream 1), every stream 1, con-state alone 3 (and host-c's idle streams). Either way every gateway connects with TLS and its own
# certificate (con mesh init / issue / server-config, as in the tests). Every task is /ping (the
# agent's built-in answer, no runner), so the figures are the fabric's and the mesh's:
#   local     user bench of host-a -> concierge of host-a (org.conspiracy.Concierge Submit)
#   remote    bench of host-a -> sysadmin@host-b (org.conspiracy.Mesh Submit: host-a's gateway,
#             JetStream, host-b's gateway, host-b's agent, and the result back the same way)
# For each: Submit -> TaskCompleted p50/p99/max over BENCH_N sequential tasks (default 1000), then
# BENCH_BURST tasks (default 2000) submitted one after another without waiting, tasks/s from the
# first Submit to the last TaskCompleted (bench/bench-latency.c). Prints the load average before
# each figure: the machine may be shared, and after each remote figure the CPU time per task the
# nats-servers and the gateways used. With --cluster, also where each stream's copies are (its
# leader and followers, from the nodes' /jsz), which node each gateway is connected to, and how many
# messages each stream stored per remote task.
# BENCH_STRACE=PATH then counts host-a's gateway's system calls over BENCH_N more sequential remote
# tasks (strace -c -f; not part of the figures).
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
CLUSTER=0
[ "${1:-}" = --cluster ] && { CLUSTER=1; shift; }
BUILD=${1:?usage: bench-mesh.sh [--cluster] BUILD_DIR}
[[ "$BUILD" = /* ]] || BUILD=$src/$BUILD
N=${BENCH_N:-1000}
BURST=${BENCH_BURST:-2000}
LAT=$BUILD/bench/bench-latency
[ "${CON_SANDBOX:-}" = 1 ] || { echo "bench-mesh.sh: run it inside tests/sandbox/con-sandbox (see the top of this file)" >&2; exit 2; }
[ -x "$LAT" ] || { echo "bench-mesh.sh: no $LAT (build the bench targets)" >&2; exit 2; }
T=$(mktemp -d /var/tmp/bench-mesh.XXXXXX)
HOSTS=b
NATS_PIDS=() HOST_PIDS=()
cleanup() {
        local h p
        if [ -n "${BENCH_LOGS:-}" ]; then      # BENCH_LOGS=DIR (made visible with --artifacts DIR) keeps the logs
                for h in $HOSTS; do             # each host's daemon logs, while it still runs
                        [ -e "$T/$h/ready" ] && mesh_host_do "$T" "$h" "cd /srv/con/logs/daemons &&
                                for f in *.log; do cp \"\$f\" \"\$CON_SANDBOX_ARTIFACTS/host-$h-\$f\"; done" >/dev/null 2>&1
                done
                cp "$T"/*.log "$T"/*/*.log "$T"/*.out /srv/con/logs/daemons/con-meshd.log "$BENCH_LOGS/" 2>/dev/null
        fi
        for h in $HOSTS; do touch "$T/$h/stop" 2>/dev/null; done
        for p in "${HOST_PIDS[@]}"; do { timeout 20 tail --pid="$p" -f /dev/null || kill "$p"; } 2>/dev/null; done
        for p in "${NATS_PIDS[@]}"; do kill "$p" 2>/dev/null; done
        mesh_cluster_net_del
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
load() { cut -d' ' -f1-3 /proc/loadavg; }
. "$src/tests/integration/mesh-lib.sh"

echo "INFO $(nproc) cores, load average $(load) at the start; $(nats-server --version)"
if ((CLUSTER)); then
        HOSTS="b c"
        mesh_cluster_net
        mesh_cluster_pki "$T/pki"
        for h in a b c; do
                mesh_cluster_nats_start "$T" "$h"
                NATS_PIDS+=("$MESH_NATS_PID")
        done
        for h in a b c; do mesh_nats_wait "${MESH_ADDR[$h]}" 4222 20 || exit 1; done
        wait_for 40 mesh_cluster_ready || exit 1
        wait_for 20 mesh_two_routes || exit 1
        SERVERS=$MESH_SERVERS REPLICAS=3 URL=tls://${MESH_ADDR[a]}:4222
else
        # host-b alone, on a veth pair (no bridge): mesh_host_start wants its namespace as mesh-b.
        MESH_ADDR[a]=10.79.0.1 MESH_ADDR[b]=10.79.0.2
        ip netns add mesh-b
        ip link add veth-a type veth peer name veth-b netns mesh-b
        ip addr add "${MESH_ADDR[a]}/24" dev veth-a
        ip link set veth-a up
        ip -n mesh-b addr add "${MESH_ADDR[b]}/24" dev veth-b
        ip -n mesh-b link set veth-b up
        ip -n mesh-b link set lo up
        mesh_pki "$T/pki" "${MESH_ADDR[a]}:4222" host-a host-b
        mesh_nats_start "$T/pki"
        NATS_PIDS+=("$MESH_NATS_PID")
        mesh_nats_wait "${MESH_ADDR[a]}" 4222
        SERVERS="[tls://${MESH_ADDR[a]}:4222]" REPLICAS=1 URL=tls://${MESH_ADDR[a]}:4222
fi
mesh_streams "$T/pki" "$URL" --replicas "$REPLICAS" >/dev/null || { echo "con mesh streams failed" >&2; exit 1; }

for h in $HOSTS; do
        policy=""       # host-b lets bench@host-a send to its sysadmin; host-c only holds a node
        [ "$h" = b ] && policy=$'policy:\n  grants:\n    - {who: "user:bench@host-a", may: [task], to: [sysadmin]}'
        cat >"$T/$h.yaml" <<EOF
system:
  name: host-$h
  max_queued_per_sender: 100000   # every remote task counts as the gateway's: a burst must fit
agents:
  - name: sysadmin
    mode: always
mesh:
  host: host-$h
  servers: $SERVERS
  replicas: $REPLICAS
$policy
EOF
        mesh_host_start "$T" "$h" "$src"
        HOST_PIDS+=("$MESH_HOST_PID")
done

mkdir -p /etc/con
mesh_install_creds "$T/pki/host-a"
cat >/etc/con/con.yaml <<EOF
system:
  name: host-a
  max_queued_per_sender: 100000
agents:
  - name: concierge
    mode: always
mesh:
  host: host-a
  servers: $SERVERS
  replicas: $REPLICAS
EOF
con bootstrap >/dev/null
useradd -M -G con bench         # the submitter (root has no name other hosts can grant)
con up >/dev/null
wait_for 30 mesh_connected
host_ready() { test -e "$T/$1/ready" || ! kill -0 "$2"; }   # ready, or gone
i=0
for h in $HOSTS; do
        wait_for 120 host_ready "$h" "${HOST_PIDS[$i]}" || true
        test -e "$T/$h/ready" || { cat "$T/$h.out" "$T/$h/up.log" >&2 2>/dev/null; exit 1; }
        mesh_host_do "$T" "$h" "$(declare -f wait_for mesh_connected); wait_for 30 mesh_connected" >/dev/null
        i=$((i + 1))
done

# where: with --cluster, each stream's leader and the other nodes holding a copy (as its leader's
# /jsz says; jsz_all prints them, one JSON line each), then the node each gateway is connected to (its
# client connection's user, from the node's /connz).
jsz_all() {
        local h
        for h in a b c; do
                mesh_in_ns "$h" curl -s --max-time 5 "http://${MESH_ADDR[$h]}:8222/jsz?accounts=true&streams=true" |
                        jq -c --arg n "host-$h" '.account_details[]?.stream_detail[]? | select(.cluster.leader == $n) |
                                {name, leader: .cluster.leader, followers: ([.cluster.replicas[]?.name] | sort | join(",")),
                                 seq: .state.last_seq}'
        done | sort
}
where() {
        ((CLUSTER)) || return 0
        local h
        jsz_all | jq -rs '"INFO streams (leader +followers): " + (map("\(.name) \(.leader)" +
                (if .followers == "" then "" else " +" + .followers end)) | join("; "))'
        for h in a b c; do
                mesh_in_ns "$h" curl -s --max-time 5 "http://${MESH_ADDR[$h]}:8222/connz?auth=true" |
                        jq -r --arg n "host-$h" '[.connections[]? | .authorized_user // .name // "?"] | "INFO node \($n) serves: " + join(", ")'
        done
}

# Activation, the streams and the consumers out of the way.
lat() { (cd / && runuser -u bench -- "$LAT" "$@"); }
# cpu NAME: the CPU time (user + system, ms) the processes of that name used so far, every host's
# (the nested sandboxes' PID namespaces are below this one).
cpu() {
        local p t=0 tck
        tck=$(getconf CLK_TCK)
        for p in $(pidof "$1"); do
                t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
        done
        echo $((t * 1000 / tck))
}
# remote: the remote figures, then the CPU time per task of the nats-servers and of the gateways
# over them (BENCH_N + BENCH_BURST tasks).
remote() {
        local n0 g0 n1 g1 s0 s1 tasks=$((N + BURST))
        ((CLUSTER)) && s0=$(jsz_all)
        n0=$(cpu nats-server) g0=$(cpu con-meshd)
        lat sysadmin@host-b "$N" /ping "$BURST"
        n1=$(cpu nats-server) g1=$(cpu con-meshd)
        if ((CLUSTER)); then    # messages stored per task, by stream (their last sequence numbers)
                s1=$(jsz_all)
                jq -rs --argjson t "$tasks" '(.[0] | map({(.name): .seq}) | add) as $a | (.[1] | map({(.name): .seq}) | add) as $b |
                        [$b | to_entries[] | select(.value - ($a[.key] // 0) > 0) | "\(.key) \((.value - ($a[.key] // 0)) / $t * 100 | round / 100)"]
                        | "INFO messages stored per remote task: " + join(", ")' \
                        <(jq -s . <<<"$s0") <(jq -s . <<<"$s1")
        fi
        echo "INFO CPU time per remote task: nats-server $(((n1 - n0) * 1000 / tasks)) us (${#NATS_PIDS[@]} node(s)), con-meshd $(((g1 - g0) * 1000 / tasks)) us (every host's gateway)"
}
lat concierge 20 /ping >/dev/null
wait_for 30 lat sysadmin@host-b 20 /ping
where

echo "== local: concierge of host-a (load average $(load))"
lat concierge "$N" /ping "$BURST"
echo "== remote: sysadmin@host-b through both gateways and JetStream, $REPLICAS replica(s) (load average $(load))"
remote
# again REPLICAS LABEL [HOST...]: the administrator changes the streams (those of HOST..., and
# con-state; all without HOST) to REPLICAS copies (STREAM.UPDATE) on the same cluster, with the same
# gateways and connections (each logs that its streams' replicas differ from its mesh.replicas, and
# carries on); once every node's /jsz shows it, the remote figures again.
again() {
        local r=$1 label=$2
        shift 2
        mesh_streams "$T/pki" "$URL" --replicas "$r" "$@" >/dev/null ||
                { echo "con mesh streams --replicas $r $* failed" >&2; exit 1; }
        settled() { # every stream changed has r - 1 followers, and one leader
                local want=$((r - 1)) n
                jsz_all | jq -se --argjson w "$want" --arg only "$*" '
                        map(select(($only == "" or (.name | test("-(" + ($only | gsub(" "; "|")) + ")$")) or .name == "con-state")))
                        | group_by(.name) | length > 0 and all(length == 1 and .[0].leader != null and
                                (.[0].followers | if . == "" then 0 else split(",") | length end) == $w)'
        }
        wait_for 60 settled "$@" || echo "INFO the streams did not all show $r replica(s) within 60 s"
        wait_for 30 lat sysadmin@host-b 20 /ping
        where
        echo "== remote again, $label (load average $(load))"
        remote
}
if ((CLUSTER)) && [ "${BENCH_R1:-1}" != 0 ]; then
        # Only host-b's streams (its tasks: host-a's publish, host-b's fetch) keep 3 copies; host-a's
        # result stream and con-state get 1. Then every stream 1.
        again 1 "3 replicas for host-b's streams only (con-task-host-b), 1 for con-result-host-a and con-state" host-a host-c
        again 1 "every stream changed to 1 replica"
        # con-state alone with 3 copies again (and host-c's streams, which this path does not use:
        # con mesh streams always includes con-state with the hosts it is given).
        again 3 "3 replicas for con-state only (and host-c's idle streams), 1 for con-task-host-b and con-result-host-a" host-c
fi
echo "INFO load average $(load) at the end"

# BENCH_STRACE=PATH (a strace binary, absolute; the sandbox's root has none: copy the host's and
# its libunwind libraries into one folder of the checkout, they are found there): after the
# figures (strace slows what it traces), the system calls of host-a's gateway (strace -c -f) over
# BENCH_N more sequential remote tasks: what a waiting caller pays for.
if [ -n "${BENCH_STRACE:-}" ]; then
        gw=""
        for p in $(pidof con-meshd); do         # the other hosts' gateways are in nested PID namespaces
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
