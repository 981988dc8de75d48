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
