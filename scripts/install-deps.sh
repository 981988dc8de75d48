#!/bin/sh
# Installs every Debian 12 package needed to build, test and run ConspiracyOS.
# Idempotent; needs root.
#
#   scripts/install-deps.sh                 everything (run + build + test)
#   scripts/install-deps.sh --build-only    only what building needs
#   scripts/install-deps.sh --print LIST... print package names, install nothing
#                                           (LIST: run, build, test, sandbox, broker, deb)
#
# These lists are the only place the project names its packages: the test sandbox's root
# filesystem (tests/sandbox/con-rootfs) is built from `--print run sandbox broker`, so a tool a test
# calls that is missing here fails the suite instead of working by accident on the host.
set -eu

# What the installed fabric needs at run time (binaries, libraries, bus, polkit, ACL tools, and
# logrotate for the daemons' log files on hosts without systemd: /etc/logrotate.d/conspiracyos,
# libmicrohttpd for the status page con-webd, nftables for the network door, docs/NETWORK.md).
# libcrypto (libssl3, SHA-256 of the audit chain) comes with libcurl4. libnats3.4 (nats.c) is the
# NATS client of the mesh gateway con-meshd (docs/MULTIHOST.md).
run="dbus dbus-bin polkitd systemd util-linux procps acl ca-certificates passwd logrotate nftables
     libsystemd0 libyaml-0-2 libcurl4 libcjson1 libacl1 libmicrohttpd12 libnats3.4"
# bash-completion: its pkg-config file names the folder the completion of con and con-send goes to
# (and on a machine it is what loads them; without it they can be sourced by hand).
# debhelper: scripts/make-deb.sh builds the Debian package (debian/) with dpkg-buildpackage.
build="build-essential cmake pkg-config clang libclang-rt-14-dev git debhelper
       libsystemd-dev libyaml-dev libcurl4-openssl-dev libssl-dev libcjson-dev libacl1-dev libglib2.0-dev
       bash-completion libmicrohttpd-dev libnats-dev"
# What the test tiers call besides the build: xmllint checks generated XML, node runs the
# generated polkit rules (ES5), jq reads JSON in the integration scripts, mmdebstrap builds the
# pristine root filesystem the integration tier runs in, iproute2 brings up its loopback,
# systemd-container (systemd-nspawn) boots the systemd tier's machine, groff-base and man-db
# render the manual pages (tests/unit/test-manpages.sh), podman and runc build and boot the
# container image (test-image; runc: crun refuses hybrid cgroup hosts).
test="libxml2-utils nodejs jq mmdebstrap iproute2 uidmap systemd-container groff-base man-db podman runc"
# What building the Debian package needs: the Build-Depends of debian/control (read from there,
# so the two never disagree), plus build-essential, which Debian's build dependencies imply.
deb="build-essential $(sed -n '/^Build-Depends:/,/^[A-Z][A-Za-z-]*:/{/^Build-Depends:/p;/^ /p}' \
        "$(dirname "$0")/../debian/control" | sed -e 's/^Build-Depends://' -e 's/([^)]*)//g' -e 's/,/ /g' \
        -e 's/debhelper-compat/debhelper/')"
# What the integration sandbox's root filesystem holds besides `run`: the tools its scripts
# call and the sanitizer runtimes the test build links; curl and a headless browser (chromium,
# with one font so its screenshots show text) for the status page's tests (test-dashboard);
# iputils-ping and python3-minimal (small TCP/UDP servers and clients) for test-network;
# nats-server (JetStream) for the hosts of test-mesh, and openssl, whose command the mesh tests
# use to inspect and forge certificates (before, it came only as a dependency of ca-certificates).
sandbox="jq iproute2 libasan8 libubsan1 curl chromium fonts-dejavu-core iputils-ping python3-minimal nats-server openssl"
# The second bus broker, only in the sandbox's root (tests/sandbox/con-rootfs sandbox), which
# starts it with CON_BUS_BROKER=dbus-broker (the broker tests, bench/bench-all.sh). Debian's
# package makes itself the system bus under systemd (dbus.service becomes an alias of
# dbus-broker.service), so it is in no list installed on a machine or in the systemd tier's root:
# there the administrator picks the broker (docs/DEPLOY.md).
broker="dbus-broker"

if [ "${1:-}" = "--print" ]; then
        shift
        [ $# -gt 0 ] || { echo "install-deps: --print needs a list name (run, build, test, sandbox, broker, deb)" >&2; exit 2; }
        out=""
        for l in "$@"; do
                case "$l" in
                run) out="$out $run" ;;
                build) out="$out $build" ;;
                test) out="$out $test" ;;
                sandbox) out="$out $sandbox" ;;
                broker) out="$out $broker" ;;
                deb) out="$out $deb" ;;
                *) echo "install-deps: unknown list '$l' (run, build, test, sandbox, broker, deb)" >&2; exit 2 ;;
                esac
        done
        # shellcheck disable=SC2086
        printf '%s\n' $out | sort -u
        exit 0
fi

if [ "$(id -u)" != 0 ]; then
        echo "install-deps: run as root (apt-get needs it)" >&2
        exit 1
fi
case "${1:-}" in
"") ;;
--build-only) run="" test="" ;;
-h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
*) echo "install-deps: unknown option '$1' (see --help)" >&2; exit 2 ;;
esac
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
