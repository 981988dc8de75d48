#!/bin/sh
# Builds the Debian package (debian/, dpkg-buildpackage with debhelper) from this checkout and
# puts conspiracyos_VERSION_ARCH.deb in OUTDIR (default: build-deb). The build runs in a copy of
# the checkout's tracked and new files in a temp folder, so the checkout stays clean and two
# builds never share a folder. Needs `scripts/install-deps.sh` (its build and deb lists).
#
#   scripts/make-deb.sh [OUTDIR]        prints the path of the .deb on stdout
set -eu
cd "$(dirname "$0")/.."
src=$PWD
out=${1:-build-deb}
mkdir -p "$out"
out=$(cd "$out" && pwd)
for t in dpkg-buildpackage dh cmake; do
        command -v "$t" >/dev/null || { echo "make-deb: $t is missing: run scripts/install-deps.sh" >&2; exit 1; }
done
T=$(mktemp -d "${TMPDIR:-/var/tmp}/con-deb.XXXXXX")
trap 'rm -rf "$T"' EXIT
mkdir "$T/conspiracyos"
if command -v git >/dev/null && git rev-parse --git-dir >/dev/null 2>&1; then
        git ls-files -z --cached --others --exclude-standard |
                tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -C "$T/conspiracyos" -xf -
else    # a source tree without git (the image's build stage): everything but build folders
        tar --exclude='./build*' --exclude=./.git -cf - . | tar -C "$T/conspiracyos" -xf -
fi
echo "make-deb: building in $T" >&2
(cd "$T/conspiracyos" && DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:-parallel=$(nproc)}" \
        dpkg-buildpackage -b -uc -us >"$T/build.log" 2>&1) || {
        tail -n 40 "$T/build.log" >&2
        echo "make-deb: dpkg-buildpackage failed (log above)" >&2
        exit 1
}
deb=$(ls "$T"/conspiracyos_*.deb | grep -v dbgsym | head -n1)
cp "$deb" "$out/"
echo "$out/$(basename "$deb")"
