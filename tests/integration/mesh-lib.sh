# shellcheck shell=bash
# The mesh's set-up for the integration tests (docs/MULTIHOST.md), shared by the mesh tests.
# Source it after lib.sh:
#
#   . "$(dirname "$0")/mesh-lib.sh"
#   mesh_pki "$T/pki" 10.77.0.1:4222 host-a host-b     # CA, server certificate + nats.conf, bundles
#   mesh_nats_start "$T/pki"                           # nats-server -c $T/pki/server/nats.conf
#   mesh_streams "$T/pki" tls://10.77.0.1:4222         # the administrator makes the streams
#   mesh_install_creds "$T/pki/host-a"                 # this host's /etc/con/mesh/{ca.crt,host.*}
#   mesh_yaml host-a tls://10.77.0.1:4222 >>/etc/con/con.yaml
#
# Everything is made by con itself (con mesh init / issue / server-config; test-mesh has its hosts'
# certificates made by con bootstrap and con mesh sign): the tests use the credentials and the
# server configuration a user would.

# mesh_pki DIR LISTEN HOST...: DIR/ca (the CA, the administrator's credentials and the list of
# hosts server-config records), DIR/HOST (each host's bundle: host.key,
# host.crt, ca.crt), DIR/server (server.key, server.crt, ca.crt and nats.conf listening on LISTEN,
# JetStream in DIR/jetstream). The server's certificate names the listen address; more with
# MESH_SERVER_ADDRESSES="ADDR ...".
mesh_pki() {
        local dir=$1 listen=$2
        shift 2
        mesh_pki_hosts "$dir" "$@" && mesh_pki_server "$dir" server "$listen" "$@"
}

# mesh_pki_hosts DIR HOST...: the CA (DIR/ca) and each host's bundle (DIR/HOST).
mesh_pki_hosts() {
        local dir=$1 h
        shift
        mkdir -p "$dir" || return 1
        con mesh init --ca-dir "$dir/ca" >/dev/null || return 1
        for h in "$@"; do
                con mesh issue "$h" --ca-dir "$dir/ca" --out "$dir/$h" >/dev/null || return 1
        done
}

# mesh_pki_server DIR NAME LISTEN HOST...: one NATS server's files in DIR/NAME (its certificate
# for LISTEN's address and MESH_SERVER_ADDRESSES, nats.conf with JetStream in DIR/NAME-js); for a
# cluster, one per node with MESH_SERVER_CLUSTER="CLUSTER-LISTEN ROUTE..." (its cluster block,
# routes over TLS), then each node's server_name appended to its nats.conf.
mesh_pki_server() {
        local dir=$1 name=$2 listen=$3 a
        shift 3
        local -a addr=() cl=()
        for a in ${MESH_SERVER_ADDRESSES:-}; do addr+=(--address "$a"); done
        for a in ${MESH_SERVER_CLUSTER:-}; do
                if [ "${#cl[@]}" = 0 ]; then cl=(--cluster-listen "$a"); else cl+=(--route "$a"); fi
        done
        con mesh server-config --ca-dir "$dir/ca" --listen "$listen" "${addr[@]}" "${cl[@]}" --store "$dir/$name-js" \
                --out "$dir/$name" "$@" >/dev/null
}

# mesh_nats_start DIR [nats-server options...]: starts nats-server with DIR/server/nats.conf,
# logging to DIR/nats.log; MESH_NATS_PID is its pid. Does not wait (see mesh_nats_wait).
mesh_nats_start() {
        local dir=$1
        shift
        nats-server -c "$dir/server/nats.conf" -l "$dir/nats.log" "$@" &
        MESH_NATS_PID=$!
}

# mesh_streams DIR URL [con mesh streams options...]: the administrator (DIR/ca/admin.*) makes every
# host's streams and con-state (the hosts server-config recorded), as docs/MULTIHOST.md says; a
# gateway makes none. Retention and replicas: 7d and 1 unless given (the options given last win).
mesh_streams() {
        local dir=$1 url=$2
        shift 2
        con mesh streams --ca-dir "$dir/ca" --server "$url" --retention 7d --replicas 1 "$@"
}

# mesh_install_creds_script BUNDLE: the same as shell commands, for a nested sandbox's script.
mesh_install_creds_script() {
        printf 'install -d -m 0755 /etc/con/mesh && install -m 0644 %q/ca.crt %q/host.crt /etc/con/mesh/ && install -m 0600 %q/host.key /etc/con/mesh/host.key\n' \
                "$1" "$1" "$1"
}

# mesh_nats_wait ADDR PORT [SECONDS]: the server accepts TCP connections.
mesh_nats_wait() {
        wait_for "${3:-15}" bash -c "exec 3<>/dev/tcp/$1/$2"
}

# mesh_install_creds BUNDLE: this host's TLS files, as an admin copies them after con mesh issue
# (con bootstrap then gives the key to root:con-mesh 0640).
mesh_install_creds() {
        install -d -m 0755 /etc/con/mesh &&
                install -m 0644 "$1/ca.crt" /etc/con/mesh/ca.crt &&
                install -m 0644 "$1/host.crt" /etc/con/mesh/host.crt &&
                install -m 0600 "$1/host.key" /etc/con/mesh/host.key
}

# mesh_yaml HOST URL...: a mesh: section (TLS, the default credentials in /etc/con/mesh).
mesh_yaml() {
        local host=$1
        shift
        local IFS=,
        printf 'mesh:\n  host: %s\n  servers: [%s]\n' "$host" "$*"
}

# mesh_probe ARGS...: the test NATS client (tests/integration/mesh-probe.c), installed by
# mesh_probe_install BUILD.
MESH_PROBE=/usr/local/libexec/con-test/mesh-probe
mesh_probe_install() {
        install -D -m 0755 "$1/tests/integration/mesh-probe" "$MESH_PROBE"
}
mesh_probe() {
        "$MESH_PROBE" "$@"
}

# --- Three hosts and a three-node JetStream cluster (test-mesh-cluster.sh, bench/bench-mesh.sh
# --cluster). host-a is the calling sandbox; host-b and host-c are network namespaces mesh-b and
# mesh-c, each linked by a veth pair (eth0 inside) to a bridge mesh-br in host-a's namespace, with
# the private addresses MESH_ADDR and no route anywhere else. Each host runs a nats-server; the three
# form one JetStream cluster (routes over TLS, verified both ways) and each host's fabric is a
# nested sandbox (mesh_host_start). The names are the sandbox's own (its /run is private).
declare -gA MESH_ADDR=([a]=10.78.0.1 [b]=10.78.0.2 [c]=10.78.0.3)
MESH_SERVERS="[tls://${MESH_ADDR[a]}:4222, tls://${MESH_ADDR[b]}:4222, tls://${MESH_ADDR[c]}:4222]"

# mesh_cluster_net: the bridge with host-a's address, then host-b's and host-c's namespaces.
mesh_cluster_net() {
        local h
        ip link add mesh-br type bridge && ip addr add "${MESH_ADDR[a]}/24" dev mesh-br && ip link set mesh-br up ||
                return 1
        for h in b c; do
                ip netns add "mesh-$h" &&
                        ip link add "vm-$h" type veth peer name eth0 netns "mesh-$h" &&
                        ip link set "vm-$h" master mesh-br up &&
                        ip -n "mesh-$h" addr add "${MESH_ADDR[$h]}/24" dev eth0 &&
                        ip -n "mesh-$h" link set eth0 up &&
                        ip -n "mesh-$h" link set lo up || return 1
        done
}

# mesh_cluster_net_del: removes host-b's and host-c's namespaces (their veths go with them).
mesh_cluster_net_del() {
        ip netns del mesh-b 2>/dev/null
        ip netns del mesh-c 2>/dev/null
        return 0
}

# mesh_in_ns HOST CMD...: CMD in that host's network namespace (a: this one).
mesh_in_ns() {
        local h=$1
        shift
        if [ "$h" = a ]; then "$@"; else ip netns exec "mesh-$h" "$@"; fi
}

# mesh_cluster_pki DIR: the CA and host-a's, host-b's and host-c's bundles (mesh_pki_hosts), and
# each node's files in DIR/server-HOST (mesh_pki_server: its address, TLS routes to the other two).
mesh_cluster_pki() {
        local dir=$1 h o
        mesh_pki_hosts "$dir" host-a host-b host-c || return 1
        for h in a b c; do
                local MESH_SERVER_CLUSTER="${MESH_ADDR[$h]}:6222"
                for o in a b c; do [ "$o" != "$h" ] && MESH_SERVER_CLUSTER+=" ${MESH_ADDR[$o]}:6222"; done
                mesh_pki_server "$dir" "server-$h" "${MESH_ADDR[$h]}:4222" host-a host-b host-c || return 1
        done
}

# mesh_cluster_nats_start DIR HOST: that host's node, in its namespace: DIR/pki/server-HOST/nats.conf
# (made by mesh_cluster_pki DIR/pki) with its server_name (host-HOST) and a monitoring port (8222) as DIR/nats-HOST.conf, logging to
# DIR/nats-HOST.log; MESH_NATS_PID is its pid. Does not wait (mesh_cluster_ready).
mesh_cluster_nats_start() {
        local dir=$1 h=$2
        { cat "$dir/pki/server-$h/nats.conf"; printf 'server_name: host-%s\nhttp: %s:8222\n' "$h" "${MESH_ADDR[$h]}"; } \
                >"$dir/nats-$h.conf" || return 1
        # Not through mesh_in_ns (a function run in the background is a subshell): $! must be the server.
        if [ "$h" = a ]; then
                nats-server -c "$dir/nats-$h.conf" -l "$dir/nats-$h.log" &
        else
                ip netns exec "mesh-$h" nats-server -c "$dir/nats-$h.conf" -l "$dir/nats-$h.log" &
        fi
        MESH_NATS_PID=$!
}

# mesh_jsz_leader HOST: the JetStream meta leader that host's node knows.
mesh_jsz_leader() {
        mesh_in_ns "$1" curl -s --max-time 2 "http://${MESH_ADDR[$1]}:8222/jsz" | jq -er '.meta_cluster.leader // empty'
}

# mesh_cluster_ready: every node knows a JetStream meta leader.
mesh_cluster_ready() {
        mesh_jsz_leader a && mesh_jsz_leader b && mesh_jsz_leader c
}

# mesh_routes_of HOST [PORT]: the number of routes of the server whose monitoring port (default
# 8222) is on that host's address.
mesh_routes_of() {
        mesh_in_ns "$1" curl -s --max-time 2 "http://${MESH_ADDR[$1]}:${2:-8222}/routez" | jq -er '.num_routes'
}

# mesh_two_routes: each node has its two routes.
mesh_two_routes() {
        [ "$(mesh_routes_of a)" = 2 ] && [ "$(mesh_routes_of b)" = 2 ] && [ "$(mesh_routes_of c)" = 2 ]
}

# mesh_connected: this host's gateway says it is connected.
mesh_connected() {
        busctl --system get-property org.conspiracy.Mesh /org/conspiracy/Mesh org.conspiracy.Mesh1 Connected | grep -qx "b true"
}

# mesh_host_start DIR HOST SRC [SETUP]: host-HOST's fabric, a nested sandbox (its own root, users,
# system bus and fabric) in its namespace, started in the background (MESH_HOST_PID): it runs
# SETUP (a bash script, if given), takes DIR/HOST.yaml as its con.yaml and its credentials from
# DIR/pki/host-HOST, runs con bootstrap and con up (output in DIR/HOST/up.log), touches
# DIR/HOST/ready, then runs the commands mesh_host_do drops in DIR/HOST until DIR/HOST/stop exists.
# SRC is the checkout (its tests/sandbox/con-sandbox).
mesh_host_start() {
        local dir=$1 h=$2 src=$3 setup=${4:-}
        mkdir -p "$dir/$h" || return 1
        mesh_install_creds_script "$dir/pki/host-$h" >"$dir/creds-$h.sh" || return 1
        cat >"$dir/host.sh" <<'HOST' || return 1
#!/bin/bash
set -u
out=$CON_SANDBOX_ARTIFACTS
if [ -n "$4" ]; then bash "$4" || exit 1; fi
mkdir -p /etc/con
cp "$1" /etc/con/con.yaml
hostname "$2"
bash "$3"       # this host's TLS files, as its admin copies them from the CA host
{ con bootstrap && con up; } >"$out/up.log" 2>&1 || { cat /srv/con/logs/daemons/con-meshd.log >>"$out/up.log"; exit 1; }
touch "$out/ready"
n=0
while [ ! -e "$out/stop" ]; do
        if [ -e "$out/cmd.$n" ]; then
                bash "$out/cmd.$n" >"$out/cmd.$n.out" 2>&1
                echo $? >"$out/cmd.$n.rc"
                n=$((n + 1))
        else
                sleep 0.1
        fi
done
HOST
        chmod 755 "$dir/host.sh"
        "$src/tests/sandbox/con-sandbox" --stage "$CON_SANDBOX_STAGE" --netns "/run/netns/mesh-$h" \
                --artifacts "$dir/$h" --with "$dir" -- "$dir/host.sh" "$dir/$h.yaml" "host-$h" "$dir/creds-$h.sh" "$setup" \
                >"$dir/$h.out" 2>&1 &
        MESH_HOST_PID=$!
}

# mesh_host_do DIR HOST SCRIPT: runs SCRIPT (bash) on host-HOST (mesh_host_start), prints its
# output, returns its status (124 when the host does not answer within 90 s).
mesh_host_do() {
        local d=$1/$2 n
        n=$(cat "$d/next" 2>/dev/null || echo 0)
        echo $((n + 1)) >"$d/next"
        printf '%s\n' "$3" >"$d/cmd.$n.tmp"
        mv "$d/cmd.$n.tmp" "$d/cmd.$n"
        wait_for 90 test -e "$d/cmd.$n.rc" || { echo "host-$2 did not answer"; return 124; }
        cat "$d/cmd.$n.out"
        return "$(cat "$d/cmd.$n.rc")"
}
