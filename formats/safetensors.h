// safetensors (huggingface/safetensors; FORMATS.md section 6).
//
// Layout:
//  1. u64 little-endian N: the header size (<= 100,000,000).
//  2. N bytes of UTF-8 JSON starting with '{', padded with spaces (writers since 0.3.1 pad so that 8 + N is
//     a multiple of 8; older files are unaligned):
//       {"__metadata__": {str: str, ...},                              (optional)
//        "<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [BEGIN, END]}, ...}
//  3. The byte buffer: tensor data, little-endian, C order, packed. Offsets are relative to the buffer
//     (file offset 8 + N + BEGIN), END exclusive. Sorted by offset the tensors start at 0, touch without
//     holes or overlaps, and the last END is exactly the buffer's end (no trailing bytes).
//
// Writer (byte-identical to safetensors >= 0.3.1 for the same tensors and metadata): tensors ordered by
// dtype descending in the reference enum order (U64, I64, F64, C64, F32, U32, I32, BF16, F16, U16, I16,
// F8_E4M3, F8_E5M2, I8, U8, BOOL), then by name; compact JSON with "__metadata__" first; header padded
// with spaces to a multiple of 8. Metadata gets {"format": "pt"} unless it has a "format" key or the
// option "format" says otherwise ("none" = add nothing).
// Tensors sharing storage as the same view (tied weights) are written once; each alias is recorded in
// the metadata key "tensorbridge.aliases" as a JSON object {"alias": "written name"} (a string, as
// safetensors requires), and our reader restores the aliases as shared tensors. Other readers see only
// the written names. Non-contiguous views are packed.
#pragma once

#include <filesystem>

#include "formats/format.h"

namespace tb {

/** Metadata key listing tied tensors written once: JSON object alias -> written name. */
inline constexpr const char* kSafetensorsAliasKey = "tensorbridge.aliases";

/** Loads every tensor as a zero-copy view when the file is mapped and the data aligned. Also accepts a
 *  sharded checkpoint: an *.index.json file or a folder holding one (formats/sharded.h), or a folder with
 *  a single model.safetensors. */
Checkpoint load_safetensors(const Source& src, const LoadOptions& opts = {});
/** Validates and parses a safetensors file from any Reader (tests, zip members). */
Checkpoint load_safetensors(const std::shared_ptr<Reader>& reader, const LoadOptions& opts = {});

/** The file bytes the reference writer produces, streamed to a Writer. */
void write_safetensors(Writer& w, const StateDict& sd, const Metadata& metadata);
/** One safetensors file at path, atomically (refuses an existing one unless overwrite). */
void write_safetensors_atomically(const StateDict& sd, const Metadata& metadata, const std::filesystem::path& path,
                                  bool overwrite);
/** The __metadata__ the writer stores: metadata plus {"format": format_entry} unless it has a "format"
 *  key or format_entry is "none". */
Metadata safetensors_metadata(Metadata metadata, const std::string& format_entry);
/** The safetensors writer's options (--option KEY=VALUE). */
struct SafetensorsWriteOptions : WriteOptions {
  /** The __metadata__ "format" entry (unless the metadata has one); "none" adds nothing. */
  std::string format = "pt";
  /** > 0: shards model-00001-of-0000N.safetensors of at most this many bytes of tensor data plus
   *  model.safetensors.index.json next to path (path may be a folder), see formats/sharded.h. */
  uint64_t shard_size = 0;
};
/** Saves the flattened state dict with typed options. */
void write_safetensors_file(const Checkpoint& ckpt, const std::filesystem::path& path,
                            const SafetensorsWriteOptions& opts);
/** The same with SaveOptions::options parsed as SafetensorsWriteOptions (keys "format", "shard_size"). */
void save_safetensors(const Checkpoint& ckpt, const std::filesystem::path& path, const SaveOptions& opts = {});

}  // namespace tb
