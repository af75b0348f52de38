#!/usr/bin/env bash
# Shared by the two README commands: install what is missing (scripts/setup.sh), then configure and
# build tensorbridge in build/ with the peers venv wired into the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
export HOME
bash scripts/setup.sh
TB_PEERS_VENV="${TB_PEERS_VENV:-$HOME/.cache/tensorbridge/peers-venv}"
source scripts/launcher.sh
# In CI a warning in our own code fails the build (a user's other compiler only warns).
WERROR=OFF
if [ "${CI:-}" = "true" ]; then WERROR=ON; fi
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DTB_PEERS_PYTHON="$TB_PEERS_VENV/bin/python" \
  -DTB_WERROR=$WERROR "${LAUNCHER[@]}"
cmake --build build -j2
