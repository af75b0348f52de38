#version 450
#extension GL_EXT_control_flow_attributes : enable
// Register-tiled GEMM: Y[b] = alpha * op(A)[b] @ op(B)[b] + beta * C (broadcast through strides).
// A workgroup of TX x TY threads computes a BM x BN tile (BM = TY*TM, BN = TX*TN), each thread a
// TM x TN block in registers. K advances in steps of BK through double-buffered shared memory: the
// next step's operands are read into registers while the current one is multiplied, so one barrier
// per step. Tile shape is set by specialization constants at pipeline creation (compute/README.md).
// Operands are addressed by element strides; the load order follows the contiguous axis, so
// trans_a / trans_b read global memory coalesced either way, as vec4 where aligned.
layout(local_size_x_id = 0, local_size_y_id = 1) in;
layout(constant_id = 0) const uint TX = 16;
layout(constant_id = 1) const uint TY = 16;
layout(constant_id = 2) const uint TM = 4;
layout(constant_id = 3) const uint TN = 4;
layout(constant_id = 4) const uint BK = 16;
const uint BM = TY * TM, BN = TX * TN, NT = TX * TY;
const uint PAD = 1;  // odd row pitch: column-wise (transposing) stores hit distinct banks

layout(std430, binding = 0) readonly buffer A_ { float a[]; };
layout(std430, binding = 1) readonly buffer B_ { float b[]; };
// vec4 views of the same buffers for aligned loads along a contiguous axis
layout(std430, binding = 0) readonly buffer A4_ { vec4 a4[]; };
layout(std430, binding = 1) readonly buffer B4_ { vec4 b4[]; };
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

shared float As[2][BK][BM + PAD];
shared float Bs[2][BK][BN + PAD];
// Elements each thread moves per K step (host guarantees BM*BK and BN*BK are multiples of 4*NT,
// and BK, BM, BN multiples of 4).
const uint LA = BM * BK / NT, LB = BN * BK / NT;
// Tile element of register slot s: with vec4 loads, slots 4q..4q+3 are 4 consecutive elements.
uint elem(uint tid, uint s, bool vec) { return vec ? 4 * (tid + (s / 4) * NT) + s % 4 : tid + s * NT; }

// Element e of the A tile as (row r, k kk): k fastest when A's rows are contiguous, else rows fastest.
uvec2 a_coord(uint e) { return p.a_sk == 1 ? uvec2(e / BK, e % BK) : uvec2(e % BM, e / BM); }
// Element e of the B tile as (k kk, column cc): columns fastest when B's rows are contiguous.
uvec2 b_coord(uint e) { return p.b_sn == 1 ? uvec2(e / BN, e % BN) : uvec2(e % BK, e / BK); }

void main() {
  uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y, tid = ty * TX + tx;
  uint row0 = gl_WorkGroupID.y * BM, col0 = gl_WorkGroupID.x * BN, batch = gl_WorkGroupID.z;
  uint abase = p.a_off + batch * p.a_bs, bbase = p.b_off + batch * p.b_bs;
  float ra[LA], rb[LB];
  float acc[TM][TN];
  [[unroll]] for (uint i = 0; i < TM; ++i)
    [[unroll]] for (uint j = 0; j < TN; ++j) acc[i][j] = 0.0;

  // vec4 loads where the contiguous axis is row-major k (A) or n (B), its extent and the row
  // pitch are multiples of 4 and the base is 16-byte aligned: 4 elements never straddle an edge.
  bool va = p.a_sk == 1 && (p.K & 3) == 0 && (p.a_si & 3) == 0 && (abase & 3) == 0;
  bool vb = p.b_sn == 1 && (p.N & 3) == 0 && (p.b_sk & 3) == 0 && (bbase & 3) == 0;

  // global -> registers for the K step starting at k0
  #define LOAD(k0)                                                                              \
    if (va) {                                                                                   \
      [[unroll]] for (uint t = 0; t < LA; t += 4) {                                             \
        uvec2 q = a_coord(elem(tid, t, true));                                                  \
        uint gi = row0 + q.x, gk = (k0) + q.y;                                                  \
        vec4 v = (gi < p.M && gk < p.K) ? a4[(abase + gi * p.a_si + gk) / 4] : vec4(0.0);       \
        ra[t] = v.x, ra[t + 1] = v.y, ra[t + 2] = v.z, ra[t + 3] = v.w;                         \
      }                                                                                         \
    } else {                                                                                    \
      [[unroll]] for (uint t = 0; t < LA; ++t) {                                                \
        uvec2 q = a_coord(elem(tid, t, false));                                                 \
        uint gi = row0 + q.x, gk = (k0) + q.y;                                                  \
        ra[t] = (gi < p.M && gk < p.K) ? a[abase + gi * p.a_si + gk * p.a_sk] : 0.0;            \
      }                                                                                         \
    }                                                                                           \
    if (vb) {                                                                                   \
      [[unroll]] for (uint t = 0; t < LB; t += 4) {                                             \
        uvec2 q = b_coord(elem(tid, t, true));                                                  \
        uint gk = (k0) + q.x, gn = col0 + q.y;                                                  \
        vec4 v = (gn < p.N && gk < p.K) ? b4[(bbase + gk * p.b_sk + gn) / 4] : vec4(0.0);       \
        rb[t] = v.x, rb[t + 1] = v.y, rb[t + 2] = v.z, rb[t + 3] = v.w;                         \
      }                                                                                         \
    } else {                                                                                    \
      [[unroll]] for (uint t = 0; t < LB; ++t) {                                                \
        uvec2 q = b_coord(elem(tid, t, false));                                                 \
        uint gk = (k0) + q.x, gn = col0 + q.y;                                                  \
        rb[t] = (gn < p.N && gk < p.K) ? b[bbase + gk * p.b_sk + gn * p.b_sn] : 0.0;            \
      }                                                                                         \
    }
  // registers -> shared buffer s
  #define STORE(s)                                                                              \
    [[unroll]] for (uint t = 0; t < LA; ++t) {                                                  \
      uvec2 q = a_coord(elem(tid, t, va));                                                      \
      As[s][q.y][q.x] = ra[t];                                                                  \
    }                                                                                           \
    [[unroll]] for (uint t = 0; t < LB; ++t) {                                                  \
      uvec2 q = b_coord(elem(tid, t, vb));                                                      \
      Bs[s][q.x][q.y] = rb[t];                                                                  \
    }

  LOAD(0u)
  STORE(0u)
  barrier();
  uint cur = 0;
  for (uint k0 = 0; k0 < p.K; k0 += BK) {
    bool more = k0 + BK < p.K;
    if (more) { LOAD(k0 + BK) }
    [[unroll]] for (uint kk = 0; kk < BK; ++kk) {
      float av[TM], bv[TN];
      [[unroll]] for (uint i = 0; i < TM; ++i) av[i] = As[cur][kk][ty + TY * i];
      [[unroll]] for (uint j = 0; j < TN; ++j) bv[j] = Bs[cur][kk][tx + TX * j];
      [[unroll]] for (uint i = 0; i < TM; ++i)
        [[unroll]] for (uint j = 0; j < TN; ++j) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
    }
    if (more) { STORE(cur ^ 1u) }
    barrier();  // the other buffer is written and nobody reads `cur` any more
    cur ^= 1u;
  }
  [[unroll]] for (uint i = 0; i < TM; ++i) {
    uint gi = row0 + ty + TY * i;
    if (gi >= p.M) continue;
    [[unroll]] for (uint j = 0; j < TN; ++j) {
      uint gn = col0 + tx + TX * j;
      if (gn >= p.N) continue;
      float v = p.alpha * acc[i][j];
      if (p.has_c != 0) v += p.beta * c[gi * p.c_si + gn * p.c_sn];
      if (p.relu != 0 && !(v > 0.0 || isnan(v))) v = 0.0;
      y[p.y_off + batch * p.y_bs + gi * p.N + gn] = v;
    }
  }
}
