#!/usr/bin/env bash
# Runs every libFuzzer harness (or those named) for a bounded time, seeded from fixtures/, and
# prints one summary line per harness (executions, exec/s, coverage, features, corpus, findings).
#
#   fuzz/run.sh [SECONDS] [HARNESS...]        e.g. fuzz/run.sh 60            (all, 60 s each)
#                                                  fuzz/run.sh 300 pickle npy
#
# Environment: BUILD (default build-fuzz), JOBS (parallel harnesses, default 1).
# Build first (clang-14):  CC=clang-14 CXX=clang++-14 cmake -S fuzz -B build-fuzz -G Ninja
#                          cmake --build build-fuzz -j2 --target fuzz_all
# Exits 1 when any harness stopped on a finding. Findings (crash-*, leak-*, timeout-*, oom-*) land in $BUILD/findings/<harness>/; a fixed one is
# minimised and kept as fixtures/malformed/<harness>_<what>.<ext> with a test in
# tests/malformed_test.cpp. Corpora grow in $BUILD/corpus/<harness>/ (not committed).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-60}
shift || true
BUILD=${BUILD:-build-fuzz}
ALL=(pickle pt torchscript npy npz zip safetensors onnx h5 oneflow_meta gguf tf_checkpoint)
NAMES=("$@")
[ ${#NAMES[@]} -eq 0 ] && NAMES=("${ALL[@]}")

seed() {  # seed <harness> <dir>: copies the matching fixtures (small ones) into the corpus
  local name=$1 dir=$2
  mkdir -p "$dir"
  local files=()
  case $name in
    pt) files=(fixtures/torch/*.pt fixtures/shared/pytorch_legacy/* fixtures/shared/pytorch_zip_2x/* fixtures/malformed/*.pt) ;;
    npy) files=(fixtures/numpy/*.npy fixtures/npy_extra/*.npy fixtures/dtypes/*.npy fixtures/malformed/*.npy) ;;
    npz|zip) files=(fixtures/numpy/*.npz fixtures/torch/single_tensor.pt fixtures/torch/views.pt fixtures/shared/numpy/*.npz
                    fixtures/malformed/*.npz fixtures/malformed/*.pt) ;;
    gguf) files=(fixtures/gguf/*.gguf fixtures/shared/gguf/*.gguf) ;;
    torchscript) files=(fixtures/torchscript/*.pt) ;;
    tf_checkpoint) files=(fixtures/tf_checkpoint/*/*.index fixtures/tf_checkpoint/*/*/*.index) ;;
    safetensors) files=(fixtures/safetensors/*.safetensors fixtures/shared/safetensors/*.safetensors fixtures/malformed/*.safetensors) ;;
    onnx) files=(fixtures/onnx/*.onnx fixtures/onnx_extra/bn*.onnx fixtures/malformed/*.onnx fixtures/fuzz_seeds/*.onnx) ;;
    h5) files=(fixtures/h5/*.h5 fixtures/h5_extra/*.h5 fixtures/keras/*.h5 fixtures/malformed/*.h5) ;;
    oneflow_meta) mapfile -t files < <(find fixtures/oneflow_extra fixtures/shared/oneflow fixtures/malformed -name meta 2>/dev/null | head -20) ;;
    pickle)
      # The harness reads one options byte, then the pickle: data.pkl of the zip fixtures and the
      # hand-made pickles, each with mode 0 (strict) and 3 (opaque globals, persistent ids).
      python3 - "$dir" <<'PY'
import glob, os, sys, zipfile
out = sys.argv[1]
pickles = []
for p in sorted(glob.glob('fixtures/torch/*.pt')):
    try:
        with zipfile.ZipFile(p) as z:
            pickles += [(os.path.basename(p) + '_' + os.path.basename(n), z.read(n)) for n in z.namelist() if n.endswith('.pkl')]
    except zipfile.BadZipFile:
        pass
for p in sorted(glob.glob('fixtures/malformed/*.pkl')):
    if os.path.getsize(p) < 4096:
        pickles.append((os.path.basename(p), open(p, 'rb').read()))
for name, b in pickles:
    for mode in (0, 3):
        open(os.path.join(out, f'{mode}_{name}'), 'wb').write(bytes([mode]) + b)
PY
      return ;;
  esac
  for f in "${files[@]}"; do
    [ -f "$f" ] || continue
    [ "$(stat -c %s "$f")" -le 262144 ] || continue
    cp "$f" "$dir/$(echo "$f" | tr / _)"
  done
}

failed=0
run_one() {
  local name=$1 bin="$BUILD/fuzz_$1"
  [ -x "$bin" ] || { echo "$name: $bin not built (skipped)"; return; }
  local corpus="$BUILD/corpus/$name" findings="$BUILD/findings/$name" log="$BUILD/logs/$name.log"
  mkdir -p "$corpus" "$findings" "$BUILD/logs"
  local seeds="$BUILD/seeds/$name"
  rm -rf "$seeds"; seed "$name" "$seeds"
  # -rss_limit_mb / -malloc_limit_mb: a parser that allocates what a header claims is a finding.
  # -timeout: a single input taking more than 10 s is a hang.
  set +e
  # fuzz/lsan.supp: leaks inside third-party libraries on their own error paths (docs/FUZZING.md).
  ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    LSAN_OPTIONS=suppressions="$PWD/fuzz/lsan.supp" \
    "$bin" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2560 -malloc_limit_mb=1024 \
      -max_len=300000 -print_final_stats=1 -artifact_prefix="$findings/" "$corpus" "$seeds" >"$log" 2>&1
  local rc=$?
  set -e
  local last execs execps cov ft corp found
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  # tail -1: the h5 probe's forked children print their own (smaller) final stats first.
  execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' | tail -1)
  execps=$(grep -E '^stat::average_exec_per_sec' "$log" | awk '{print $2}' | tail -1)
  cov=$(echo "$last" | grep -oE 'cov: [0-9]+' | awk '{print $2}')
  ft=$(echo "$last" | grep -oE 'ft: [0-9]+' | awk '{print $2}')
  corp=$(echo "$last" | grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' | awk '{print $2}')
  found=$(ls "$findings" | wc -l)
  local line
  line=$(printf '%-13s %4ss  execs %-9s exec/s %-6s cov %-6s ft %-6s corpus %-12s findings %s (rc %s)' \
    "$name" "$SECONDS_EACH" "${execs:-?}" "${execps:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$found" "$rc")
  echo "$line"
  [ "$rc" -eq 0 ] || failed=$((failed + 1))
  [ "$rc" -eq 0 ] || grep -E 'ERROR|SUMMARY|==[0-9]+==|runtime error|Test unit written' "$log" | head -8 | sed 's/^/    /'
  # The h5 loader reads each file in a forked probe process first (formats/h5_probe.cpp probe_in_child):
  # a crash there is a refusal, not a finding, but its sanitizer report still lands in the log.
  # Listed here so that one outside libhdf5 (in our own code) is seen.
  if [ "$rc" -eq 0 ] && grep -qE '^SUMMARY: (Address|UndefinedBehavior)Sanitizer' "$log"; then
    echo "    contained by the h5 probe process (refused, not findings):"
    grep -E '^SUMMARY: (Address|UndefinedBehavior)Sanitizer' "$log" |
      sed -E 's/ \(BuildId: [0-9a-f]+\)//; s/\+0x[0-9a-f]+//; s/ on unknown address 0x[0-9a-f]+//' |
      sort | uniq -c | sed 's/^/    /'
  fi
}

for n in "${NAMES[@]}"; do run_one "$n"; done
# Exit status: 1 when any harness stopped on a finding (crash, leak, timeout, out of memory).
[ "$failed" -eq 0 ] || { echo "fuzz: $failed harness(es) stopped on a finding"; exit 1; }
