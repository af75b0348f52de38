#version 450
// coopmat_conv.glsl with plain arithmetic in place of the matrix instructions: the test double that lets
// lavapipe (no cooperative matrices) check the tiling, staging and epilogue.
#define TB_COOPMAT_EMULATE 1
#include "coopmat_conv.glsl"
