// coopmat_tile.glsl's hooks for conv2d as an implicit GEMM (conv2d_igemm.comp's scheme and push
// constants): per group g (workgroup z), rows are its O/groups output channels, columns the
// N*OH*OW output pixels, k runs over (ci, ky, kx); the f16 input is gathered from NCHW on the fly
// (stride, padding, dilation; padding reads zero), bias is added on the store.
layout(std430, binding = 0) readonly buffer X_ { uint x[]; };  // f16 pairs
layout(std430, binding = 1) readonly buffer W_ { uint w[]; };  // f16 pairs, [O][C/groups][KH][KW]
layout(std430, binding = 2) readonly buffer Bias_ { float bias[]; };
layout(std430, binding = 3) writeonly buffer Y_ { float y[]; };
layout(push_constant) uniform P {
  uint total, N, C, H, W, O, KH, KW, OH, OW;
  uint sh, sw, ph, pw, dh, dw, groups, has_bias;
} p;

#define GM (p.O / p.groups)
#define GN (p.N * p.OH * p.OW)
#define GK ((p.C / p.groups) * p.KH * p.KW)
#define A_K_FASTEST true   // weights: k contiguous
#define B_N_FASTEST true   // neighbouring pixels: neighbouring input columns

float a_at(uint gi, uint gk) {
  uint idx = (gl_WorkGroupID.z * GM + gi) * GK + gk;
  return unpackHalf2x16(w[idx >> 1])[idx & 1u];
}
float b_at(uint gk, uint gn) {
  uint khw = p.KH * p.KW, ci = gk / khw, r = gk % khw;
  uint ox = gn % p.OW, oy = (gn / p.OW) % p.OH, n = gn / (p.OW * p.OH);
  int iy = int(oy * p.sh) - int(p.ph) + int((r / p.KW) * p.dh);
  int ix = int(ox * p.sw) - int(p.pw) + int((r % p.KW) * p.dw);
  if (iy < 0 || iy >= int(p.H) || ix < 0 || ix >= int(p.W)) return 0.0;
  uint idx = ((n * p.C + gl_WorkGroupID.z * (p.C / p.groups) + ci) * p.H + uint(iy)) * p.W + uint(ix);
  return unpackHalf2x16(x[idx >> 1])[idx & 1u];
}
void store_y(uint gi, uint gn, float acc) {
  uint o = gl_WorkGroupID.z * GM + gi, pix = gn % (p.OH * p.OW), n = gn / (p.OH * p.OW);
  y[(n * p.O + o) * p.OH * p.OW + pix] = p.has_bias != 0 ? acc + bias[o] : acc;
}

#include "coopmat_tile.glsl"
