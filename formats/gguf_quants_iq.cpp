// Dequantizers of GGML's grid ("IQ") types IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S and IQ1_M:
// each group of 4 or 8 values is a point of a fixed lattice (the grids in gguf_iq_grids.inc) times a
// block scale, with separate sign bits. Arithmetic in float32 in the order of gguf/quants.py (compiled
// with -ffp-contract=off, see formats/CMakeLists.txt).
#include <cmath>
#include <cstring>
#include <vector>

#include "formats/gguf_quants.h"

namespace tb::gguf::detail {

namespace {

#include "formats/gguf_iq_grids.inc"

/** A grid unpacked to floats: rows of cols values. */
struct Grid {
  std::vector<float> values;
  int cols;
  const float* row(unsigned i) const { return values.data() + size_t(i) * size_t(cols); }
};

Grid unpack(const char* hex, const float* map, int map_size, int rows, int cols) {
  const int bits = map_size <= 2 ? 1 : map_size <= 4 ? 2 : 3;
  const int per_byte = 8 / bits, step = 8 / per_byte, mask = (1 << bits) - 1;
  auto nibble = [](char c) { return c > 0x40 ? (c + 9) & 0xF : c & 0xF; };
  Grid g{{}, cols};
  g.values.reserve(size_t(rows) * size_t(cols));
  for (size_t i = 0; hex[i] && hex[i + 1]; i += 2) {
    const int byte = nibble(hex[i]) << 4 | nibble(hex[i + 1]);
    for (int s = 0; s < 8; s += step) g.values.push_back(map[(byte >> s) & mask]);
  }
  return g;
}

const Grid& iq2xxs_grid() {
  static const Grid g = unpack(kIq2xxsHex, kIq2xxsMap, 3, kIq2xxsRows, kIq2xxsCols);
  return g;
}
const Grid& iq2xs_grid() {
  static const Grid g = unpack(kIq2xsHex, kIq2xsMap, 3, kIq2xsRows, kIq2xsCols);
  return g;
}
const Grid& iq2s_grid() {
  static const Grid g = unpack(kIq2sHex, kIq2sMap, 3, kIq2sRows, kIq2sCols);
  return g;
}
const Grid& iq3xxs_grid() {
  static const Grid g = unpack(kIq3xxsHex, kIq3xxsMap, 8, kIq3xxsRows, kIq3xxsCols);
  return g;
}
const Grid& iq3s_grid() {
  static const Grid g = unpack(kIq3sHex, kIq3sMap, 8, kIq3sRows, kIq3sCols);
  return g;
}
const Grid& iq1s_grid() {
  static const Grid g = unpack(kIq1sHex, kIq1sMap, 3, kIq1sRows, kIq1sCols);
  return g;
}

float half(const uint8_t* p) { return f16_bits_to_f32(uint16_t(p[0] | (p[1] << 8))); }
uint16_t u16(const uint8_t* p) { return uint16_t(p[0] | p[1] << 8); }
uint32_t u32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

/** Seven sign bits stored, the eighth makes the count of minus signs even. */
float sign_of(unsigned seven_bits, int j) {
  unsigned s = seven_bits & 0x7F;
  if (__builtin_popcount(s) & 1) s |= 0x80;
  return (s >> j) & 1 ? -1.0f : 1.0f;
}

// IQ2_XXS: d, then per 32 values two u32: four grid-row bytes, and 4 x 7 sign bits + a 4-bit scale.
void iq2_xxs(const uint8_t* b, float* y) {
  const float d = half(b);
  const Grid& g = iq2xxs_grid();
  for (int ib = 0; ib < 8; ++ib) {
    const uint32_t q1 = u32(b + 2 + 8 * ib + 4);
    const float db = d * (0.5f + float(q1 >> 28)) * 0.25f;
    for (int l = 0; l < 4; ++l) {
      const float* row = g.row(b[2 + 8 * ib + l]);
      for (int j = 0; j < 8; ++j) y[ib * 32 + l * 8 + j] = db * row[j] * sign_of(q1 >> (7 * l), j);
    }
  }
}

// IQ2_XS: d, 32 u16 (9-bit grid row, 7 sign bits), 16 four-bit scales.
void iq2_xs(const uint8_t* b, float* y) {
  const float d = half(b);
  const Grid& g = iq2xs_grid();
  for (int k = 0; k < 16; ++k) {
    const float db = d * (0.5f + float((b[66 + k / 2] >> (4 * (k % 2))) & 0xF)) * 0.25f;
    for (int h = 0; h < 2; ++h) {
      const uint16_t q = u16(b + 2 + 2 * (2 * k + h));
      const float* row = g.row(q & 511);
      for (int j = 0; j < 8; ++j) y[k * 16 + h * 8 + j] = db * row[j] * sign_of(q >> 9, j);
    }
  }
}

// IQ2_S: d, 32 grid-row bytes, 32 sign bytes, 8 bytes of 2-bit row highs, 16 four-bit scales.
void iq2_s(const uint8_t* b, float* y) {
  const float d = half(b);
  const Grid& g = iq2s_grid();
  const uint8_t *qs = b + 2, *signs = b + 34, *qh = b + 66, *sc = b + 74;
  for (int k = 0; k < 16; ++k) {
    const float db = d * (0.5f + float((sc[k / 2] >> (4 * (k % 2))) & 0xF)) * 0.25f;
    for (int h = 0; h < 2; ++h) {
      const int i = 2 * k + h;
      const float* row = g.row(unsigned(qs[i]) | unsigned((qh[i / 4] >> (2 * (i % 4))) & 3) << 8);
      for (int j = 0; j < 8; ++j) y[k * 16 + h * 8 + j] = db * row[j] * ((signs[i] >> j) & 1 ? -1.0f : 1.0f);
    }
  }
}

// IQ3_XXS: d, 64 grid-row bytes (4 values each), per 32 values a u32 of 4 x 7 sign bits + a scale.
void iq3_xxs(const uint8_t* b, float* y) {
  const float d = half(b);
  const Grid& g = iq3xxs_grid();
  for (int ib = 0; ib < 8; ++ib) {
    const uint32_t s = u32(b + 66 + 4 * ib);
    const float db = d * (0.5f + float(s >> 28)) * 0.5f;
    for (int l = 0; l < 4; ++l)
      for (int j = 0; j < 8; ++j) {
        const int p = ib * 32 + l * 8 + j;
        y[p] = db * g.row(b[2 + p / 4])[p % 4] * sign_of(s >> (7 * l), j);
      }
  }
}

// IQ3_S: d, 64 grid-row bytes, 8 bytes of row high bits, 32 sign bytes, 8 four-bit scales (1 + 2s).
void iq3_s(const uint8_t* b, float* y) {
  const float d = half(b);
  const Grid& g = iq3s_grid();
  const uint8_t *qs = b + 2, *qh = b + 66, *signs = b + 74, *sc = b + 106;
  for (int p = 0; p < 256; ++p) {
    const int k = p / 32, i = p / 4;
    const float db = d * float(1 + 2 * ((sc[k / 2] >> (4 * (k % 2))) & 0xF));
    const unsigned idx = unsigned(qs[i]) | unsigned((qh[i / 8] >> (i % 8)) & 1) << 8;
    y[p] = db * g.row(idx)[p % 4] * ((signs[p / 8] >> (p % 8)) & 1 ? -1.0f : 1.0f);
  }
}

// IQ1_S: d, 32 grid-row bytes, 8 u16 (4 x 3 row high bits, a 3-bit scale, the sign of the delta).
void iq1_s(const uint8_t* b, float* y) {
  const float d = half(b);
  const Grid& g = iq1s_grid();
  for (int ib = 0; ib < 8; ++ib) {
    const uint16_t qh = u16(b + 34 + 2 * ib);
    const float dl = d * float(2 * ((qh >> 12) & 7) + 1);
    const float delta = (qh & 0x8000) == 0 ? 0.125f : -0.125f;
    for (int l = 0; l < 4; ++l) {
      const float* row = g.row(unsigned(b[2 + 4 * ib + l]) | unsigned((qh >> (3 * l)) & 7) << 8);
      for (int j = 0; j < 8; ++j) y[ib * 32 + l * 8 + j] = dl * (row[j] + delta);
    }
  }
}

// IQ1_M: 32 grid-row bytes, 16 bytes of (3 row high bits, delta sign) nibbles, 4 u16 holding 3-bit
// scales in their low 12 bits and the f16 block scale spread over their top nibbles.
void iq1_m(const uint8_t* b, float* y) {
  const Grid& g = iq1s_grid();
  const uint8_t *qs = b, *qh = b + 32, *sc = b + 48;
  uint16_t s[4];
  for (int i = 0; i < 4; ++i) s[i] = u16(sc + 2 * i);
  const uint16_t dbits =
      uint16_t((s[0] & 0xF000) >> 12 | (s[1] & 0xF000) >> 8 | (s[2] & 0xF000) >> 4 | (s[3] & 0xF000));
  const float d = f16_bits_to_f32(dbits);
  for (int p = 0; p < 256; ++p) {
    const int k = p / 16, i = p / 8;  // scale index (2 per 32 values), grid row index
    const float dl = d * float(2 * ((s[k / 4] >> (3 * (k % 4))) & 7) + 1);
    const int h = (qh[i / 2] >> (4 * (i % 2))) & 0xF;
    const float delta = (h & 8) == 0 ? 0.125f : -0.125f;
    y[p] = dl * (g.row(unsigned(qs[i]) | unsigned(h & 7) << 8)[p % 8] + delta);
  }
}

}  // namespace

bool dequantize_iq(uint32_t id, const uint8_t* src, size_t n_blocks, size_t type_size, float* dst) {
  void (*f)(const uint8_t*, float*) = nullptr;
  switch (id) {
    case 16: f = iq2_xxs; break;
    case 17: f = iq2_xs; break;
    case 18: f = iq3_xxs; break;
    case 19: f = iq1_s; break;
    case 21: f = iq3_s; break;
    case 22: f = iq2_s; break;
    case 29: f = iq1_m; break;
    default: return false;
  }
  for (size_t i = 0; i < n_blocks; ++i) f(src + i * type_size, dst + i * 256);
  return true;
}

}  // namespace tb::gguf::detail
