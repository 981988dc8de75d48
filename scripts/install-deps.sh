#!/bin/sh
# Installs every Debian 12 package needed to build, test and run ConspiracyOS.
# --build-only: only what building needs.
# Idempotent; needs root. Usage: scripts/install-deps.sh [--build-only]
set -eu
if [ "$(id -u)" != 0 ]; then
        echo "install-deps: run as root (apt-get needs it)" >&2
        exit 1
fi
run="dbus dbus-bin polkitd systemd util-linux procps acl ca-certificates"
build="build-essential cmake pkg-config clang libclang-rt-14-dev git
       libsystemd-dev libyaml-dev libcurl4-openssl-dev libcjson-dev libacl1-dev libglib2.0-dev"
# Used by tests only: xmllint checks generated XML, node runs the generated polkit rules (ES5).
test="libxml2-utils nodejs"
[ "${1:-}" = "--build-only" ] && run="" test=""
missing=""
for p in $run $build $test; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then
        echo "install-deps: all packages present"
        exit 0
fi
echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing
