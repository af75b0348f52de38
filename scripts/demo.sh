#!/usr/bin/env bash
# README command 1: set up the environment, build tensorbridge, run the demo on fixtures/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
build/cli/tensorbridge demo fixtures
