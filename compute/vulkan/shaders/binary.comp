#version 450
// Y = A op B with numpy broadcasting over up to 6 dims (strides 0 on broadcast dims). op 0 add, 1 mul.
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer A_ { float a[]; };
layout(std430, binding = 1) readonly buffer B_ { float b[]; };
layout(std430, binding = 2) writeonly buffer Y_ { float y[]; };
layout(push_constant) uniform P {
  uint n, op, pad0, pad1;
  uint shape[6];
  uint sa[6];
  uint sb[6];
} p;

void main() {
  uint i = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 256;
  if (i >= p.n) return;
  uint rem = i, ia = 0, ib = 0;
  for (int d = 5; d >= 0; --d) {
    uint idx = rem % p.shape[d];
    rem /= p.shape[d];
    ia += idx * p.sa[d];
    ib += idx * p.sb[d];
  }
  float u = a[ia], v = b[ib];
  y[i] = p.op == 0 ? u + v : u * v;
}
