// GGUF (llama.cpp / ggml) files, versions 2 and 3, little-endian:
//   "GGUF" | u32 version | u64 tensor count | u64 key-value count | key-values | tensor infos |
//   zero padding to general.alignment (default 32) | tensor data, each tensor at an aligned offset.
// A key-value is a string key, a u32 value type and the value (integers, floats, bool, string, or an
// array of one type, arrays nested). A tensor info is its name, n_dims, the dims with ne[0] the
// fastest-varying one (so the numpy/torch shape is the reversed list), the GGML type and the offset
// from the start of the data.
//
// Loading gives each key-value as metadata text (numbers in decimal, arrays as JSON) and keeps the
// typed values for a GGUF writer; plain types (F32, F16, BF16, F64, I8..I64) become tensors (zero-copy
// from the mapping); quantized ones are dequantized to float32 exactly as gguf.quants.dequantize,
// or with LoadOptions::keep_quantized kept as raw uint8 blocks described by a metadata entry
// kGgufQuantizedKey + name = "Q4_K [4096, 4096]" (type and logical shape), which the writer writes back
// as that type.
#pragma once

#include <filesystem>
#include <memory>

#include "formats/format.h"

namespace tb {

/** Metadata key prefix describing a tensor kept as raw quantized blocks: value "TYPE [shape]". */
inline constexpr const char* kGgufQuantizedKey = "tensorbridge.gguf_quantized.";

/** Reads a GGUF v2/v3 file. */
Checkpoint load_gguf(const std::shared_ptr<Reader>& reader, const LoadOptions& opts = {});

/** The GGUF writer's options (--option KEY=VALUE). */
struct GgufWriteOptions : WriteOptions {
  /** "q8_0": float tensors of 2+ dims whose last dim is a multiple of 32 are stored as Q8_0
   *  (gguf.quants.quantize), the others keep their type; empty: every tensor as given. */
  std::string quantize;
};

/** Writes GGUF v3 with typed options. */
void write_gguf(const Checkpoint& ckpt, const std::filesystem::path& path, const GgufWriteOptions& opts);
/** Writes GGUF v3; SaveOptions::options parsed as GgufWriteOptions (key "quantize"). */
void save_gguf(const Checkpoint& ckpt, const std::filesystem::path& path, const SaveOptions& opts = {});

}  // namespace tb
