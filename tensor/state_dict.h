// StateDict: an ordered name -> Tensor map with string metadata. Names are unique.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace tb {

using Metadata = std::map<std::string, std::string>;

class StateDict {
 public:
  using Entry = std::pair<std::string, Tensor>;

  /** Appends a tensor; throws KeyError if the name is already present. */
  void insert(std::string name, Tensor tensor);
  /** Makes room for n entries (no effect on the contents). */
  void reserve(size_t n);
  /** Replaces an existing entry or appends a new one. */
  void set(const std::string& name, Tensor tensor);
  bool contains(const std::string& name) const { return find(name) != nullptr; }
  /** Throws KeyError naming the key (and close matches) when absent. */
  const Tensor& at(const std::string& name) const;
  Tensor& at(const std::string& name);
  const Tensor* find(const std::string& name) const;
  bool erase(const std::string& name);
  void rename(const std::string& from, const std::string& to);

  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }
  std::vector<std::string> keys() const;
  const std::vector<Entry>& entries() const { return entries_; }
  auto begin() const { return entries_.begin(); }
  auto end() const { return entries_.end(); }

  /** Sum of nbytes() over tensors (views counted by their own bytes). */
  size_t total_bytes() const;

  Metadata metadata;

 private:
  static constexpr size_t kNone = size_t(-1);
  /** The slot holding the entry named `name` (hash h), or kNone. */
  size_t slot_of(std::string_view name, uint64_t h) const;
  /** Puts entry i (its hash already in hashes_) in a slot; grows the slots to keep at most half full. */
  void add_slot(size_t i);
  /** Empties slot s, shifting later entries of its probe run back (no tombstones). */
  void remove_slot(size_t s);
  /** Rebuilds the slots from hashes_ with room for n entries (no-op when they already have it). */
  void rehash(size_t n);

  std::vector<Entry> entries_;
  // Name index: open addressing with linear probing over entry numbers (entry + 1; 0 is empty), so a
  // name is stored once (in entries_) and an insert allocates nothing once the tables have grown.
  std::vector<uint64_t> hashes_;  // hash of entries_[i].first
  std::vector<uint32_t> slots_;   // size a power of two, or empty
};

}  // namespace tb
