// f16 GEMM on 16x16x16 cooperative matrices (tensor cores), f32 accumulation:
// Y[b] = alpha * op(A)[b] @ op(B)[b] + beta * C, A and B f16 (packed in uint words), C and Y f32.
// Included by gemm_coopmat.comp (GL_NV_cooperative_matrix, for GPUs that report 16x16x16
// f16 x f16 -> f32 at subgroup scope) and by gemm_coopmat_emu.comp, which defines
// TB_COOPMAT_EMULATE and runs the same tiling, staging and epilogue with plain arithmetic in
// place of the three matrix operations, so that lavapipe tests everything but the tensor-core
// instructions themselves (compute/README.md, "Cooperative matrices").
//
// A workgroup of WGM x WGN subgroups (SG threads each; in the emulation SG is only a parameter of
// how a matrix is spread over threads) computes a BM x BN tile of Y, each subgroup
// an (SM*16) x (SN*16) block as SM x SN accumulator matrices. K advances by BK: every thread
// stages its share of the next A and B tiles from global memory into registers (zeros past the
// edges, any strides, so transposes cost nothing extra), stores them to shared memory as f16
// rows with a 16-byte pad, and the subgroups multiply while the next step is being read. The
// accumulators go through a 16x16 scratch per subgroup for the epilogue (alpha, beta * C broadcast
// through strides, fused ReLU keeping NaN), which is gemm.comp's, so results differ from the
// plain shaders only in how the f32 sum is accumulated (order; the tensor cores' own rounding).
#extension GL_EXT_control_flow_attributes : enable

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint NT = 128;  // threads: SG * WGM * WGN
layout(constant_id = 1) const uint SG = 32;   // subgroup size (the device's)
layout(constant_id = 2) const uint WGM = 2;   // subgroups along M
layout(constant_id = 3) const uint WGN = 2;   // subgroups along N
layout(constant_id = 4) const uint SM = 2;    // 16-row accumulator tiles per subgroup along M
layout(constant_id = 5) const uint SN = 2;    // 16-column accumulator tiles per subgroup along N
layout(constant_id = 6) const uint BK = 32;   // K step, a multiple of 16
const uint BM = WGM * SM * 16, BN = WGN * SN * 16;
const uint PA = BK + 8, PB = BN + 8;  // shared row pitches in halves: 16-byte aligned rows
// Elements each thread stages per K step (host guarantees BM*BK and BN*BK are multiples of NT).
const uint LA = BM * BK / NT, LB = BN * BK / NT;

layout(std430, binding = 0) readonly buffer A_ { uint a[]; };  // f16 pairs
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

#ifdef TB_COOPMAT_EMULATE
#define HALF float
#else
#define HALF float16_t
#endif
shared HALF As[BM * PA];
shared HALF Bs[BK * PB];
shared float Cs[WGM * WGN * 256];

float half_at(uint w, uint idx) { return unpackHalf2x16(w)[idx & 1u]; }
// Element e of the A tile as (row, k): k fastest when A's rows are contiguous, else rows fastest.
uvec2 a_coord(uint e) { return p.a_sk == 1 ? uvec2(e / BK, e % BK) : uvec2(e % BM, e / BM); }
// Element e of the B tile as (k, column): columns fastest when B's rows are contiguous.
uvec2 b_coord(uint e) { return p.b_sn == 1 ? uvec2(e / BN, e % BN) : uvec2(e % BK, e / BK); }

#ifdef TB_COOPMAT_EMULATE
// Each subgroup's matrices as this lane's 256/SG elements (e = lane + SG * t, row e / 16, column
// e % 16); A and B "loads" remember where the 16x16 block starts in shared memory.
const uint PER = 256 / SG;
float acc[SM][SN][PER];
uint ma_off[SM], mb_off[SN];
#define ACC_ZERO(i, j) [[unroll]] for (uint t = 0; t < PER; ++t) acc[i][j][t] = 0.0;
#define LOAD_A(i, off) ma_off[i] = (off);
#define LOAD_B(j, off) mb_off[j] = (off);
#define MMA(i, j)                                                                     \
  for (uint t = 0; t < PER; ++t) {                                                    \
    uint e = lane + SG * t, r = e / 16, cc = e % 16;                                  \
    for (uint k = 0; k < 16; ++k)                                                     \
      acc[i][j][t] = fma(As[ma_off[i] + r * PA + k], Bs[mb_off[j] + k * PB + cc], acc[i][j][t]); \
  }
#define STORE_ACC(i, j, off) [[unroll]] for (uint t = 0; t < PER; ++t) Cs[(off) + lane + SG * t] = acc[i][j][t];
#define SYNC_SCRATCH() barrier();
#define SUBGROUP_ID (tid / SG)  // "subgroups" of SG threads, whatever the device's
#define SUBGROUP_LANE (tid % SG)
#else
fcoopmatNV<32, gl_ScopeSubgroup, 16, 16> acc[SM][SN];
fcoopmatNV<16, gl_ScopeSubgroup, 16, 16> ma[SM], mb[SN];
#define ACC_ZERO(i, j) acc[i][j] = fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>(0.0);
#define LOAD_A(i, off) coopMatLoadNV(ma[i], As, (off), PA, false);
#define LOAD_B(j, off) coopMatLoadNV(mb[j], Bs, (off), PB, false);
#define MMA(i, j) acc[i][j] = coopMatMulAddNV(ma[i], mb[j], acc[i][j]);
#define STORE_ACC(i, j, off) coopMatStoreNV(acc[i][j], Cs, (off), 16, false);
// the subgroup's lanes hold the matrix in an opaque layout: its store must be visible to all of
// them, and the scratch reread by all before the next store
#define SYNC_SCRATCH() subgroupMemoryBarrierShared(); subgroupBarrier();
#define SUBGROUP_ID gl_SubgroupID  // the matrices belong to the real subgroup (SG = its size)
#define SUBGROUP_LANE gl_SubgroupInvocationID
#endif

void main() {
  uint tid = gl_LocalInvocationID.x, sg = SUBGROUP_ID, lane = SUBGROUP_LANE;
  uint sgm = sg / WGN, sgn = sg % WGN;
  uint row0 = gl_WorkGroupID.y * BM, col0 = gl_WorkGroupID.x * BN, batch = gl_WorkGroupID.z;
  uint abase = p.a_off + batch * p.a_bs, bbase = p.b_off + batch * p.b_bs;
  float ra[LA], rb[LB];
  [[unroll]] for (uint i = 0; i < SM; ++i)
    [[unroll]] for (uint j = 0; j < SN; ++j) { ACC_ZERO(i, j) }

  // global -> registers for the K step starting at k0 (f16 widened exactly)
  #define STAGE(k0)                                                                       \
    [[unroll]] for (uint t = 0; t < LA; ++t) {                                            \
      uvec2 q = a_coord(tid + t * NT);                                                    \
      uint gi = row0 + q.x, gk = (k0) + q.y, idx = abase + gi * p.a_si + gk * p.a_sk;     \
      ra[t] = (gi < p.M && gk < p.K) ? half_at(a[idx >> 1], idx) : 0.0;                   \
    }                                                                                     \
    [[unroll]] for (uint t = 0; t < LB; ++t) {                                            \
      uvec2 q = b_coord(tid + t * NT);                                                    \
      uint gk = (k0) + q.x, gn = col0 + q.y, idx = bbase + gk * p.b_sk + gn * p.b_sn;     \
      rb[t] = (gn < p.N && gk < p.K) ? half_at(b[idx >> 1], idx) : 0.0;                   \
    }

  STAGE(0u)
  for (uint k0 = 0; k0 < p.K; k0 += BK) {
    barrier();  // every subgroup is done reading the previous step
    [[unroll]] for (uint t = 0; t < LA; ++t) {
      uvec2 q = a_coord(tid + t * NT);
      As[q.x * PA + q.y] = HALF(ra[t]);
    }
    [[unroll]] for (uint t = 0; t < LB; ++t) {
      uvec2 q = b_coord(tid + t * NT);
      Bs[q.x * PB + q.y] = HALF(rb[t]);
    }
    barrier();
    if (k0 + BK < p.K) { STAGE(k0 + BK) }  // read the next step while this one is multiplied
    [[unroll]] for (uint kk = 0; kk < BK; kk += 16) {
      [[unroll]] for (uint i = 0; i < SM; ++i) { LOAD_A(i, ((sgm * SM + i) * 16) * PA + kk) }
      [[unroll]] for (uint j = 0; j < SN; ++j) { LOAD_B(j, kk * PB + (sgn * SN + j) * 16) }
      [[unroll]] for (uint i = 0; i < SM; ++i)
        [[unroll]] for (uint j = 0; j < SN; ++j) { MMA(i, j) }
    }
  }

  // epilogue: one 16x16 block at a time through this subgroup's scratch
  [[unroll]] for (uint i = 0; i < SM; ++i) {
    [[unroll]] for (uint j = 0; j < SN; ++j) {
      STORE_ACC(i, j, sg * 256)
      SYNC_SCRATCH()
      [[unroll]] for (uint t = 0; t < 256 / SG; ++t) {
        uint e = lane + SG * t;
        uint gi = row0 + (sgm * SM + i) * 16 + e / 16, gn = col0 + (sgn * SN + j) * 16 + e % 16;
        if (gi >= p.M || gn >= p.N) continue;
        float v = p.alpha * Cs[sg * 256 + e];
        if (p.has_c != 0) v += p.beta * c[gi * p.c_si + gn * p.c_sn];
        if (p.relu != 0 && !(v > 0.0 || isnan(v))) v = 0.0;
        y[p.y_off + batch * p.y_bs + gi * p.N + gn] = v;
      }
      SYNC_SCRATCH()  // the scratch is free for the next block
    }
  }
}
