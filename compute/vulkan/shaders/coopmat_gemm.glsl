// coopmat_tile.glsl's hooks for GEMM: Y[b] = alpha * op(A)[b] @ op(B)[b] + beta * C (broadcast
// through strides), fused ReLU keeping NaN; gemm.comp's push constants and epilogue, with A and B
// f16 (uint words holding pairs) addressed by element strides, so transposes and batches are free.
layout(std430, binding = 0) readonly buffer A_ { uint a[]; };
layout(std430, binding = 1) readonly buffer B_ { uint b[]; };
layout(std430, binding = 2) readonly buffer C_ { float c[]; };
layout(std430, binding = 3) writeonly buffer Y_ { float y[]; };
layout(push_constant) uniform P {
  uint M, N, K;
  uint a_off, b_off, y_off;
  uint a_bs, b_bs, y_bs;
  uint a_si, a_sk, b_sk, b_sn;
  uint c_si, c_sn, has_c;
  float alpha, beta;
  uint relu;
} p;

#define GM p.M
#define GN p.N
#define GK p.K
#define A_K_FASTEST (p.a_sk == 1)
#define B_N_FASTEST (p.b_sn == 1)

float a_at(uint gi, uint gk) {
  uint idx = p.a_off + gl_WorkGroupID.z * p.a_bs + gi * p.a_si + gk * p.a_sk;
  return unpackHalf2x16(a[idx >> 1])[idx & 1u];
}
float b_at(uint gk, uint gn) {
  uint idx = p.b_off + gl_WorkGroupID.z * p.b_bs + gk * p.b_sk + gn * p.b_sn;
  return unpackHalf2x16(b[idx >> 1])[idx & 1u];
}
void store_y(uint gi, uint gn, float acc) {
  float v = p.alpha * acc;
  if (p.has_c != 0) v += p.beta * c[gi * p.c_si + gn * p.c_sn];
  if (p.relu != 0 && !(v > 0.0 || isnan(v))) v = 0.0;
  y[p.y_off + gl_WorkGroupID.z * p.y_bs + gi * p.N + gn] = v;
}

#include "coopmat_tile.glsl"
