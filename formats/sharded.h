// Sharded checkpoints (Hugging Face layout; FORMATS.md section 6.4).
//
//  1. Shards: model-00001-of-00003.safetensors ... (or pytorch_model-00001-of-00002.bin for torch), each an
//     ordinary file of its format, in one folder.
//  2. Index: model.safetensors.index.json / pytorch_model.bin.index.json in the same folder:
//       {"metadata": {"total_size": <bytes of tensor data>, ...}, "weight_map": {"<tensor name>": "<shard file>"}}
//     written with indent=2 and sorted keys. Shard paths are relative and must stay inside the folder.
// Reading: the index (or a folder holding exactly one index, or a single model.safetensors) becomes one
// state dict; shards are memory-mapped, so tensors are loaded lazily by the OS. Every name in weight_map
// must exist in its shard; total_size must equal the tensor bytes (tied tensors counted once or not).
// Writing: tensors in state-dict order fill shards up to the limit (a larger tensor gets a shard of its
// own); tensors sharing a storage stay in the first one's shard; a single shard is written as a plain file
// without an index, as huggingface_hub does. Atomic: shards are new files - the reference names when no
// file has them, else "<stem>-tb<8 hex>-00001-of-00004.safetensors" (a generation token) - and the index,
// renamed into place last, is the commit point; then the previous output (its shards, a single file or
// an index it replaces, shards of killed runs: names of this pattern not in the new index) is deleted.
#pragma once

#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "formats/format.h"

namespace tb {

/** --shard-size: tb::parse_byte_size ("5GB" -> 5e9, "2GiB" -> 2 * 2^30, "512M" -> 512 * 2^20). */
uint64_t parse_shard_size(const std::string& text);

/** The index file a source designates (the file itself, or the folder's single *.index.json); empty
 *  when the source is not sharded. Never throws. */
std::filesystem::path find_shard_index(const Source& src);

/** Loads all shards named by an index as one checkpoint. The index may be a symbolic link (the
 *  caller named it); the shards are opened inside its folder, never through a link (open_beneath.h). */
Checkpoint load_sharded(const std::filesystem::path& index, const LoadOptions& opts = {});
/** The same for an index found inside a folder: the index is opened inside it like the shards. */
Checkpoint load_sharded_folder(const std::filesystem::path& folder, const std::string& index_name,
                               const LoadOptions& opts = {});

class ConfinedFolder;

/** A sharded checkpoint's parts, for converting it shard by shard: shards sorted by file name
 *  (model-00001-of-00003 first), and for each the tensor names the index puts there. */
struct ShardList {
  std::string label;                             // the index file, for messages
  std::filesystem::path folder_path;             // the checkpoint folder as named
  std::shared_ptr<const ConfinedFolder> folder;  // the same, open; shards are opened inside it
  std::vector<std::string> shards;               // shard file names, sorted
  std::vector<std::set<std::string>> names;      // per shard: the tensors weight_map puts there
};
/** Reads the index of a sharded source (an *.index.json or a folder holding one) without loading any
 *  shard; throws UnsupportedError when the source is not sharded. */
ShardList list_shards(const Source& src);
/** Shard k of the list: the tensors the index puts there, in the shard file's order, with the shard's
 *  metadata; a name the index puts there but the shard lacks is a KeyError. Safe to call from several
 *  threads at once. */
Checkpoint load_listed_shard(const ShardList& list, size_t k, const LoadOptions& opts = {});

/** Where a sharded output goes: `path` as --shard-size reads it (a folder -> shards named "model-...",
 *  created when missing; "x.safetensors" -> shards "x-..." next to it). */
struct ShardTarget {
  std::filesystem::path folder;  // where the shards and the index go
  std::filesystem::path single;  // the file a one-shard output is written to
  std::string stem;              // "model": model-00001-of-00003.safetensors, model.safetensors.index.json
};
/** Resolves path as described above (creating a missing folder; IoError when it cannot). */
ShardTarget shard_target(const std::filesystem::path& path);
/** "<stem>-00002-of-00004.safetensors" for i = 1, n = 4 (the reference names). */
std::string shard_file_name(const std::string& stem, size_t i, size_t n);
/** Whether name is one shard_file_name() makes for stem (any count, with or without a generation token):
 *  the files a sharded output may own. */
bool is_shard_name(const std::string& name, const std::string& stem);
/** The index text for shards (file name, tensors) in order: {"metadata": {"total_size": bytes with tied
 *  tensors counted once}, "weight_map": {name: file}}, sorted keys, indent 2, a final newline; a name
 *  in two shards is a KeyError. */
std::string shard_index_json(const std::vector<std::pair<std::string, const StateDict*>>& shards);

/** Writes sd as safetensors shards of at most max_shard_bytes of tensor data plus the index next to
 *  `path` (a .safetensors file name whose stem prefixes the shards, or a folder -> "model"). Returns the
 *  files written (just `path` when one shard suffices). */
std::vector<std::filesystem::path> save_sharded_safetensors(const StateDict& sd, const Metadata& metadata,
                                                            const std::filesystem::path& path, uint64_t max_shard_bytes,
                                                            bool overwrite = false);

}  // namespace tb
