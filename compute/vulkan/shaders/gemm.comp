#version 450
#extension GL_EXT_control_flow_attributes : enable
// Tiled GEMM: Y[b] = alpha * op(A)[b] @ op(B)[b] + beta * C (broadcast through strides).
// 64x64 output tile per workgroup of 16x16 threads (4x4 outputs each), K in steps of 16 through
// shared memory. Operands are addressed by element strides, so transposes cost nothing.
layout(local_size_x = 16, local_size_y = 16) in;
layout(std430, binding = 0) readonly buffer A_ { float a[]; };
layout(std430, binding = 1) readonly buffer B_ { float b[]; };
layout(std430, binding = 2) readonly buffer C_ { float c[]; };
layout(std430, binding = 3) writeonly buffer Y_ { float y[]; };
layout(push_constant) uniform P {
  uint M, N, K;
  uint a_off, b_off, y_off;
  uint a_bs, b_bs, y_bs;
  uint a_si, a_sk, b_sk, b_sn;
  uint c_si, c_sn, has_c;
  float alpha, beta;
  uint relu;  // max(0, v) on the store, NaN kept (Linear+ReLU fused)
} p;

const uint BM = 64, BN = 64, BK = 16;
shared float As[BK][BM];
shared float Bs[BK][BN];

void main() {
  uint lx = gl_LocalInvocationID.x, ly = gl_LocalInvocationID.y;
  uint tid = ly * 16 + lx;
  uint row0 = gl_WorkGroupID.y * BM, col0 = gl_WorkGroupID.x * BN, batch = gl_WorkGroupID.z;
  uint abase = p.a_off + batch * p.a_bs, bbase = p.b_off + batch * p.b_bs;
  float acc[4][4];
  [[unroll]] for (int i = 0; i < 4; ++i)
    [[unroll]] for (int j = 0; j < 4; ++j) acc[i][j] = 0.0;
  for (uint k0 = 0; k0 < p.K; k0 += BK) {
    [[unroll]] for (uint t = 0; t < 4; ++t) {
      uint e = tid + t * 256;
      uint r = e / BK, kk = e % BK;
      uint gi = row0 + r, gk = k0 + kk;
      As[kk][r] = (gi < p.M && gk < p.K) ? a[abase + gi * p.a_si + gk * p.a_sk] : 0.0;
      uint kb = e / BN, cc = e % BN;
      uint gn = col0 + cc, gkb = k0 + kb;
      Bs[kb][cc] = (gn < p.N && gkb < p.K) ? b[bbase + gkb * p.b_sk + gn * p.b_sn] : 0.0;
    }
    barrier();
    [[unroll]] for (uint kk = 0; kk < BK; ++kk) {
      float av[4], bv[4];
      [[unroll]] for (uint i = 0; i < 4; ++i) av[i] = As[kk][ly + 16 * i];
      [[unroll]] for (uint j = 0; j < 4; ++j) bv[j] = Bs[kk][lx + 16 * j];
      [[unroll]] for (uint i = 0; i < 4; ++i)
        [[unroll]] for (uint j = 0; j < 4; ++j) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
    }
    barrier();
  }
  [[unroll]] for (uint i = 0; i < 4; ++i) {
    uint gi = row0 + ly + 16 * i;
    if (gi >= p.M) continue;
    [[unroll]] for (uint j = 0; j < 4; ++j) {
      uint gn = col0 + lx + 16 * j;
      if (gn >= p.N) continue;
      float v = p.alpha * acc[i][j];
      if (p.has_c != 0) v += p.beta * c[gi * p.c_si + gn * p.c_sn];
      if (p.relu != 0 && !(v > 0.0 || isnan(v))) v = 0.0;
      y[p.y_off + batch * p.y_bs + gi * p.N + gn] = v;
    }
  }
}
