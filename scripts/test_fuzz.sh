#!/usr/bin/env bash
# CI step 3: a short libFuzzer pass of every harness (clang-14, ASan + UBSan, whole library
# instrumented), seeded from fixtures/ including fixtures/malformed/. Fails on any finding.
# FUZZ_SECONDS (default 10) is the time per harness; docs/FUZZING.md has what ran and what it found.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-fuzz}
source scripts/launcher.sh
start=$(date +%s)
CC=clang-14 CXX=clang++-14 cmake -S fuzz -B "$BUILD" -G Ninja "${LAUNCHER[@]}" >/dev/null
cmake --build "$BUILD" -j2 --target fuzz_all
built=$(date +%s)
BUILD="$BUILD" bash fuzz/run.sh "${FUZZ_SECONDS:-10}"
echo "fuzz step: build $((built - start)) s, fuzzing $(( $(date +%s) - built )) s"
