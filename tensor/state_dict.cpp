#include "tensor/state_dict.h"

namespace tb {

void StateDict::insert(std::string name, Tensor tensor) {
  TB_ASSERT(tensor.defined(), "inserting an undefined tensor as '", name, "'");
  auto [it, added] = index_.try_emplace(name, entries_.size());
  TB_CHECK(added, KeyError, "duplicate tensor name '", name, "'");
  entries_.emplace_back(std::move(name), std::move(tensor));
}

void StateDict::set(const std::string& name, Tensor tensor) {
  auto it = index_.find(name);
  if (it == index_.end()) {
    insert(name, std::move(tensor));
  } else {
    entries_[it->second].second = std::move(tensor);
  }
}

const Tensor* StateDict::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second].second;
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
  auto it = index_.find(name);
  if (it == index_.end()) return false;
  entries_.erase(entries_.begin() + long(it->second));
  index_.clear();
  for (size_t i = 0; i < entries_.size(); ++i) index_.emplace(entries_[i].first, i);
  return true;
}

void StateDict::rename(const std::string& from, const std::string& to) {
  if (from == to) return;
  auto it = index_.find(from);
  TB_CHECK(it != index_.end(), KeyError, "cannot rename '", from, "': no such tensor");
  TB_CHECK(!contains(to), KeyError, "cannot rename '", from, "' to '", to, "': name already used");
  size_t i = it->second;
  index_.erase(it);
  entries_[i].first = to;
  index_.emplace(to, i);
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
