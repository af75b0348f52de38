#version 450
#extension GL_EXT_control_flow_attributes : enable
// GEMM without shared memory or barriers (same bindings, push constants and 64x64 tiles as
// gemm.comp): each thread reads its operands straight from the buffers. Chosen on CPU Vulkan
// devices (lavapipe), where workgroup barriers are expensive and caches do the tiling.
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

void main() {
  uint lx = gl_LocalInvocationID.x, ly = gl_LocalInvocationID.y;
  uint row0 = gl_WorkGroupID.y * 64 + ly * 4, col0 = gl_WorkGroupID.x * 64 + lx * 4, batch = gl_WorkGroupID.z;
  uint abase = p.a_off + batch * p.a_bs, bbase = p.b_off + batch * p.b_bs;
  uint ri[4], cj[4];
  [[unroll]] for (uint i = 0; i < 4; ++i) {
    ri[i] = min(row0 + i, p.M - 1);
    cj[i] = min(col0 + i, p.N - 1);
  }
  vec4 acc[4] = vec4[4](vec4(0.0), vec4(0.0), vec4(0.0), vec4(0.0));
  for (uint k = 0; k < p.K; ++k) {
    vec4 bv = vec4(b[bbase + k * p.b_sk + cj[0] * p.b_sn], b[bbase + k * p.b_sk + cj[1] * p.b_sn],
                   b[bbase + k * p.b_sk + cj[2] * p.b_sn], b[bbase + k * p.b_sk + cj[3] * p.b_sn]);
    [[unroll]] for (uint i = 0; i < 4; ++i) acc[i] = fma(vec4(a[abase + ri[i] * p.a_si + k * p.a_sk]), bv, acc[i]);
  }
  [[unroll]] for (uint i = 0; i < 4; ++i) {
    uint gi = row0 + i;
    if (gi >= p.M) continue;
    [[unroll]] for (uint j = 0; j < 4; ++j) {
      uint gn = col0 + j;
      if (gn >= p.N) continue;
      float v = p.alpha * acc[i][j];
      if (p.has_c != 0) v += p.beta * c[gi * p.c_si + gn * p.c_sn];
      if (p.relu != 0 && !(v > 0.0 || isnan(v))) v = 0.0;
      y[p.y_off + batch * p.y_bs + gi * p.N + gn] = v;
    }
  }
}
