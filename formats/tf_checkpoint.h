// TensorFlow checkpoint bundles: `<prefix>.index` + `<prefix>.data-<shard:05d>-of-<num:05d>`, written by
// tf.train.Checkpoint / CheckpointManager, tf-keras `save_weights('ckpt')` and inside SavedModels
// (variables/variables.*).
//
//  .index  a LevelDB table (tf_sstable.h): key "" -> BundleHeaderProto (num_shards, endianness, version);
//          every other key, a tensor name -> BundleEntryProto (dtype, shape, shard_id, offset, size,
//          masked CRC-32C of the bytes, slices). Protos in formats/tf/tf_checkpoint.proto.
//  .data-* the tensors' bytes, little-endian, row-major, at offset..offset+size of shard shard_id.
//          A string tensor is varint64 lengths, the masked CRC-32C of those varints (4 bytes), then
//          the strings' bytes.
// Reading: every tensor's CRC is checked; numeric tensors (float16/32/64, bfloat16, float8, int8..64,
// uint8..64, bool, complex64/128) become tensors named by their keys as they are
// ("layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"); string tensors are kept as non-tensor
// values (bytes, or a list of bytes). Sliced (partitioned) variables, big-endian bundles and other
// dtypes (resource, variant, quantized) are refused. With LoadOptions::readable_names the
// `_CHECKPOINTABLE_OBJECT_GRAPH` decides which variables are the model's: those reachable from the
// root without passing an "optimizer" edge (Keras models track theirs) or the root's "save_counter", named
// without "/.ATTRIBUTES/VARIABLE_VALUE" and without a first component all of them share ("model/");
// optimizer slots, optimizer variables and counters stay as non-tensor values ("tf optimizer state ..."),
// so `inspect` lists them and state dicts leave them out. A bundle without an object graph (TF 1's Saver)
// is judged by key: TF 2's optimizer/ and save_counter/, TF 1's slot names ("<var>/Adam", "<var>/Adam_1",
// "<var>/Momentum", ...), beta1_power, beta2_power and global_step.
// Names: keys follow the naming rule of formats/naming.h as ONNX names do: only '%' is escaped, and the
// empty name (the header's key) is stored as "%_"; a lone unnamed tensor (np.save) becomes "arr_0".
// Writing: one shard, entries sorted by key, CRCs, and the object graph of tf_checkpoint_graph.h (for the
// keys of TensorFlow's form; save option keys=tf gives every name such a key, root=NAME nests all under one
// object), so tf.train.Checkpoint.read and tf-keras load_weights restore by object. The data shard is
// committed first and the .index, renamed into place last, is the commit point (an overwrite removes the old .index
// before replacing the data, so a crash never pairs an index with data it does not describe).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "formats/format.h"

namespace tb {

/** One entry of a bundle's index, checked for consistency (not yet against the data shards). */
struct TfBundleEntry {
  std::string key;
  bool is_string = false;  // DT_STRING; dtype is meaningless then
  DType dtype = DType::F32;
  Shape shape;
  int32_t shard = 0;
  uint64_t offset = 0, size = 0;
  uint32_t masked_crc = 0;
};

/** A parsed .index: the header's fields and the entries in key order. */
struct TfBundleIndex {
  int32_t num_shards = 0;
  int32_t producer = 0;
  std::vector<TfBundleEntry> entries;
};

/** Parses an .index (table, header, entries); throws FormatError/UnsupportedError naming the file and key. */
TfBundleIndex parse_tf_bundle_index(const Reader& index, LoadBudget& budget);

/** Loads the bundle a source designates (see tf_sstable.h find_tf_bundle). */
Checkpoint load_tf_checkpoint(const Source& src, const LoadOptions& opts = {});

/** The TF bundle writer's options (--option KEY=VALUE). */
struct TfCheckpointWriteOptions : WriteOptions {
  /** "given": each tensor under its own name; "tf": under the key TensorFlow gives its object path. */
  std::string keys = "given";
  /** One object between the graph's root and every variable ("model" for tf.train.Checkpoint(model=m)). */
  std::string root;
};

/** Writes a flat state dict as a one-shard bundle at prefix `path` (a trailing ".index" is dropped). */
void write_tf_checkpoint(const Checkpoint& ckpt, const std::filesystem::path& path,
                         const TfCheckpointWriteOptions& opts);
/** The same with SaveOptions::options parsed as TfCheckpointWriteOptions (keys "keys", "root"). */
void save_tf_checkpoint(const Checkpoint& ckpt, const std::filesystem::path& path, const SaveOptions& opts = {});

}  // namespace tb
