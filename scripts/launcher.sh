# Sourced by the build and CI scripts: LAUNCHER holds the CMake arguments that put ccache in front of
# the compilers when it is installed (rebuilds after a pull recompile only what changed), else nothing.
LAUNCHER=()
if command -v ccache >/dev/null; then LAUNCHER=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache); fi
