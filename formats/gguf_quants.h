// GGML tensor types as GGUF stores them: block sizes, names, and the block (de)quantizers. The
// arithmetic follows the reference Python package `gguf` (gguf/quants.py) step by step in float32,
// so the values are bit-for-bit those of gguf.quants.dequantize / quantize.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "tensor/dtype.h"

namespace tb::gguf {

/** One GGML tensor type: its id in GGUF tensor infos, name ("Q4_K") and block layout. */
struct GgmlType {
  uint32_t id;
  std::string_view name;
  uint32_t block_size;          // elements per block (1 for plain types)
  uint32_t type_size;           // bytes per block
  std::optional<DType> native;  // the tensor dtype of a plain type (F32, I8, ...); nullopt when quantized
  bool dequantizes;             // a block dequantizer exists here
};

/** The type with this id, or nullptr when GGML has none such. */
const GgmlType* ggml_type(uint32_t id);
/** The type with this name (case-insensitive, "q8_0"), or nullptr. */
const GgmlType* ggml_type_by_name(std::string_view name);
/** The GGML type that stores tensors of this dtype as they are, or nullptr (bool, uint8, ...). */
const GgmlType* ggml_type_for(DType t);
/** Names of the quantized types dequantize() handles, comma-separated, for messages. */
std::string_view dequantizable_names();

/** Decodes n_blocks blocks of type t (t.dequantizes) from src into n_blocks * block_size float32s. */
void dequantize(const GgmlType& t, const uint8_t* src, size_t n_blocks, float* dst);

/** Quantizes n (a multiple of 32) float32s to Q8_0 blocks (34 bytes each) as gguf.quants.quantize. */
void quantize_q8_0(const float* src, size_t n, uint8_t* dst);

namespace detail {
/** The grid (IQ*) types' dequantizers (gguf_quants_iq.cpp); false when id is not one of them. */
bool dequantize_iq(uint32_t id, const uint8_t* src, size_t n_blocks, size_t type_size, float* dst);
}  // namespace detail

}  // namespace tb::gguf
