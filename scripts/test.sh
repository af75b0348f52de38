#!/usr/bin/env bash
# README command 2: set up the environment, build tensorbridge, run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
export HOME
bash scripts/setup.sh
TB_PEERS_VENV="${TB_PEERS_VENV:-$HOME/.cache/tensorbridge/peers-venv}"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DTB_PEERS_PYTHON="$TB_PEERS_VENV/bin/python"
cmake --build build -j2
# In CI every peer must be present: a missing interpreter or module fails instead of skipping.
if [ "${CI:-}" = "true" ]; then export TB_REQUIRE_PEERS=1; fi
ctest --test-dir build --output-on-failure -j2
