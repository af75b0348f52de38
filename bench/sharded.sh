#!/bin/sh
# Sharded convert, serial against parallel: bench/sharded.sh [SHARDS] [MB_PER_SHARD] (default 8 x 40).
# Writes a torch-sharded checkpoint (pytorch_model-0000K-of-0000N.bin + pytorch_model.bin.index.json,
# torch.save by Debian's torch) once into $TB_BENCH_DIR (default /tmp/tensorbridge-sharded-NxM), then
# times, best of $TB_BENCH_RUNS (default 3), warm cache, with peak RSS (GNU time):
#   whole       convert DIR out.safetensors            (every shard loaded, one output file)
#   jobs=1      convert DIR out/ --keep-shards --jobs 1
#   jobs=2      convert DIR out/ --keep-shards --jobs 2
#   2 slices    convert DIR out/ --shards 0/2 & --shards 1/2, two processes at once
# and checks that the parallel and sliced outputs are byte-identical to the serial one.
set -e
root=$(cd "$(dirname "$0")/.." && pwd)
tb=${TB_BUILD_DIR:-$root/build}/cli/tensorbridge
n=${1:-8}
mb=${2:-40}
runs=${TB_BENCH_RUNS:-3}
dir=${TB_BENCH_DIR:-/tmp/tensorbridge-sharded-${n}x${mb}}
if [ ! -f "$dir/in/pytorch_model.bin.index.json" ]; then
  mkdir -p "$dir/in"
  /usr/bin/python3 - "$dir/in" "$n" "$mb" <<'EOF'
import json, os, sys, torch
d, n, mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
wm = {}
for k in range(n):
    name = "pytorch_model-%05d-of-%05d.bin" % (k + 1, n)
    # four tensors a shard: 1024 x (mb * 64) float32 each = mb/4 MiB
    part = {f"layers.{k}.w{j}": torch.randn(1024, mb * 64) for j in range(4)}
    torch.save(part, os.path.join(d, name))
    wm.update({t: name for t in part})
json.dump({"metadata": {}, "weight_map": wm}, open(os.path.join(d, "pytorch_model.bin.index.json"), "w"), indent=2)
EOF
fi
du -sh "$dir/in"
sync
measure() {  # label, then the command; prints the best wall time and its peak RSS
  label=$1
  shift
  best=""
  for i in $(seq "$runs"); do
    rm -rf "$dir/out" "$dir/out.safetensors"
    /usr/bin/time -f "%e %M" -o "$dir/time.txt" sh -c "$*"
    read -r t rss < "$dir/time.txt"
    if [ -z "$best" ] || [ "$(echo "$t < $best" | bc)" = 1 ]; then best=$t; best_rss=$rss; fi
  done
  printf '%-10s %6.2f s  peak RSS %5d MiB\n' "$label" "$best" "$((best_rss / 1024))"
}
measure whole "$tb convert $dir/in $dir/out.safetensors --to safetensors -q"
measure jobs=1 "$tb convert $dir/in $dir/out/ --to safetensors --keep-shards --jobs 1 -q"
rm -rf "$dir/serial" && cp -r "$dir/out" "$dir/serial"
measure jobs=2 "$tb convert $dir/in $dir/out/ --to safetensors --keep-shards --jobs 2 -q"
diff -r "$dir/serial" "$dir/out" >/dev/null && echo "jobs=2 output byte-identical to jobs=1"
measure '2 slices' "$tb convert $dir/in $dir/out/ --to safetensors --shards 0/2 --jobs 1 -q & $tb convert $dir/in $dir/out/ --to safetensors --shards 1/2 --jobs 1 -q; wait"
diff -r "$dir/serial" "$dir/out" >/dev/null && echo "2 slices output byte-identical to jobs=1"
