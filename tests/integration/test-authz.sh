#!/bin/bash
# test-authz: bus/runtime/authz.c against the real dbus-daemon and the real polkitd, inside tests/sandbox/con-sandbox.
# A test service (authz-probe, running as an unprivileged service user) gates a method with
# con_authz_verify(); callers run as two other users. Prints "AUTHZ-MEASURE" lines for the benchmarks.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
        echo "test-authz: needs root (real polkitd and runuser); skipping"
        exit 77
fi
if [ -z "${CON_SANDBOX:-}" ]; then
        echo "test-authz: refusing to run outside tests/sandbox/con-sandbox (it changes /etc)" >&2
        exit 1
fi

build=${CON_BUILD_DIR:?CON_BUILD_DIR is not set}
tmp=${CON_SANDBOX_TMP:?}
# The sandbox's scratch folder is private to root; /usr is an overlay, so this does not leak.
probe=/usr/local/libexec/con-test/authz-probe
install -D -m 0755 "$build/tests/integration/authz-probe" "$probe"

SVC=con-authz-svc A=con-authz-a B=con-authz-b
DEST=org.conspiracy.AuthzProbe1
ACT=org.conspiracy.authztest.check
ACT_UNOWNED=org.conspiracy.authztest.unowned
ACT_CHALLENGE=org.conspiracy.authztest.challenge
ACT_SECOND=org.conspiracy.authztest.second
SLOW_MS=3000 TIMEOUT_MS=1500

for u in $SVC $A $B; do
        useradd --system --no-create-home --shell /usr/sbin/nologin "$u"
done

failures=0
svc_log=$tmp/authz-probe.log
# On any exit with failures, show what the service said (sanitizer reports land there).
trap 'if ((failures)) || [ $? != 0 ]; then echo "---- probe service log ----"; cat "$svc_log" 2>/dev/null; fi' EXIT
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
# expect DESCRIPTION ACTUAL GLOB
expect() { if [[ $2 == $3 ]]; then pass "$1"; else fail "$1: got '$2', want '$3'"; fi; }
line() { sed -n "$1p" <<<"$2"; }
stat_of() { grep -o " $2=[0-9]*" <<<"$1" | cut -d= -f2; }
# the latency field of a client result line: "allowed MS" or "error NAME MS MESSAGE"
ms_of() { awk '{print $1 == "allowed" ? $2 : $3}' <<<"$1"; }
# client USER: runs authz-probe client as USER, commands on stdin
client() {
        if [ "$1" = root ]; then "$probe" client --dest $DEST; else runuser -u "$1" -- "$probe" client --dest $DEST; fi
}
stats() { echo stats | client root; }
# A message whose handler ran again is freed at the loop's idle priority: a stats call arriving in
# between still counts it as parked. What must hold is that it reaches 0 (within 2 s).
parked_settled() {
        local p i
        for i in $(seq 40); do
                p=$(stat_of "$(stats)" parked)
                [ "$p" = 0 ] && break
                sleep 0.05
        done
        echo "$p"
}
bus_call() { dbus-send --system --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus "$@"; }

# ---- platform files ----
policy() { # ACTION_ID DEFAULT OWNER_ANNOTATION(0|1)
        echo "  <action id=\"$1\">"
        echo "    <description>authz test</description><message>authz test</message>"
        echo "    <defaults><allow_any>$2</allow_any><allow_inactive>$2</allow_inactive><allow_active>$2</allow_active></defaults>"
        if [ "$3" = 1 ]; then
                echo "    <annotate key=\"org.freedesktop.policykit.owner\">unix-user:root unix-user:$SVC</annotate>"
        fi
        echo "  </action>"
}
{
        echo '<?xml version="1.0" encoding="UTF-8"?>'
        echo '<!DOCTYPE policyconfig PUBLIC "-//freedesktop//DTD PolicyKit Policy Configuration 1.0//EN"'
        echo ' "http://www.freedesktop.org/standards/PolicyKit/1/policyconfig.dtd">'
        echo '<policyconfig>'
        policy $ACT no 1
        policy $ACT_CHALLENGE auth_admin 1
        policy $ACT_SECOND no 1
        policy $ACT_UNOWNED no 0
        echo '</policyconfig>'
} >/usr/share/polkit-1/actions/org.conspiracy.authztest.policy

cat >/etc/polkit-1/rules.d/50-conspiracy-authztest.rules <<EOF
// ES5 only (polkit 122 uses duktape).
polkit.addRule(function(action, subject) {
        if (action.id != "$ACT" && action.id != "$ACT_UNOWNED" && action.id != "$ACT_SECOND")
                return polkit.Result.NOT_HANDLED;
        var verb = action.lookup("verb");
        var delay = verb == "slow" ? $SLOW_MS : verb == "slowish" ? 300 : 0;
        var start = Date.now();
        while (Date.now() - start < delay) { }
        if (action.lookup("agent") == "x") {
                if (subject.user == "$A")
                        return polkit.Result.YES;
                if (subject.user == "$B")
                        return polkit.Result.NO;
        }
        return polkit.Result.NOT_HANDLED;
});
EOF
chmod 0644 /etc/polkit-1/rules.d/50-conspiracy-authztest.rules /usr/share/polkit-1/actions/org.conspiracy.authztest.policy

cat >/etc/dbus-1/system.d/$DEST.conf <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy user="$SVC"><allow own="$DEST"/></policy>
  <policy context="default">
    <allow send_destination="$DEST" send_interface="org.conspiracy.AuthzProbe1"/>
  </policy>
</busconfig>
EOF
bus_call org.freedesktop.DBus.ReloadConfig >/dev/null

# ---- the service ----
runuser -u $SVC -- "$probe" service --name $DEST --timeout-ms $TIMEOUT_MS --root-policy table >"$svc_log" 2>&1 &
for _ in $(seq 100); do
        grep -q '^ready' "$svc_log" && break
        sleep 0.1
done
if ! grep -q '^ready' "$svc_log"; then
        cat "$svc_log"
        echo "test-authz: the probe service did not start" >&2
        exit 1
fi
svc_pid=$(bus_call org.freedesktop.DBus.GetConnectionUnixProcessID string:$DEST | awk '/uint32/ {print $2}')
svc_unique=$(bus_call org.freedesktop.DBus.GetNameOwner string:$DEST | awk -F'"' '/string/ {print $2}')
echo "probe service pid $svc_pid; $(stats)"

# ---- 1. A allowed (first call activates polkitd), B denied, cache hit on the second call ----
out=$(printf 'check %s x task\n' $ACT | client $A)
expect "first call as $A allowed" "$out" "allowed *"
first_cold=$(ms_of "$out")

before=$(stats)
out=$(printf 'check %s x task\ncheck %s x task\nstats\n' $ACT $ACT | client $A)
expect "$A allowed (uncached)" "$(line 1 "$out")" "allowed *"
expect "$A allowed again (cached)" "$(line 2 "$out")" "allowed *"
first_warm=$(ms_of "$(line 1 "$out")")
cached_one=$(ms_of "$(line 2 "$out")")
after=$(line 3 "$out")
expect "one polkit check for two calls" $(($(stat_of "$after" checks_sent) - $(stat_of "$before" checks_sent))) 1
expect "second call was a cache hit" $(($(stat_of "$after" cache_hits) - $(stat_of "$before" cache_hits))) 1

out=$(printf 'check %s x task\n' $ACT | client $B)
expect "$B denied" "$out" "error org.conspiracy.Agent1.Error.AccessDenied * Access denied: the polkit policy does not allow this caller to perform $ACT (agent=x, verb=task)"
out=$(printf 'check %s y task\n' $ACT | client $A)
expect "$A denied for agent y (no rule, default no)" "$out" "error org.conspiracy.Agent1.Error.AccessDenied *"

# ---- 1b. one message, two actions: parked, re-dispatched, parked again ----
before=$(stats)
out=$(printf 'check2 %s %s x two\ncheck2 %s %s y two\n' $ACT $ACT_SECOND $ACT $ACT_SECOND | client $A)
after=$(stats)
expect "two actions for one call, both allowed" "$(line 1 "$out")" "allowed *"
expect "two actions for one call, first denied" "$(line 2 "$out")" "error org.conspiracy.Agent1.Error.AccessDenied * $ACT *"
expect "two actions: three polkit checks" $(($(stat_of "$after" checks_sent) - $(stat_of "$before" checks_sent))) 3
expect "two actions: nothing left parked" "$(parked_settled)" "0"

# ---- 1c. who is calling: asked of the bus once per connection, kept until it disconnects ----
a_uid=$(id -u $A)
before=$(stats)
out=$(printf 'who\nwho\nwhocheck %s x who\nstats\n' $ACT | client $A)
after=$(line 4 "$out")
expect "who: the bus driver's uid and the user's name" "$(line 1 "$out")" "who $a_uid $A"
expect "who again: the same answer" "$(line 2 "$out")" "who $a_uid $A"
expect "who, then a check in one handler: allowed" "$(line 3 "$out")" "allowed *"
expect "one uid lookup for one connection" $(($(stat_of "$after" uid_lookups) - $(stat_of "$before" uid_lookups))) 1
# Answered from what the bus said: the re-run of the first who, the second who, and whocheck's two
# runs (before and after polkit's answer).
expect "who answered from what the bus said" \
        $(($(stat_of "$after" uid_cache_hits) - $(stat_of "$before" uid_cache_hits))) 4
expect "the check after who went to polkit without a second lookup" \
        $(($(stat_of "$after" checks_sent) - $(stat_of "$before" checks_sent))) 1
expect "who: nothing left parked" "$(parked_settled)" "0"
# The connection has gone: its uid is forgotten (NameOwnerChanged), only the stats caller's is known.
sleep 0.2
expect "a disconnected caller's uid is dropped" "$(stat_of "$(stats)" callers_known)" "$(stat_of "$before" callers_known)"
out=$(printf 'who\n' | client root)
expect "who as root" "$out" "who 0 root"

# ---- 2. a challenge without interaction is a denial ----
out=$(printf 'check %s x task\n' $ACT_CHALLENGE | client $A)
expect "challenge without interaction denied" "$out" \
        "error org.freedesktop.DBus.Error.InteractiveAuthorizationRequired * needs interactive authentication*"

# ---- 3. root never reaches polkit: the service's table decides ----
before=$(stats)
out=$(printf 'check %s x task\ncheck %s x root-ok\n' $ACT $ACT | client root)
after=$(stats)
expect "root denied by the service's table" "$(line 1 "$out")" "error org.conspiracy.Agent1.Error.AccessDenied * does not allow root callers*"
expect "root allowed by the service's table" "$(line 2 "$out")" "allowed *"
expect "root calls never asked polkit" $(($(stat_of "$after" checks_sent) - $(stat_of "$before" checks_sent))) 0

# ---- 4. concurrent identical checks share one polkit call ----
before=$(stats)
out=$(printf 'burst 20 %s x slowish\n' $ACT | client $A)
after=$(stats)
expect "20 identical calls in flight all allowed" "$out" "burst ok=20 errors=0"
expect "20 identical calls: one polkit check" $(($(stat_of "$after" checks_sent) - $(stat_of "$before" checks_sent))) 1
expect "20 identical calls: 19 coalesced" $(($(stat_of "$after" coalesced) - $(stat_of "$before" coalesced))) 19

# ---- 5. rules change while a decision is cached ----
before=$(stats)
printf 'check %s x task\ncheck %s x task\nsleep 3000\ncheck %s x task\n' $ACT $ACT $ACT | client $A >"$tmp/flip.out" &
flip_client=$!
sleep 1
cat >/etc/polkit-1/rules.d/10-conspiracy-authztest-flip.rules <<EOF
polkit.addRule(function(action, subject) {
        if (action.id == "$ACT" && subject.user == "$A" && action.lookup("agent") == "x")
                return polkit.Result.NO;
        return polkit.Result.NOT_HANDLED;
});
EOF
wait $flip_client
out=$(cat "$tmp/flip.out")
after=$(stats)
expect "before the change: allowed" "$(line 1 "$out")" "allowed *"
expect "before the change: allowed from cache" "$(line 2 "$out")" "allowed *"
expect "after the change: the cached yes is gone" "$(line 3 "$out")" "error org.conspiracy.Agent1.Error.AccessDenied *"
flushes=$(($(stat_of "$after" flushes) - $(stat_of "$before" flushes)))
if ((flushes >= 1)); then pass "rules change flushed the cache ($flushes flushes)"; else fail "rules change did not flush the cache"; fi
rm /etc/polkit-1/rules.d/10-conspiracy-authztest-flip.rules
sleep 1.5

# ---- 6. caller disconnects during a pending check (CVE-2021-3560 class) ----
dbus-monitor --system "type='error'" "type='method_return'" >"$tmp/monitor.log" 2>&1 &
monitor=$!
sleep 0.5
before=$(stats)
out=$(printf 'name\nsend %s x slow\nsleep 300\nquit\n' $ACT | client $A)
gone_name=$(line 1 "$out")
expect "the disconnecting client sent its call" "$(line 2 "$out")" "sent"
sleep $((SLOW_MS / 1000 + 1))
after=$(stats)
kill $monitor
wait $monitor 2>/dev/null || true
expect "parked call of the vanished caller dropped" $(($(stat_of "$after" dropped) - $(stat_of "$before" dropped))) 1
expect "nothing performed for the vanished caller" $(($(stat_of "$after" performed) - $(stat_of "$before" performed))) 0
expect "nothing left parked" "$(stat_of "$after" parked) $(stat_of "$after" pending)" "0 0"
if grep -q "sender=$svc_unique -> " "$tmp/monitor.log"; then
        pass "the monitor saw the service's replies to other callers"
else
        fail "the monitor saw no reply from the service at all: the next check would mean nothing"
fi
# (the bus driver's own reply to the client's Hello is expected; the service must send nothing)
if [[ $gone_name == :* && $svc_unique == :* ]] && ! grep -q "sender=$svc_unique -> destination=$gone_name " "$tmp/monitor.log"; then
        pass "no reply was sent by the service ($svc_unique) to the vanished caller $gone_name"
else
        fail "a reply went to the vanished caller '$gone_name': $(grep "destination=$gone_name " "$tmp/monitor.log" | head -3)"
fi

# ---- 7. polkit slower than the timeout ----
before=$(stats)
out=$(printf 'check %s x slow\n' $ACT | client $A)
after=$(stats)
expect "slow polkit: denied with the timeout error" "$out" \
        "error org.conspiracy.Agent1.Error.AuthorizationTimeout * polkit did not answer within 1.5 s"
t=$(ms_of "$out")
if awk -v t="$t" 'BEGIN { exit !(t >= 1400 && t < 2900) }'; then pass "timeout after ${t} ms"; else fail "timeout took ${t} ms"; fi
expect "one timeout counted" $(($(stat_of "$after" timeouts) - $(stat_of "$before" timeouts))) 1
sleep $((SLOW_MS / 1000))

# ---- 8. an action without the owner annotation: polkit refuses a non-root service ----
out=$(printf 'check %s x task\n' $ACT_UNOWNED | client $A)
expect "no owner annotation: denied with polkit's reason" "$out" \
        "error org.conspiracy.Agent1.Error.AccessDenied * Only trusted callers*org.freedesktop.policykit.owner*"
echo "  ($out)"

# ---- 9. numbers for docs/PERFORMANCE.md ----
out=$(printf 'bench-cached 500 %s x task\nbench-uncached 400 50 %s x\n' $ACT $ACT | client $A)
expect "cached bench all allowed" "$(line 1 "$out")" "cached n=500 ok=500 *"
expect "uncached bench all allowed" "$(line 2 "$out")" "uncached n=400 ok=400 *"
echo "AUTHZ-MEASURE first_call_with_polkit_activation_ms=$first_cold"
echo "AUTHZ-MEASURE first_call_uncached_ms=$first_warm"
echo "AUTHZ-MEASURE cached_call_ms=$cached_one"
echo "AUTHZ-MEASURE $(line 1 "$out")"
echo "AUTHZ-MEASURE $(line 2 "$out")"

# ---- 10. polkitd gone and not activatable ----
pk_pid=$(bus_call org.freedesktop.DBus.GetConnectionUnixProcessID string:org.freedesktop.PolicyKit1 | awk '/uint32/ {print $2}')
mv /usr/share/dbus-1/system-services/org.freedesktop.PolicyKit1.service "$tmp/"
bus_call org.freedesktop.DBus.ReloadConfig >/dev/null
kill "$pk_pid"
for _ in $(seq 50); do
        kill -0 "$pk_pid" 2>/dev/null || break
        sleep 0.1
done
out=$(printf 'check %s x after-stop\n' $ACT | client $A)
expect "polkit absent: denied" "$out" \
        "error org.conspiracy.Agent1.Error.AccessDenied * authorization service (polkit) unavailable*"
echo "  ($out)"
after=$(stats)
expect "polkit absent counted" "$(stat_of "$after" unavailable)" "1"

# ---- the service survived everything, cleanly ----
kill -TERM "$svc_pid"
for _ in $(seq 100); do
        kill -0 "$svc_pid" 2>/dev/null || break
        sleep 0.1
done
if kill -0 "$svc_pid" 2>/dev/null; then fail "probe service did not exit on SIGTERM"; fi
if grep -qE "AddressSanitizer|LeakSanitizer|runtime error" "$svc_log"; then
        fail "sanitizer report in the service log:"
        cat "$svc_log"
else
        pass "no sanitizer report in the service"
fi

echo "final stats: $after"
if ((failures)); then
        echo "test-authz: $failures failure(s)"
        exit 1
fi
echo "test-authz: all passed"
