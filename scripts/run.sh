#!/bin/sh
# The main job, from a fresh Debian 12 root shell: install what is needed, build, install to /usr,
# provision the conspiracy (default profile), bring the fabric up and have a task answered.
# Works without systemd as PID 1 and without any API key (built-in commands need no model).
#   PROFILE=minimal scripts/run.sh      # concierge only
set -eu
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr -DBUILD_TESTING=OFF
cmake --build build-release -j"$(nproc)"
cmake --install build-release
con bootstrap --profile "${PROFILE:-default}"
con up
con-send /agents
