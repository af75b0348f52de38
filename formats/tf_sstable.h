// The LevelDB table ("SSTable") that a TensorFlow checkpoint's .index file is, and CRC-32C.
//
// Layout (all integers little-endian; varints as in protobuf):
//   data blocks | metaindex block | index block | footer (48 bytes)
//   footer  = metaindex BlockHandle, index BlockHandle (varint offset, varint size each), zero padding to
//             40 bytes, then the magic 0xdb4775248b80fb57 as fixed64
//   block   = entries, restart offsets (fixed32 each), restart count (fixed32); each entry is
//             varint shared, varint non_shared, varint value_size, key bytes after the shared prefix of
//             the previous key, value bytes; an entry at a restart offset shares nothing
//   trailer = after each block: compression byte (0 none, 1 snappy) and the masked CRC-32C of the block
//             and that byte
// The index block maps a key >= every key of a data block to that block's handle. Keys are sorted
// bytewise and unique. TensorFlow writes uncompressed blocks; snappy blocks are refused.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "formats/format.h"
#include "tensor/io.h"
#include "tensor/limits.h"

namespace tb {

/** CRC-32C (Castagnoli) of n bytes, continuing crc (0 to start). */
uint32_t crc32c_extend(uint32_t crc, const void* data, size_t n);
/** The masked form TensorFlow stores: ((crc >> 15) | (crc << 17)) + 0xa282ead8. */
uint32_t crc32c_mask(uint32_t crc);

/** One record of a table. */
struct SSTableEntry {
  std::string key, value;
};

/** True when the file ends with a table footer (the magic number): the cheap sniff. Never throws. */
bool has_sstable_footer(const Reader& r);

/** Every record of the table in r, in key order; block CRCs are checked. Throws FormatError naming the
 *  file (and the block) for anything malformed; records and bytes are charged to budget. */
std::vector<SSTableEntry> read_sstable(const Reader& r, LoadBudget& budget);

/** A table holding entries (sorted by key, unique): uncompressed blocks with CRCs, a restart at every
 *  entry, one data block per ~256 KiB. */
std::string write_sstable(const std::vector<SSTableEntry>& entries);

/** Where a TensorFlow bundle is: the folder whose files it reads, and the .index path inside it. */
struct TfBundleLocation {
  std::filesystem::path folder;  // the data shards are opened inside this folder only
  std::string index;             // relative to folder: "ckpt-1.index", "variables/variables.index"
  bool index_is_named = false;   // the user named the .index (or its prefix): it may be a symlink
  /** A folder holding several *.index and no `checkpoint` file to choose: their names (index empty). */
  std::vector<std::string> ambiguous;
};

/** The bundle a source designates: x.index (a file ending in a table footer, or beside x.data-00000-of-*),
 *  one of its data shards x.data-00000-of-00001 (when x.index is beside it; x may be empty, as in a
 *  bundle TF1's Saver wrote under the prefix "folder/": folder/.index),
 *  a prefix x whose x.index exists, or a folder with a `checkpoint` file (read inside the folder, never
 *  through a link), a single *.index or a SavedModel variables/ folder. Empty index when the source is
 *  none of these (ambiguous set when a folder holds several). Never throws. */
TfBundleLocation find_tf_bundle(const Source& src);

}  // namespace tb
