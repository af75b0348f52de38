// Data types: one X-macro table is the single source of truth for names, sizes and every
// format's spelling. Enum values are fixed and never reused (they may be serialized).
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tb {

// X(Enum, id, size, name, torch_storage, torch_dtype, npy_descr, safetensors, onnx, kind)
//   name        the canonical name used by the CLI and JSON ("float32")
//   torch_storage legacy typed storage class ("" = needs UntypedStorage + _rebuild_tensor_v3)
//   torch_dtype attribute of the torch module naming the dtype ("float32")
//   npy_descr   little-endian numpy descr ("" = numpy has no such dtype)
//   safetensors dtype token ("" = none)
//   onnx        TensorProto.DataType value (0 = none)
//   kind        'b' bool, 'u' unsigned, 'i' signed, 'f' float, 'c' complex
#define TB_DTYPES(X)                                                                       \
  X(Bool, 0, 1, "bool", "BoolStorage", "bool", "|b1", "BOOL", 9, 'b')                      \
  X(U8, 1, 1, "uint8", "ByteStorage", "uint8", "|u1", "U8", 2, 'u')                        \
  X(I8, 2, 1, "int8", "CharStorage", "int8", "|i1", "I8", 3, 'i')                          \
  X(I16, 3, 2, "int16", "ShortStorage", "int16", "<i2", "I16", 5, 'i')                     \
  X(I32, 4, 4, "int32", "IntStorage", "int32", "<i4", "I32", 6, 'i')                       \
  X(I64, 5, 8, "int64", "LongStorage", "int64", "<i8", "I64", 7, 'i')                      \
  X(U16, 6, 2, "uint16", "", "uint16", "<u2", "U16", 4, 'u')                               \
  X(U32, 7, 4, "uint32", "", "uint32", "<u4", "U32", 12, 'u')                              \
  X(U64, 8, 8, "uint64", "", "uint64", "<u8", "U64", 13, 'u')                              \
  X(F16, 9, 2, "float16", "HalfStorage", "float16", "<f2", "F16", 10, 'f')                 \
  X(BF16, 10, 2, "bfloat16", "BFloat16Storage", "bfloat16", "", "BF16", 16, 'f')           \
  X(F32, 11, 4, "float32", "FloatStorage", "float32", "<f4", "F32", 1, 'f')                \
  X(F64, 12, 8, "float64", "DoubleStorage", "float64", "<f8", "F64", 11, 'f')              \
  X(C64, 13, 8, "complex64", "ComplexFloatStorage", "complex64", "<c8", "C64", 14, 'c')    \
  X(C128, 14, 16, "complex128", "ComplexDoubleStorage", "complex128", "<c16", "", 15, 'c') \
  X(F8E4M3FN, 15, 1, "float8_e4m3fn", "", "float8_e4m3fn", "", "F8_E4M3", 17, 'f')         \
  X(F8E5M2, 16, 1, "float8_e5m2", "", "float8_e5m2", "", "F8_E5M2", 19, 'f')

/** Element types; the values are the ids of TB_DTYPES (stable, may be serialized). */
enum class DType : uint8_t {
#define TB_X(E, id, ...) E = id,
  TB_DTYPES(TB_X)
#undef TB_X
};

/** One row of TB_DTYPES, fields as described above it. */
struct DTypeInfo {
  DType dtype;
  size_t size;
  std::string_view name;
  std::string_view torch_storage;
  std::string_view torch_dtype;
  std::string_view npy_descr;
  std::string_view safetensors;
  int onnx;
  char kind;
};

/** Every dtype, in enum order. */
const std::vector<DTypeInfo>& all_dtypes();
/** The table row of t (asserts that t is a valid enum value). */
const DTypeInfo& info(DType t);
/** Bytes per element (complex128: 16). */
inline size_t dtype_size(DType t) { return info(t).size; }
/** Canonical name ("float32", "bfloat16"). */
inline std::string_view dtype_name(DType t) { return info(t).name; }
/** F16, BF16, F32, F64 and the float8 types (not complex). */
inline bool is_floating(DType t) { return info(t).kind == 'f'; }
/** C64 and C128. */
inline bool is_complex(DType t) { return info(t).kind == 'c'; }

/** Lookups return nullopt when the spelling is unknown; callers report the error with context. */
std::optional<DType> dtype_from_name(std::string_view name);          // "float32", also "f32", "fp16", "half"...
std::optional<DType> dtype_from_torch_storage(std::string_view cls);  // "FloatStorage"
std::optional<DType> dtype_from_torch_dtype(std::string_view attr);   // "float32", "float", "half", "long"...
std::optional<DType> dtype_from_safetensors(std::string_view token);  // "F32"
std::optional<DType> dtype_from_onnx(int onnx_type);                  // 1 -> F32

/** True on a little-endian host (every format's bytes are little-endian; big-endian hosts swap or refuse). */
constexpr bool host_little_endian() { return std::endian::native == std::endian::little; }

/** Parsed numpy descr: dtype plus whether the data is big-endian. */
struct NpyDescr {
  DType dtype;
  bool big_endian;
};
/** Accepts '<', '>', '|', '=' byte orders and numpy kind letters b,i,u,f,c (e.g. ">f8", "|b1"). */
std::optional<NpyDescr> dtype_from_npy_descr(std::string_view descr);
/** Little-endian descr for a dtype; empty when numpy has none (bf16, f8). */
std::string_view npy_descr(DType t);

// ---- bit-exact scalar conversions (round to nearest even; NaN, Inf and subnormals kept) ----
/** float32 to IEEE half bits; overflow gives Inf, NaN keeps its top payload bits. */
uint16_t f32_to_f16_bits(float f);
/** IEEE half bits to float32 (exact). */
float f16_bits_to_f32(uint16_t h);
/** float32 to bfloat16 bits; NaN becomes the canonical quiet NaN 0x7fc0, as torch does. */
uint16_t f32_to_bf16_bits(float f);
/** bfloat16 bits to float32 (exact). */
float bf16_bits_to_f32(uint16_t b);
uint8_t f32_to_f8e4m3fn_bits(float f);  // saturates nothing: out of range -> NaN (no Inf in e4m3fn)
/** float8_e4m3fn bits to float32 (exact). */
float f8e4m3fn_bits_to_f32(uint8_t b);
/** float32 to float8_e5m2 bits; out of range gives Inf. */
uint8_t f32_to_f8e5m2_bits(float f);
/** float8_e5m2 bits to float32 (exact). */
float f8e5m2_bits_to_f32(uint8_t b);

/** Converts n contiguous elements from src (dtype from) to dst (dtype to), numpy astype rules:
 *  float -> int truncates toward zero; to bool is (x != 0); complex -> real drops the imaginary part. */
void cast_elements(const void* src, DType from, void* dst, DType to, size_t n);

/** Swaps the byte order of n elements in place (complex types swap each half). */
void byteswap_elements(void* data, DType t, size_t n);

}  // namespace tb
