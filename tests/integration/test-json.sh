#!/bin/bash
# JSON output of every data verb (docs/CLI.md, "JSON output"): each `--json` of `con` and
# `con-send` is checked with jq for its documented shape (exactly these keys, these types) and
# for integer numbers only (integer microsecond timestamps: never 1.79641781710264e+15). Which
# verbs are data verbs comes from their own --help (it mentions --json): a new one that this
# script does not check fails it.
# Runs as root inside tests/sandbox/con-sandbox (fresh system bus, project installed in /usr).
. "$(dirname "$0")/lib.sh"
require_sandbox
T=$(lib_tmp)

# The shapes of docs/CLI.md as jq predicates over one object.
keys_are() { # jq: the object has exactly these keys
        printf '(keys == (%s | sort))' "$1"
}
J_STR='(type == "string")'
J_INT='(type == "number" and . == floor and . >= 0)'
J_BOOL='(type == "boolean")'
or_null() { printf '(. == null or %s)' "$1"; }
AGENT="$(keys_are '["name","bus_name","tier","mode","roles","running","activatable","state","queue",
        "current_task","tasks_accepted","tasks_completed","tasks_failed"]') and
        (.name|$J_STR) and (.bus_name|$J_STR) and (.tier|$(or_null "$J_STR")) and (.mode|$J_STR) and
        (.roles|type == \"array\" and all(.[]; $J_STR)) and (.running|$(or_null "$J_BOOL")) and
        (.activatable|$(or_null "$J_BOOL")) and (.state|$(or_null "$J_STR")) and (.queue|$(or_null "$J_INT")) and
        (.current_task|$(or_null "$J_STR")) and (.tasks_accepted|$(or_null "$J_INT")) and
        (.tasks_completed|$(or_null "$J_INT")) and (.tasks_failed|$(or_null "$J_INT"))"
ROUTER="$(keys_are '["running","pid","routed","rejected","in_flight","backlog"]') and (.running|$J_BOOL) and
        ([.pid,.routed,.rejected,.in_flight,.backlog] | all(.[]; $(or_null "$J_INT")))"
# Task states: the A2A names (docs/AGENT.md, "States and properties").
J_STATE='(IN("submitted", "working", "completed", "failed", "canceled"))'
TASK="$(keys_are '["task_id","agent","status","sender"]') and ([.task_id,.agent,.status,.sender] | all(.[]; $J_STR)) and
        (.status|$J_STATE)"
RESULT="$(keys_are '["task_id","agent","status","text","truncated","replaced","size"]') and
        ([.task_id,.agent,.status,.text] | all(.[]; $J_STR)) and (.truncated|$J_BOOL) and (.replaced|$J_BOOL) and
        (.size|$J_INT) and (.status|$J_STATE)"
CHECK="$(keys_are '["contract","check","status","message","time_usec","duration_usec"]') and
        ([.contract,.check,.status,.message] | all(.[]; $J_STR)) and (.status|IN(\"pass\",\"fail\",\"skip\",\"pending\")) and
        (.time_usec|$J_INT) and (.duration_usec|$J_INT)"
INVALID="$(keys_are '["location","reason"]') and (.location|$J_STR) and (.reason|$J_STR)"
CONTRACT="$(keys_are '["id","file","type","scope","description","frequency_usec","checks"]') and
        ([.id,.file,.type,.scope,.description] | all(.[]; $J_STR)) and (.frequency_usec|$J_INT) and
        (.checks|type == \"array\" and all(.[]; $CHECK))"
HEALTH="$(keys_are '["source","results","invalid","passed","failed","skipped"]') and
        (.source|IN(\"service\",\"local\")) and (.results|type == \"array\" and all(.[]; $CHECK)) and
        (.invalid|type == \"array\" and all(.[]; $INVALID)) and ([.passed,.failed,.skipped] | all(.[]; $J_INT)) and
        (.passed + .failed + .skipped == (.results|length))"
RULE="$(keys_are '["principal","verb","target","action","doors","source"]') and
        ([.principal,.verb,.action,.source] | all(.[]; $J_STR)) and (.target|$(or_null "$J_STR")) and
        (.doors|type == \"array\" and all(.[]; $J_STR))"
BUSNAME="$(keys_are '["user","owns","door"]') and ([.user,.owns,.door] | all(.[]; $J_STR))"
VERIFY="$(keys_are '["valid","records","last_seq"]') and (.valid == true) and (.records|$J_INT) and (.last_seq|$J_INT)"
AUDIT="(.seq|$J_INT) and (.time|$J_STR) and (.service|$J_STR) and (.event|$J_STR) and (.hash|$J_STR)"

TESTED=" "
# json_ok DESC VERB FILTER CMD...: CMD exits 0 and prints one JSON document on one line that
# FILTER (a jq expression over it) accepts; every number in it is a plain integer literal.
json_ok() {
        local desc=$1 verb=$2 filter=$3
        shift 3
        TESTED="$TESTED$verb "
        _lib_run "$@"
        if [ "$LIB_RC" != 0 ]; then
                _lib_fail "$desc" "expected success" "$@"
        elif [ "$(printf '%s\n' "$LIB_OUT" | wc -l)" != 1 ]; then
                _lib_fail "$desc" "not one line" "$@"
        elif ! jq -e -n "input | ($filter)" >/dev/null 2>&1 <<<"$LIB_OUT"; then
                _lib_fail "$desc" "jq rejects the shape: $(tr -s ' \n' ' ' <<<"$filter" | cut -c1-300)" "$@"
        elif grep -Eq '[0-9][eE][+-]?[0-9]|[0-9]\.[0-9]' <<<"$(jq -c '[.. | numbers]' <<<"$LIB_OUT")" ||
             grep -Eq '[:,[][[:space:]]*-?[0-9]+(\.[0-9]+)?[eE][+-]?[0-9]+' <<<"$LIB_OUT"; then
                _lib_fail "$desc" "a number is not an integer literal" "$@"
        else
                _lib_pass "$desc"
        fi
}

section "bring the fabric up"
check "con bootstrap --profile default" con bootstrap --profile default
check "con up" con up
check "con-contractd owns org.conspiracy.Contracts" wait_for 10 busctl status org.conspiracy.Contracts

section "con-send and the task verbs"
json_ok "con-send --json: the result object" con-send "$RESULT and .status == \"completed\" and .agent == \"concierge\"" \
        con-send --json /ping
ID=$(jq -r .task_id <<<"$LIB_OUT")
json_ok "con-send --no-wait --json: the result object, submitted" con-send \
        "$RESULT and .status == \"submitted\" and .text == \"\"" con-send --no-wait --json /ping
json_ok "con task ID --json: the result object" task "$RESULT and .task_id == \"$ID\" and .status == \"completed\"" \
        con task "$ID" --json
TRANSCRIPT="all([\"task_id\",\"agent\",\"sender\",\"status\",\"chain\",\"parent\",\"hops\",\"accepted\",\"finished\",
        \"deadline\",\"queued_ms\",\"duration_ms\",\"model\",\"turns\",\"tool_calls\",\"tokens_in\",\"tokens_out\",\"cost\",
        \"steps\"][]; . as \$k | \$in | has(\$k)) and (.status|$J_STATE) and (.accepted|$J_INT) and
        .accepted > 1600000000000000 and (.finished|$(or_null "$J_INT")) and (.deadline|$(or_null "$J_INT")) and
        ([.hops,.turns,.tool_calls,.tokens_in,.tokens_out] | all(.[]; $J_INT)) and (.queued_ms|$(or_null "$J_INT")) and
        (.duration_ms|$(or_null "$J_INT")) and (.cost == null or (.cost|type == \"number\")) and (.steps|type == \"array\")"
json_ok "con task ID --transcript --json: the transcript object, integer microsecond times" task \
        ". as \$in | $TRANSCRIPT and .task_id == \"$ID\" and .finished >= .accepted" con task "$ID" --transcript --json
json_ok "con tasks --json: task objects" tasks \
        "type == \"array\" and length >= 1 and all(.[]; $TASK) and any(.[]; .task_id == \"$ID\")" con tasks --json
json_ok "con tasks AGENT --json: task objects of that agent" tasks \
        "type == \"array\" and all(.[]; $TASK and .agent == \"concierge\")" con tasks concierge --json

section "status and agents: one agent object"
json_ok "con status --json: router and agent objects" status \
        "$(keys_are '["router","config_errors","agents","mesh"]') and (.router|$ROUTER and .running and .pid > 1) and
         .config_errors == [] and .mesh == null and
         (.agents|type == \"array\" and length == 2 and all(.[]; $AGENT)) and
         (.agents[] | select(.name == \"concierge\") | .running and .state != null and .tasks_completed >= 1)" \
        con status --json
json_ok "con agents --json: the same agent objects" agents \
        "type == \"array\" and length == 2 and all(.[]; $AGENT) and any(.[]; .name == \"sysadmin\")" con agents --json
check "con agents and con status describe the agents alike" bash -c \
        'diff <(con agents --json | jq -S "map(del(.state,.queue,.current_task,.tasks_accepted,.tasks_completed,.tasks_failed))") \
              <(con status --json | jq -S ".agents | map(del(.state,.queue,.current_task,.tasks_accepted,.tasks_completed,.tasks_failed))")'

json_ok "con agent list --json: commissioned-agent objects (through con-provisiond)" agent \
        "type == \"array\" and length == 2 and all(.[]; $(keys_are '["name","tier","file","commissioned"]') and
         (.name|$J_STR) and (.tier|$(or_null "$J_STR")) and (.file|$J_STR) and (.commissioned|$J_BOOL)) and
         any(.[]; .name == \"concierge\" and .commissioned == false and .file == \"/etc/con/con.yaml\")" \
        con agent list --json

section "contracts: integer microsecond timestamps"
json_ok "con healthcheck --json (through con-contractd)" healthcheck \
        "$HEALTH and .source == \"service\" and (.results|length) > 0 and
         all(.results[]; .time_usec > 1600000000000000)" con healthcheck --json
json_ok "con healthcheck --local --json" healthcheck \
        "$HEALTH and .source == \"local\" and (.results|length) > 0 and
         all(.results[] | select(.status != \"skip\"); .time_usec > 1600000000000000)" con healthcheck --local --json
json_ok "con contracts --json: contract and check result objects, times in microseconds" contracts \
        "$(keys_are '["contracts","invalid","halted","quarantined"]') and
         (.contracts|type == \"array\" and length > 0 and all(.[]; $CONTRACT)) and
         any(.contracts[].checks[]; .time_usec > 1600000000000000) and
         (.invalid|type == \"array\" and all(.[]; $INVALID)) and (.halted|$(or_null "$J_STR")) and
         (.quarantined|type == \"array\")" con contracts --json
check_fail "the raw output has no exponent (what a double gave: 1.79641781710264e+15)" \
        grep -Eq '[0-9][eE][+-][0-9]' <<<"$LIB_OUT"
# A broken contract beside the good ones: listed the same way by both verbs.
printf 'id: BROKEN\ntype: nonsense\n' >/srv/con/contracts/zz-broken.yaml
_lib_run con healthcheck --local --json
out=$LIB_OUT # check_eq clears LIB_OUT
check_eq "con healthcheck --local --json exits 1 with an invalid contract" 1 "$LIB_RC"
# jq -n 'input | ...': an empty output is an error, not a pass (jq -e on no input exits 0).
check "... and lists it as an invalid object" jq -e -n "input | $HEALTH and any(.invalid[]; (.location|contains(\"zz-broken.yaml\")))" \
        <<<"$out"
rm -f /srv/con/contracts/zz-broken.yaml
TESTED="$TESTED healthcheck "

section "policy and audit"
json_ok "con policy show --json: rule and bus name objects" policy \
        "$(keys_are '["rules","bus_names","network"]') and (.rules|length > 0 and all(.[]; $RULE)) and
         (.bus_names|length == 2 and all(.[]; $BUSNAME)) and
         (.network|length == 2 and all(.[]; (keys == [\"door\",\"kernel\",\"network\",\"user\",\"via_gateway\"]) and
          .network == \"gateway\" and .kernel == [] and .via_gateway == [] and .door == \"nft\"))" con policy show --json
json_ok "con policy check --json: in sync" policy \
        "$(keys_are '["in_sync","drift","rules"]') and .in_sync == true and .drift == [] and (.rules|$J_INT) and .rules > 0" \
        con policy check --json
_lib_run con policy query nobody task sysadmin --json
out=$LIB_OUT
check_eq "con policy query --json: deny exits 1" 1 "$LIB_RC"
check "... with the query object" jq -e -n "input | $(keys_are '["user","verb","agent","allow"]') and
        . == {\"user\": \"nobody\", \"verb\": \"task\", \"agent\": \"sysadmin\", \"allow\": false}" <<<"$out"
json_ok "con policy query --json: allow" policy \
        "$(keys_are '["user","verb","agent","allow"]') and .allow == true and .agent == \"concierge\"" \
        con policy query root task concierge --json
json_ok "con policy query --json: a verb about no agent" policy ".agent == null and .verb == \"contracts-admin\"" \
        con policy query root contracts-admin concierge --json
json_ok "con audit verify --json" audit "$VERIFY and .records > 0" con audit verify --json
check "con audit --json: one record per line, each the log's own line" bash -c \
        "con audit --json --lines 5 >'$T/audit' && test \$(wc -l <'$T/audit') = 5 &&
         jq -e -s 'length == 5 and all(.[]; $AUDIT)' '$T/audit' >/dev/null &&
         tail -n 5 /srv/con/logs/audit/audit.jsonl | cmp - '$T/audit'"

section "con mesh status: a mesh of one host (a nats-server on loopback)"
_lib_run con mesh status --json
check_eq "con mesh status --json without a gateway (no mesh: section): exit 1" 1 "$LIB_RC"
check_output "... saying why, on standard error only" 'mesh gateway .* is not on the bus' \
        bash -c 'con mesh status --json 2>&1 >/dev/null; true'
check_eq "... and nothing on standard output" "" "$(con mesh status --json 2>/dev/null)"
check "nats-server is installed" command -v nats-server
nats-server -js -a 127.0.0.1 -p 4222 -sd "$T/jetstream" -l "$T/nats.log" &
NATS_PID=$!
trap 'kill "$NATS_PID" 2>/dev/null; _lib_exit' EXIT
check "nats-server listens on 127.0.0.1:4222" wait_for 15 bash -c 'exec 3<>/dev/tcp/127.0.0.1/4222'
printf 'mesh:\n  host: json-test\n  servers: [nats://127.0.0.1:4222]\n  insecure: true\n' >>/etc/con/con.yaml
check "con bootstrap with mesh:" con bootstrap
check_output "con mesh streams makes the host's streams (the administrator does; plaintext here)" '^con-state: made$' \
        con mesh streams json-test
check "con up starts the gateway" con up
check "the gateway is connected" wait_for 15 bash -c \
        'busctl --system get-property org.conspiracy.Mesh /org/conspiracy/Mesh org.conspiracy.Mesh1 Connected | grep -qx "b true"'
STREAM="$(keys_are '["stream","messages","bytes","oldest","lag_sec","consumer","pending","ack_pending","redelivered"]') and
        (.stream|$J_STR) and (.oldest|$(or_null "$J_STR")) and (.consumer|$J_BOOL) and
        ([.messages,.bytes,.lag_sec,.pending,.ack_pending,.redelivered] | all(.[]; $J_INT))"
MESHHOST="$(keys_are '["host","self","joined","tasks","results"]') and (.host|$J_STR) and (.self|$J_BOOL) and
        (.joined|$J_BOOL) and (.tasks|$STREAM) and (.results|$STREAM)"
json_ok "con mesh status --json: this host's streams" mesh \
        "$(keys_are '["host","connected","server","retention_sec","sent_waiting","delivered_running","hosts","tasks"]') and
         .host == \"json-test\" and .connected == true and (.server|$J_STR) and (.retention_sec|$J_INT) and
         (.sent_waiting|$J_INT) and (.delivered_running|$J_INT) and
         (.hosts|length == 1 and all(.[]; $MESHHOST) and .[0].self and .[0].joined and
          .[0].tasks.stream == \"con-task-json-test\") and .tasks == []" con mesh status --json
json_ok "con status --json: the mesh object (no remote task yet)" status \
        ".mesh == {\"connected\": true, \"tasks\": [], \"all_tasks\": []}" con status --json

section "every data verb is covered, and 'con help VERB' is 'con VERB --help'"
verbs=$(con --help | awk '/^Commands:/ { f = 1; next } f && /^  [a-z]/ { print $1 }')
check "con --help lists verbs" test -n "$verbs"
for v in $verbs; do
        check_eq "con help $v = con $v --help" "$(con "$v" --help)" "$(con help "$v")"
        if con "$v" --help | grep -q -- '--json'; then
                case "$TESTED" in
                *" $v "*) _lib_pass "data verb '$v' is checked here" ;;
                *) LIB_OUT=""; _lib_fail "data verb '$v' is checked here" "con $v --help offers --json; add it to this test" ;;
                esac
        fi
done
check_output "con-send --help offers --json" '--json' con-send --help

finish
