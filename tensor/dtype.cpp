#include "tensor/dtype.h"

#include <cmath>
#include <complex>
#include <cstring>
#include <limits>
#include <type_traits>

#include "tensor/error.h"

namespace tb {

const std::vector<DTypeInfo>& all_dtypes() {
  static const std::vector<DTypeInfo> table = {
#define TB_X(E, id, size, name, storage, tdtype, npy, st, onnx, kind) \
  {DType::E, size, name, storage, tdtype, npy, st, onnx, kind},
      TB_DTYPES(TB_X)
#undef TB_X
  };
  return table;
}

const DTypeInfo& info(DType t) {
  const auto& table = all_dtypes();
  auto i = static_cast<size_t>(t);
  TB_ASSERT(i < table.size() && table[i].dtype == t, "bad dtype ", int(i));
  return table[i];
}

namespace {
template <class Pred>
std::optional<DType> find_dtype(Pred pred) {
  for (const auto& d : all_dtypes())
    if (pred(d)) return d.dtype;
  return std::nullopt;
}
}  // namespace

std::optional<DType> dtype_from_name(std::string_view name) {
  if (auto d = find_dtype([&](const DTypeInfo& i) { return i.name == name; })) return d;
  struct Alias {
    std::string_view alias;
    DType dtype;
  };
  static const Alias aliases[] = {
      {"f32", DType::F32},
      {"fp32", DType::F32},
      {"float", DType::F32},
      {"f16", DType::F16},
      {"fp16", DType::F16},
      {"half", DType::F16},
      {"bf16", DType::BF16},
      {"f64", DType::F64},
      {"fp64", DType::F64},
      {"double", DType::F64},
      {"i8", DType::I8},
      {"i16", DType::I16},
      {"i32", DType::I32},
      {"i64", DType::I64},
      {"u8", DType::U8},
      {"u16", DType::U16},
      {"u32", DType::U32},
      {"u64", DType::U64},
      {"c64", DType::C64},
      {"c128", DType::C128},
      {"int", DType::I32},
      {"long", DType::I64},
      {"f8_e4m3fn", DType::F8E4M3FN},
      {"f8_e5m2", DType::F8E5M2},
  };
  for (const auto& a : aliases)
    if (a.alias == name) return a.dtype;
  return std::nullopt;
}

std::optional<DType> dtype_from_torch_storage(std::string_view cls) {
  if (cls.empty()) return std::nullopt;
  return find_dtype([&](const DTypeInfo& i) { return !i.torch_storage.empty() && i.torch_storage == cls; });
}

std::optional<DType> dtype_from_torch_dtype(std::string_view attr) {
  if (auto d = find_dtype([&](const DTypeInfo& i) { return i.torch_dtype == attr; })) return d;
  // torch's legacy aliases: torch.float, torch.half, torch.long, ...
  struct Alias {
    std::string_view alias;
    DType dtype;
  };
  static const Alias aliases[] = {{"float", DType::F32},  {"double", DType::F64},  {"half", DType::F16},
                                  {"long", DType::I64},   {"int", DType::I32},     {"short", DType::I16},
                                  {"cfloat", DType::C64}, {"cdouble", DType::C128}};
  for (const auto& a : aliases)
    if (a.alias == attr) return a.dtype;
  return std::nullopt;
}

std::optional<DType> dtype_from_safetensors(std::string_view token) {
  if (token.empty()) return std::nullopt;
  return find_dtype([&](const DTypeInfo& i) { return i.safetensors == token; });
}

std::optional<DType> dtype_from_onnx(int onnx_type) {
  if (onnx_type == 0) return std::nullopt;
  return find_dtype([&](const DTypeInfo& i) { return i.onnx == onnx_type; });
}

std::optional<NpyDescr> dtype_from_npy_descr(std::string_view descr) {
  if (descr.size() < 2) return std::nullopt;
  char order = descr[0];
  bool big = false;
  if (order == '>' || order == '!') {
    big = true;
  } else if (order != '<' && order != '|' && order != '=') {
    return std::nullopt;
  }
  std::string_view rest = descr.substr(1);
  char kind = rest[0];
  size_t size = 0;
  for (char c : rest.substr(1)) {
    if (c < '0' || c > '9' || size > 1000) return std::nullopt;
    size = size * 10 + size_t(c - '0');
  }
  if (rest.size() < 2) return std::nullopt;
  auto d = find_dtype([&](const DTypeInfo& i) {
    if (i.npy_descr.empty() || i.size != size) return false;
    char k = i.npy_descr[1];
    return k == kind;
  });
  if (!d) return std::nullopt;
  if (size == 1) big = false;
  return NpyDescr{*d, big};
}

std::string_view npy_descr(DType t) { return info(t).npy_descr; }

// ---------------------------------------------------------------------------------------------
// Scalar conversions
// ---------------------------------------------------------------------------------------------
namespace {
inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bits_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Generic round-to-nearest-even encoder for small IEEE-like formats (used for float8).
// ebits/mbits: exponent and mantissa widths; has_inf: whether all-ones exponent means Inf/NaN
// (e5m2) or only S.1111.111 is NaN (e4m3fn, no Inf, overflow -> NaN).
uint8_t encode_minifloat(float f, int ebits, int mbits, bool has_inf) {
  const int bias = (1 << (ebits - 1)) - 1;
  const uint8_t sign = std::signbit(f) ? uint8_t(1u << (ebits + mbits)) : 0;
  const uint8_t nan =
      has_inf ? uint8_t(((1u << ebits) - 1) << mbits | (1u << (mbits - 1))) : uint8_t((1u << (ebits + mbits)) - 1);
  if (std::isnan(f)) return sign | nan;
  double a = std::fabs(double(f));
  // largest finite value
  double max_finite = has_inf ? std::ldexp(2.0 - std::ldexp(1.0, -mbits), (1 << ebits) - 2 - bias)
                              : std::ldexp(2.0 - std::ldexp(2.0, -mbits), (1 << ebits) - 1 - bias);
  const int min_exp = 1 - bias;  // exponent of the smallest normal
  int e;
  std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
  int exp = e - 1;    // a = 1.x * 2^exp
  if (a == 0.0) return sign;
  if (exp < min_exp) exp = min_exp;
  double quantum = std::ldexp(1.0, exp - mbits);
  double q = std::nearbyint(a / quantum) * quantum;  // ties to even (default rounding mode)
  if (std::isinf(a) || q > max_finite)
    return has_inf ? uint8_t(sign | (((1u << ebits) - 1) << mbits)) : uint8_t(sign | nan);
  if (q == 0.0) return sign;
  std::frexp(q, &e);
  exp = e - 1;
  uint32_t bits;
  if (exp < min_exp) {  // subnormal
    bits = uint32_t(q / std::ldexp(1.0, min_exp - mbits));
  } else {
    uint32_t mant = uint32_t((q / std::ldexp(1.0, exp) - 1.0) * double(1u << mbits));
    bits = uint32_t(exp + bias) << mbits | mant;
  }
  return uint8_t(sign | bits);
}

float decode_minifloat(uint8_t b, int ebits, int mbits, bool has_inf) {
  const int bias = (1 << (ebits - 1)) - 1;
  const bool neg = (b >> (ebits + mbits)) & 1;
  const uint32_t e = (b >> mbits) & ((1u << ebits) - 1);
  const uint32_t m = b & ((1u << mbits) - 1);
  float v;
  if (has_inf && e == (1u << ebits) - 1) {
    v = m ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  } else if (!has_inf && e == (1u << ebits) - 1 && m == (1u << mbits) - 1) {
    v = std::numeric_limits<float>::quiet_NaN();
  } else if (e == 0) {
    v = float(std::ldexp(double(m), 1 - bias - mbits));
  } else {
    v = float(std::ldexp(1.0 + double(m) / double(1u << mbits), int(e) - bias));
  }
  return neg ? -v : v;
}
}  // namespace

uint16_t f32_to_f16_bits(float f) {
  const uint32_t x = f32_bits(f);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) {  // Inf or NaN; NaN keeps its top payload bits (numpy's rule)
    if (ax == 0x7f800000u) return sign | 0x7c00u;
    uint16_t r = uint16_t(0x7c00u + ((ax & 0x7fffffu) >> 13));
    if (r == 0x7c00u) ++r;
    return sign | r;
  }
  if (ax >= 0x477ff000u) return sign | 0x7c00u;  // rounds to Inf
  if (ax >= 0x38800000u) {                       // normal half
    uint32_t h = ((ax >> 23) - 127 + 15) << 10 | ((ax & 0x7fffffu) >> 13);
    uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
    return uint16_t(sign | h);
  }
  if (ax <= 0x33000000u) return sign;  // below half the smallest subnormal (ties to even -> 0)
  const uint32_t e = ax >> 23;
  const uint32_t mant = (ax & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126 - e;
  uint32_t h = mant >> shift;
  const uint32_t rem = mant & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  if (rem > half || (rem == half && (h & 1u))) ++h;
  return uint16_t(sign | h);
}

float f16_bits_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    float v = std::ldexp(float(mant), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return bits_f32(sign | 0x7f800000u | (mant << 13));
  return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t f32_to_bf16_bits(float f) {
  const uint32_t x = f32_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fc0u;  // NaN: canonical quiet NaN, as torch does
  const uint32_t bias = 0x7fffu + ((x >> 16) & 1u);
  return uint16_t((x + bias) >> 16);
}

float bf16_bits_to_f32(uint16_t b) { return bits_f32(uint32_t(b) << 16); }

uint8_t f32_to_f8e4m3fn_bits(float f) { return encode_minifloat(f, 4, 3, false); }
float f8e4m3fn_bits_to_f32(uint8_t b) { return decode_minifloat(b, 4, 3, false); }
uint8_t f32_to_f8e5m2_bits(float f) { return encode_minifloat(f, 5, 2, true); }
float f8e5m2_bits_to_f32(uint8_t b) { return decode_minifloat(b, 5, 2, true); }

// ---------------------------------------------------------------------------------------------
// Element casts
// ---------------------------------------------------------------------------------------------
namespace {
// Storage types for the dtypes C++ lacks; each converts through float.
struct F16 {
  uint16_t bits;
};
struct BF16 {
  uint16_t bits;
};
struct F8E4 {
  uint8_t bits;
};
struct F8E5 {
  uint8_t bits;
};

template <class T>
struct is_small_float : std::false_type {};
template <>
struct is_small_float<F16> : std::true_type {};
template <>
struct is_small_float<BF16> : std::true_type {};
template <>
struct is_small_float<F8E4> : std::true_type {};
template <>
struct is_small_float<F8E5> : std::true_type {};
template <class T>
struct is_cplx : std::false_type {};
template <class T>
struct is_cplx<std::complex<T>> : std::true_type {};

inline float to_float(F16 v) { return f16_bits_to_f32(v.bits); }
inline float to_float(BF16 v) { return bf16_bits_to_f32(v.bits); }
inline float to_float(F8E4 v) { return f8e4m3fn_bits_to_f32(v.bits); }
inline float to_float(F8E5 v) { return f8e5m2_bits_to_f32(v.bits); }
template <class T>
T from_float(float f);
template <>
F16 from_float<F16>(float f) {
  return {f32_to_f16_bits(f)};
}
template <>
BF16 from_float<BF16>(float f) {
  return {f32_to_bf16_bits(f)};
}
template <>
F8E4 from_float<F8E4>(float f) {
  return {f32_to_f8e4m3fn_bits(f)};
}
template <>
F8E5 from_float<F8E5>(float f) {
  return {f32_to_f8e5m2_bits(f)};
}

// float -> integer without undefined behaviour: NaN -> 0, out of range clamps.
template <class I>
I float_to_int(double d) {
  if (std::isnan(d)) return 0;
  if (d <= double(std::numeric_limits<I>::lowest())) return std::numeric_limits<I>::lowest();
  if (d >= double(std::numeric_limits<I>::max())) return std::numeric_limits<I>::max();
  return static_cast<I>(d);
}

template <class To, class From>
To convert(const From& v) {
  if constexpr (std::is_same_v<To, From>) {
    return v;
  } else if constexpr (is_small_float<From>::value) {
    return convert<To>(to_float(v));
  } else if constexpr (is_cplx<From>::value) {
    if constexpr (is_cplx<To>::value)
      return To(typename To::value_type(v.real()), typename To::value_type(v.imag()));
    else if constexpr (std::is_same_v<To, bool>)
      return v.real() != 0 || v.imag() != 0;
    else
      return convert<To>(v.real());
  } else if constexpr (std::is_same_v<To, bool>) {
    return v != From(0);
  } else if constexpr (is_small_float<To>::value) {
    return from_float<To>(static_cast<float>(v));
  } else if constexpr (is_cplx<To>::value) {
    return To(static_cast<typename To::value_type>(v), 0);
  } else if constexpr (std::is_integral_v<To> && std::is_floating_point_v<From>) {
    return float_to_int<To>(double(v));
  } else {
    return static_cast<To>(v);
  }
}

template <class To, class From>
void cast_loop(const void* src, void* dst, size_t n) {
  const From* s = static_cast<const From*>(src);
  To* d = static_cast<To*>(dst);
  for (size_t i = 0; i < n; ++i) {
    From v;
    std::memcpy(&v, s + i, sizeof(From));
    To r = convert<To>(v);
    std::memcpy(d + i, &r, sizeof(To));
  }
}

// Calls f(type_tag<T>{}) for the C++ storage type of dtype t.
template <class T>
struct Tag {
  using type = T;
};
template <class F>
void visit_dtype(DType t, F&& f) {
  switch (t) {
    case DType::Bool: return f(Tag<bool>{});
    case DType::U8: return f(Tag<uint8_t>{});
    case DType::I8: return f(Tag<int8_t>{});
    case DType::I16: return f(Tag<int16_t>{});
    case DType::I32: return f(Tag<int32_t>{});
    case DType::I64: return f(Tag<int64_t>{});
    case DType::U16: return f(Tag<uint16_t>{});
    case DType::U32: return f(Tag<uint32_t>{});
    case DType::U64: return f(Tag<uint64_t>{});
    case DType::F16: return f(Tag<F16>{});
    case DType::BF16: return f(Tag<BF16>{});
    case DType::F32: return f(Tag<float>{});
    case DType::F64: return f(Tag<double>{});
    case DType::C64: return f(Tag<std::complex<float>>{});
    case DType::C128: return f(Tag<std::complex<double>>{});
    case DType::F8E4M3FN: return f(Tag<F8E4>{});
    case DType::F8E5M2: return f(Tag<F8E5>{});
  }
  TB_ASSERT(false, "unhandled dtype");
}
}  // namespace

void cast_elements(const void* src, DType from, void* dst, DType to, size_t n) {
  if (n == 0) return;  // empty tensors may have no buffer at all (memcpy of a null pointer is undefined)
  if (from == to) {
    std::memcpy(dst, src, n * dtype_size(from));
    return;
  }
  visit_dtype(from, [&](auto from_tag) {
    visit_dtype(to, [&](auto to_tag) {
      using From = typename decltype(from_tag)::type;
      using To = typename decltype(to_tag)::type;
      cast_loop<To, From>(src, dst, n);
    });
  });
}

void byteswap_elements(void* data, DType t, size_t n) {
  size_t width = dtype_size(t);
  if (is_complex(t)) {
    width /= 2;
    n *= 2;
  }
  if (width == 1) return;
  auto* p = static_cast<uint8_t*>(data);
  for (size_t i = 0; i < n; ++i, p += width)
    for (size_t a = 0, b = width - 1; a < b; ++a, --b) std::swap(p[a], p[b]);
}

}  // namespace tb
