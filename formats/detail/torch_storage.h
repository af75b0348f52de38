// Torch storages as pickles reference them: the persistent id tuple and, for zip archives
// (torch.save, torch.jit.save), the records that hold the bytes. Shared by formats/pt.cpp and
// formats/torchscript.cpp.
//
// A persistent id is ('storage', torch.<T>Storage, key, location, numel[, view_metadata]); the
// storage's bytes are the record `<dir><key>` (numel * element size bytes; `<folder>/data/` for
// torch.save and TorchScript attributes, `<folder>/constants/` for TorchScript constants).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "formats/detail/zip.h"
#include "formats/format.h"
#include "tensor/limits.h"
#include "tensor/value.h"

namespace tb::torch_storage {

/** A parsed persistent id. */
struct Pid {
  std::string key;
  DType dtype;
  int64_t numel;
  std::string location;
  Value view_meta;  // None unless a legacy storage view (view_key, offset, size)
};

/** Parses a persistent id; FormatError / UnsupportedError (quantized storages) prefixed by where. */
Pid parse_pid(const Value& pid, const std::string& where);

/** The storages of one record folder of a zip archive, each read once and shared by every tensor
 *  that views it (stored records of a memory-mapped file are zero-copy). */
class ZipStorages {
 public:
  /** dir: record prefix ("mlp/data/"); big: byte-swap (byteorder record "big"). The budget is charged
   *  for the bytes copied; where prefixes messages ("[pt] 'file'"). */
  ZipStorages(const zip::ZipReader& z, std::string dir, bool big, const LoadOptions& opts, LoadBudget& budget,
              std::string where);
  /** For pickle::Options::persistent_load: a 1-d tensor over the whole storage. */
  Value load(const Value& pid);
  /** Storages loaded so far, and their bytes (for the size summary in Checkpoint::info). */
  size_t count() const { return count_; }
  uint64_t bytes() const { return bytes_; }

 private:
  const zip::ZipReader& z_;
  std::string dir_;
  bool big_;
  bool mmap_;
  LoadBudget& budget_;
  std::string where_;
  /** The record of storage key (dir_ + key), or nullptr. */
  const zip::Entry* record_of(const std::string& key);
  std::vector<Value> by_entry_;      // by index in z_.entries(); None until loaded
  std::vector<uint32_t> by_number_;  // by the number of a record named dir_ + decimal: 1 + its index
  bool numbered_ = false;            // by_number_ is built
  size_t count_ = 0;
  std::string record_;  // scratch: the record name being looked up
  uint64_t bytes_ = 0;
};

/** True for the name torch.save and torch.jit.save give the pickle of an archive: `<folder>/data.pkl`. */
inline bool is_archive_pickle(std::string_view name) {
  size_t slash = name.find('/');
  return slash != std::string_view::npos && slash > 0 && name.substr(slash) == "/data.pkl";
}

}  // namespace tb::torch_storage
