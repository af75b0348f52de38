// GGML block (de)quantizers; layouts and arithmetic as in the reference `gguf` package (gguf/quants.py).
// Every product and sum is one float32 operation in the reference's order (numpy never fuses them);
// this file is compiled with -ffp-contract=off (formats/CMakeLists.txt) so the compiler cannot either.
#include "formats/gguf_quants.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <string>

namespace tb::gguf {

namespace {

constexpr uint32_t QK_K = 256;

const GgmlType kTypes[] = {
    {0, "F32", 1, 4, DType::F32, false},          {1, "F16", 1, 2, DType::F16, false},
    {2, "Q4_0", 32, 18, std::nullopt, true},      {3, "Q4_1", 32, 20, std::nullopt, true},
    {6, "Q5_0", 32, 22, std::nullopt, true},      {7, "Q5_1", 32, 24, std::nullopt, true},
    {8, "Q8_0", 32, 34, std::nullopt, true},      {9, "Q8_1", 32, 40, std::nullopt, false},
    {10, "Q2_K", 256, 84, std::nullopt, true},    {11, "Q3_K", 256, 110, std::nullopt, true},
    {12, "Q4_K", 256, 144, std::nullopt, true},   {13, "Q5_K", 256, 176, std::nullopt, true},
    {14, "Q6_K", 256, 210, std::nullopt, true},   {15, "Q8_K", 256, 292, std::nullopt, false},
    {16, "IQ2_XXS", 256, 66, std::nullopt, true}, {17, "IQ2_XS", 256, 74, std::nullopt, true},
    {18, "IQ3_XXS", 256, 98, std::nullopt, true}, {19, "IQ1_S", 256, 50, std::nullopt, true},
    {20, "IQ4_NL", 32, 18, std::nullopt, true},   {21, "IQ3_S", 256, 110, std::nullopt, true},
    {22, "IQ2_S", 256, 82, std::nullopt, true},   {23, "IQ4_XS", 256, 136, std::nullopt, true},
    {24, "I8", 1, 1, DType::I8, false},           {25, "I16", 1, 2, DType::I16, false},
    {26, "I32", 1, 4, DType::I32, false},         {27, "I64", 1, 8, DType::I64, false},
    {28, "F64", 1, 8, DType::F64, false},         {29, "IQ1_M", 256, 56, std::nullopt, true},
    {30, "BF16", 1, 2, DType::BF16, false},       {34, "TQ1_0", 256, 54, std::nullopt, true},
    {35, "TQ2_0", 256, 66, std::nullopt, true},   {39, "MXFP4", 32, 17, std::nullopt, true},
    {40, "NVFP4", 64, 36, std::nullopt, true},    {41, "Q1_0", 128, 18, std::nullopt, false},
};

float half(const uint8_t* p) { return f16_bits_to_f32(uint16_t(p[0] | (p[1] << 8))); }

// Q4_0: d, 16 bytes of nibbles (low nibbles are elements 0..15, high ones 16..31), value q - 8.
void q4_0(const uint8_t* b, float* y) {
  const float d = half(b);
  for (int j = 0; j < 16; ++j) {
    y[j] = d * float(int(b[2 + j] & 0xF) - 8);
    y[j + 16] = d * float(int(b[2 + j] >> 4) - 8);
  }
}

// Q4_1: d, m, nibbles; d * q + m.
void q4_1(const uint8_t* b, float* y) {
  const float d = half(b), m = half(b + 2);
  for (int j = 0; j < 16; ++j) {
    y[j] = d * float(b[4 + j] & 0xF) + m;
    y[j + 16] = d * float(b[4 + j] >> 4) + m;
  }
}

// Q5_0 / Q5_1: the fifth bit of element j is bit j of the little-endian qh word.
int q5_value(const uint8_t* qh, const uint8_t* qs, int j) {
  const uint32_t h = uint32_t(qh[0]) | uint32_t(qh[1]) << 8 | uint32_t(qh[2]) << 16 | uint32_t(qh[3]) << 24;
  const int lo = j < 16 ? (qs[j] & 0xF) : (qs[j - 16] >> 4);
  return lo | int((h >> j) & 1) << 4;
}

void q5_0(const uint8_t* b, float* y) {
  const float d = half(b);
  for (int j = 0; j < 32; ++j) y[j] = d * float(q5_value(b + 2, b + 6, j) - 16);
}

void q5_1(const uint8_t* b, float* y) {
  const float d = half(b), m = half(b + 2);
  for (int j = 0; j < 32; ++j) y[j] = d * float(q5_value(b + 4, b + 8, j)) + m;
}

void q8_0(const uint8_t* b, float* y) {
  const float d = half(b);
  for (int j = 0; j < 32; ++j) y[j] = float(int8_t(b[2 + j])) * d;
}

// Q2_K: 16 scale bytes (low nibble scale, high nibble min), 64 bytes of 2-bit values, d, dmin.
void q2_k(const uint8_t* b, float* y) {
  const uint8_t* sc = b;
  const uint8_t* qs = b + 16;
  const float d = half(b + 80), dmin = half(b + 82);
  for (int h = 0; h < 2; ++h)
    for (int s = 0; s < 4; ++s)
      for (int k = 0; k < 32; ++k) {
        const int pos = h * 128 + s * 32 + k, g = pos / 16;
        const float dl = d * float(sc[g] & 0xF), ml = dmin * float(sc[g] >> 4);
        y[pos] = dl * float((qs[h * 32 + k] >> (2 * s)) & 3) - ml;
      }
}

// Q3_K: hmask (inverted third bit), 2-bit values, 12 bytes of packed 6-bit signed scales, d.
void q3_k(const uint8_t* b, float* y) {
  const uint8_t* hmask = b;
  const uint8_t* qs = b + 32;
  const uint8_t* s = b + 96;
  const float d = half(b + 108);
  float dl[16];
  for (int i = 0; i < 16; ++i) {
    const int lo = i < 8 ? (s[i] & 0xF) : (s[i - 8] >> 4);
    const int hi = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
    dl[i] = d * float(int(int8_t(uint8_t(lo | hi << 4))) - 32);
  }
  for (int h = 0; h < 2; ++h)
    for (int sh = 0; sh < 4; ++sh)
      for (int k = 0; k < 32; ++k) {
        const int pos = h * 128 + sh * 32 + k;
        const int ql = (qs[h * 32 + k] >> (2 * sh)) & 3;
        const int hb = ((hmask[k] >> (pos / 32)) & 1) ^ 1;
        y[pos] = dl[pos / 16] * float(ql - (hb << 2));
      }
}

// The 8 six-bit scales and mins of Q4_K and Q5_K, packed in 12 bytes.
void scale_min_k4(const uint8_t* s, uint8_t* sc, uint8_t* mn) {
  for (int j = 0; j < 4; ++j) {
    sc[j] = s[j] & 63;
    mn[j] = s[4 + j] & 63;
    sc[4 + j] = uint8_t((s[8 + j] & 0xF) | ((s[j] >> 2) & 0x30));
    mn[4 + j] = uint8_t((s[8 + j] >> 4) | ((s[4 + j] >> 2) & 0x30));
  }
}

// Q4_K: d, dmin, scales, 128 bytes of nibbles (chunk c of 32 bytes: low nibbles then high ones).
void q4_k(const uint8_t* b, float* y) {
  const float d = half(b), dmin = half(b + 2);
  uint8_t sc[8], mn[8];
  scale_min_k4(b + 4, sc, mn);
  const uint8_t* qs = b + 16;
  for (int c = 0; c < 4; ++c)
    for (int s = 0; s < 2; ++s) {
      const int g = 2 * c + s;
      const float dd = d * float(sc[g]), dm = dmin * float(mn[g]);
      for (int k = 0; k < 32; ++k) y[g * 32 + k] = dd * float((qs[c * 32 + k] >> (4 * s)) & 0xF) - dm;
    }
}

// Q5_K: as Q4_K with a fifth bit per element (bit g of qh[k] for element k of group g).
void q5_k(const uint8_t* b, float* y) {
  const float d = half(b), dmin = half(b + 2);
  uint8_t sc[8], mn[8];
  scale_min_k4(b + 4, sc, mn);
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + 48;
  for (int c = 0; c < 4; ++c)
    for (int s = 0; s < 2; ++s) {
      const int g = 2 * c + s;
      const float dd = d * float(sc[g]), dm = dmin * float(mn[g]);
      for (int k = 0; k < 32; ++k) {
        const int q = ((qs[c * 32 + k] >> (4 * s)) & 0xF) | (((qh[k] >> g) & 1) << 4);
        y[g * 32 + k] = dd * float(q) - dm;
      }
    }
}

// Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 signed scales, d; value q - 32.
void q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = half(b + 208);
  for (int h = 0; h < 2; ++h)
    for (int s = 0; s < 4; ++s)
      for (int k = 0; k < 32; ++k) {
        const int pos = h * 128 + s * 32 + k;
        const int lo = (ql[h * 64 + (s & 1) * 32 + k] >> (4 * (s >> 1))) & 0xF;
        const int hi = (qh[h * 32 + k] >> (2 * s)) & 3;
        y[pos] = (d * float(sc[pos / 16])) * float(int(int8_t(uint8_t(lo | hi << 4))) - 32);
      }
}

// TQ2_0: 64 bytes of 2-bit values (q - 1), then d.
void tq2_0(const uint8_t* b, float* y) {
  const float d = half(b + 64);
  for (int h = 0; h < 2; ++h)
    for (int s = 0; s < 4; ++s)
      for (int k = 0; k < 32; ++k) y[h * 128 + s * 32 + k] = d * float(int((b[h * 32 + k] >> (2 * s)) & 3) - 1);
}

// TQ1_0: 48 + 4 bytes each packing 5 (or 4) base-3 digits as a fraction of 256, then d; value q - 1.
void tq1_0(const uint8_t* b, float* y) {
  static const uint8_t pow3[5] = {1, 3, 9, 27, 81};
  const float d = half(b + 52);
  auto digit = [](uint8_t packed, uint8_t p) { return int((uint16_t(uint8_t(packed * p)) * 3) >> 8) - 1; };
  for (int m = 0; m < 5; ++m)
    for (int k = 0; k < 32; ++k) y[m * 32 + k] = d * float(digit(b[k], pow3[m]));
  for (int m = 0; m < 5; ++m)
    for (int k = 0; k < 16; ++k) y[160 + m * 16 + k] = d * float(digit(b[32 + k], pow3[m]));
  for (int m = 0; m < 4; ++m)
    for (int k = 0; k < 4; ++k) y[240 + m * 4 + k] = d * float(digit(b[48 + k], pow3[m]));
}

const int8_t kIq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// IQ4_XS: d, 8 six-bit signed scales (high bits in a u16, low nibbles in 4 bytes), IQ4_NL nibbles.
void iq4_xs(const uint8_t* b, float* y) {
  const float d = half(b);
  const unsigned sh = unsigned(b[2]) | unsigned(b[3]) << 8;
  for (int j = 0; j < 8; ++j) {
    const int lo = (b[4 + j / 2] >> (4 * (j % 2))) & 0xF, hi = (sh >> (2 * j)) & 3;
    const float dl = d * float(int(int8_t(uint8_t(lo | hi << 4))) - 32);
    for (int i = 0; i < 32; ++i) y[j * 32 + i] = dl * float(kIq4nl[(b[8 + j * 16 + i % 16] >> (4 * (i / 16))) & 0xF]);
  }
}

// MXFP4: an e8m0 exponent (as half its power of two) and 32 e2m1 nibbles (values doubled).
void mxfp4(const uint8_t* b, float* y) {
  static const int8_t kv[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
  const uint32_t e = b[0], bits = e < 2 ? 0x00200000u << e : (e - 1) << 23;
  float d;
  std::memcpy(&d, &bits, 4);
  for (int j = 0; j < 16; ++j) {
    y[j] = d * float(kv[b[1 + j] & 0xF]);
    y[j + 16] = d * float(kv[b[1 + j] >> 4]);
  }
}

// NVFP4: four unsigned e4m3 scales (halved; 0x7F reads as 0), then 4 x 8 bytes of e2m1 nibbles
// (low nibbles are elements 0..7 of a 16-element sub-block, high ones 8..15).
void nvfp4(const uint8_t* b, float* y) {
  static const int8_t kv[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
  for (int s = 0; s < 4; ++s) {
    const uint8_t x = b[s];
    const int exp = (x >> 3) & 0xF, man = x & 7;
    // Every scale is exact in float32: man * 2^-9 / 2, or (1 + man/8) * 2^(exp-7) / 2.
    const float d = (x == 0 || x == 0x7F) ? 0.0f
                    : exp == 0            ? std::ldexp(float(man), -10)
                                          : std::ldexp(float(8 + man), exp - 11);
    for (int j = 0; j < 8; ++j) {
      y[s * 16 + j] = d * float(kv[b[4 + s * 8 + j] & 0xF]);
      y[s * 16 + 8 + j] = d * float(kv[b[4 + s * 8 + j] >> 4]);
    }
  }
}

// IQ4_NL: d, nibbles indexing a fixed non-linear table.
void iq4_nl(const uint8_t* b, float* y) {
  const int8_t* kv = kIq4nl;
  const float d = half(b);
  for (int j = 0; j < 16; ++j) {
    y[j] = d * float(kv[b[2 + j] & 0xF]);
    y[j + 16] = d * float(kv[b[2 + j] >> 4]);
  }
}

}  // namespace

const GgmlType* ggml_type(uint32_t id) {
  for (const auto& t : kTypes)
    if (t.id == id) return &t;
  return nullptr;
}

const GgmlType* ggml_type_by_name(std::string_view name) {
  for (const auto& t : kTypes) {
    if (t.name.size() != name.size()) continue;
    bool same = true;
    for (size_t i = 0; i < name.size() && same; ++i) same = std::toupper((unsigned char)name[i]) == t.name[i];
    if (same) return &t;
  }
  return nullptr;
}

const GgmlType* ggml_type_for(DType d) {
  for (const auto& t : kTypes)
    if (t.native == d) return &t;
  return nullptr;
}

std::string_view dequantizable_names() {
  static const std::string names = [] {
    std::string s;
    for (const auto& t : kTypes)
      if (t.dequantizes) s += (s.empty() ? "" : ", ") + std::string(t.name);
    return s;
  }();
  return names;
}

void dequantize(const GgmlType& t, const uint8_t* src, size_t n_blocks, float* dst) {
  void (*f)(const uint8_t*, float*) = nullptr;
  switch (t.id) {
    case 2: f = q4_0; break;
    case 3: f = q4_1; break;
    case 6: f = q5_0; break;
    case 7: f = q5_1; break;
    case 8: f = q8_0; break;
    case 10: f = q2_k; break;
    case 11: f = q3_k; break;
    case 12: f = q4_k; break;
    case 13: f = q5_k; break;
    case 14: f = q6_k; break;
    case 20: f = iq4_nl; break;
    case 23: f = iq4_xs; break;
    case 34: f = tq1_0; break;
    case 39: f = mxfp4; break;
    case 40: f = nvfp4; break;
    case 35: f = tq2_0; break;
    default: detail::dequantize_iq(t.id, src, n_blocks, t.type_size, dst); return;
  }
  for (size_t i = 0; i < n_blocks; ++i) f(src + i * t.type_size, dst + i * t.block_size);
}

void quantize_q8_0(const float* src, size_t n, uint8_t* dst) {
  for (size_t blk = 0; blk < n / 32; ++blk) {
    const float* x = src + blk * 32;
    uint8_t* out = dst + blk * 34;
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d == 0 ? 0.0f : 1.0f / d;
    for (int j = 0; j < 32; ++j) {
      // Round half away from zero the way the reference does it: floor(a) + floor(2 * (a - floor(a))).
      const float v = x[j] * id, a = std::fabs(v), fl = std::floor(a);
      const float r = fl + std::floor(2.0f * (a - fl));
      const float q = v > 0 ? r : v < 0 ? -r : 0.0f;
      // NaN (from an overflowing 1/d when d is subnormal) becomes 0, as numpy's cast does on x86-64.
      out[2 + j] = std::isfinite(q) ? uint8_t(int8_t(int(q))) : 0;
    }
    const uint16_t h = f32_to_f16_bits(d);
    out[0] = uint8_t(h & 0xFF);
    out[1] = uint8_t(h >> 8);
  }
}

}  // namespace tb::gguf
