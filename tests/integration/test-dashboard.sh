#!/bin/bash
# The status page, con-webd (docs/DASHBOARD.md): con up starts it from dashboard: in con.yaml;
# its HTTP API and Server-Sent Events with curl (a finished task is on the stream within a
# second, security headers, read only, the Unix socket for group con only); a bind that is not
# loopback is refused without the token and served with it; and a real browser (headless
# Chromium) loads the page before a task runs, shows both agents and the task within a second of
# its end (the SSE path), and leaves a screenshot in the build folder's test-artifacts/.
# Runs as root inside tests/sandbox/con-sandbox (fresh system bus, project installed in /usr).
. "$(dirname "$0")/lib.sh"
require_sandbox
T=$(lib_tmp)
PORT=8080
URL=http://127.0.0.1:$PORT
WEBD_BIN=/usr/libexec/conspiracyos/con-webd

now_ms() { date +%s%3N; }

section "bootstrap and con up with the dashboard enabled"
# The agents' model is the scripted fake LLM server (tests/fake-llm): its answers report token
# usage, so the page has tokens and cost to show.
cat >"$T/script.json" <<'EOF'
{ "rules": [
  { "path": "/v1/chat/completions",
    "body": { "choices": [ { "message": { "content": "Hello from the fake model" }, "finish_reason": "stop" } ],
              "usage": { "prompt_tokens": 1200, "completion_tokens": 300 }, "model": "fake-model" } }
] }
EOF
FAKE=${CON_BUILD_DIR:?}/tests/fake-llm/con-fake-llm
start_fake_llm 600
FAKE_PORT=$PORT
PORT=8080
mkdir -p /etc/con
cat >/etc/con/con.yaml <<EOF
system:
  name: dashboard-test
models:
  price_per_mtok_in: 10
  price_per_mtok_out: 20
  budget_tokens_per_day: 100000
base:
  runner: picoclaw
  provider: openrouter
  base_url: http://127.0.0.1:$FAKE_PORT/v1
  model: fake-model
agents:
  - name: concierge
    tier: operator
  - name: sysadmin
    tier: operator
    roles: [sysadmin]
EOF
for d in base tiers roles agents; do
        [ -d "/usr/share/conspiracyos/profiles/default/$d" ] && cp -r "/usr/share/conspiracyos/profiles/default/$d" /etc/con/
done
check "con bootstrap (no dashboard yet)" con bootstrap
printf 'CON_API_KEY=sk-dashboard-test-0123456789\n' >/etc/con/env
# Every service user exists (the installed bus policy names them), the service itself only when enabled.
check "... makes the service user con-web even while the dashboard is off" id con-web
check_fail "... but does not enable con-webd.service" test -e /etc/systemd/system/conspiracyos.target.wants/con-webd.service
printf 'dashboard:\n  enabled: true\n  bind: 127.0.0.1\n  port: %s\n' "$PORT" >>/etc/con/con.yaml
check "con bootstrap with dashboard.enabled" con bootstrap
check "bootstrap made the service's user con-web" id con-web
check_fail "con-web is not in group con (it cannot task agents)" sh -c 'id -nG con-web | tr " " "\n" | grep -qx con'
check_output "con up starts the dashboard" '^dashboard: started on 127.0.0.1 port 8080' con up
check_output "con-webd runs as con-web" '^con-web$' ps -o user= -C con-webd

section "HTTP: the page, headers, read only"
check_output "GET / is the page" '<title>ConspiracyOS status</title>' curl -fsS "$URL/"
curl -sS -D "$T/h" -o /dev/null "$URL/app.js"
check_output "CSP: default-src 'self', no inline script" "^Content-Security-Policy: default-src 'self'; script-src 'self';" \
        tr -d '\r' <"$T/h"
check_output "X-Content-Type-Options: nosniff" '^X-Content-Type-Options: nosniff$' tr -d '\r' <"$T/h"
check_output "app.js is text/javascript" '^Content-Type: text/javascript' tr -d '\r' <"$T/h"
check_fail "the page has no inline script or style" grep -qE '<script>|<script [^>]*>[^<]|<style|[[:space:]](on[a-z]+|style)=' \
        /usr/share/conspiracyos/web/index.html
check_output "POST is refused (405, Allow: GET, HEAD)" '^405 GET, HEAD$' \
        curl -sS -o /dev/null -X POST -w '%{http_code} %header{allow}' "$URL/api/state"
check_output "unknown paths are 404" '^404$' curl -sS -o /dev/null -w '%{http_code}' --path-as-is "$URL/../../etc/passwd"
check_output "a request for another host name is refused (403: DNS rebinding)" '^403$' \
        curl -sS -o /dev/null -w '%{http_code}' -H 'Host: rebind.example:8080' "$URL/api/state"
check_output "... Host: localhost is answered" '^200$' \
        curl -sS -o /dev/null -w '%{http_code}' -H "Host: localhost:$PORT" "$URL/api/state"
check_output "... and Host: [::1]" '^200$' curl -sS -o /dev/null -w '%{http_code}' -H "Host: [::1]:$PORT" "$URL/api/state"
check_output "/api/state: both agents, the router, the contracts" '^concierge,sysadmin true true$' \
        sh -c "curl -fsS $URL/api/state | jq -r '([.agents[].name] | join(\",\")) + \" \" + (.router.running|tostring) + \" \" + (.contracts.running|tostring)'"

section "Server-Sent Events: a finished task within a second"
# Each line of the stream stamped with when it arrived (ms), to compare with the event's time.
stamp() { while IFS= read -r line; do printf '%s %s\n' "$(date +%s%3N)" "$line"; done; }
curl -sSN "$URL/api/events" > >(stamp >"$T/sse.stamped") 2>&1 &
SSE=$!
check "the stream starts with the state" wait_for 5 grep -q ' event: state$' "$T/sse.stamped"
check "con-send /ping" sh -c "con-send --json /ping >'$T/ping.json'"
ID=$(jq -r .task_id "$T/ping.json")
# The first state that holds the task's completion: its arrival minus when con-webd saw TaskCompleted.
sse_latency() {
        local ms data
        while read -r ms data; do
                [[ "$data" == data:* ]] || continue
                jq -e --arg id "$ID" --argjson ms "$ms" \
                        'first(.events[] | select(.event == "task.completed" and .task_id == $id)) | $ms - ((.time / 1000) | floor)' \
                        <<<"${data#data: }" 2>/dev/null && return 0
        done <"$T/sse.stamped"
        return 1
}
check "task $ID completed is on the stream" wait_for 5 sse_latency
lat=$(sse_latency)
check "... within 1 s of con-webd seeing the task end (${lat} ms)" test "${lat:-9999}" -le 1000
sed 's/^[0-9]* //' "$T/sse.stamped" >"$T/sse"
check "... with the agent and sender, and no task text" sh -c "grep '^data: ' '$T/sse' | tail -n1 | cut -c7- |
        jq -e --arg id '$ID' '[.events[] | select(.task_id == \$id and .event == \"task.completed\")][0] |
        .agent == \"concierge\" and .sender == \"root\" and .status == \"completed\" and (has(\"text\") | not)'"
check_fail "the stream never carries the task's text or answer" grep -q 'pong' "$T/sse"
kill "$SSE" 2>/dev/null
wait "$SSE" 2>/dev/null

section "the Unix socket: group con only"
SOCK=/run/con-webd/webd.sock
useradd -M -N -G con webd-alice 2>/dev/null
useradd -M -N webd-bob 2>/dev/null
check_output "a member of con reads the state on $SOCK" '^true$' \
        as_user webd-alice sh -c "curl -fsS --unix-socket $SOCK http://localhost/api/state | jq .router.running"
check_fail "a user outside con cannot reach it" as_user webd-bob curl -fsS --unix-socket "$SOCK" http://localhost/api/state

section "the browser: the page live, both agents and a finished task"
# Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe: JSON
# messages ending in NUL on fds 3 and 4), so the page stays open while a task runs and its DOM is
# read as the events arrive.
export HOME=$T/chrome-home
mkdir -p "$HOME"
ART=${CON_SANDBOX_ARTIFACTS:-$T}
mkfifo "$T/cdp-in" "$T/cdp-out"
start_ms=$(now_ms)
chromium --headless=new --no-sandbox --disable-gpu --no-first-run --hide-scrollbars --window-size=1400,1000 \
        --enable-logging=stderr --remote-debugging-pipe about:blank 3<"$T/cdp-in" 4>"$T/cdp-out" 2>"$T/chrome.log" &
CHR=$!
exec 5>"$T/cdp-in" 6<"$T/cdp-out"
CDP_ID=0
CDP_OUT=""
# cdp METHOD PARAMS_JSON [SESSION]: sends one command, sets CDP_OUT to its answer (10 s at most).
cdp() {
        local id=$((++CDP_ID)) msg
        jq -cnj --argjson id "$id" --arg m "$1" --argjson p "$2" --arg s "${3:-}" \
                '{id: $id, method: $m, params: $p} + (if $s != "" then {sessionId: $s} else {} end)' >&5
        printf '\0' >&5
        CDP_OUT=""
        while IFS= read -r -d '' -t 10 msg <&6; do
                if [ "$(jq -r '.id // empty' <<<"$msg")" = "$id" ]; then
                        CDP_OUT=$msg
                        return 0
                fi
        done
        return 1
}
# js EXPRESSION: its value (returnByValue) as JSON text in CDP_OUT's place, on stdout.
js() {
        cdp Runtime.evaluate "$(jq -cn --arg e "$1" '{expression: $e, returnByValue: true}')" "$SESSION" &&
                jq -c '.result.result.value' <<<"$CDP_OUT"
}
cdp Target.createTarget "$(jq -cn --arg u "$URL/" '{url: $u}')"
TARGET=$(jq -r '.result.targetId // empty' <<<"$CDP_OUT")
check "chromium opened the page (target ${TARGET:-none})" test -n "$TARGET"
cdp Target.attachToTarget "$(jq -cn --arg t "$TARGET" '{targetId: $t, flatten: true}')"
SESSION=$(jq -r '.result.sessionId // empty' <<<"$CDP_OUT")
page_live() { [ "$(js 'document.getElementById("connection").textContent')" = '"live"' ]; }
check "the page is live (its event stream is open)" wait_for 20 page_live
echo "# chromium up and the page live in $(($(now_ms) - start_ms)) ms"
check_output "the page shows both agents" '^\["concierge","sysadmin"\]$' \
        js '[...document.querySelectorAll("#agents tbody tr")].map(r => r.dataset.agent)'
check "con-send /ping while the page is open" sh -c "con-send --json /ping >'$T/ping2.json'"
ID2=$(jq -r .task_id "$T/ping2.json")
ROW="#events tr[data-task=\"$ID2\"][data-event=\"task.completed\"]"
row_shown() { [ "$(js "!!document.querySelector('$ROW')")" = true ]; }
check "the page shows task $ID2 completed" wait_for 5 row_shown
# The page stamps each row with when it first rendered it (data-seen, the browser's clock) next to
# when con-webd saw the agent's TaskCompleted (data-time): the whole path bus -> SSE -> DOM,
# measured without the cost of asking the browser.
lat=$(js "(() => { const r = document.querySelector('$ROW'); return Number(r.dataset.seen) - Math.floor(Number(r.dataset.time) / 1000); })()")
check "... within 1 s of the task's end (${lat} ms)" test "${lat:-9999}" -le 1000
check_output "... in its row: agent, sender, status" '^\["concierge","root","completed"\]$' \
        js "[...document.querySelector('#events tr[data-task=\"$ID2\"][data-event=\"task.completed\"]').cells].slice(2).filter((c, i) => i != 1 && i < 4).map(c => c.textContent)"
check_output "the agent's counters went up (accepted 2, completed 2)" '^\["2","2"\]$' \
        js '[...document.querySelector("#agents tr[data-agent=concierge]").cells].slice(6, 8).map(c => c.textContent)'
# Two tasks for the model: the gateway starts with the first, the second's tokens are spent
# while the page watches (the plot counts what it saw being spent).
check_output "a task for the model (the fake one)" 'Hello from the fake model' con-send --timeout 60 "hello-dashboard-1"
check_output "... and another" 'Hello from the fake model' con-send --timeout 60 "hello-dashboard-2"
tokens_shown() { [ "$(js 'document.querySelector("#agents tr[data-agent=concierge]").cells[9].textContent')" = '"2400 / 600 ($0.0360)"' ]; }
check "the page shows the concierge's tokens today and their cost (2400 in, 600 out, \$0.0360)" wait_for 5 tokens_shown
check_output "... and its daily budget" '^"100000 tokens"$' js 'document.querySelector("#agents tr[data-agent=concierge]").cells[10].textContent'
check_output "the spend plot saw the tokens being spent" '^"(1500|3000)"$' js 'document.getElementById("plot-tokens").dataset.max'
check_output "the tasks-per-minute plot has a bar" '^[1-9][0-9]*$' js 'document.querySelectorAll("#plot-tasks rect").length'
check_output "the queue and spend plots have a line per agent" '^\[2,2\]$' \
        js '[document.querySelectorAll("#plot-queue polyline").length, document.querySelectorAll("#plot-tokens polyline").length]'
# A failing contract: its violation appears on the page (ViolationDetected), and goes when the
# check passes again (ViolationCleared).
rm -f /run/con-webd-test-flag
cat >/srv/con/contracts/.t-webd.tmp <<'YAML'
id: T-WEBD
type: detective
frequency: 1s
scope: system
checks:
  - name: flag_present
    path: {path: /run/con-webd-test-flag}
    on_fail:
      action: alert
      message: "dashboard test flag missing"
YAML
mv /srv/con/contracts/.t-webd.tmp /srv/con/contracts/t-webd.yaml
violation_shown() { [ "$(js '[...document.querySelectorAll("#violations tbody tr")].some(r => r.cells[0].textContent == "T-WEBD")')" = true ]; }
check "the page shows the open violation of contract T-WEBD" wait_for 15 violation_shown
check_output "... with its check, severity, action and message" '"flag_present",.*"alert","dashboard test flag missing"' \
        js '[...[...document.querySelectorAll("#violations tbody tr")].find(r => r.cells[0].textContent == "T-WEBD").cells].map(c => c.textContent)'
js 'document.documentElement.outerHTML' | jq -r . >"$ART/dashboard-dom.html"
SHOT=$ART/dashboard.png
rm -f "$SHOT"
cdp Emulation.setDeviceMetricsOverride '{"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": false}' "$SESSION"
cdp Page.captureScreenshot '{"format": "png"}' "$SESSION"
jq -r '.result.data // empty' <<<"$CDP_OUT" | base64 -d >"$SHOT"
# The PNG signature, then the IHDR chunk's width and height (1400 = 0x578, 1000 = 0x3e8).
check_output "a screenshot of the page: a 1400x1000 PNG" '^89504e470d0a1a0a0000000d49484452000005780000 ?03e8$' \
        sh -c "od -An -tx1 -N24 '$SHOT' | tr -d ' \n'; echo"
echo "# screenshot: $SHOT (the DOM: $ART/dashboard-dom.html)"
touch /run/con-webd-test-flag
violation_gone() { ! violation_shown; }
check "the violation leaves the page when the check passes again" wait_for 15 violation_gone
cdp Browser.close '{}'
exec 5>&- 6<&-
wait "$CHR"
grep -i 'CONSOLE' "$T/chrome.log" | grep -v 'chrome://' >"$ART/dashboard-console.log"
check_eq "no script errors or CSP violations on the page's console" "" "$(cat "$ART/dashboard-console.log")"
echo "# the browser part took $(($(now_ms) - start_ms)) ms"

section "a reader that does not keep up is disconnected, never sent a stream with events missing"
# Small TCP buffers in this sandbox's network namespace, so that what the reader leaves unread
# piles up in con-webd (its limit: 4 MiB) rather than in the kernel.
OLD_WMEM=$(sysctl -n net.ipv4.tcp_wmem) OLD_RMEM=$(sysctl -n net.ipv4.tcp_rmem)
sysctl -qw net.ipv4.tcp_wmem="4096 16384 65536" net.ipv4.tcp_rmem="4096 16384 65536"
exec 3<>"/dev/tcp/127.0.0.1/$PORT"
printf 'GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:%s\r\n\r\n' "$PORT" >&3   # and nothing read
# Ended by con-webd: its side of the connection closing (its FIN waits behind what is unread).
server_closed() { ss -Htn state fin-wait-1 state fin-wait-2 state closing "( sport = :$PORT )" | grep -q .; }
n=0
while [ $n -lt 600 ] && ! server_closed; do
        busctl call org.conspiracy.Concierge /org/conspiracy/Agent org.conspiracy.Agent1 Submit s /ping >/dev/null 2>&1
        n=$((n + 1))
done
echo "# $n tasks until the stream was ended ($(curl -fsS "$URL/api/state" | wc -c) bytes of state a push)"
check "con-webd ended the stream of the reader that fell behind" server_closed
check "... which reads to its end (no stream going on without the lost events)" \
        sh -c 'timeout 30 cat <&3 >/dev/null'
exec 3<&-
check_output "a new stream starts with the current state" 'event: state' \
        sh -c "curl -sSN --max-time 3 '$URL/api/events' | head -1"
sysctl -qw net.ipv4.tcp_wmem="$OLD_WMEM" net.ipv4.tcp_rmem="$OLD_RMEM"

section "a bind that is not loopback needs the token"
check_fail_output "con-webd --bind 0.0.0.0 without a token refuses to start, saying why" \
        'Refusing to listen on 0.0.0.0 \(not a loopback address\) without authentication: /etc/con/dashboard.token does not exist' \
        "$WEBD_BIN" --bind 0.0.0.0 --port 8081
echo "0123456789abcdef-webd-token" >/etc/con/dashboard.token
chown con-web:con-web /etc/con/dashboard.token
chmod 0644 /etc/con/dashboard.token
check_fail_output "... and with a token file others can read" 'is not a file owned by the service.s user and closed to everyone else' \
        "$WEBD_BIN" --bind 0.0.0.0 --port 8081
chmod 0400 /etc/con/dashboard.token
check_output "con down stops the dashboard" '^dashboard: stopped' con down
check_fail "no sanitizer report in its log" grep -q Sanitizer /srv/con/logs/daemons/con-webd.log
"$WEBD_BIN" --bind 0.0.0.0 --port 8081 >"$T/webd.log" 2>&1 &
WEBD=$!
check "with the token (con-web, 0400) it starts on 0.0.0.0" wait_for 10 sh -c "ss -Htln '( sport = :8081 )' | grep -q ."
check_output "... and says requests need it" 'requests need the token of /etc/con/dashboard.token' cat "$T/webd.log"
check_output "no credentials: 401 with a Basic challenge" '^401 Basic realm="ConspiracyOS dashboard"' \
        curl -sS -o /dev/null -w '%{http_code} %header{www-authenticate}' http://127.0.0.1:8081/api/state
check_output "a wrong token: 401" '^401$' curl -sS -o /dev/null -w '%{http_code}' -u x:wrong-token-wrong-token http://127.0.0.1:8081/api/state
check_output "the token as a Bearer: 200" '^200$' curl -sS -o /dev/null -w '%{http_code}' \
        -H 'Authorization: Bearer 0123456789abcdef-webd-token' http://127.0.0.1:8081/api/state
check_output "the token as the basic-auth password: 200" '^200$' curl -sS -o /dev/null -w '%{http_code}' \
        -u viewer:0123456789abcdef-webd-token http://127.0.0.1:8081/
check_output "the Unix socket needs no token" '^200$' curl -sS -o /dev/null -w '%{http_code}' --unix-socket "$SOCK" http://localhost/
kill "$WEBD"
check "con-webd stops on SIGTERM" wait_for 10 sh -c "! kill -0 $WEBD"
check_fail "... without a sanitizer report" grep -q Sanitizer "$T/webd.log"

finish
