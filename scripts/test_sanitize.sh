#!/usr/bin/env bash
# CI step 2 (after scripts/test.sh): the tests again, built with AddressSanitizer and
# UndefinedBehaviorSanitizer (g++, -DTB_SANITIZE=ON) in build-asan/. Any sanitizer report aborts
# the test process, so it fails. Every test area that feeds a parser runs here (all of them but the
# compute kernels, the Vulkan backend and the install check, which read no files); the measured
# times are in docs/FUZZING.md. TB_SANITIZE_ALL=1 runs every area.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
export HOME
TB_PEERS_VENV="${TB_PEERS_VENV:-$HOME/.cache/tensorbridge/peers-venv}"
BUILD=${BUILD:-build-asan}
# Areas that read no weight files: compute kernels, the Vulkan backend (off here), the install check,
# and the write-atomicity tests (kill/strace timing; they check renames, not parsers).
SKIP_AREAS=(compute vulkan install atomic_output crash_safety)
source scripts/launcher.sh
start=$(date +%s)
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTB_SANITIZE=ON -DTB_WITH_VULKAN=OFF \
  -DTB_BUILD_TESTS=ON -DTB_PEERS_PYTHON="$TB_PEERS_VENV/bin/python" "${LAUNCHER[@]}" >/dev/null
cmake --build "$BUILD" -j2
labels=""
[ "${TB_SANITIZE_ALL:-}" = "1" ] || labels=$(IFS='|'; echo "^(${SKIP_AREAS[*]})\$")
built=$(date +%s)
if [ "${CI:-}" = "true" ]; then export TB_REQUIRE_PEERS=1; fi
# Leaks are not checked: HDF5 and protobuf keep global state until exit.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
if [ -n "$labels" ]; then
  ctest --test-dir "$BUILD" --output-on-failure -j2 -LE "$labels"
else
  ctest --test-dir "$BUILD" --output-on-failure -j2
fi
echo "sanitizer step: build $((built - start)) s, tests $(( $(date +%s) - built )) s"
