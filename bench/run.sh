#!/bin/sh
# I/O benchmarks against the Python peers: bench/run.sh [SIZE_MB] (default 1024).
# Builds tensorbridge and bench_io if needed, writes the inputs once into $TB_BENCH_DIR
# (default /tmp/tensorbridge-bench-SIZE), then prints medians, peak RSS and ratios.
# Environment: TB_BENCH_RUNS (runs per measurement, default 3), TB_BENCH_WARMUP (untimed runs
# before each, default 1), TB_BENCH_ONLY (comma list of load,open,convert,new,many,scale;
# new = gguf (float32 and Q8_0), TF bundle, .keras and TorchScript),
# TB_BENCH_SCALE (linearity factor, default 4; 0 skips), TB_BUILD_DIR (default build/).
set -e
root=$(cd "$(dirname "$0")/.." && pwd)
build=${TB_BUILD_DIR:-$root/build}
if [ ! -x "$build/cli/tensorbridge" ] || [ ! -x "$build/bench/bench_io" ]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTB_BUILD_BENCH=ON
  cmake --build "$build" -j2 --target tensorbridge bench_io
fi
exec /usr/bin/python3 "$root/bench/bench_io.py" "${1:-1024}"
