// The tiled product on 16x16x16 cooperative matrices (tensor cores), f16 operands, f32 accumulation:
// Y = A (GM x GK) @ B (GK x GN) per workgroup z, the body of the GEMM (coopmat_gemm.glsl) and
// implicit-GEMM conv2d (coopmat_conv.glsl) shaders. Built twice: for GL_NV_cooperative_matrix (GPUs
// that report 16x16x16 f16 x f16 -> f32 at subgroup scope), and with TB_COOPMAT_EMULATE defined,
// plain arithmetic in place of the three matrix operations, so that lavapipe tests everything but
// the tensor-core instructions themselves (compute/README.md, "Cooperative matrices").
//
// The including shader defines its buffers and push constants, then these hooks:
//   GM, GN, GK            extents (expressions)
//   float a_at(gi, gk)    f16 operand A as float, called only in range; likewise b_at(gk, gn)
//   A_K_FASTEST           whether A's contiguous axis is k (else rows); B_N_FASTEST likewise
//   void store_y(gi, gn, v)  the epilogue for one in-range output element of accumulated sum v
//
// A workgroup of WGM x WGN subgroups (SG threads each; in the emulation SG is only a parameter of
// how a matrix is spread over threads) computes a BM x BN tile, each subgroup an (SM*16) x (SN*16)
// block as SM x SN accumulator matrices. K advances by BK: every thread stages its share of the
// next A and B tiles into registers (zeros past the edges), stores them to shared memory as f16
// rows with a 16-byte pad, and the subgroups multiply while the next step is being read. The
// accumulators go through a 16x16 scratch per subgroup to store_y, so results differ from the
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

#ifdef TB_COOPMAT_EMULATE
#define HALF float
#else
#define HALF float16_t
#endif
shared HALF As[BM * PA];
shared HALF Bs[BK * PB];
shared float Cs[WGM * WGN * 256];

// Element e of the A tile as (row, k), along A's contiguous axis (coalesced global reads).
uvec2 a_coord(uint e) { return A_K_FASTEST ? uvec2(e / BK, e % BK) : uvec2(e % BM, e / BM); }
// Element e of the B tile as (k, column), likewise.
uvec2 b_coord(uint e) { return B_N_FASTEST ? uvec2(e / BN, e % BN) : uvec2(e % BK, e / BK); }

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
  uint row0 = gl_WorkGroupID.y * BM, col0 = gl_WorkGroupID.x * BN;
  float ra[LA], rb[LB];
  [[unroll]] for (uint i = 0; i < SM; ++i)
    [[unroll]] for (uint j = 0; j < SN; ++j) { ACC_ZERO(i, j) }

  // global -> registers for the K step starting at k0 (f16 widened exactly)
  #define STAGE(k0)                                                                       \
    [[unroll]] for (uint t = 0; t < LA; ++t) {                                            \
      uvec2 q = a_coord(tid + t * NT);                                                    \
      uint gi = row0 + q.x, gk = (k0) + q.y;                                              \
      ra[t] = (gi < GM && gk < GK) ? a_at(gi, gk) : 0.0;                                  \
    }                                                                                     \
    [[unroll]] for (uint t = 0; t < LB; ++t) {                                            \
      uvec2 q = b_coord(tid + t * NT);                                                    \
      uint gk = (k0) + q.x, gn = col0 + q.y;                                              \
      rb[t] = (gn < GN && gk < GK) ? b_at(gk, gn) : 0.0;                                  \
    }

  STAGE(0u)
  for (uint k0 = 0; k0 < GK; k0 += BK) {
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
    if (k0 + BK < GK) { STAGE(k0 + BK) }  // read the next step while this one is multiplied
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
        if (gi < GM && gn < GN) store_y(gi, gn, Cs[sg * 256 + e]);
      }
      SYNC_SCRATCH()  // the scratch is free for the next block
    }
  }
}
