#!/bin/sh
# The whole test suite, from a fresh Debian 12 root shell: installs what it needs, builds with
# AddressSanitizer + UndefinedBehaviorSanitizer, runs every tier. Extra args go to ctest
# (e.g. scripts/test.sh -L unit).
set -eu
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build-asan -DCON_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
cmake --build build-asan -j"$(nproc)"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
ctest --test-dir build-asan --output-on-failure --timeout 900 "$@"
