#version 450
#extension GL_EXT_control_flow_attributes : enable
// Skinny GEMM for small N and K and large M (the seed MLP: K=20, N=10): one thread per output row
// keeps all N (<= 16) accumulators in registers and streams its row of op(A) once; op(B) is small
// and stays in cache. Same bindings and push constants as gemm.comp; chosen by shape on the host.
layout(local_size_x = 64) in;
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

const uint MAX_N = 16;  // host selects this shader only for N <= MAX_N

void main() {
  uint gi = gl_GlobalInvocationID.x, batch = gl_WorkGroupID.z;
  if (gi >= p.M) return;
  uint abase = p.a_off + batch * p.a_bs + gi * p.a_si, bbase = p.b_off + batch * p.b_bs;
  float acc[MAX_N];
  [[unroll]] for (uint j = 0; j < MAX_N; ++j) acc[j] = 0.0;
  for (uint k = 0; k < p.K; ++k) {
    float av = a[abase + k * p.a_sk];
    uint bk = bbase + k * p.b_sk;
    [[unroll]] for (uint j = 0; j < MAX_N; ++j)
      if (j < p.N) acc[j] = fma(av, b[bk + j * p.b_sn], acc[j]);
  }
  uint ybase = p.y_off + batch * p.y_bs + gi * p.N;
  [[unroll]] for (uint j = 0; j < MAX_N; ++j) {
    if (j >= p.N) break;
    float v = p.alpha * acc[j];
    if (p.has_c != 0) v += p.beta * c[gi * p.c_si + j * p.c_sn];
    if (p.relu != 0 && !(v > 0.0 || isnan(v))) v = 0.0;
    y[ybase + j] = v;
  }
}
