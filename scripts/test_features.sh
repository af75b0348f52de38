#!/usr/bin/env bash
# CI step 2: builds without the optional libraries. Every combination of TB_WITH_ONNX, TB_WITH_HDF5
# and TB_WITH_VULKAN = OFF must configure; the one with all three OFF (which compiles every stub:
# formats/no_onnx.cpp, formats/no_hdf5.cpp, the CPU-only compute) is built (Debug: quicker to
# compile) and runs its tests, which leave out what needs the missing libraries (tests/CMakeLists.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-features}
source scripts/launcher.sh
start=$(date +%s)
mkdir -p "$BUILD"
for onnx in ON OFF; do for hdf5 in ON OFF; do for vulkan in ON OFF; do
  [ "$onnx$hdf5$vulkan" = ONONON ] && continue  # the main build
  dir="$BUILD/configure-onnx$onnx-hdf5$hdf5-vulkan$vulkan"
  cmake -S . -B "$dir" -G Ninja -DTB_WITH_ONNX=$onnx -DTB_WITH_HDF5=$hdf5 -DTB_WITH_VULKAN=$vulkan >"$dir.log" 2>&1 ||
    { cat "$dir.log"; echo "features: configure failed with ONNX=$onnx HDF5=$hdf5 VULKAN=$vulkan"; exit 1; }
  echo "features: configures with ONNX=$onnx HDF5=$hdf5 VULKAN=$vulkan"
done; done; done
# The all-off build also treats warnings in our code as errors.
cmake -S . -B "$BUILD/all-off" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DTB_WITH_ONNX=OFF -DTB_WITH_HDF5=OFF \
  -DTB_WITH_VULKAN=OFF -DTB_WERROR=ON "${LAUNCHER[@]}" >/dev/null
cmake --build "$BUILD/all-off" -j2
ctest --test-dir "$BUILD/all-off" --output-on-failure -j2
echo "features step: $(( $(date +%s) - start )) s"
