// Converting a sharded checkpoint shard by shard (convert --keep-shards, --jobs N, --shards i/n).
//
// The input's split is kept: output shard k of N holds the tensors of input shard k of N (input shards
// sorted by file name, see list_shards), after the conversion's key operations and cast, written as
// "<stem>-0000{k+1}-of-0000N.safetensors" (shard_target: a folder gives stem "model"). Slice i of n
// (0 <= i < n) converts the input shards k with k % n == i; a slice may get none when n > N.
// The index "<stem>.safetensors.index.json" is built from the output shards' own headers and written
// (replacing any earlier one) by every slice that, after writing its shards, finds all N output shards
// in the folder. The last slice to finish always finds them, so once all n slices have run the folder
// holds the same bytes as one whole `convert --keep-shards` (which is the same code with one slice).
// Every file is written atomically; the index is the commit point readers see.
#pragma once

#include <functional>
#include <vector>

#include "formats/sharded.h"

namespace tb {

/** Parses "i/n" (0 <= i < n) into {i, n}; throws UnsupportedError naming the accepted form. */
std::pair<size_t, size_t> parse_slice(const std::string& text);
/** The input shards slice i of n converts: k in [0, count) with k % n == i. */
std::vector<size_t> shards_of_slice(size_t count, size_t i, size_t n);

/** Writes output shard k of count (safetensors, atomic; refuses an existing file unless overwrite). */
void write_output_shard(const ShardTarget& target, size_t k, size_t count, const StateDict& sd,
                        const Metadata& metadata, bool overwrite);
/** Refuses (IoError) a target whose single-file output (model.safetensors) exists unless overwrite: readers
 *  prefer that file to an index, so it would hide the shards. */
void check_single_output(const ShardTarget& target, bool overwrite);
/** When all count output shards exist, (re)writes the index from their headers and returns its path;
 *  else returns an empty path. Then removes what the index replaces: shards of the stem with another
 *  count or a generation token and, with overwrite, the single-file output. Serialised against other
 *  writers of the folder by a folder lock. */
std::filesystem::path write_index_when_complete(const ShardTarget& target, size_t count, bool overwrite);

/** Runs work(k) for every k on at most `jobs` threads (the calling thread is one of them). After the
 *  first error no further k is started; it is rethrown once the running ones have ended. */
void run_on_threads(const std::vector<size_t>& ks, unsigned jobs, const std::function<void(size_t)>& work);

}  // namespace tb
