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

/** Tensors by unique name in insertion order, with a hash index for O(1) lookups, plus metadata. */
class StateDict {
 public:
  /** A name and its tensor (a view sharing storage, not a copy). */
  using Entry = std::pair<std::string, Tensor>;

  /** Appends a tensor; throws KeyError if the name is already present. */
  void insert(std::string name, Tensor tensor);
  /** Makes room for n entries (no effect on the contents). */
  void reserve(size_t n);
  /** Replaces an existing entry or appends a new one. */
  void set(const std::string& name, Tensor tensor);
  /** Whether name is present. */
  bool contains(const std::string& name) const { return find(name) != nullptr; }
  /** Throws KeyError naming the key (and close matches) when absent. */
  const Tensor& at(const std::string& name) const;
  /** Mutable at(); same KeyError. */
  Tensor& at(const std::string& name);
  /** The tensor named name, or nullptr; valid until the next insert or erase. */
  const Tensor* find(const std::string& name) const;
  /** Removes name keeping the others' order; false when absent. O(size()). */
  bool erase(const std::string& name);
  /** Renames in place (position kept); KeyError when from is absent or to is already used. */
  void rename(const std::string& from, const std::string& to);

  /** Number of entries. */
  size_t size() const { return entries_.size(); }
  /** True when there are no entries. */
  bool empty() const { return entries_.empty(); }
  /** Names in insertion order (a copy). */
  std::vector<std::string> keys() const;
  /** Names and tensors in insertion order. */
  const std::vector<Entry>& entries() const { return entries_; }
  /** Iteration over entries() (for (auto& [name, t] : sd)). */
  auto begin() const { return entries_.begin(); }
  auto end() const { return entries_.end(); }

  /** Sum of nbytes() over tensors (views counted by their own bytes). */
  size_t total_bytes() const;

  /** String key/value pairs carried with the tensors (e.g. "keras.layer_names"); not validated. */
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
