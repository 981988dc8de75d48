#!/bin/bash
# Makes the two base images the Containerfile names, locally, from the cached Debian 12 root
# filesystems of tests/sandbox/con-rootfs (no registry is reachable, and none is needed):
#
#   localhost/conspiracyos-build:latest  root kind `build`: minbase + the runtime list + the
#                                        Build-Depends of debian/control (the build stage)
#   localhost/conspiracyos-base:latest   root kind `image`: minbase + systemd as PID 1 + the
#                                        runtime list (the runtime stage)
#
# Each is `podman import`ed once per root (tagged with the root's hash too, so a changed
# package list makes a new image and an unchanged one is not imported again).
#
#   scripts/make-base-image.sh            (root; `make image` runs it)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "make-base-image: needs root (mmdebstrap, rootful podman)" >&2; exit 1; }
command -v podman >/dev/null || { echo "make-base-image: podman is missing: run scripts/install-deps.sh" >&2; exit 1; }
for pair in build:build image:base; do
        kind=${pair%%:*} name=localhost/conspiracyos-${pair#*:}
        root=$(tests/sandbox/con-rootfs "$kind")
        tag="$name:${root##*-}"
        if podman image exists "$tag"; then
                echo "make-base-image: $tag is current" >&2
        else
                echo "make-base-image: importing $root as $tag" >&2
                tar --numeric-owner --xattrs --acls -C "$root" --exclude=./.con-rootfs-complete -cf - . |
                        podman import --quiet - "$tag" >/dev/null
        fi
        podman tag "$tag" "$name:latest"
        # Older imports of this name (an earlier package list) are not needed any more.
        for old in $(podman images --format '{{.Repository}}:{{.Tag}}' --filter "reference=$name"); do
                [ "$old" = "$tag" ] || [ "$old" = "$name:latest" ] || podman rmi "$old" >/dev/null 2>&1 || true
        done
        echo "$name:latest"
done
