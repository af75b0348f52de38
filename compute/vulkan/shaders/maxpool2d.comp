#version 450
// MaxPool2d over planes of [H, W] (padding is -inf, NaN propagates); one output per thread.
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X_ { float x[]; };
layout(std430, binding = 1) writeonly buffer Y_ { float y[]; };
layout(push_constant) uniform P {
  uint total, H, W, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw;
} p;

void main() {
  uint i = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 256;
  if (i >= p.total) return;
  uint ox = i % p.OW, oy = (i / p.OW) % p.OH, plane = i / (p.OW * p.OH);
  uint base = plane * p.H * p.W;
  float m = uintBitsToFloat(0xff800000u);
  for (uint ky = 0; ky < p.kh; ++ky) {
    int iy = int(oy * p.sh + ky * p.dh) - int(p.ph);
    if (iy < 0 || iy >= int(p.H)) continue;
    for (uint kx = 0; kx < p.kw; ++kx) {
      int ix = int(ox * p.sw + kx * p.dw) - int(p.pw);
      if (ix < 0 || ix >= int(p.W)) continue;
      float v = x[base + uint(iy) * p.W + uint(ix)];
      if (v > m || isnan(v)) m = v;
    }
  }
  y[i] = m;
}
