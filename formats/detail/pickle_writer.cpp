// The pickle writer; see pickle_writer.h for the two dialects.
#include "formats/detail/pickle_writer.h"

#include <algorithm>
#include <cstring>

#include "tensor/error.h"

namespace tb::pickle {

namespace {
constexpr size_t kFrameTarget = 64 * 1024;  // CPython's _Framer._FRAME_SIZE_TARGET
constexpr size_t kMaxDepth = 1000;
constexpr size_t kBatch = 1000;  // CPython's _BATCHSIZE

std::string latin1_to_utf8(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c < 0x80) {
      out.push_back(char(c));
    } else {
      out.push_back(char(0xC0 | (c >> 6)));
      out.push_back(char(0x80 | (c & 0x3F)));
    }
  }
  return out;
}
}  // namespace

// ---- low level ----------------------------------------------------------------------------------

void Pickler::raw(const void* p, size_t n) {
  const uint8_t* b = static_cast<const uint8_t*>(p);
  auto& o = cpython_ ? frame_ : out_;
  o.insert(o.end(), b, b + n);
}

void Pickler::put_u32(uint32_t v) {
  for (int i = 0; i < 4; ++i) put(uint8_t(v >> (8 * i)));
}

void Pickler::put_memo_index(uint8_t op1, uint8_t op4, uint32_t idx) {
  if (idx < 256) {
    put(op1);
    put(uint8_t(idx));
  } else {
    put(op4);
    put_u32(idx);
  }
}

void Pickler::get(uint32_t idx) {
  put_memo_index('h', 'j', idx);  // BINGET, LONG_BINGET
}

uint32_t Pickler::memo_op() {
  put(0x94);
  return next_memo_++;
}

void Pickler::commit_frame(bool force) {
  if (!cpython_ || frame_.empty()) return;
  if (frame_.size() >= kFrameTarget || force) {
    if (frame_.size() >= 4) {
      out_.push_back(0x95);
      uint64_t n = frame_.size();
      for (int i = 0; i < 8; ++i) out_.push_back(uint8_t(n >> (8 * i)));
    }
    out_.insert(out_.end(), frame_.begin(), frame_.end());
    frame_.clear();
  }
}

void Pickler::commit() { commit_frame(false); }

// A length-prefixed payload (4+): op1 with a 1-byte length, op4 with 4 bytes, op8 with 8 bytes; large
// payloads sit outside a frame, as CPython's _Framer.write_large_bytes writes them.
void Pickler::put_sized(uint8_t op1, uint8_t op4, uint8_t op8, const std::string& s) {
  size_t n = s.size();
  if (n <= 0xff) {
    put(op1);
    put(uint8_t(n));
    raw(s.data(), n);
  } else if (n > 0xffffffffULL || n >= kFrameTarget) {
    commit_frame(true);
    const int width = n > 0xffffffffULL ? 8 : 4;
    out_.push_back(width == 8 ? op8 : op4);
    for (int i = 0; i < width; ++i) out_.push_back(uint8_t(uint64_t(n) >> (8 * i)));
    out_.insert(out_.end(), s.begin(), s.end());
  } else {
    put(op4);
    put_u32(uint32_t(n));
    raw(s.data(), n);
  }
}

// ---- memo ---------------------------------------------------------------------------------------

uint32_t Pickler::memoize(const void* key) {
  uint32_t idx;
  if (cpython_) {
    idx = memo_op();
  } else {
    idx = next_memo_++;
    put_memo_index('q', 'r', idx);  // BINPUT, LONG_BINPUT
  }
  if (key) memo_keys_[key] = idx;
  return idx;
}

bool Pickler::get_memo(const void* key) {
  if (!key) return false;
  auto it = memo_keys_.find(key);
  if (it == memo_keys_.end()) return false;
  commit_frame(false);
  get(it->second);
  return true;
}

void Pickler::memo_last(const void* key) {
  if (cpython_ && key && next_memo_ > 0) memo_keys_[key] = next_memo_ - 1;
}

bool Pickler::get_keyed(const std::string& key) {
  if (!cpython_) return false;
  auto it = keyed_.find(key);
  if (it == keyed_.end()) return false;
  get(it->second);
  return true;
}

void Pickler::key_last(const std::string& key) {
  if (cpython_ && next_memo_ > 0) keyed_[key] = next_memo_ - 1;
}

// ---- opcodes ------------------------------------------------------------------------------------

void Pickler::dump(const Value& root) {
  if (cpython_) {
    out_ = {0x80, uint8_t(protocol_)};  // PROTO precedes the first frame
    frame_.clear();
    cpython_value(root, 0);
    put('.');
    commit_frame(true);
    return;
  }
  put(0x80);
  put(uint8_t(protocol_));
  value(root);
  put('.');
}

void Pickler::global_(const std::string& module, const std::string& name) {
  commit_frame(false);
  const std::string key = module + "\n" + name + "\n";
  auto it = globals_.find(key);
  if (it != globals_.end()) return get(it->second);
  if (cpython_) {
    string(module);
    string(name);
    put(0x93);  // STACK_GLOBAL
    globals_[key] = memo_op();
    return;
  }
  put('c');
  raw(key.data(), key.size());
  globals_[key] = memoize(nullptr);
}

void Pickler::mark() { put('('); }
void Pickler::tuple() {
  put('t');
  if (cpython_) memo_op();
}
void Pickler::tuple_n(size_t n) {
  static const uint8_t ops[] = {')', 0x85, 0x86, 0x87};
  TB_ASSERT(n <= 3);
  if (n == 0) commit_frame(false);
  put(ops[n]);
  if (cpython_ && n > 0) memo_op();
}
void Pickler::reduce() {
  put('R');
  if (cpython_) memo_op();
}
void Pickler::newobj() {
  put(0x81);
  if (cpython_) memo_op();
}
void Pickler::build() { put('b'); }
void Pickler::binpersid() { put('Q'); }
void Pickler::setitems() { put('u'); }
void Pickler::empty_dict() {
  commit_frame(false);
  put('}');
  if (cpython_) memo_op();
}
void Pickler::empty_list() {
  commit_frame(false);
  put(']');
  if (cpython_) memo_op();
}
void Pickler::appends() { put('e'); }
void Pickler::none() {
  commit_frame(false);
  put('N');
}
void Pickler::boolean(bool b) {
  commit_frame(false);
  put(b ? 0x88 : 0x89);
}

void Pickler::integer(int64_t i) {
  commit_frame(false);
  if (i >= 0 && i < 256) {
    put('K');
    put(uint8_t(i));
  } else if (i >= 0 && i < 65536) {
    put('M');
    put(uint8_t(i));
    put(uint8_t(i >> 8));
  } else if (i >= INT32_MIN && i <= INT32_MAX) {
    put('J');
    put_u32(uint32_t(int32_t(i)));
  } else {
    // LONG1: minimal two's complement little-endian
    uint8_t b[8];
    for (int k = 0; k < 8; ++k) b[k] = uint8_t(uint64_t(i) >> (8 * k));
    int n = 8;
    while (n > 1 && ((b[n - 1] == 0 && !(b[n - 2] & 0x80)) || (b[n - 1] == 0xFF && (b[n - 2] & 0x80)))) --n;
    put(0x8a);
    put(uint8_t(n));
    raw(b, size_t(n));
  }
}

void Pickler::real(double d) {
  commit_frame(false);
  uint64_t u;
  std::memcpy(&u, &d, 8);
  put('G');
  for (int k = 7; k >= 0; --k) put(uint8_t(u >> (8 * k)));
}

void Pickler::string(const std::string& s) {
  if (!cpython_) {
    put('X');
    put_u32(uint32_t(s.size()));
    raw(s.data(), s.size());
    return;
  }
  commit_frame(false);
  auto it = strings_.find(s);
  if (it != strings_.end()) return get(it->second);
  put_sized(0x8c, 'X', 0x8d, s);  // SHORT_BINUNICODE / BINUNICODE / BINUNICODE8
  strings_[s] = memo_op();
}

void Pickler::bytes_(const std::string& b) {
  if (cpython_) {
    commit_frame(false);
    put_sized('C', 'B', 0x8e, b);  // SHORT_BINBYTES / BINBYTES / BINBYTES8
    memo_op();
    return;
  }
  if (protocol_ >= 3) {
    put('B');
    put_u32(uint32_t(b.size()));
    raw(b.data(), b.size());
    return;
  }
  global_("_codecs", "encode");
  string(latin1_to_utf8(b));
  string("latin1");
  tuple_n(2);
  reduce();
}

// ---- values, protocols 2-3 ----------------------------------------------------------------------

void Pickler::value(const Value& v) {
  if (cpython_) return cpython_value(v, depth_);
  TB_CHECK(depth_ < kMaxDepth, UnsupportedError, tag, " value nested deeper than ", kMaxDepth, " levels");
  const void* id = v.identity();
  bool memo_able = v.kind() == Value::Kind::List || v.kind() == Value::Kind::Dict || v.kind() == Value::Kind::Tensor ||
                   v.kind() == Value::Kind::Set || v.kind() == Value::Kind::Object;
  if (memo_able && get_memo(id)) return;
  ++depth_;
  legacy_value(v);
  --depth_;
}

void Pickler::legacy_value(const Value& v) {
  const void* id = v.identity();
  switch (v.kind()) {
    case Value::Kind::None: return none();
    case Value::Kind::Bool: return boolean(v.as_bool());
    case Value::Kind::Int: return integer(v.as_int());
    case Value::Kind::Float: return real(v.as_float());
    case Value::Kind::Complex:
      global_("builtins", "complex");
      real(v.as_complex().real());
      real(v.as_complex().imag());
      tuple_n(2);
      return reduce();
    case Value::Kind::Str: return string(v.as_str());
    case Value::Kind::Bytes: return bytes_(v.as_str());
    case Value::Kind::Tuple: {
      const auto& it = v.items();
      if (it.size() > 3) mark();
      for (const auto& x : it) value(x);
      return it.size() > 3 ? tuple() : tuple_n(it.size());
    }
    case Value::Kind::List: {
      empty_list();
      memoize(id);
      const auto& it = v.items();
      for (size_t i = 0; i < it.size(); i += kBatch) {
        size_t n = std::min<size_t>(kBatch, it.size() - i);
        if (n == 1) {
          value(it[i]);
          put('a');
        } else {
          mark();
          for (size_t k = i; k < i + n; ++k) value(it[k]);
          appends();
        }
      }
      return;
    }
    case Value::Kind::Set: {
      global_("builtins", "set");
      empty_list();
      const auto& it = v.items();
      if (!it.empty()) {
        mark();
        for (const auto& x : it) value(x);
        appends();
      }
      tuple_n(1);
      reduce();
      memoize(id);
      return;
    }
    case Value::Kind::Dict: return legacy_dict(v);
    case Value::Kind::Tensor:
      TB_CHECK(bool(on_tensor), UnsupportedError, tag, " this pickle cannot hold tensors (", v.as_tensor().describe(),
               ")");
      on_tensor(*this, v.as_tensor());
      memoize(id);
      return;
    case Value::Kind::Object:
      throw UnsupportedError(str(tag, " cannot write an opaque object of class ", v.as_object().cls,
                                 " (only dict/list/tuple/str/int/float/bool/None/bytes and tensors)"));
  }
}

void Pickler::legacy_dict(const Value& v) {
  const auto& d = v.dict_data();
  if (d.cls == "collections.OrderedDict") {
    global_("collections", "OrderedDict");
    tuple_n(0);
    reduce();
  } else {
    empty_dict();
  }
  memoize(v.identity());
  for (size_t i = 0; i < d.items.size(); i += kBatch) {
    size_t n = std::min<size_t>(kBatch, d.items.size() - i);
    if (n > 1) mark();
    for (size_t k = i; k < i + n; ++k) {
      value(d.items[k].first);
      value(d.items[k].second);
    }
    n > 1 ? setitems() : put('s');
  }
  bool any_attr = false;
  if (d.attrs)
    for (const auto& kv : d.attrs->items) any_attr = any_attr || kv.second.kind() != Value::Kind::Object;
  if (d.cls == "collections.OrderedDict" && any_attr) {
    // state = {attr: value}; BUILD sets attributes (e.g. _metadata). Opaque objects (a module tree
    // kept beside a state_dict) are not attributes torch would load: skipped.
    empty_dict();
    for (const auto& kv : d.attrs->items) {
      if (kv.second.kind() == Value::Kind::Object) continue;
      value(kv.first);
      value(kv.second);
      put('s');
    }
    build();
  }
}

// ---- values, protocols 4-5 (CPython's bytes) ----------------------------------------------------

void Pickler::cpython_value(const Value& v, size_t depth) {
  TB_CHECK(depth < kMaxDepth, FormatError, tag, " value nested deeper than ", kMaxDepth);
  commit_frame(false);
  const void* id = v.identity();
  if (id && get_memo(id)) return;
  if (id) keep_.push_back(v);
  const size_t saved_depth = depth_;
  depth_ = depth + 1;  // value() calls from on_tensor continue below this level
  switch (v.kind()) {
    case Value::Kind::None: none(); break;
    case Value::Kind::Bool: boolean(v.as_bool()); break;
    case Value::Kind::Int: integer(v.as_int()); break;
    case Value::Kind::Float: real(v.as_float()); break;
    case Value::Kind::Str: string(v.as_str()); break;
    case Value::Kind::Bytes: bytes_(v.as_str()); break;
    case Value::Kind::Tuple: cpython_tuple(v, depth); break;
    case Value::Kind::List:
      put(']');
      memo_keys_[id] = memo_op();
      batch(v.items(), depth, 'a', 'e', false);
      break;
    case Value::Kind::Set:
      put(0x8f);  // EMPTY_SET
      memo_keys_[id] = memo_op();
      batch(v.items(), depth, 0, 0x90, true);  // ADDITEMS
      break;
    case Value::Kind::Dict: cpython_dict(v, depth); break;
    case Value::Kind::Tensor:
      TB_CHECK(bool(on_tensor), UnsupportedError, tag, " this pickle cannot hold tensors (", v.as_tensor().describe(),
               ")");
      on_tensor(*this, v.as_tensor());
      break;
    case Value::Kind::Complex:
    case Value::Kind::Object:
      throw UnsupportedError(str(tag, " cannot write ", v.repr(), " (", v.kind_name(), ") into ", target,
                                 ": only tensors, dicts, lists, tuples, sets, strings, bytes and numbers are written"));
  }
  depth_ = saved_depth;
}

void Pickler::cpython_tuple(const Value& v, size_t depth) {
  const auto& items = v.items();
  if (items.empty()) return put(')');
  if (items.size() <= 3) {
    for (const auto& x : items) cpython_value(x, depth + 1);
    put(uint8_t(0x85 + items.size() - 1));
  } else {
    put('(');
    for (const auto& x : items) cpython_value(x, depth + 1);
    put('t');
  }
  memo_keys_[v.identity()] = memo_op();
}

void Pickler::batch(const ValueList& items, size_t depth, uint8_t single, uint8_t multi, bool always_mark) {
  for (size_t b = 0; b < items.size(); b += kBatch) {
    size_t e = std::min(items.size(), b + kBatch);
    if (e - b == 1 && !always_mark) {
      cpython_value(items[b], depth + 1);
      put(single);
      continue;
    }
    put('(');
    for (size_t i = b; i < e; ++i) cpython_value(items[i], depth + 1);
    put(multi);
  }
}

void Pickler::pairs(const std::vector<std::pair<Value, Value>>& items, size_t depth) {
  for (size_t b = 0; b < items.size(); b += kBatch) {
    size_t e = std::min(items.size(), b + kBatch);
    if (e - b > 1) put('(');
    for (size_t i = b; i < e; ++i) {
      cpython_value(items[i].first, depth + 1);
      cpython_value(items[i].second, depth + 1);
    }
    put(e - b > 1 ? 'u' : 's');
  }
}

void Pickler::cpython_dict(const Value& v, size_t depth) {
  const ValueDict& d = v.dict_data();
  // Only OrderedDict keeps its class; other dict subclasses (defaultdict, Counter) are written as
  // plain dicts, since their reduce arguments (default factories) are code.
  if (d.cls != "collections.OrderedDict") {
    put('}');
    memo_keys_[v.identity()] = memo_op();
    return pairs(d.items, depth);
  }
  // OrderedDict.__reduce__ -> (cls, (), vars(self) or None, None, items).
  global_("collections", "OrderedDict");
  commit_frame(false);
  put(')');
  put('R');
  memo_keys_[v.identity()] = memo_op();
  pairs(d.items, depth);
  Value state;
  if (d.attrs && !d.attrs->items.empty()) {
    state = Value::dict();
    for (const auto& kv : d.attrs->items)  // a module tree kept beside a state dict is not state
      if (kv.second.kind() != Value::Kind::Object) state.set_item(kv.first, kv.second);
    if (state.dict_data().items.empty()) state = Value();
  }
  if (!state.is_none()) {
    cpython_value(state, depth + 1);
    put('b');
  }
}

}  // namespace tb::pickle
