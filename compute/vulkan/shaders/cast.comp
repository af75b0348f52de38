#version 450
// Casts between f32 and 16-bit floats with integer arithmetic only (bit-exact, round to nearest
// even). mode 0: f32->f16, 1: f32->bf16 (one thread per output word = two halves),
// 2: f16->f32, 3: bf16->f32 (one thread per element).
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer S_ { uint src[]; };
layout(std430, binding = 1) writeonly buffer D_ { uint dst[]; };
layout(push_constant) uniform P { uint n, mode; } p;

uint f32_to_f16(uint x) {
  uint sign = (x >> 16) & 0x8000u;
  uint ex = (x >> 23) & 0xffu;
  uint man = x & 0x7fffffu;
  if (ex == 255u) {
    uint m = man >> 13;
    if (man != 0u && m == 0u) m = 1u;
    return sign | 0x7c00u | m;
  }
  int e = int(ex) - 112;
  if (e >= 31) return sign | 0x7c00u;
  if (e <= 0) {
    if (e < -10) return sign;
    man |= 0x800000u;
    uint shift = uint(14 - e);
    uint h = man >> shift;
    uint rem = man & ((1u << shift) - 1u);
    uint halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (h & 1u) != 0u)) h++;
    return sign | h;
  }
  uint h = sign | (uint(e) << 10) | (man >> 13);
  uint rem = man & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u) != 0u)) h++;
  return h;
}

uint f32_to_bf16(uint x) {
  if ((x & 0x7fffffffu) > 0x7f800000u) return (x >> 16) | 0x40u;
  return (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
}

uint f16_to_f32(uint h) {
  uint sign = (h & 0x8000u) << 16;
  uint ex = (h >> 10) & 0x1fu;
  uint man = h & 0x3ffu;
  if (ex == 0u) {
    if (man == 0u) return sign;
    // subnormal: normalise with integer ops (no float maths, so no denormal flushing)
    uint e = 113u;
    while ((man & 0x400u) == 0u) { man <<= 1; e--; }
    return sign | (e << 23) | ((man & 0x3ffu) << 13);
  }
  if (ex == 31u) return sign | 0x7f800000u | (man << 13);
  return sign | ((ex + 112u) << 23) | (man << 13);
}

void main() {
  uint i = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 256;
  if (p.mode <= 1u) {
    uint e0 = 2u * i;
    if (e0 >= p.n) return;
    uint lo = p.mode == 0u ? f32_to_f16(src[e0]) : f32_to_bf16(src[e0]);
    uint hi = 0u;
    if (e0 + 1u < p.n) hi = p.mode == 0u ? f32_to_f16(src[e0 + 1u]) : f32_to_bf16(src[e0 + 1u]);
    dst[i] = lo | (hi << 16);
  } else {
    if (i >= p.n) return;
    uint h = (src[i >> 1] >> ((i & 1u) * 16u)) & 0xffffu;
    dst[i] = p.mode == 2u ? f16_to_f32(h) : (h << 16);
  }
}
