// StateDict: an ordered name -> Tensor map with string metadata. Names are unique.
#pragma once

#include <map>
#include <string>
#include <unordered_map>
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
  void reserve(size_t n) {
    entries_.reserve(n);
    index_.reserve(n);
  }
  /** Replaces an existing entry or appends a new one. */
  void set(const std::string& name, Tensor tensor);
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
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
  std::vector<Entry> entries_;
  std::unordered_map<std::string, size_t> index_;
};

}  // namespace tb
