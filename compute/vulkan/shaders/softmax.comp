#version 450
// Softmax along an axis of length len: one thread per (outer, inner) row, max-subtracted.
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer X_ { float x[]; };
layout(std430, binding = 1) writeonly buffer Y_ { float y[]; };
layout(push_constant) uniform P { uint rows, len, inner; } p;

void main() {
  uint r = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 64;
  if (r >= p.rows) return;
  uint base = (r / p.inner) * p.len * p.inner + r % p.inner;
  float m = uintBitsToFloat(0xff800000u);
  for (uint i = 0; i < p.len; ++i) m = max(m, x[base + i * p.inner]);
  float sum = 0.0;
  for (uint i = 0; i < p.len; ++i) sum += exp(x[base + i * p.inner] - m);
  float inv = 1.0 / sum;
  for (uint i = 0; i < p.len; ++i) y[base + i * p.inner] = exp(x[base + i * p.inner] - m) * inv;
}
