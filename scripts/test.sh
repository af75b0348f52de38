#!/usr/bin/env bash
# README command 2: set up the environment, build tensorbridge, run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
# The tree follows .clang-format (clang-format 14).
bash scripts/check_format.sh
# In CI every peer must be present: a missing interpreter or module fails instead of skipping.
if [ "${CI:-}" = "true" ]; then export TB_REQUIRE_PEERS=1; fi
ctest --test-dir build --output-on-failure -j2
