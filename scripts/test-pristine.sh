#!/bin/bash
# Proves the README's two commands on a fresh Debian 12 machine: a pristine minbase root
# filesystem (tests/sandbox/con-rootfs pristine: nothing but Debian's minbase, made once with
# mmdebstrap and cached) gets a copy of this checkout and runs, as root,
#
#     scripts/run.sh && scripts/test.sh
#
# under systemd-nspawn. Whatever the scripts forget to install is missing there and fails the
# run, however well stocked this host is. The root filesystem itself is never changed: the run
# writes to an overlay in a temp folder, removed at the end.
#
#   scripts/test-pristine.sh [--keep] [-- COMMAND]   (default COMMAND: the two above)
#
# Caches on this host, to save downloads only (they prove nothing and change no result):
# downloaded .deb files in /var/cache/conspiracyos/apt-archives, and the sandbox root
# filesystems under /var/cache/conspiracyos/rootfs, shared with the container. The container
# uses this host's network only to install the packages (and make a missing sandbox root); the
# command runs in a network namespace of its own, with nothing but a loopback. Its /var/tmp is on this host's disk, not the overlay, so the
# test sandboxes inside can put their own overlays there. CI=true is passed on. Exit status: the command's; 125 on
# set-up failure.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }
keep=0
while (($#)); do
        case "$1" in
        --keep) keep=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; break ;;
        *) echo "test-pristine: unknown argument '$1' (see --help)" >&2; exit 125 ;;
        esac
done
cmd=${*:-"scripts/run.sh && scripts/test.sh"}
[ "$(id -u)" = 0 ] || { echo "test-pristine: needs root" >&2; exit 125; }
for t in systemd-nspawn mmdebstrap; do
        command -v "$t" >/dev/null || {
                echo "test-pristine: $t is missing: apt-get install systemd-container mmdebstrap" >&2
                exit 125
        }
done

lower=$(tests/sandbox/con-rootfs pristine) || exit 125
cache=/var/cache/conspiracyos
mkdir -p "$cache/apt-archives/partial" "$cache/rootfs"
T=$(mktemp -d /var/tmp/con-pristine.XXXXXX)
cleanup() {
        if ((keep)); then echo "test-pristine: kept $T" >&2; else rm -rf --one-file-system "$T"; fi
}
trap cleanup EXIT
mkdir -p "$T"/{up,work,root,vartmp}
chmod 1777 "$T/vartmp"

inner() {
        set -euo pipefail
        local R="$T/root"
        mount -t overlay overlay -o "lowerdir=$lower,upperdir=$T/up,workdir=$T/work" "$R"
        mkdir -p "$R/root/conspiracyos"
        # The checkout as a clean clone would have it: tracked and new files, no build folders.
        (cd "$src" && git ls-files -z --cached --others --exclude-standard |
                tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -C "$R/root/conspiracyos" -xf -
        # apt in the container keeps what it downloads (a pristine root would delete nothing,
        # but say so explicitly so the cache fills).
        echo 'Binary::apt::APT::Keep-Downloaded-Packages "true";' >"$R/etc/apt/apt.conf.d/00con-keep-debs"
        local nspawn=(systemd-nspawn --quiet -D "$R" --register=no --keep-unit --as-pid2
                --bind="$cache/apt-archives:/var/cache/apt/archives"
                --bind="$cache/rootfs"
                --bind="$T/vartmp:/var/tmp"
                --setenv=CI="${CI:-}" --setenv=DEBIAN_FRONTEND=noninteractive
                --chdir=/root/conspiracyos)
        # First, with this host's network (apt and mmdebstrap download): the packages (the
        # first step of both README commands, a no-op when they run again) and the test
        # sandboxes' root filesystems (cached on this host; made here only when missing).
        echo "test-pristine: installing the packages in a pristine Debian 12 root (systemd-nspawn)" >&2
        "${nspawn[@]}" bash -c 'scripts/install-deps.sh && tests/sandbox/con-rootfs sandbox >/dev/null &&
                tests/sandbox/con-rootfs systemd >/dev/null' || exit 125
        # Then the command in a network namespace of its own (loopback only): the main job's
        # con bootstrap writes an nftables table and con up opens ports on 127.0.0.1, which
        # in this host's namespace would replace this host's table and take its ports.
        # CAP_NET_ADMIN: each test sandbox inside brings up the loopback of its own namespace.
        echo "test-pristine: running '$cmd' there, in a private network namespace" >&2
        set +e
        "${nspawn[@]}" --private-network --capability=CAP_NET_ADMIN \
                bash -c "ip link set lo up && { $cmd; }"
        rc=$?
        exit $rc
}
export -f inner
export T lower src cmd cache
set +e
unshare --mount --propagation private bash -c inner
rc=$?
echo "test-pristine: exit status $rc" >&2
exit $rc
