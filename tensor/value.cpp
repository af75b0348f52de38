#include "tensor/value.h"

#include <cmath>
#include <map>
#include <sstream>

namespace tb {

Value Value::boolean(bool b) {
  Value v;
  v.kind_ = Kind::Bool;
  v.v_ = b;
  return v;
}
Value Value::integer(int64_t i) {
  Value v;
  v.kind_ = Kind::Int;
  v.v_ = i;
  return v;
}
Value Value::real(double d) {
  Value v;
  v.kind_ = Kind::Float;
  v.v_ = d;
  return v;
}
Value Value::complex(std::complex<double> c) {
  Value v;
  v.kind_ = Kind::Complex;
  v.v_ = c;
  return v;
}
Value Value::string(std::string s) {
  Value v;
  v.kind_ = Kind::Str;
  v.v_ = std::make_shared<std::string>(std::move(s));
  return v;
}
Value Value::bytes(std::string b) {
  Value v;
  v.kind_ = Kind::Bytes;
  v.v_ = std::make_shared<std::string>(std::move(b));
  return v;
}
Value Value::seq(Kind k, ValueList items) {
  Value v;
  v.kind_ = k;
  v.v_ = std::make_shared<ValueList>(std::move(items));
  return v;
}
Value Value::list(ValueList items) { return seq(Kind::List, std::move(items)); }
Value Value::tuple(ValueList items) { return seq(Kind::Tuple, std::move(items)); }
Value Value::set(ValueList items) { return seq(Kind::Set, std::move(items)); }
Value Value::dict(std::string cls) {
  Value v;
  v.kind_ = Kind::Dict;
  auto d = std::make_shared<ValueDict>();
  d->cls = std::move(cls);
  v.v_ = d;
  return v;
}
Value Value::tensor(Tensor t) {
  Value v;
  v.kind_ = Kind::Tensor;
  v.v_ = std::make_shared<Tensor>(std::move(t));
  return v;
}
Value Value::object(std::string cls, Value args, Value state) {
  Value v;
  v.kind_ = Kind::Object;
  auto o = std::make_shared<ValueObject>();
  o->cls = std::move(cls);
  o->args = std::make_shared<Value>(std::move(args));
  o->state = std::make_shared<Value>(std::move(state));
  o->items = std::make_shared<Value>();
  v.v_ = o;
  return v;
}

Value Value::from_state_dict(const StateDict& sd) {
  Value d = dict();
  for (const auto& [k, t] : sd) d.set_item(string(k), tensor(t));
  return d;
}

const char* Value::kind_name() const {
  switch (kind_) {
    case Kind::None: return "None";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::Complex: return "complex";
    case Kind::Str: return "str";
    case Kind::Bytes: return "bytes";
    case Kind::List: return "list";
    case Kind::Tuple: return "tuple";
    case Kind::Set: return "set";
    case Kind::Dict: return "dict";
    case Kind::Tensor: return "tensor";
    case Kind::Object: return "object";
  }
  return "?";
}

#define TB_EXPECT_KIND(cond, what) \
  TB_CHECK(cond, FormatError, "expected ", what, " but found ", kind_name(), " ", repr(40))

bool Value::as_bool() const {
  if (kind_ == Kind::Int) return std::get<int64_t>(v_) != 0;
  TB_EXPECT_KIND(kind_ == Kind::Bool, "bool");
  return std::get<bool>(v_);
}
int64_t Value::as_int() const {
  if (kind_ == Kind::Bool) return std::get<bool>(v_);
  TB_EXPECT_KIND(kind_ == Kind::Int, "int");
  return std::get<int64_t>(v_);
}
double Value::as_float() const {
  if (kind_ == Kind::Int) return double(std::get<int64_t>(v_));
  TB_EXPECT_KIND(kind_ == Kind::Float, "float");
  return std::get<double>(v_);
}
std::complex<double> Value::as_complex() const {
  if (kind_ != Kind::Complex) return {as_float(), 0.0};
  return std::get<std::complex<double>>(v_);
}
const std::string& Value::as_str() const {
  TB_EXPECT_KIND(kind_ == Kind::Str || kind_ == Kind::Bytes, "str");
  return *std::get<std::shared_ptr<std::string>>(v_);
}
ValueList& Value::items() const {
  TB_EXPECT_KIND(kind_ == Kind::List || kind_ == Kind::Tuple || kind_ == Kind::Set, "list or tuple");
  return *std::get<std::shared_ptr<ValueList>>(v_);
}
ValueDict& Value::dict_data() const {
  TB_EXPECT_KIND(kind_ == Kind::Dict, "dict");
  return *std::get<std::shared_ptr<ValueDict>>(v_);
}
const Tensor& Value::as_tensor() const {
  TB_EXPECT_KIND(kind_ == Kind::Tensor, "tensor");
  return *std::get<std::shared_ptr<Tensor>>(v_);
}
ValueObject& Value::as_object() const {
  TB_EXPECT_KIND(kind_ == Kind::Object, "object");
  return *std::get<std::shared_ptr<ValueObject>>(v_);
}

const Value* Value::get(std::string_view key) const {
  if (kind_ != Kind::Dict) return nullptr;
  for (const auto& [k, v] : dict_data().items)
    if (k.kind_ == Kind::Str && k.as_str() == key) return &v;
  return nullptr;
}

void Value::set_item(Value key, Value value) const {
  ValueDict& d = dict_data();
  auto& items = d.items;
  // Python semantics: assigning an existing key replaces its value in place. String keys of large
  // dicts (a header of 80,000 tensors) are found through the index instead of a scan.
  constexpr size_t kIndexFrom = 32;
  if (key.kind_ == Kind::Str && items.size() >= kIndexFrom) {
    const std::string& k = key.as_str();
    auto valid = [&](size_t i) {
      return i < items.size() && items[i].first.kind_ == Kind::Str && items[i].first.as_str() == k;
    };
    if (d.indexed != items.size()) {
      d.str_pos.clear();
      for (size_t i = 0; i < items.size(); ++i)
        if (items[i].first.kind_ == Kind::Str) d.str_pos.emplace(items[i].first.as_str(), i);  // first one wins
      d.indexed = items.size();
    }
    auto it = d.str_pos.find(k);
    if (it != d.str_pos.end() && valid(it->second)) {
      items[it->second].second = std::move(value);
      return;
    }
    if (it == d.str_pos.end()) {
      d.str_pos.emplace(k, items.size());
      items.emplace_back(std::move(key), std::move(value));
      d.indexed = items.size();
      return;
    }
    d.indexed = 0;  // a stale entry (keys changed elsewhere): fall back to the scan, rebuild next time
  }
  if (key.kind_ == Kind::Str || key.kind_ == Kind::Int) {
    for (auto& kv : items) {
      if (kv.first.kind_ != key.kind_) continue;
      bool same = key.kind_ == Kind::Str ? kv.first.as_str() == key.as_str() : kv.first.as_int() == key.as_int();
      if (same) {
        kv.second = std::move(value);
        return;
      }
    }
  }
  items.emplace_back(std::move(key), std::move(value));
}

const void* Value::identity() const {
  return std::visit(
      [](const auto& x) -> const void* {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::shared_ptr<std::string>> ||
                      std::is_same_v<T, std::shared_ptr<ValueList>> || std::is_same_v<T, std::shared_ptr<ValueDict>> ||
                      std::is_same_v<T, std::shared_ptr<Tensor>> || std::is_same_v<T, std::shared_ptr<ValueObject>>)
          return x.get();
        else
          return nullptr;
      },
      v_);
}

std::string Value::repr(size_t max_len) const {
  std::ostringstream os;
  switch (kind_) {
    case Kind::None: os << "None"; break;
    case Kind::Bool: os << (std::get<bool>(v_) ? "True" : "False"); break;
    case Kind::Int: os << std::get<int64_t>(v_); break;
    case Kind::Float: {
      os.precision(17);
      os << std::get<double>(v_);
      break;
    }
    case Kind::Complex: {
      auto c = std::get<std::complex<double>>(v_);
      os << "(" << c.real() << (c.imag() < 0 ? "" : "+") << c.imag() << "j)";
      break;
    }
    case Kind::Str: os << "'" << as_str() << "'"; break;
    case Kind::Bytes: os << "b<" << as_str().size() << " bytes>"; break;
    case Kind::List: os << "list(" << items().size() << ")"; break;
    case Kind::Tuple: {
      os << "(";
      const auto& it = items();
      for (size_t i = 0; i < it.size(); ++i) os << (i ? ", " : "") << it[i].repr(max_len);
      os << (it.size() == 1 ? ",)" : ")");
      break;
    }
    case Kind::Set: os << "set(" << items().size() << ")"; break;
    case Kind::Dict:
      os << (dict_data().cls.empty() ? "dict" : dict_data().cls) << "(" << dict_data().items.size() << ")";
      break;
    case Kind::Tensor: os << "tensor " << as_tensor().describe(); break;
    case Kind::Object: os << "<" << as_object().cls << " object>"; break;
  }
  std::string s = os.str();
  if (s.size() > max_len) s = s.substr(0, max_len > 3 ? max_len - 3 : 0) + "...";
  return s;
}

namespace {
std::string key_to_string(const Value& k) {
  switch (k.kind()) {
    case Value::Kind::Str: return k.as_str();
    case Value::Kind::Int: return std::to_string(k.as_int());
    case Value::Kind::Bool: return k.as_bool() ? "True" : "False";
    default: return k.repr();
  }
}
std::string join(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

// Appends ".key" (or "key" at the root) to path: one growing buffer for the whole walk instead of a
// new string per level (flatten runs once per load on trees of 100,000 tensors).
void append_key(std::string& path, const Value& k) {
  if (!path.empty()) path += '.';
  switch (k.kind()) {
    case Value::Kind::Str: path += k.as_str(); return;
    case Value::Kind::Int: path += std::to_string(k.as_int()); return;
    case Value::Kind::Bool: path += k.as_bool() ? "True" : "False"; return;
    default: path += k.repr(); return;
  }
}

void flatten_into(const Value& v, std::string& path, StateDict& out, std::vector<NonTensor>* skipped) {
  const size_t n = path.size();
  switch (v.kind()) {
    case Value::Kind::Tensor: out.insert(path, v.as_tensor()); return;
    case Value::Kind::Dict:
      for (const auto& [k, child] : v.dict_data().items) {
        append_key(path, k);
        flatten_into(child, path, out, skipped);
        path.resize(n);
      }
      return;
    case Value::Kind::List:
    case Value::Kind::Tuple: {
      const auto& items = v.items();
      for (size_t i = 0; i < items.size(); ++i) {
        append_key(path, Value::integer(int64_t(i)));
        flatten_into(items[i], path, out, skipped);
        path.resize(n);
      }
      return;
    }
    default:
      if (skipped) skipped->push_back({path, v.repr()});
      return;
  }
}
}  // namespace

StateDict flatten(const Value& root, std::vector<NonTensor>* skipped, const std::string& prefix) {
  StateDict out;
  if (root.is_dict()) out.reserve(root.dict_data().items.size());  // the usual {name: tensor}
  std::string path = prefix;
  flatten_into(root, path, out, skipped);
  return out;
}

namespace {
Value map_rec(const Value& v, const std::function<Tensor(const Tensor&)>& fn, std::map<const void*, Value>& done) {
  const void* id = v.identity();
  if (id) {
    auto it = done.find(id);
    if (it != done.end()) return it->second;
  }
  Value out;
  switch (v.kind()) {
    case Value::Kind::Tensor: out = Value::tensor(fn(v.as_tensor())); break;
    case Value::Kind::List:
    case Value::Kind::Tuple:
    case Value::Kind::Set: {
      ValueList items;
      for (const auto& x : v.items()) items.push_back(map_rec(x, fn, done));
      out = v.kind() == Value::Kind::List    ? Value::list(std::move(items))
            : v.kind() == Value::Kind::Tuple ? Value::tuple(std::move(items))
                                             : Value::set(std::move(items));
      break;
    }
    case Value::Kind::Dict: {
      const ValueDict& d = v.dict_data();
      out = Value::dict(d.cls);
      for (const auto& [k, x] : d.items) out.dict_data().items.emplace_back(k, map_rec(x, fn, done));
      out.dict_data().attrs = d.attrs;
      break;
    }
    default: out = v; break;
  }
  if (id) done.emplace(id, out);
  return out;
}
}  // namespace

Value map_tensors(const Value& root, const std::function<Tensor(const Tensor&)>& fn) {
  std::map<const void*, Value> done;
  return map_rec(root, fn, done);
}

const Value& value_at_path(const Value& root, const std::string& path) {
  const Value* cur = &root;
  size_t pos = 0;
  std::string walked;
  while (pos <= path.size() && !path.empty()) {
    size_t dot = path.find('.', pos);
    std::string part = path.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
    const Value* next = nullptr;
    if (cur->is_dict()) {
      for (const auto& [k, v] : cur->dict_data().items)
        if (key_to_string(k) == part) {
          next = &v;
          break;
        }
    } else if (cur->is_sequence()) {
      char* end = nullptr;
      long idx = std::strtol(part.c_str(), &end, 10);
      if (end && *end == '\0' && idx >= 0 && size_t(idx) < cur->items().size()) next = &cur->items()[size_t(idx)];
    }
    if (!next) {
      std::string avail;
      if (cur->is_dict())
        for (const auto& kv : cur->dict_data().items) {
          if (avail.size() > 200) {
            avail += ", ...";
            break;
          }
          avail += (avail.empty() ? "" : ", ") + ("'" + key_to_string(kv.first) + "'");
        }
      throw KeyError(str("no key '", part, "'", walked.empty() ? "" : " under '" + walked + "'",
                         avail.empty() ? str(" (found ", cur->kind_name(), ")") : "; available: " + avail));
    }
    walked = join(walked, part);
    cur = next;
    if (dot == std::string::npos) break;
    pos = dot + 1;
  }
  return *cur;
}

}  // namespace tb
