#!/bin/bash
# The egress gateway's overhead per request (docs/PERFORMANCE.md), a benchmark, not a test. Inside
# the sandbox (it runs con bootstrap and con up):
#
#   cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build build-rel -j2
#   tests/sandbox/con-sandbox --build build-rel -- "$PWD/bench/bench-egress.sh" "$PWD/build-rel" [N]
#
# An agent whose allow-list names 127.0.0.1:18080 (so the kernel also lets it there directly)
# makes N requests (default 2,000) each way, one at a time, each on a new connection: direct,
# plain HTTP through con-egressd, CONNECT through it. Every proxied request is also one audit record.
set -euo pipefail
BUILD=${1:?usage: bench-egress.sh BUILD-DIR [N]}
N=${2:-2000}
BIN="$BUILD/bench/bench-egress"
mkdir -p /etc/con
cat >/etc/con/con.yaml <<'YAML'
system:
  name: benchegress
agents:
  - name: bench
    network: ["127.0.0.1/32:18080"]
YAML
ip link set lo up
con bootstrap >/dev/null
con up >/dev/null
"$BIN" serve 18080 >/dev/null &
SRV=$!
trap 'kill $SRV 2>/dev/null; con down >/dev/null 2>&1 || true' EXIT
sleep 0.3
install -m 0755 "$BIN" /usr/local/bin/bench-egress
echo "con-egressd $(ps -o user=,rss= -C con-egressd | awk '{print "as " $1 ", RSS " $2 " KiB"}'); load $(cut -d' ' -f1-3 /proc/loadavg)"
runuser -u a-bench -- /usr/local/bin/bench-egress client 3128 18080 "$N"
echo "audit records: $(grep -c '"egress.request"' /srv/con/logs/audit/audit.jsonl)"
echo "con-egressd RSS after: $(ps -o rss= -C con-egressd) KiB"
