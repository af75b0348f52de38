#version 450
// Inference batch norm over dim 1: y = (x - mean) * inversesqrt(var + eps) * weight + bias.
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X_ { float x[]; };
layout(std430, binding = 1) readonly buffer M_ { float mean[]; };
layout(std430, binding = 2) readonly buffer V_ { float var_[]; };
layout(std430, binding = 3) readonly buffer G_ { float weight[]; };
layout(std430, binding = 4) readonly buffer B_ { float bias[]; };
layout(std430, binding = 5) writeonly buffer Y_ { float y[]; };
layout(push_constant) uniform P { uint total, C, inner, has_w, has_b; float eps; } p;

void main() {
  uint i = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 256;
  if (i >= p.total) return;
  uint c = (i / p.inner) % p.C;
  float s = 1.0 / sqrt(var_[c] + p.eps);
  if (p.has_w != 0) s *= weight[c];
  float sh = (p.has_b != 0 ? bias[c] : 0.0) - mean[c] * s;
  y[i] = x[i] * s + sh;
}
