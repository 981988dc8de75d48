#!/bin/bash
# The installed bash completion of con and con-send against a running fabric: agent names from
# /etc/con/con.yaml, task ids from the running agents (and none from an agent that does not run,
# which asking would start), agent names from the bus when the config cannot be read.
# Runs as root inside tests/sandbox/con-sandbox (fresh system bus, project installed in /usr).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/../lib/complete.sh"
require_sandbox
# has WORD LINE: Tab at the end of LINE offers WORD.
has() { [[ " $(completions "$2") " == *" $1 "* ]]; }
lacks() { ! has "$@"; }

section "installed"
dir=$(pkg-config --variable=completionsdir bash-completion 2>/dev/null || true)
dir=${dir:-/usr/share/bash-completion/completions}
check "con's completion is installed in $dir" test -f "$dir/con"
check "con-send's too" test -f "$dir/con-send"
. "$dir/con"
check "it registers con" bash -c ". '$dir/con' && complete -p con | grep -q _con"
check "it registers con-send" bash -c ". '$dir/con-send' && complete -p con-send | grep -q _con_send"

section "profiles"
# The installed ones, read from where the project installs them (one more folder, so that the
# fallback for a system without profiles, "default minimal", cannot pass for them).
check "CON_PROFILES_DIR is not set" test -z "${CON_PROFILES_DIR+set}"
mkdir /usr/share/conspiracyos/profiles/lab
: >/usr/share/conspiracyos/profiles/lab/con.yaml
check_eq "con bootstrap --profile <Tab>: the installed profiles" "default lab minimal" \
        "$(completions "con bootstrap --profile ")"
check_eq "con bootstrap --profile=<Tab>: the same" "default lab minimal" "$(completions "con bootstrap --profile=")"
rm -r /usr/share/conspiracyos/profiles/lab

section "a running fabric"
check "con bootstrap --profile default" con bootstrap --profile default
check "con up" con up
_lib_run con-send --json /ping
ID=$(jq -r .task_id <<<"$LIB_OUT")
check "a task ran" test -n "$ID"
check "the sysadmin does not run" wait_for 10 bash -c '! busctl --system status org.conspiracy.Sysadmin >/dev/null 2>&1 || con status --json | jq -e ".agents[] | select(.name == \"sysadmin\") | .running == false"'

section "agents and task ids"
check "con tasks <Tab>: the configured agents" has sysadmin "con tasks "
check "... and the concierge" has concierge "con tasks "
check "con task <Tab>: the id of the task just run" has "$ID" "con task "
check "con task ${ID:0:8}<Tab>: completes it" has "$ID" "con task ${ID:0:8}"
check "con cancel <Tab>: task ids too" has "$ID" "con cancel "
check "con-send --to <Tab>: agents" has concierge "con-send --to "
check "con-send --continue=<Tab>: task ids" has "$ID" "con-send --continue="
running_before=$(con status --json | jq -r '.agents[] | select(.running) | .name' | sort | paste -sd' ')
completions "con task " >/dev/null
check_eq "completing task ids started no agent" "$running_before" \
        "$(con status --json | jq -r '.agents[] | select(.running) | .name' | sort | paste -sd' ')"

section "agent names from the bus when the config cannot be read"
mv /etc/con/con.yaml /etc/con/con.yaml.away
check "without a config: con-send --to <Tab> offers the running concierge" has concierge "con-send --to "
mv /etc/con/con.yaml.away /etc/con/con.yaml
check "a name that is not an agent is never offered" lacks router "con-send --to "

finish
