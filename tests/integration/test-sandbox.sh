#!/bin/bash
# The sandbox's evidence of a failed run (tests/sandbox/con-sandbox, docs/TESTING.md "Evidence of a
# failed run"), with nested sandboxes: a failed run leaves the machine's logs and state in
# --artifacts DIR/NAME/TIME/ and prints that path; a passing or skipped run leaves nothing; a con
# daemon that dies of a sanitizer error fails the run although the command passed (the bus started
# the daemon again and the next call was answered), and so does a report a program the command ran
# wrote to ASAN_OPTIONS' log_path. Each machine runs in a cgroup of its own, removed at its end with
# whatever was made in it. Runs as root inside tests/sandbox/con-sandbox.
. "$(dirname "$0")/lib.sh"
require_sandbox
here=$(cd "$(dirname "$0")" && pwd)
sandbox="$here/../sandbox/con-sandbox"
FAKE=${CON_BUILD_DIR:?}/tests/fake-llm/con-fake-llm
# Not under /var/tmp/con-scratch: what is kept here holds deliberate sanitizer reports, which this
# sandbox's own scan must not find.
ART=$(mktemp -d /var/tmp/sandbox-art.XXXXXX)
# nested NAME COMMAND...: COMMAND in a sandbox started from here, its evidence under $ART/NAME.
nested() {
        CON_TEST_NAME=$1 "$sandbox" --stage "$CON_SANDBOX_STAGE" --with "$CON_BUILD_DIR" --artifacts "$ART" -- "${@:2}"
}
kept() { # kept NAME: the folders kept for NAME
        find "$ART/$1" -mindepth 1 -maxdepth 1 -type d 2>/dev/null
}

section "a failed run keeps its evidence"
check_status "the command fails with its own status" 3 nested failing bash -c '
        busctl --system get-property org.freedesktop.PolicyKit1 /org/freedesktop/PolicyKit1/Authority \
                org.freedesktop.PolicyKit1.Authority BackendName
        mkdir -p /srv/con/logs/daemons && echo "a daemon line" >/srv/con/logs/daemons/con-x.log
        echo "the test wrote this" >/var/tmp/con-scratch/mine
        exit 3'
check_output "the path is printed" "con-sandbox: kept this run's logs and state \(exit status 3\) in $ART/failing/[0-9]{8}T[0-9]{6}Z-[0-9]+$" \
        echo "$LIB_OUT"
E=$(kept failing | head -n1)
check_eq "one folder" 1 "$(kept failing | wc -l)"
check_output "its summary: the exit status" '^exit status: 3$' cat "$E/summary.txt"
check_output "... and the command" '^command: bash -c' cat "$E/summary.txt"
check_output "the daemons' logs" '^a daemon line$' cat "$E/logs/daemons/con-x.log"
check_output "the test's scratch" '^the test wrote this$' cat "$E/scratch/mine"
check_output "dbus-daemon's log (it started polkitd)" "Successfully activated service 'org.freedesktop.PolicyKit1'" \
        cat "$E/run/dbus-daemon.log"
check_output "the processes" 'polkitd' cat "$E/processes.txt"
check_output "the bus's names" 'org.freedesktop.PolicyKit1' cat "$E/bus-names.txt"

section "a failed script keeps its scratch folder"
cat >"$ART/fails.sh" <<EOF
. "$here/lib.sh"
echo "kept for the evidence" >"\$(lib_tmp)/note"
check "a check that fails" false
finish
EOF
check_status "the script fails" 1 nested failing-script bash "$ART/fails.sh"
check_output "its lib_tmp folder is in the evidence" '^kept for the evidence$' \
        bash -c "cat $ART/failing-script/*/scratch/con-itest.*/note"

section "a passing run and a skipped one keep nothing"
check_status "a passing run" 0 nested passing true
check_eq "nothing kept" "" "$(kept passing)"
check_status "a skipped run" 77 nested skipped bash -c 'exit 77'
check_eq "nothing kept" "" "$(kept skipped)"

section "a machine has a cgroup of its own, removed at its end with what was made in it"
MNT=$(findmnt -n -t cgroup2 -o TARGET | head -n1)
OWN=$(sed -n 's/^0:://p' /proc/self/cgroup)
check_output "this machine runs in one" '^/(.+/)?con-sandbox-[A-Za-z0-9]+$' echo "$OWN"
# Inside, as an agent does: a folder below its own cgroup and a session folder with a process in it.
check_status "a nested machine leaves a cgroup folder and a process behind" 0 nested cgroup bash -c '
        c=$(findmnt -n -t cgroup2 -o TARGET | head -n1)$(sed -n "s/^0:://p" /proc/self/cgroup)
        echo "$c"
        mkdir -p "$c/con-left/session-x"
        (echo $BASHPID >"$c/con-left/session-x/cgroup.procs" && exec setsid sleep 600) &
        for _ in $(seq 100); do grep -qx "populated 1" "$c/con-left/session-x/cgroup.events" && exit 0; sleep 0.05; done
        exit 1'
NESTED=$(grep -m1 '^/' <<<"$LIB_OUT")
check_output "... in a cgroup below this one's" "^$MNT$OWN/con-sandbox-[A-Za-z0-9]+$" echo "$NESTED"
check_fail "it is gone, with what was made in it" test -d "$NESTED"
check_eq "no other folder is left here" "" "$(find "$MNT$OWN" -mindepth 1 -maxdepth 1 -type d -name 'con-sandbox-*')"

section "a daemon that died of a sanitizer error fails a passing run"
if grep -q '^CON_SANITIZE:BOOL=ON$' "$CON_BUILD_DIR/CMakeCache.txt"; then
        # The agent dies of ASan's SEGV report; the next call starts it again, so the command passes.
        check_status "the run fails" 1 nested daemon-report bash -c '
                con bootstrap --profile minimal >/dev/null || exit 9
                con-send /ping || exit 9
                p=$(pgrep -x con-agentd) && kill -SEGV "$p" || exit 9
                while kill -0 "$p" 2>/dev/null; do sleep 0.1; done
                con-send /ping || exit 9'
        OUT=$LIB_OUT
        check_eq "... although the command passed (the restarted agent answered)" 2 "$(grep -c '^pong$' <<<"$OUT")"
        check_output "the report's file is named" 'con-sandbox: /srv/con/logs/daemons/con-agent@concierge.log:' echo "$OUT"
        check_output "... and its first lines printed" 'con-sandbox: \| ==[0-9]+==ERROR: AddressSanitizer: SEGV' echo "$OUT"
        E=$(kept daemon-report | head -n1)
        # grep -q: a check's output is kept in this sandbox's scratch, where a report would be found.
        check "the evidence has the agent's log with the report" grep -qE '^==[0-9]+==ERROR: AddressSanitizer: SEGV' \
                "$E/logs/daemons/con-agent@concierge.log"
        check_output "... and the summary lists it" '^  /srv/con/logs/daemons/con-agent@concierge.log$' cat "$E/summary.txt"

        # A program the command runs writes its report to the log_path folder, not to a stderr a
        # check may swallow.
        echo '{ "rules": [] }' >"$ART/script.json"
        check_status "a program's report fails the run too" 1 nested program-report bash -c "
                echo \"\$ASAN_OPTIONS\"
                '$FAKE' --script '$ART/script.json' --idle-timeout 60 >/dev/null 2>&1 &
                sleep 1; kill -SEGV \$!; wait \$!; true"
        OUT=$LIB_OUT
        check_output "ASAN_OPTIONS names the folder" 'log_path=/run/con-sandbox/asan/report$' echo "$OUT"
        check_output "the report's file is named" 'con-sandbox: /run/con-sandbox/asan/report\.[0-9]+:' echo "$OUT"
        E=$(kept program-report | head -n1)
        check "the evidence has it" bash -c "grep -qE '^==[0-9]+==ERROR: AddressSanitizer: SEGV' $E/run/asan/report.*"
else
        echo "# not a sanitizer build (CON_SANITIZE=OFF): no report to find"
fi

rm -rf "$ART"
finish
