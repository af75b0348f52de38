#!/usr/bin/env bash
# CI step 2 (after scripts/test.sh): the parser tests again, built with AddressSanitizer and
# UndefinedBehaviorSanitizer (g++, -DTB_SANITIZE=ON) in build-asan/. Any sanitizer report aborts
# the test process, so it fails. Only the tests that feed the parsers damaged and hostile bytes run
# here (whole-suite sanitizer runs are `TB_SANITIZE_ALL=1 scripts/test_sanitize.sh`), which keeps
# this step within the CI time budget (docs/FUZZING.md has the measured times).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
export HOME
TB_PEERS_VENV="${TB_PEERS_VENV:-$HOME/.cache/tensorbridge/peers-venv}"
BUILD=${BUILD:-build-asan}
AREAS=(hostile malformed beneath pickle zip npy npz safetensors pt oneflow)
start=$(date +%s)
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTB_SANITIZE=ON -DTB_WITH_VULKAN=OFF \
  -DTB_BUILD_TESTS=ON -DTB_PEERS_PYTHON="$TB_PEERS_VENV/bin/python" >/dev/null
if [ "${TB_SANITIZE_ALL:-}" = "1" ]; then
  cmake --build "$BUILD" -j2
  labels=""
else
  cmake --build "$BUILD" -j2 --target tensorbridge $(printf 'test_%s ' "${AREAS[@]}")
  labels=$(IFS='|'; echo "^(${AREAS[*]})\$")
fi
built=$(date +%s)
if [ "${CI:-}" = "true" ]; then export TB_REQUIRE_PEERS=1; fi
# Leaks are not checked: HDF5 and protobuf keep global state until exit.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
if [ -n "$labels" ]; then
  ctest --test-dir "$BUILD" --output-on-failure -j2 -L "$labels"
else
  ctest --test-dir "$BUILD" --output-on-failure -j2
fi
echo "sanitizer step: build $((built - start)) s, tests $(( $(date +%s) - built )) s"
