#include "tensor/state_dict.h"

#include <algorithm>
#include <functional>

namespace tb {

namespace {
uint64_t name_hash(std::string_view name) { return std::hash<std::string_view>{}(name); }
}  // namespace

size_t StateDict::slot_of(std::string_view name, uint64_t h) const {
  if (slots_.empty()) return kNone;
  const size_t mask = slots_.size() - 1;
  for (size_t s = h & mask;; s = (s + 1) & mask) {
    const uint32_t v = slots_[s];
    if (v == 0) return kNone;
    if (hashes_[v - 1] == h && entries_[v - 1].first == name) return s;
  }
}

void StateDict::add_slot(size_t i) {
  if (hashes_.size() * 2 > slots_.size()) return rehash(hashes_.size());  // places every entry, i too
  const size_t mask = slots_.size() - 1;
  size_t s = hashes_[i] & mask;
  while (slots_[s] != 0) s = (s + 1) & mask;
  slots_[s] = uint32_t(i + 1);
}

void StateDict::remove_slot(size_t s) {
  const size_t mask = slots_.size() - 1;
  size_t hole = s;
  for (size_t j = (s + 1) & mask; slots_[j] != 0; j = (j + 1) & mask) {
    // An entry moves into the hole unless its home slot lies cyclically in (hole, j].
    const size_t home = hashes_[slots_[j] - 1] & mask;
    const bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
    if (!stays) {
      slots_[hole] = slots_[j];
      hole = j;
    }
  }
  slots_[hole] = 0;
}

void StateDict::rehash(size_t n) {
  TB_CHECK(n < (size_t(1) << 31), KeyError, "a state dict of ", n, " tensors is more than it can index");
  size_t size = 16;
  while (size < n * 2) size *= 2;
  if (size <= slots_.size()) return;
  slots_.assign(size, 0);
  const size_t mask = size - 1;
  for (size_t i = 0; i < hashes_.size(); ++i) {
    size_t s = hashes_[i] & mask;
    while (slots_[s] != 0) s = (s + 1) & mask;
    slots_[s] = uint32_t(i + 1);
  }
}

void StateDict::reserve(size_t n) {
  entries_.reserve(n);
  hashes_.reserve(n);
  rehash(n);
}

void StateDict::insert(std::string name, Tensor tensor) {
  TB_ASSERT(tensor.defined(), "inserting an undefined tensor as '", name, "'");
  const uint64_t h = name_hash(name);
  TB_CHECK(slot_of(name, h) == kNone, KeyError, "duplicate tensor name '", name, "'");
  hashes_.push_back(h);
  add_slot(entries_.size());
  entries_.emplace_back(std::move(name), std::move(tensor));
}

void StateDict::set(const std::string& name, Tensor tensor) {
  const size_t s = slot_of(name, name_hash(name));
  if (s == kNone) {
    insert(name, std::move(tensor));
  } else {
    entries_[slots_[s] - 1].second = std::move(tensor);
  }
}

const Tensor* StateDict::find(const std::string& name) const {
  const size_t s = slot_of(name, name_hash(name));
  return s == kNone ? nullptr : &entries_[slots_[s] - 1].second;
}

const Tensor& StateDict::at(const std::string& name) const {
  if (const Tensor* t = find(name)) return *t;
  std::string msg = str("no tensor named '", name, "'");
  // Suggest keys sharing the last component, the usual cause being a prefix difference.
  auto last = name.substr(name.rfind('.') == std::string::npos ? 0 : name.rfind('.') + 1);
  std::string close;
  for (const auto& [k, t] : entries_) {
    if (k.size() >= last.size() && k.compare(k.size() - last.size(), last.size(), last) == 0) {
      close += close.empty() ? "" : ", ";
      close += "'" + k + "'";
      if (close.size() > 200) break;
    }
  }
  if (!close.empty()) msg += "; similar keys: " + close;
  throw KeyError(msg);
}

Tensor& StateDict::at(const std::string& name) {
  return const_cast<Tensor&>(static_cast<const StateDict&>(*this).at(name));
}

bool StateDict::erase(const std::string& name) {
  const size_t s = slot_of(name, name_hash(name));
  if (s == kNone) return false;
  const size_t i = slots_[s] - 1;
  entries_.erase(entries_.begin() + long(i));
  hashes_.erase(hashes_.begin() + long(i));
  const size_t size = slots_.size();
  slots_.clear();  // entry numbers after i moved down: index them again
  rehash(std::max<size_t>(entries_.size(), size / 2));
  return true;
}

void StateDict::rename(const std::string& from, const std::string& to) {
  if (from == to) return;
  const size_t s = slot_of(from, name_hash(from));
  TB_CHECK(s != kNone, KeyError, "cannot rename '", from, "': no such tensor");
  TB_CHECK(!contains(to), KeyError, "cannot rename '", from, "' to '", to, "': name already used");
  const size_t i = slots_[s] - 1;
  remove_slot(s);
  entries_[i].first = to;
  hashes_[i] = name_hash(to);
  add_slot(i);
}

std::vector<std::string> StateDict::keys() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& e : entries_) out.push_back(e.first);
  return out;
}

size_t StateDict::total_bytes() const {
  size_t n = 0;
  for (const auto& e : entries_) n += e.second.nbytes();
  return n;
}

}  // namespace tb
