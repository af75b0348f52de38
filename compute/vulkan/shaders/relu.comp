#version 450
// Y = max(X, 0), NaN propagated.
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X_ { float x[]; };
layout(std430, binding = 1) writeonly buffer Y_ { float y[]; };
layout(push_constant) uniform P { uint n; } p;

void main() {
  uint i = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 256;
  if (i >= p.n) return;
  float v = x[i];
  y[i] = (v > 0.0 || isnan(v)) ? v : 0.0;
}
