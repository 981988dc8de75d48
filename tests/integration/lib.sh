# shellcheck shell=bash
# Shared assertions for the integration tests (tests/integration/*.sh). Source it:
#
#   . "$(dirname "$0")/lib.sh"
#   require_root
#   section "bootstrap"
#   check "con is installed" command -v con
#   check_fail "nobody cannot read the inbox" as_user nobody ls /srv/con/inbox
#   check_output "dry run shows the plan" 'would create user a-concierge' con bootstrap --dry-run
#   finish
#
# Each check runs its command with stdout and stderr captured; on failure the command line,
# its exit status and the tail of its output are printed. A script ends with `finish`, which
# prints "N passed, N failed" and exits non-zero when anything failed (also when the script
# dies early: an EXIT trap reports the checks so far and fails). Output is TAP-like.
#
# Variables: LIB_OUT holds the output of the last check's command (for extra assertions),
# LIB_RC its exit status. CON_TEST_VERBOSE=1 prints every command's output.

LIB_PASSED=0
LIB_FAILED=0
LIB_FINISHED=0
LIB_OUT=""
LIB_RC=0
LIB_TMP=$(mktemp -d "${CON_SANDBOX_TMP:-/tmp}/con-itest.XXXXXX")

_lib_exit() {
        local rc=$?
        if ((!LIB_FINISHED)); then
                echo "# script ended early (exit status $rc) after $((LIB_PASSED + LIB_FAILED)) checks"
                echo "$LIB_PASSED passed, $((LIB_FAILED + 1)) failed"
                _lib_remove_tmp 1
                exit 1
        fi
        _lib_remove_tmp "$((LIB_FAILED > 0 || LIB_PASSED == 0))"
}

# _lib_remove_tmp FAILED: removes the scratch folder, but not that of a failed script in
# tests/sandbox/con-sandbox: the sandbox throws it away itself, after keeping it with the run's
# evidence (docs/TESTING.md, "Evidence of a failed run").
_lib_remove_tmp() {
        if [ "$1" = 1 ] && [ "${CON_SANDBOX:-0}" = 1 ] && [ -n "${CON_SANDBOX_ARTIFACTS:-}" ]; then
                return 0
        fi
        rm -rf "$LIB_TMP"
}
trap _lib_exit EXIT

# The machine's load average and free disk and memory are the host's, not the sandbox's
# (/proc/loadavg, /proc/meminfo and statfs are not namespaced): the shipped thresholds would halt
# the agents whenever other work loads the host, so a test's result would depend on the host.
# Inside the sandbox the installed profiles get thresholds the host cannot trip; a test of
# those contracts sets its own values.
if [ "${CON_SANDBOX:-0}" = 1 ]; then
        for _f in /usr/share/conspiracyos/profiles/*/con.yaml; do
                [ -w "$_f" ] || continue
                sed -i -e 's/^\( *max_load_factor:\) *[0-9.]*/\1 1000/' \
                        -e 's/^\( *disk_min_free_pct:\) *[0-9.]*/\1 0/' \
                        -e 's/^\( *mem_min_free_pct:\) *[0-9.]*/\1 0/' "$_f"
        done
        # A config without a contracts: section (con bootstrap --config FILE) gets the built-in
        # threshold: the load contract itself carries the sandbox's.
        for _f in /usr/share/conspiracyos/profiles/*/contracts/CON-SYS-003.yaml; do
                [ -w "$_f" ] || continue
                sed -i 's/^\( *load_per_core:\) *{}/\1 {max: 1000}/' "$_f"
        done
        unset _f
fi

# Exit 77 (skipped) when not root.
require_root() {
        if [ "$(id -u)" != 0 ]; then
                echo "# needs root; skipping"
                LIB_FINISHED=1
                exit 77
        fi
}

# Exit 77 (skipped) unless root inside tests/sandbox/con-sandbox (a fresh system bus, the
# project installed in /usr): the integration scripts change users, /etc and /srv.
require_sandbox() {
        require_root
        if [ "${CON_SANDBOX:-}" != 1 ]; then
                echo "# must run inside tests/sandbox/con-sandbox; skipping"
                LIB_FINISHED=1
                exit 77
        fi
}

# start_fake_llm [IDLE_SECONDS]: starts the scripted model ($FAKE, tests/fake-llm) on
# $T/script.json, logging each request to $T/fake.log; sets FAKE_PID and PORT, and checks that the
# script is valid JSON and that the server listens. IDLE_SECONDS (default 900, 0: never) ends it.
start_fake_llm() {
        check "the script is valid JSON" jq . "$T/script.json"
        "$FAKE" --script "$T/script.json" --log "$T/fake.log" --idle-timeout "${1:-900}" >"$T/port" 2>"$T/fake.err" &
        FAKE_PID=$!
        for _ in $(seq 50); do [ -s "$T/port" ] && break; sleep 0.1; done
        PORT=$(head -n1 "$T/port")
        check "the fake LLM server listens (port ${PORT:-none})" test -n "$PORT"
}

# wait_for SECONDS CMD...: runs CMD (quietly) every 0.1 s until it succeeds; 1 after SECONDS.
wait_for() {
        local n=$(($1 * 10))
        shift
        for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
        return 1
}

# bus_owner_pid NAME: prints the pid of the process owning NAME on the system bus; nothing, status
# 1, when no one owns it. Never starts it (GetConnectionUnixProcessID, not a call to NAME).
bus_owner_pid() {
        busctl --system call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus \
                GetConnectionUnixProcessID s "$1" 2>/dev/null | sed -n 's/^u \([0-9][0-9]*\)$/\1/p' | grep .
}
# bus_has_owner NAME: status 0 when someone owns NAME on the system bus now (never starts it);
# bus_no_owner NAME: the opposite, for wait_for.
bus_has_owner() {
        busctl --system call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus \
                NameHasOwner s "$1" 2>/dev/null | grep -qx 'b true'
}
bus_no_owner() { ! bus_has_owner "$1"; }
# bus_stop NAME [SIGNAL]: SIGNAL (TERM) to NAME's owner, if any, by its pid; then waits up to 10 s
# until no one owns NAME (status 1 when someone still does). The next call to NAME starts it again.
bus_stop() {
        local pid
        if pid=$(bus_owner_pid "$1"); then
                kill -s "${2:-TERM}" "$pid" || return 1
        fi
        wait_for 10 bus_no_owner "$1"
}

section() {
        echo "# --- $* ---"
}

_lib_run() {
        set +e
        "$@" >"$LIB_TMP/out" 2>&1
        LIB_RC=$?
        LIB_OUT=$(cat "$LIB_TMP/out")
        if [ "${CON_TEST_VERBOSE:-0}" = 1 ] && [ -n "$LIB_OUT" ]; then
                printf '%s\n' "$LIB_OUT" | sed 's/^/#   | /'
        fi
}

_lib_pass() {
        LIB_PASSED=$((LIB_PASSED + 1))
        echo "ok $((LIB_PASSED + LIB_FAILED)) - $1"
}

# _lib_fail DESC WHY [CMD...]
_lib_fail() {
        local desc=$1 why=$2
        shift 2
        LIB_FAILED=$((LIB_FAILED + 1))
        echo "not ok $((LIB_PASSED + LIB_FAILED)) - $desc"
        echo "#   $why"
        if (($#)); then
                echo "#   command: $(printf '%q ' "$@")"
                echo "#   exit status: $LIB_RC"
        fi
        if [ -n "$LIB_OUT" ]; then
                printf '%s\n' "$LIB_OUT" | tail -n 20 | sed 's/^/#   | /'
        fi
}

# check DESC CMD...: passes when CMD exits 0.
check() {
        local desc=$1
        shift
        _lib_run "$@"
        if [ "$LIB_RC" = 0 ]; then _lib_pass "$desc"; else _lib_fail "$desc" "expected success" "$@"; fi
}

# check_fail DESC CMD...: passes when CMD exits non-zero.
check_fail() {
        local desc=$1
        shift
        _lib_run "$@"
        if [ "$LIB_RC" != 0 ]; then _lib_pass "$desc"; else _lib_fail "$desc" "expected failure" "$@"; fi
}

# check_status DESC STATUS CMD...: passes when CMD exits with exactly STATUS.
check_status() {
        local desc=$1 want=$2
        shift 2
        _lib_run "$@"
        if [ "$LIB_RC" = "$want" ]; then _lib_pass "$desc"; else _lib_fail "$desc" "expected exit status $want" "$@"; fi
}

# check_output DESC REGEX CMD...: passes when CMD exits 0 and its output matches the
# extended regular expression REGEX (grep -E).
check_output() {
        local desc=$1 re=$2
        shift 2
        _lib_run "$@"
        if [ "$LIB_RC" != 0 ]; then
                _lib_fail "$desc" "expected success" "$@"
        elif ! grep -Eq -- "$re" <<<"$LIB_OUT"; then
                _lib_fail "$desc" "output does not match /$re/" "$@"
        else
                _lib_pass "$desc"
        fi
}

# check_fail_output DESC REGEX CMD...: CMD fails and its output matches REGEX.
check_fail_output() {
        local desc=$1 re=$2
        shift 2
        _lib_run "$@"
        if [ "$LIB_RC" = 0 ]; then
                _lib_fail "$desc" "expected failure" "$@"
        elif ! grep -Eq -- "$re" <<<"$LIB_OUT"; then
                _lib_fail "$desc" "output does not match /$re/" "$@"
        else
                _lib_pass "$desc"
        fi
}

# check_eq DESC EXPECTED ACTUAL
check_eq() {
        LIB_OUT=""
        if [ "$2" = "$3" ]; then
                _lib_pass "$1"
        else
                LIB_OUT=$(printf 'expected: %s\nactual:   %s' "$2" "$3")
                _lib_fail "$1" "values differ"
        fi
}

# check_file_lacks DESC REGEX FILE: FILE exists, is not empty and has no line matching the
# extended regular expression REGEX (the matches are shown otherwise). A missing or empty FILE
# fails: `check_fail grep ... FILE` would pass for a log that was never written.
check_file_lacks() {
        local desc=$1 re=$2 f=$3
        LIB_OUT=""
        if [ ! -s "$f" ]; then
                _lib_fail "$desc" "$f is missing or empty"
        elif LIB_OUT=$(grep -E -m 5 -- "$re" "$f"); then
                _lib_fail "$desc" "$f has lines matching /$re/"
        else
                _lib_pass "$desc"
        fi
}

# check_same_file DESC FILE1 FILE2: identical content (shows a diff otherwise).
check_same_file() {
        LIB_OUT=$(diff -u "$2" "$3" 2>&1)
        if [ $? = 0 ]; then _lib_pass "$1"; else _lib_fail "$1" "files differ: $2 $3"; fi
}

# check_units_verify DESC UNIT...: `systemd-analyze verify UNIT...` exits 0 and prints nothing
# (it only warns, with exit status 0, about unknown keys: any output is a failure).
check_units_verify() {
        local desc=$1
        shift
        _lib_run systemd-analyze verify "$@"
        if [ "$LIB_RC" != 0 ]; then _lib_fail "$desc" "expected success" systemd-analyze verify "$@"
        elif [ -n "$LIB_OUT" ]; then _lib_fail "$desc" "expected no output" systemd-analyze verify "$@"
        else _lib_pass "$desc"; fi
}

# check_unit_exposure_ok UNIT [OPTION...]: `systemd-analyze security [OPTION...] UNIT` puts UNIT in
# the OK band or better: overall exposure below 5.0, i.e. at most 4.9 (--threshold is in tenths,
# so the command fails above it), band OK, SAFE or PERFECT. Prints the exposure as a comment.
# --offline=yes judges the unit file; without it, the loaded (running) unit.
check_unit_exposure_ok() {
        local u=$1
        shift
        check_output "systemd-analyze security${*:+ $*} $u: OK or better" \
                "Overall exposure level for ${u//./\\.}: [0-4]\.[0-9] (OK|SAFE|PERFECT)" \
                systemd-analyze security "$@" --threshold=49 "$u"
        echo "# exposure: $(grep -o "Overall exposure level.*" <<<"$LIB_OUT")"
}

# as_user USER CMD...: runs CMD as USER with USER's groups (runuser), in /.
as_user() {
        local user=$1
        shift
        (cd / && runuser -u "$user" -- "$@")
}

# stat_is DESC PATH "OWNER:GROUP MODE": owner, group and octal mode (as stat -c %a).
stat_is() {
        local desc=$1 path=$2 want=$3 got
        got=$(stat -c '%U:%G %a' -- "$path" 2>&1)
        check_eq "$desc ($path)" "$want" "$got"
}

# caps_contract: prints contract T-CAPS, whose two shell checks report the capability sets of the
# check's own process: no_net_admin passes when CAP_NET_ADMIN (12) is in none of them (the contract
# service keeps it for its native network check, a shell check must not have it), keeps_dac_override
# when CAP_DAC_OVERRIDE (1) is still effective (the check keeps the service's other capabilities).
caps_contract() {
        cat <<'YAML'
id: T-CAPS
type: detective
frequency: 1h
checks:
  - name: no_net_admin
    command:
      run: "grep -E '^Cap(Eff|Prm|Inh|Amb):' /proc/self/status | cut -f2 | xargs"
      test: 'for c in $RESULT; do [ $(( 0x$c >> 12 & 1 )) -eq 0 ] || exit 1; done'
  - name: keeps_dac_override
    command:
      run: "grep '^CapEff:' /proc/self/status | cut -f2"
      test: '[ $(( 0x$RESULT >> 1 & 1 )) -eq 1 ]'
YAML
}

# A scratch path private to this script run.
lib_tmp() {
        echo "$LIB_TMP"
}

# Prints the summary and exits: 0 when every check passed, 1 otherwise (or with no checks).
finish() {
        LIB_FINISHED=1
        echo "$LIB_PASSED passed, $LIB_FAILED failed"
        if ((LIB_FAILED > 0 || LIB_PASSED == 0)); then
                exit 1
        fi
        exit 0
}
