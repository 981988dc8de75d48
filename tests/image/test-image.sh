#!/bin/bash
# The container image, the way users of the original run it: the Makefile's verbs over rootful
# podman. `make image` makes the base images from the cached Debian 12 roots and builds the
# multi-stage Containerfile with --network=none; `make run` boots it (systemd as PID 1) with a
# .env handed over as a run-time secret; `make task MSG=/ping` is answered; the key reached the
# model gateway's file alone and is in no image layer; `make stop`. Prints the runtime image size.
# Its own names (container, image tag, volumes, secret) per run; everything but the base images
# and podman's build cache is removed at the end. docs/DEPLOY.md, "The container image".
. "$(dirname "$0")/../integration/lib.sh"
require_root
for t in podman runc make; do
        command -v "$t" >/dev/null || { echo "# $t is not installed (scripts/install-deps.sh); skipping"; LIB_FINISHED=1; exit 77; }
done
src=${CON_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
T=$(lib_tmp)
name=con-image-test-$$
img=localhost/conspiracyos-test:$$
key="sk-or-test-$$-not-a-real-key"
printf 'CON_OPENROUTER_API_KEY=%s\nNOT_A_CON_NAME=dropped\n' "$key" >"$T/env"
chmod 600 "$T/env"
mk() { make -s -C "$src" NAME="$name" IMAGE="$img" ENV_FILE="$T/env" PROFILE=minimal "$@"; }
cleanup_image() {
        podman rm -f -t 5 "$name" >/dev/null 2>&1
        podman volume rm -f "$name-srv" "$name-etc" >/dev/null 2>&1
        podman secret rm "$name-env" >/dev/null 2>&1
        podman rmi -f "$img" >/dev/null 2>&1
}
trap 'cleanup_image; _lib_exit' EXIT

section "make image PROFILE=minimal (base images from the cached roots, podman build --network=none)"
start=$SECONDS
check "make image" mk image
echo "# make image took $((SECONDS - start)) s"
check "the base images exist" podman image exists localhost/conspiracyos-base:latest
check "... and the build stage's" podman image exists localhost/conspiracyos-build:latest
check "the image exists" podman image exists "$img"
size=$(podman image inspect -f '{{.Size}}' "$img" 2>/dev/null || echo 0)
echo "# runtime image size: $((size / 1000000)) MB ($size bytes)"
check_output "the image declares the volumes /srv/con and /etc/con" "/etc/con.*/srv/con|/srv/con.*/etc/con" \
        podman image inspect -f '{{json .Config.Volumes}}' "$img"
check_output "its PID 1 is systemd" "/sbin/init" podman image inspect -f '{{json .Config.Cmd}}' "$img"
check "no compiler in the runtime image" podman run --rm --network=none --runtime runc \
        --ulimit nofile=16384:16384 --ulimit nproc=32768:32768 --entrypoint /bin/sh "$img" -c '! command -v cc && ! command -v cmake'
check_output "the package is installed in it" "^install ok installed$" podman run --rm --network=none --runtime runc \
        --ulimit nofile=16384:16384 --ulimit nproc=32768:32768 --entrypoint dpkg-query "$img" -W -f='${Status}\n' conspiracyos
check_status "no key in the image" 1 podman run --rm --network=none --runtime runc \
        --ulimit nofile=16384:16384 --ulimit nproc=32768:32768 --entrypoint /bin/sh "$img" -c "grep -rs '$key' /etc /srv /usr/local /root"
check_fail "no key in the image's configuration" bash -c "podman image inspect '$img' | grep -q '$key'"

section "make run: systemd boots, the set-up unit bootstraps the profile"
start=$SECONDS
check "make run (no network: RUN_ARGS=--network=none)" mk run RUN_ARGS=--network=none
echo "# make run took $((SECONDS - start)) s"
check_output "PID 1 is systemd" "^systemd$" podman exec "$name" cat /proc/1/comm
check "con-image-setup.service ran" podman exec "$name" systemctl is-active con-image-setup.service
check_output "the minimal profile was provisioned" "concierge" podman exec "$name" con-send /agents
check_fail "... it has no sysadmin (minimal)" podman exec "$name" getent passwd a-sysadmin
for u in conspiracyos.target con-routerd.service con-contractd.service con-modeld.service; do
        check "$u is active" podman exec "$name" systemctl is-active "$u"
done

section "the key reached the model gateway alone"
check_output "/etc/con/env holds it, root:con-models 640" "^root:con-models 640$" \
        podman exec "$name" stat -c '%U:%G %a' /etc/con/env
check "... with the key" podman exec "$name" grep -q "^CON_OPENROUTER_API_KEY=$key\$" /etc/con/env
check_fail "... and only CON_ names" podman exec "$name" grep -q NOT_A_CON_NAME /etc/con/env
check_fail "an agent cannot read it" podman exec "$name" setpriv --reuid=a-concierge --regid=agents --clear-groups cat /etc/con/env
check_fail "PID 1's environment does not hold it" podman exec "$name" grep -qa "$key" /proc/1/environ
check_fail "the container's configuration does not hold it" bash -c "podman inspect '$name' | grep -q '$key'"
check_fail "no process holds it in its environment" podman exec "$name" sh -c \
        "grep -las '$key' /proc/[0-9]*/environ | grep ."

section "make task MSG=/ping is answered"
check_output "make task MSG=/ping" "pong" mk task MSG=/ping
check_output "make task MSG=/agents" "concierge" mk task MSG=/agents

section "make stop; make run again on the same volumes"
check "make stop" mk stop
check_fail "the container is gone" podman container exists "$name"
check "the volumes stay" podman volume exists "$name-srv"
check "make run again" mk run RUN_ARGS=--network=none
check "the earlier answers are still in /srv/con" podman exec "$name" sh -c 'ls /srv/con/agents/concierge/outbox/make-*.response'
check_output "make task MSG=/ping" "pong" mk task MSG=/ping
check "make stop" mk stop
finish
