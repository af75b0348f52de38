#version 450
#extension GL_EXT_control_flow_attributes : enable
// Conv2d as an implicit GEMM on gemm.comp's register-tiled, double-buffered scheme (no im2col
// buffer). Per group g (workgroup z): Y[o][col] = sum_k W[o][k] * X~[k][col] + bias[o] with
// o < O/groups, col = (n, oy, ox) over the output pixels, k = (ci, ky, kx) over C/groups * KH * KW;
// X~ is gathered from the NCHW input on the fly (padding reads zero). Tiles are specialization
// constants {TX, TY, TM, TN, BK} as in gemm.comp.
layout(local_size_x_id = 0, local_size_y_id = 1) in;
layout(constant_id = 0) const uint TX = 16;
layout(constant_id = 1) const uint TY = 16;
layout(constant_id = 2) const uint TM = 4;
layout(constant_id = 3) const uint TN = 4;
layout(constant_id = 4) const uint BK = 16;
const uint BM = TY * TM, BN = TX * TN, NT = TX * TY;
const uint PAD = 1;
const uint LA = BM * BK / NT, LB = BN * BK / NT;

layout(std430, binding = 0) readonly buffer X_ { float x[]; };
layout(std430, binding = 1) readonly buffer W_ { float w[]; };
layout(std430, binding = 2) readonly buffer B_ { float bias[]; };
layout(std430, binding = 3) writeonly buffer Y_ { float y[]; };
layout(push_constant) uniform P {
  uint total, N, C, H, W, O, KH, KW, OH, OW;
  uint sh, sw, ph, pw, dh, dw, groups, has_bias;
} p;

shared float As[2][BK][BM + PAD];
shared float Bs[2][BK][BN + PAD];

void main() {
  uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y, tid = ty * TX + tx;
  uint g = gl_WorkGroupID.z;
  uint cg = p.C / p.groups, og = p.O / p.groups, khw = p.KH * p.KW;
  uint GM = og, GN = p.N * p.OH * p.OW, GK = cg * khw;
  uint row0 = gl_WorkGroupID.y * BM, col0 = gl_WorkGroupID.x * BN;
  uint wbase = g * og * GK;
  float ra[LA], rb[LB];
  float acc[TM][TN];
  [[unroll]] for (uint i = 0; i < TM; ++i)
    [[unroll]] for (uint j = 0; j < TN; ++j) acc[i][j] = 0.0;

  // Each thread's B columns are fixed for the whole K loop: decode them once.
  int iy0[LB], ix0[LB];
  uint xb[LB];
  bool cok[LB];
  [[unroll]] for (uint t = 0; t < LB; ++t) {
    uint col = col0 + (tid + t * NT) % BN;
    cok[t] = col < GN;
    uint ox = col % p.OW, oy = (col / p.OW) % p.OH, n = col / (p.OW * p.OH);
    iy0[t] = int(oy * p.sh) - int(p.ph);
    ix0[t] = int(ox * p.sw) - int(p.pw);
    xb[t] = (n * p.C + g * cg) * p.H * p.W;
  }

  #define LOAD(k0)                                                                              \
    [[unroll]] for (uint t = 0; t < LA; ++t) {                                                  \
      uint e = tid + t * NT, gi = row0 + e / BK, gk = (k0) + e % BK;                            \
      ra[t] = (gi < GM && gk < GK) ? w[wbase + gi * GK + gk] : 0.0;                             \
    }                                                                                           \
    [[unroll]] for (uint t = 0; t < LB; ++t) {                                                  \
      uint gk = (k0) + (tid + t * NT) / BN;                                                     \
      float v = 0.0;                                                                            \
      if (cok[t] && gk < GK) {                                                                  \
        uint ci = gk / khw, r = gk % khw;                                                       \
        int iy = iy0[t] + int((r / p.KW) * p.dh), ix = ix0[t] + int((r % p.KW) * p.dw);        \
        if (iy >= 0 && iy < int(p.H) && ix >= 0 && ix < int(p.W))                               \
          v = x[xb[t] + ci * p.H * p.W + uint(iy) * p.W + uint(ix)];                            \
      }                                                                                         \
      rb[t] = v;                                                                                \
    }
  #define STORE(s)                                                                              \
    [[unroll]] for (uint t = 0; t < LA; ++t) {                                                  \
      uint e = tid + t * NT;                                                                    \
      As[s][e % BK][e / BK] = ra[t];                                                            \
    }                                                                                           \
    [[unroll]] for (uint t = 0; t < LB; ++t) {                                                  \
      uint e = tid + t * NT;                                                                    \
      Bs[s][e / BN][e % BN] = rb[t];                                                            \
    }

  LOAD(0u)
  STORE(0u)
  barrier();
  uint cur = 0;
  for (uint k0 = 0; k0 < GK; k0 += BK) {
    bool more = k0 + BK < GK;
    if (more) { LOAD(k0 + BK) }
    [[unroll]] for (uint kk = 0; kk < BK; ++kk) {
      float av[TM], bv[TN];
      [[unroll]] for (uint i = 0; i < TM; ++i) av[i] = As[cur][kk][ty + TY * i];
      [[unroll]] for (uint j = 0; j < TN; ++j) bv[j] = Bs[cur][kk][tx + TX * j];
      [[unroll]] for (uint i = 0; i < TM; ++i)
        [[unroll]] for (uint j = 0; j < TN; ++j) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
    }
    if (more) { STORE(cur ^ 1u) }
    barrier();
    cur ^= 1u;
  }
  [[unroll]] for (uint i = 0; i < TM; ++i) {
    uint gi = row0 + ty + TY * i;
    if (gi >= GM) continue;
    uint o = g * og + gi;
    float bo = p.has_bias != 0 ? bias[o] : 0.0;
    [[unroll]] for (uint j = 0; j < TN; ++j) {
      uint col = col0 + tx + TX * j;
      if (col >= GN) continue;
      uint pix = col % (p.OH * p.OW), n = col / (p.OH * p.OW);
      y[(n * p.O + o) * p.OH * p.OW + pix] = acc[i][j] + bo;
    }
  }
}
