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
# Then who makes the streams (docs/MULTIHOST.md, "Who makes the streams"): only the mesh's
# administrator (con mesh streams, with the certificate con mesh init made); a host's certificate
# may not make, change or remove any stream, with or without sources, nor con-state.
# Then con-state's byte limits (docs/MULTIHOST.md, "Floods"): the largest legitimate state event
# stored, a larger one refused by the server; the limits removed are reported and put back.
# Last, the task and result streams' limits: a stream of before without them reported and changed in
# place; one sending host's share full (a new task refused, a retry of a stored one a duplicate)
# while another host's task is still stored; the byte limit; none stored ever dropped.
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

# as HOST ARGS...: mesh-probe with HOST's certificate and inboxes; as admin: the administrator's.
as() {
        local h=$1
        shift
        if [ "$h" = admin ]; then
                mesh_probe --ca "$T/pki/ca/ca.crt" --cert "$T/pki/ca/admin.crt" --key "$T/pki/ca/admin.key" \
                        --inbox _INBOX._admin tls://127.0.0.1:4222 "$@"
                return
        fi
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

section "only the administrator makes the streams"
denied() { echo "Permissions Violation for Publish to \"\\\$JS.API.STREAM.$1\""; }
B_TASKS='{"name":"con-task-host-b","subjects":["con.task.host-b.*"],"retention":"workqueue","storage":"file"'
check_fail_output "host-b's certificate may not make its own task stream" "$(denied CREATE.con-task-host-b)" \
        as host-b request '$JS.API.STREAM.CREATE.con-task-host-b' "$B_TASKS}"
check_fail_output "... nor with host-c's as a source" "$(denied CREATE.con-task-host-b)" \
        as host-b request '$JS.API.STREAM.CREATE.con-task-host-b' "$B_TASKS"',"sources":[{"name":"con-task-host-c"}]}'
check_fail_output "... nor con-state (no host is its first maker)" "$(denied CREATE.con-state)" \
        as host-b request '$JS.API.STREAM.CREATE.con-state' '{"name":"con-state","subjects":["con.state.>"]}'
check_output "con mesh streams: the administrator makes every host's two streams and con-state" \
        '^con-task-host-a: made con-result-host-a: made con-task-host-b: made con-result-host-b: made con-task-host-c: made con-result-host-c: made con-state: made $' \
        bash -c ". '$(dirname "$0")/mesh-lib.sh'; mesh_streams '$T/pki' tls://127.0.0.1:4222 | tr '\n' ' '"
# The task and result streams' exact configuration: a work queue on its host's subjects, file
# storage, 7 days, messages up to 2 MiB and 4 kB of headers, 128 MiB and 10000 messages per sending
# host (the last subject token) at most, full: a new message refused (discard new, per subject too).
TASK_CONFIG='"retention":"workqueue","max_consumers":-1,"max_msgs":-1,"max_bytes":134217728,"max_age":604800000000000,"max_msgs_per_subject":10000,"max_msg_size":2101248,"discard":"new","storage":"file","num_replicas":1,"duplicate_window":600000000000,"allow_direct":false,"mirror_direct":false,"discard_new_per_subject":true,'
check_output "... exactly the mesh's: a work queue on its host's subjects, file storage, 7 days, no source, messages up to 2 MiB and 4 kB of headers, 128 MiB and 10000 per sending host, discard new per subject" \
        "\"config\":\\{\"name\":\"con-task-host-b\",\"subjects\":\\[\"con.task.host-b.\\*\"\\],$TASK_CONFIG" \
        as inspector request '$JS.API.STREAM.INFO.con-task-host-b' ''
check_output "... the result streams the same" \
        "\"config\":\\{\"name\":\"con-result-host-a\",\"subjects\":\\[\"con.result.host-a.\\*\"\\],$TASK_CONFIG" \
        as inspector request '$JS.API.STREAM.INFO.con-result-host-a' ''
check_output "... con-state the last event per subject, events of 1 KiB at most, 40000 of them in bytes" \
        '"config":\{"name":"con-state","subjects":\["con.state.\*.\*.\*"\],"retention":"limits","max_consumers":-1,"max_msgs":40000,"max_bytes":40960000,"max_age":604800000000000,"max_msgs_per_subject":1,"max_msg_size":1024,' \
        as inspector request '$JS.API.STREAM.INFO.con-state' ''
check_output "con mesh streams again changes nothing (ok, exit 0)" '^(con-[a-z-]+: ok )+$' \
        bash -c ". '$(dirname "$0")/mesh-lib.sh'; mesh_streams '$T/pki' tls://127.0.0.1:4222 | tr '\n' ' '"
check_output "con mesh streams --check: all the mesh's" '^con-state: ok$' \
        bash -c ". '$(dirname "$0")/mesh-lib.sh'; mesh_streams '$T/pki' tls://127.0.0.1:4222 --check"
check_output "... with 1d the streams' settings differ: reported, exit 1, nothing changed" \
        'con-task-host-a: stream con-task-host-a has max age 604800 s, 1 replica\(s\), duplicate window 600 s, not 86400 s' \
        bash -c ". '$(dirname "$0")/mesh-lib.sh'; mesh_streams '$T/pki' tls://127.0.0.1:4222 --check --retention 1d; echo rc=\$?"
check_output "... exit 1" 'rc=1' echo "$LIB_OUT"
check_output "con mesh streams --retention beyond ten years: refused, naming the range (exit 2)" \
        "--retention '300000d' is not a duration from 1s to 3650d.*rc=2" \
        bash -c ". '$(dirname "$0")/mesh-lib.sh'; mesh_streams '$T/pki' tls://127.0.0.1:4222 --retention 300000d 2>&1 | tr '\n' ' '; echo rc=\${PIPESTATUS[0]}"
for bad in "--retention-usec 1e9" "--retention-usec 0" "--replicas 3x" "--replicas -1" "--replicas 6"; do
        check_output "con-mesh-streams $bad: refused, naming the option (exit 2)" \
                "^con-mesh-streams: ${bad%% *} '${bad#* }' is not a whole number from 1 to [0-9]+ rc=2\$" \
                bash -c "/usr/libexec/conspiracyos/con-mesh-streams --ca '$T/pki/ca/ca.crt' --cert c --key k --inbox i \
                        --server tls://127.0.0.1:4222 $bad host-a 2>&1 | tr '\n' ' '; echo rc=\${PIPESTATUS[0]}"
done
check_fail_output "the administrator may touch only the mesh's streams" "$(denied CREATE.other)" \
        as admin request '$JS.API.STREAM.CREATE.other' '{"name":"other","subjects":["other.>"]}'
check_fail_output "... and no subject of the mesh" 'Permissions Violation for Publish to "con.task.host-c.host-a"' \
        as admin pub con.task.host-c.host-a forged
check_output "... and its gateway's pull consumer, for con.task.host-c.* only" '"name":"con-meshd"' \
        as host-c request '$JS.API.CONSUMER.DURABLE.CREATE.con-task-host-c.con-meshd' \
        '{"stream_name":"con-task-host-c","config":{"durable_name":"con-meshd","ack_policy":"explicit","filter_subject":"con.task.host-c.*"}}'
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

section "no host may change or remove a stream once it exists (its sources, say)"
# NATS permissions name the API subject only, never the body: an update or a create adding
# "sources" would copy another host's tasks into host-b's stream for it to read (docs/MULTIHOST.md,
# "What this means when a host is compromised").
check_output "host-a sends host-c a task" 'stored in stream con-task-host-c seq 2' \
        as host-a publish con.task.host-c.host-a SECRET-TASK-FOR-C
check_fail_output "host-b's UPDATE of its own stream adding host-c's as a source: refused by the server" \
        'Permissions Violation for Publish to "\$JS.API.STREAM.UPDATE.con-task-host-b"' \
        as host-b request '$JS.API.STREAM.UPDATE.con-task-host-b' "$B_TASKS"',"sources":[{"name":"con-task-host-c"}]}'
check_fail_output "... and its CREATE of it with that source" "$(denied CREATE.con-task-host-b)" \
        as host-b request '$JS.API.STREAM.CREATE.con-task-host-b' "$B_TASKS"',"sources":[{"name":"con-task-host-c"}]}'
check_fail_output "... or with a mirror" "$(denied CREATE.con-task-host-b)" \
        as host-b request '$JS.API.STREAM.CREATE.con-task-host-b' \
        '{"name":"con-task-host-b","retention":"workqueue","storage":"file","mirror":{"name":"con-task-host-c"}}'
check_fail_output "... and its DELETE of it" "$(denied DELETE.con-task-host-b)" \
        as host-b request '$JS.API.STREAM.DELETE.con-task-host-b' ''
check "host-b's stream still has no sources and no mirror" no_sources con-task-host-b
check_output "... and holds nothing" '"messages":0,' \
        as inspector request '$JS.API.STREAM.INFO.con-task-host-b' ''
check_fail_output "host-b's fetch on its stream with a filter on con.task.host-c.* gets nothing" \
        'consumer filter subject is not a valid subset of the interest subjects' \
        as host-b next con-task-host-b 'con.task.host-c.*' 2
check_output "host-c's task is still there, for host-c alone" '"messages":2,' \
        as inspector request '$JS.API.STREAM.INFO.con-task-host-c' ''

section "a stream that is not the mesh's, made with the administrator's credentials (a mirror)"
check_output "the administrator removes host-c's result stream" '"success":true' \
        as admin request '$JS.API.STREAM.DELETE.con-result-host-c' ''
check_output "... and makes it a mirror of host-c's task stream" '"mirror":\{"name":"con-task-host-c"' \
        as admin request '$JS.API.STREAM.CREATE.con-result-host-c' \
        '{"name":"con-result-host-c","retention":"limits","storage":"file","mirror":{"name":"con-task-host-c"}}'
# streams OPTIONS...: con mesh streams' lines and its exit status, on one line.
streams() { bash -c ". '$(dirname "$0")/mesh-lib.sh'; mesh_streams '$T/pki' tls://127.0.0.1:4222 $*; echo rc=\$?" | tr '\n' ' '; }
check_output "con mesh streams --check reports it (exit 1)" \
        'con-result-host-c: stream con-result-host-c mirrors another stream; not the mesh.s stream .*--replace removes it.*rc=1' \
        streams --check
check_output "con mesh streams leaves it (exit 1): only --replace removes a stream" 'mirrors another stream.*rc=1' streams
check_output "con mesh streams --replace makes it anew" 'con-result-host-c: replaced \(it was not the mesh.s\).*rc=0' \
        streams --replace
check "... without a mirror now" no_sources con-result-host-c
check_output "... and --check finds every stream the mesh's" 'con-result-host-c: ok.*rc=0' streams --check


section "con-state's byte limits (docs/MULTIHOST.md, \"Floods\")"
# A state event larger than any legitimate one: refused by the server. The largest legitimate one
# (every name at its longest, as test-mesh-flood builds it) fits, with a message id.
state_count() {
        as inspector request '$JS.API.STREAM.INFO.con-state' '' | grep -oE '"state":\{"messages":[0-9]+' | grep -oE '[0-9]+$'
}
n0=$(state_count)
long_id=$(printf 'i%.0s' $(seq 128))
long_host=$(printf 'h%.0s' $(seq 63))
long_from=$(printf 'u%.0s' $(seq 31))@$long_host
longest_state="{\"v\":1,\"id\":\"$long_id\",\"host\":\"host-b\",\"agent\":\"$(printf 'a%.0s' $(seq 29))\",\"from\":\"$long_from\",\"state\":\"submitted\"}"
check_output "host-b's certificate stores the largest legitimate state event, with its message id (as a gateway sends it)" \
        'stored in stream con-state' \
        as host-b --msg-id "con.state.$long_host.host-b.$long_id.$long_from.submitted" \
        publish "con.state.$long_host.host-b.$long_id" "$longest_state"
check_fail_output "... but not one of 1 KiB and 1 byte: the server refuses it" 'message size exceeds maximum allowed' \
        as host-b --pad 944 publish con.state.host-b.host-b.flood \
        '{"v":1,"id":"x","host":"host-b","agent":"a","from":"u@host-b","state":"accepted"}'
check_eq "... con-state holds one more event" "$((n0 + 1))" "$(state_count)"
check_output "an administrator's update without the byte limits (a con-state of before)" '"max_msg_size":-1' \
        as admin request '$JS.API.STREAM.UPDATE.con-state' \
        '{"name":"con-state","subjects":["con.state.*.*.*"],"retention":"limits","max_msgs":40000,"max_age":604800000000000,"max_msgs_per_subject":1,"discard":"old","storage":"file"}'
check_output "... con mesh streams --check reports it (exit 1)" 'con-state: stream con-state has .* and other limits.*rc=1' \
        streams --check
check_output "... con mesh streams changes it back" 'con-state: changed.*rc=0' streams
check_output "... with its limits" '"max_bytes":40960000,.*"max_msg_size":1024,' \
        as inspector request '$JS.API.STREAM.INFO.con-state' ''

section "the task and result streams' limits (docs/MULTIHOST.md, \"Floods\"): full, a new task is refused, none stored dropped"
# messages STREAM: how many it holds.
messages() {
        as inspector request "\$JS.API.STREAM.INFO.$1" '' | grep -oE '"state":\{"messages":[0-9]+' | grep -oE '[0-9]+$'
}
check_output "an administrator's update of host-b's task stream without them (a stream of before: no byte or per-host limit, discard old)" \
        '"max_bytes":-1,.*"max_msgs_per_subject":-1,.*"discard":"old",' \
        as admin request '$JS.API.STREAM.UPDATE.con-task-host-b' \
        '{"name":"con-task-host-b","subjects":["con.task.host-b.*"],"retention":"workqueue","max_age":604800000000000,"max_msg_size":2101248,"discard":"old","storage":"file","duplicate_window":600000000000}'
check_output "... con mesh streams --check reports its limits and the mesh's (exit 1)" \
        'con-task-host-b: stream con-task-host-b has max age 604800 s, 1 replica\(s\), duplicate window 600 s and other limits \(no max messages, no max messages per subject, no max bytes, max message size 2101248, discard old\), not 604800 s and 1 replica\(s\) \(mesh.retention, mesh.replicas\) and the limits no max messages, max messages per subject 10000, max bytes 134217728, max message size 2101248, discard new per subject \(mesh.stream_max_bytes, mesh.stream_max_per_host\): the mesh.s administrator sets them with con mesh streams.*rc=1' \
        streams --check
check_output "... con mesh streams changes it in place (STREAM.UPDATE)" 'con-task-host-b: changed to the mesh.s settings.*rc=0' streams
check_output "... exactly the mesh's again" \
        "\"config\":\\{\"name\":\"con-task-host-b\",\"subjects\":\\[\"con.task.host-b.\\*\"\\],$TASK_CONFIG" \
        as inspector request '$JS.API.STREAM.INFO.con-task-host-b' ''
check_output "con mesh streams --max-per-host 2: every task and result stream changed" \
        '^con-task-host-a: changed to the mesh.s settings con-result-host-a: changed to the mesh.s settings con-task-host-b: changed to the mesh.s settings con-result-host-b: changed to the mesh.s settings con-task-host-c: changed to the mesh.s settings con-result-host-c: changed to the mesh.s settings con-state: ok rc=0 $' \
        streams --max-per-host 2
check_output "... 2 messages of one sending host" '"max_msgs_per_subject":2,.*"discard":"new",.*"discard_new_per_subject":true' \
        as inspector request '$JS.API.STREAM.INFO.con-task-host-b' ''
check_eq "host-b's task stream is empty" 0 "$(messages con-task-host-b)"
check_output "host-a sends host-b a task: stored" 'stored in stream con-task-host-b seq [0-9]+$' \
        as host-a --msg-id host-a.full-1 publish con.task.host-b.host-a full-1
check_output "... and a second one" 'stored in stream con-task-host-b seq [0-9]+$' \
        as host-a --msg-id host-a.full-2 publish con.task.host-b.host-a full-2
check_fail_output "... a third one is refused by the server: host-a's share is full" \
        'maximum messages per subject exceeded' \
        as host-a --msg-id host-a.full-3 publish con.task.host-b.host-a full-3
check_output "... the first sent again (a retry after a lost acknowledgement): a duplicate, not a refusal" \
        'stored in stream con-task-host-b seq [0-9]+ \(a duplicate: stored before\)' \
        as host-a --msg-id host-a.full-1 publish con.task.host-b.host-a full-1
check_output "host-c sends host-b a task meanwhile: stored (its own share)" 'stored in stream con-task-host-b seq [0-9]+$' \
        as host-c --msg-id host-c.full-c-1 publish con.task.host-b.host-c full-c-1
check_eq "... host-b's stream holds all three stored tasks: none dropped" 3 "$(messages con-task-host-b)"
for i in 1 2; do
        check_output "host-b's results to host-a are bounded the same way ($i stored)" \
                'stored in stream con-result-host-a seq [0-9]+$' \
                as host-b --msg-id "r.host-b.r$i" publish con.result.host-a.host-b "r$i"
done
check_fail_output "... the third refused" 'maximum messages per subject exceeded' \
        as host-b --msg-id r.host-b.r3 publish con.result.host-a.host-b r3
check_output "con mesh streams --max-bytes 4MiB (and 10000 per host again)" 'con-task-host-b: changed to the mesh.s settings.*rc=0' \
        streams --max-bytes 4MiB
check_output "... 4 MiB in each task and result stream" '"max_bytes":4194304,.*"max_msgs_per_subject":10000,' \
        as inspector request '$JS.API.STREAM.INFO.con-task-host-b' ''
# Tasks of 1 MB (the server's max_payload is 1 MiB): 4 more fit beside the 3 small ones (4000012
# bytes and their headers, below 4194304), the next not.
for i in 1 2 3 4; do
        check_output "host-c's task of 1 MB ($i) stored" 'stored in stream con-task-host-b' \
                as host-c --msg-id "host-c.big-$i" --pad 1000000 publish con.task.host-b.host-c big
done
check_fail_output "... the fifth is refused by the server: the stream holds 4 MiB at most" 'maximum bytes exceeded' \
        as host-c --msg-id host-c.big-5 --pad 1000000 publish con.task.host-b.host-c big
check_eq "... host-b's stream holds all seven stored tasks: none dropped" 7 "$(messages con-task-host-b)"
check_output "con mesh streams (the defaults again)" 'con-task-host-b: changed to the mesh.s settings.*rc=0' streams
check_output "... exactly the mesh's" \
        "\"config\":\\{\"name\":\"con-task-host-b\",\"subjects\":\\[\"con.task.host-b.\\*\"\\],$TASK_CONFIG" \
        as inspector request '$JS.API.STREAM.INFO.con-task-host-b' ''
check_output "... and --check finds every stream the mesh's" '^(con-[a-z-]+: ok )+rc=0 $' streams --check

finish
