#!/bin/bash
# A host's NATS user may create consumers on its own streams and on con-state (its gateway's pull
# consumers, docs/MULTIHOST.md "Identity"), and a JetStream consumer-create request may instead
# make a PUSH consumer whose deliver_subject is any subject: the server checks neither that subject
# against the creator's permissions nor the request body. host-b stores a task naming host-a as
# its origin in con-state, then makes a push consumer delivering it to con.task.host-c.host-a: the
# subject of a task from host-a to host-c. nats-server (2.9.10, Debian 12's) accepts it and, once
# the consumer is active (at the latest when the server restarts and recovers it), delivers the
# message, which host-c's task stream captures. It is still not a forgery: JetStream stores it
# under the subject it was first published on (con.state.host-b.host-b.1, which names host-b),
# not the delivery subject, so it falls outside host-c's gateway consumer's filter
# (con.task.host-c.*) and host-c's gateway never sees it. This test fails if that ever changes.
# shellcheck disable=SC2016 # the JetStream API's subjects begin with a literal $
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/mesh-lib.sh"
require_sandbox
build=${CON_BUILD_DIR:?CON_BUILD_DIR is not set}

T=$(lib_tmp)
NATS_PID=""
trap '[ -n "$NATS_PID" ] && kill "$NATS_PID" 2>/dev/null; _lib_exit' EXIT
mesh_probe_install "$build"
ip link set lo up 2>/dev/null

# as HOST ARGS...: mesh-probe with HOST's certificate and inboxes.
as() {
        local h=$1
        shift
        mesh_probe --ca "$T/pki/ca/ca.crt" --cert "$T/pki/$h/host.crt" --key "$T/pki/$h/host.key" \
                --inbox "_INBOX.$h" tls://127.0.0.1:4222 "$@"
}
captured() {
        as inspector request '$JS.API.STREAM.INFO.con-task-host-c' '' | grep -q '"messages":1,'
}
# no_sources STREAM: its info, as the server answers it, names no source and no mirror.
no_sources() {
        local o
        o=$(as inspector request "\$JS.API.STREAM.INFO.$1" '') &&
                grep -q "\"config\":{\"name\":\"$1\"" <<<"$o" && ! grep -Eq '"sources"|"mirror"' <<<"$o"
}
nats_start() {
        mesh_nats_start "$T/pki"
        NATS_PID=$MESH_NATS_PID
        mesh_nats_wait 127.0.0.1 4222 && wait_for 10 as host-a connect
}

section "a mesh of host-a, host-b and host-c, configured by con mesh server-config"
# "inspector": a user without restrictions, only to read what the streams stored.
check "the credentials and the server's configuration" bash -c "
        . '$(dirname "$0")/mesh-lib.sh'
        mesh_pki_hosts '$T/pki' host-a host-b host-c inspector &&
                mesh_pki_server '$T/pki' server 127.0.0.1:4222 host-a host-b host-c"
check "... plus the test's unrestricted inspector" \
        sed -i 's/^  users = \[$/  users = [\n    { user: "inspector" }/' "$T/pki/server/nats.conf"
check "nats-server starts" nats_start
check "host-c's task stream, as its gateway makes it" as host-c stream con-task-host-c 'con.task.host-c.*'
check_output "... and its gateway's pull consumer, for con.task.host-c.* only" '"name":"con-meshd"' \
        as host-c request '$JS.API.CONSUMER.DURABLE.CREATE.con-task-host-c.con-meshd' \
        '{"stream_name":"con-task-host-c","config":{"durable_name":"con-meshd","ack_policy":"explicit","filter_subject":"con.task.host-c.*"}}'
check_output "host-b makes con-state (every host may)" '"did_create":true' \
        as host-b request '$JS.API.STREAM.CREATE.con-state' '{"name":"con-state","subjects":["con.state.>"]}'
check_output "host-b stores a task claiming origin host-a in con-state" 'stored in stream con-state seq 1' \
        as host-b publish con.state.host-b.host-b.1 '{"origin":"host-a","from":"alice@host-a","text":"forged"}'

section "host-b's push consumer delivering to con.task.host-c.host-a"
check_fail_output "host-b may not publish on con.task.host-c.host-a itself" 'Permissions Violation' \
        as host-b pub con.task.host-c.host-a forged
check_output "the server accepts host-b's push consumer con-meshd-host-b on con-state" \
        '"deliver_subject":"con.task.host-c.host-a"' \
        as host-b request '$JS.API.CONSUMER.CREATE.con-state.con-meshd-host-b' \
        '{"stream_name":"con-state","config":{"deliver_subject":"con.task.host-c.host-a","ack_policy":"none","deliver_policy":"all","inactive_threshold":3600000000000}}'
kill "$NATS_PID"
wait "$NATS_PID" 2>/dev/null
check "nats-server restarts (and recovers the consumer)" nats_start
check "... which delivers the message: host-c's task stream captures it" wait_for 10 captured
check_output "... under the subject host-b published it on, not the delivery subject" \
        '"subject":"con.state.host-b.host-b.1"' \
        as inspector request '$JS.API.STREAM.MSG.GET.con-task-host-c' '{"seq":1}'
check_output "host-c's gateway consumer has nothing to fetch" '"num_pending":0[,}]' \
        as host-c request '$JS.API.CONSUMER.INFO.con-task-host-c.con-meshd' ''
check_fail_output "... and fetches nothing" 'Timeout' as host-c next con-task-host-c 'con.task.host-c.*' 2

section "no host may change a stream once it exists (its sources, say)"
# The server configuration gives a host CREATE of its own streams, never UPDATE: NATS permissions
# name the API subject only, never the body, and an update adding "sources" would copy another
# host's tasks into host-b's stream for it to read (docs/MULTIHOST.md, "What this means when a
# host is compromised"). A CREATE of an existing stream with another configuration is refused.
NAME_IN_USE='"error":\{"code":400,"err_code":10058,"description":"stream name already in use with a different configuration"\}'
B_TASKS='{"name":"con-task-host-b","subjects":["con.task.host-b.*"],"retention":"workqueue","storage":"file"'
check_output "host-b makes its task stream" '"did_create":true' \
        as host-b request '$JS.API.STREAM.CREATE.con-task-host-b' "$B_TASKS}"
check_output "... and may make it again, the same (its gateway's every start)" '"type":"io.nats.jetstream.api.v1.stream_create_response","config":\{"name":"con-task-host-b"' \
        as host-b request '$JS.API.STREAM.CREATE.con-task-host-b' "$B_TASKS}"
check_output "host-a sends host-c a task" 'stored in stream con-task-host-c seq 2' \
        as host-a publish con.task.host-c.host-a SECRET-TASK-FOR-C
check_fail_output "host-b's UPDATE of its own stream adding host-c's as a source: refused by the server" \
        'Permissions Violation for Publish to "\$JS.API.STREAM.UPDATE.con-task-host-b"' \
        as host-b request '$JS.API.STREAM.UPDATE.con-task-host-b' "$B_TASKS"',"sources":[{"name":"con-task-host-c"}]}'
check_output "host-b's CREATE of its existing stream with that source: refused (another configuration)" \
        "$NAME_IN_USE" \
        as host-b request '$JS.API.STREAM.CREATE.con-task-host-b' "$B_TASKS"',"sources":[{"name":"con-task-host-c"}]}'
check_output "... as is one with a mirror (a mirror takes no subjects)" "$NAME_IN_USE" \
        as host-b request '$JS.API.STREAM.CREATE.con-task-host-b' \
        '{"name":"con-task-host-b","retention":"workqueue","storage":"file","mirror":{"name":"con-task-host-c"}}'
check "host-b's stream still has no sources and no mirror" no_sources con-task-host-b
check_output "... and holds nothing" '"messages":0,' \
        as inspector request '$JS.API.STREAM.INFO.con-task-host-b' ''
check_fail_output "host-b's fetch on its stream with a filter on con.task.host-c.* gets nothing" \
        'consumer filter subject is not a valid subset of the interest subjects' \
        as host-b next con-task-host-b 'con.task.host-c.*' 2
check_output "host-c's task is still there, for host-c alone" '"messages":2,' \
        as inspector request '$JS.API.STREAM.INFO.con-task-host-c' ''

finish
