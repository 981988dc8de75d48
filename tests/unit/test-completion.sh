#!/bin/bash
# test-completion.sh SRC con=PATH con-send=PATH: the bash completion of con and con-send
# (completions/con.bash), sourced into bash with the built programs first in PATH, checked on
# what Tab offers: verbs and options from the programs' --help, agent names from a config, the
# values of options, and nothing once con-send's message has started. Task ids need running
# agents: tests/integration/test-completion.sh. TAP-like output; exit 1 on any failure.
set -uo pipefail
src=${1:?usage: test-completion.sh SRC con=PATH con-send=PATH}
shift
bin=$(mktemp -d)
profiles=$(mktemp -d)
trap 'rm -rf "$bin" "$profiles"' EXIT
for a in "$@"; do ln -s "$(realpath "${a#*=}")" "$bin/${a%%=*}"; done
export PATH=$bin:$PATH
# shellcheck source=../lib/complete.sh
. "$src/tests/lib/complete.sh"
# shellcheck source=../../completions/con.bash
. "$src/completions/con.bash"
cfg=$src/configs/default/con.yaml
passed=0 failed=0
# expect DESC LINE WANT: the sorted candidates for LINE are exactly WANT.
expect() {
        local got
        got=$(completions "$2")
        if [ "$got" = "$3" ]; then passed=$((passed + 1)); echo "ok $((passed + failed)) - $1"
        else failed=$((failed + 1)); echo "not ok $((passed + failed)) - $1"; echo "#   line:     $2"
                echo "#   expected: $3"; echo "#   got:      $got"; fi
}
# contains DESC LINE WORD...: the candidates include every WORD.
contains() {
        local desc=$1 line=$2 got w missing=""
        shift 2
        got=" $(completions "$line") "
        for w in "$@"; do [[ $got == *" $w "* ]] || missing="$missing $w"; done
        if [ -z "$missing" ]; then passed=$((passed + 1)); echo "ok $((passed + failed)) - $desc"
        else failed=$((failed + 1)); echo "not ok $((passed + failed)) - $desc"; echo "#   line: $line"
                echo "#   missing:$missing"; echo "#   got:$got"; fi
}

verbs=$(con --help | awk '/^Commands:/ { f = 1; next } f && /^  [a-z]/ { print $1 }' | sort | paste -sd' ')
[ -n "$verbs" ] || { echo "not ok - con --help lists no verbs"; exit 1; }
expect "con <Tab>: every verb of con --help, and help" "con " "$(printf '%s\n' $verbs help | sort | paste -sd' ')"
expect "con sta<Tab>: status" "con sta" "status"
expect "con -<Tab>: the global options" "con -" "--help --version"
contains "con status --<Tab>: its options" "con status --" --config --help --json
expect "con up --<Tab>: only its own options (not dbus-daemon's --system)" "con up --" "--config --help"
contains "con bootstrap --<Tab>" "con bootstrap --" --config --dry-run --force --profile
# The profiles: the folders of CON_PROFILES_DIR with a con.yaml. A copy of configs/ (where
# logrotate/, profile-history.sha256 and CMakeLists.txt are no profiles) and one more, so that
# what is offered was read from the folder, not the fallback for a system without profiles.
cp -r "$src/configs/." "$profiles/"
mkdir "$profiles/lab" "$profiles/empty"
: >"$profiles/lab/con.yaml"
export CON_PROFILES_DIR=$profiles
expect "con bootstrap --profile <Tab>: the folders with a con.yaml" "con bootstrap --profile " "default lab minimal"
expect "con bootstrap --profile=<Tab>: the same, after the '='" "con bootstrap --profile=" "default lab minimal"
expect "con bootstrap --profile=m<Tab>" "con bootstrap --profile=m" "minimal"
CON_PROFILES_DIR=$profiles/empty
expect "no profile installed: the shipped names" "con bootstrap --profile " "default minimal"
unset CON_PROFILES_DIR
expect "con help ta<Tab>: verbs" "con help ta" "task tasks"
expect "con audit <Tab>: verify" "con audit " "verify"
expect "con policy <Tab>: its subcommands" "con policy " "check query show"
expect "con mesh <Tab>: its subcommands" "con mesh " "init issue server-config sign status streams"
expect "con mesh issue x --<Tab>: its options, not status's" "con mesh issue x --" "--address --admin --ca-dir --check --cluster-listen --config --help --listen --max-bytes --max-per-host --out --replace --replicas --retention --route --server --store --tls-dir"
expect "con mesh status --<Tab>: its options" "con mesh status --" "--help --json"
expect "con mesh sign x --<Tab>: its options" "con mesh sign x --" "--address --admin --ca-dir --check --cluster-listen --config --help --listen --max-bytes --max-per-host --out --replace --replicas --retention --route --server --store --tls-dir"
expect "con mesh sign <Tab>: files (the signing request)" "con mesh sign $profiles/la" "$profiles/lab"
expect "con agent <Tab>: its subcommands" "con agent " "add list remove"
expect "con agent add x --tier <Tab>: the tiers" "con agent add x --tier " "officer operator worker"
expect "con policy query root <Tab>: the policy's verbs" "con policy query root " \
        "cancel commission contracts-admin halt quarantine read-result task"
contains "con policy query <Tab>: users" "con policy query r" root
expect "con tasks <Tab> with --config: the agents of that config" "con tasks --config $cfg " "concierge sysadmin"
expect "con --config FILE run c<Tab>" "con --config $cfg run c" "concierge"
expect "con policy --config=FILE query root task <Tab>: agents" "con policy --config=$cfg query root task " \
        "concierge sysadmin"
expect "con tasks concierge <Tab>: one agent only" "con tasks --config $cfg concierge " ""
contains "con cancel --<Tab>: --agent among its options" "con cancel --" --agent --config --help
expect "con cancel --config FILE --agent <Tab>: agents" "con cancel --config $cfg --agent " "concierge sysadmin"
expect "con task --config FILE --agent=s<Tab>" "con task --config $cfg --agent=s" "sysadmin"
cd "$src" || exit 1
expect "con --config=configs/default/con.y<Tab>: files, after the '='" "con status --config=configs/default/con.y" \
        "configs/default/con.yaml"
expect "con audit --dir conf<Tab>: directories" "con audit --dir conf" "configs"

contains "con-send --<Tab>: its options" "con-send --" --to --id --no-wait --timeout --json --scheduled --config \
        --continue --conversation --help --version
expect "con-send --config FILE --to <Tab>: agents" "con-send --config $cfg --to " "concierge sysadmin"
expect "con-send --config FILE --to=s<Tab>: agents, after the '='" "con-send --config $cfg --to=s" "sysadmin"
COMP_WORDBREAKS=${COMP_WORDBREAKS//=/}
expect "... when '=' does not break words: the whole --to=NAME" "con-send --config $cfg --to=s" "--to=sysadmin"
COMP_WORDBREAKS+="="
expect "con-send /pi<Tab>: the built-in commands" "con-send /pi" "/ping"
expect "con-send hello --<Tab>: nothing after the message started" "con-send hello --" ""
expect "con-send --to concierge hello <Tab>: nothing" "con-send --config $cfg --to concierge hello " ""

echo "$passed passed, $failed failed"
((failed == 0 && passed > 0))
