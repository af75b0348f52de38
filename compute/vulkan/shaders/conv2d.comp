#version 450
// Direct 2-D convolution (PyTorch layout NCHW, weight [O, C/groups, kH, kW]); one output per thread.
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X_ { float x[]; };
layout(std430, binding = 1) readonly buffer W_ { float w[]; };
layout(std430, binding = 2) readonly buffer B_ { float bias[]; };
layout(std430, binding = 3) writeonly buffer Y_ { float y[]; };
layout(push_constant) uniform P {
  uint total, N, C, H, W, O, KH, KW, OH, OW;
  uint sh, sw, ph, pw, dh, dw, groups, has_bias;
} p;

void main() {
  uint i = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 256;
  if (i >= p.total) return;
  uint ox = i % p.OW, oy = (i / p.OW) % p.OH, o = (i / (p.OW * p.OH)) % p.O, n = i / (p.OW * p.OH * p.O);
  uint cg = p.C / p.groups, og = p.O / p.groups, g = o / og;
  float acc = p.has_bias != 0 ? bias[o] : 0.0;
  for (uint ci = 0; ci < cg; ++ci) {
    uint xplane = (n * p.C + g * cg + ci) * p.H * p.W;
    uint wbase = (o * cg + ci) * p.KH * p.KW;
    for (uint ky = 0; ky < p.KH; ++ky) {
      int iy = int(oy * p.sh + ky * p.dh) - int(p.ph);
      if (iy < 0 || iy >= int(p.H)) continue;
      for (uint kx = 0; kx < p.KW; ++kx) {
        int ix = int(ox * p.sw + kx * p.dw) - int(p.pw);
        if (ix < 0 || ix >= int(p.W)) continue;
        acc = fma(x[xplane + uint(iy) * p.W + uint(ix)], w[wbase + ky * p.KW + kx], acc);
      }
    }
  }
  y[i] = acc;
}
