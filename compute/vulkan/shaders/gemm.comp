#version 450
#extension GL_EXT_control_flow_attributes : enable
// Register-tiled GEMM: Y[b] = alpha * op(A)[b] @ op(B)[b] + beta * C (broadcast through strides).
// A workgroup of TX x TY threads computes a BM x BN tile (BM = TY*TM, BN = TX*TN), each thread a
// TM x TN block in registers. K advances in steps of BK through double-buffered shared memory: the
// next step's operands are read into registers while the current one is multiplied, so one barrier
// per step. Tile shape is set by specialization constants at pipeline creation (compute/README.md).
// Operands are addressed by element strides; the load order follows the contiguous axis, so
// trans_a / trans_b read global memory coalesced either way.
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
// Elements each thread moves per K step (host guarantees BM*BK and BN*BK are multiples of NT).
const uint LA = BM * BK / NT, LB = BN * BK / NT;

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

  // global -> registers for the K step starting at k0
  #define LOAD(k0)                                                                              \
    [[unroll]] for (uint t = 0; t < LA; ++t) {                                                  \
      uvec2 q = a_coord(tid + t * NT);                                                          \
      uint gi = row0 + q.x, gk = (k0) + q.y;                                                    \
      ra[t] = (gi < p.M && gk < p.K) ? a[abase + gi * p.a_si + gk * p.a_sk] : 0.0;              \
    }                                                                                           \
    [[unroll]] for (uint t = 0; t < LB; ++t) {                                                  \
      uvec2 q = b_coord(tid + t * NT);                                                          \
      uint gk = (k0) + q.x, gn = col0 + q.y;                                                    \
      rb[t] = (gn < p.N && gk < p.K) ? b[bbase + gk * p.b_sk + gn * p.b_sn] : 0.0;              \
    }
  // registers -> shared buffer s
  #define STORE(s)                                                                              \
    [[unroll]] for (uint t = 0; t < LA; ++t) {                                                  \
      uvec2 q = a_coord(tid + t * NT);                                                          \
      As[s][q.y][q.x] = ra[t];                                                                  \
    }                                                                                           \
    [[unroll]] for (uint t = 0; t < LB; ++t) {                                                  \
      uvec2 q = b_coord(tid + t * NT);                                                          \
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
