#!/bin/sh
# The whole test suite, from a fresh Debian 12 root shell: installs what it needs, builds with
# AddressSanitizer + UndefinedBehaviorSanitizer, runs every tier (docs/TESTING.md). The
# integration tier runs in sandboxes built from a pristine Debian 12 root filesystem
# (tests/sandbox/con-rootfs, made once with mmdebstrap and cached). Extra args go to ctest
# (e.g. scripts/test.sh -L unit). With CI=true a skipped test is a failure.
# The fuzz step is the ctest test fuzz-smoke (label fuzz): scripts/fuzz.sh --time 8 in its own
# clang build folder, build-asan/fuzz-smoke.
set -eu
cd "$(dirname "$0")/.."
scripts/install-deps.sh
skip_fails=OFF repeat=""
# Under CI a skip fails, and a failed test gets one more run: ctest prints both results, so a
# test that passes only on its second run is visible in the log as the flake it is (docs/TESTING.md).
[ "${CI:-}" = true ] && skip_fails=ON repeat="--repeat until-pass:2"
cmake -S . -B build-asan -DCON_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug -DCON_SKIP_IS_FAILURE=$skip_fails
cmake --build build-asan -j"$(nproc)"
# Made before the clock of the first integration and systemd test starts (about a minute
# each, once).
tests/sandbox/con-rootfs sandbox >/dev/null
tests/sandbox/con-rootfs systemd >/dev/null
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
# shellcheck disable=SC2086
ctest --test-dir build-asan --output-on-failure --timeout 900 $repeat "$@"
