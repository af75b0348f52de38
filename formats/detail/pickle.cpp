// Pickle VM (reader) and protocol-2 writer. See pickle.h for the Value mapping and the safety model.
#include "tensor/checked.h"
#include "formats/detail/pickle.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <set>
#include <unordered_map>
#include <unordered_set>

namespace tb::pickle {

namespace {

// ---- global references ----------------------------------------------------------------------
// A GLOBAL pushes Object{cls = "global", args = Str("module.name")}; interpreting it happens when it
// is called (REDUCE, NEWOBJ, OBJ, INST) or used as a dtype.
const char* const kGlobal = "global";

Value make_global(const std::string& qual) { return Value::object(kGlobal, Value::string(qual)); }

const std::string* global_name_ptr(const Value& v) {
  if (v.kind() != Value::Kind::Object) return nullptr;
  const auto& o = v.as_object();
  if (o.cls != kGlobal || !o.args || !o.args->is_str()) return nullptr;
  return &o.args->as_str();
}

bool global_name(const Value& v, std::string* name) {
  const std::string* q = global_name_ptr(v);
  if (q && name) *name = *q;
  return q != nullptr;
}

/** One-line description that never recurses (safe on hostile deep values). */
std::string brief(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::List:
    case Value::Kind::Tuple:
    case Value::Kind::Set: return str(v.kind_name(), " of ", v.items().size());
    case Value::Kind::Dict: return str("dict of ", v.dict_data().items.size());
    case Value::Kind::Object: {
      std::string q;
      if (global_name(v, &q)) return "global " + q;
      return v.as_object().cls + " object";
    }
    default: return v.repr(60);
  }
}

std::string normalize_module(std::string mod) {
  if (mod == "__builtin__") return "builtins";
  if (mod == "copy_reg") return "copyreg";
  if (mod.rfind("numpy._core", 0) == 0) return "numpy.core" + mod.substr(11);
  return mod;
}

bool is_torch_storage_class(const std::string& q) {
  static const std::set<std::string> names = [] {
    std::set<std::string> s;
    for (const auto& d : all_dtypes())
      if (!d.torch_storage.empty()) {
        s.insert("torch." + std::string(d.torch_storage));
        s.insert("torch.cuda." + std::string(d.torch_storage));
      }
    s.insert("torch.UntypedStorage");
    s.insert("torch.storage.UntypedStorage");
    s.insert("torch.storage._UntypedStorage");
    s.insert("torch.storage.TypedStorage");
    return s;
  }();
  return names.count(q) != 0;
}

std::optional<DType> torch_dtype_of_global(const std::string& q) {
  if (q.rfind("torch.", 0) != 0) return std::nullopt;
  std::string attr = q.substr(6);
  if (attr.find('.') != std::string::npos) return std::nullopt;
  return dtype_from_torch_dtype(attr);
}

// Callables / classes interpreted by the VM (module normalised: builtins, copyreg, numpy.core).
const std::set<std::string>& allowed_set() {
  static const std::set<std::string> s = {
      "collections.OrderedDict", "collections.Counter", "collections.defaultdict",
      "builtins.set", "builtins.frozenset", "builtins.complex", "builtins.slice", "builtins.bytearray",
      "builtins.object", "builtins.list", "builtins.dict", "builtins.tuple", "builtins.int", "builtins.float",
      "builtins.bool", "builtins.str", "builtins.bytes",
      "copyreg._reconstructor", "_codecs.encode",
      "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor_v3",
      "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
      "torch._tensor._rebuild_from_type_v2", "torch._tensor._rebuild_from_type", "torch.Size", "torch.device",
      "torch.serialization._get_layout", "torch.Tensor", "torch.nn.parameter.Parameter",
      "torch.nn.parameter.Buffer", "torch._utils._rebuild_meta_tensor_no_storage",
      "numpy.core.multiarray._reconstruct", "numpy.core._internal._reconstruct", "numpy.ndarray",
      "builtins.range", "builtins.xrange", "numpy.dtype", "numpy.core.multiarray.scalar",
  };
  return s;
}

bool allowed_qual(const std::string& q) {
  if (allowed_set().count(q)) return true;
  if (is_torch_storage_class(q)) return true;
  if (torch_dtype_of_global(q)) return true;
  if (q == "torch.strided" || q == "torch.sparse_coo" || q == "torch.contiguous_format" || q == "torch.channels_last")
    return true;
  // torch's own module classes: instantiated as opaque objects with their state (never called).
  if (q.rfind("torch.nn.modules.", 0) == 0) return true;
  // torch 0.3 modules keep their backend as REDUCE of this function: kept opaque, never called.
  if (q == "torch.nn.backends.thnn._get_thnn_function_backend") return true;
  return false;
}

// TorchScript pickles: module classes compiled by torch.jit, and the markers torch.jit._pickle puts
// around typed containers (each returns its first argument). Allowed only with allow_torchscript_classes.
bool torchscript_qual(const std::string& q) {
  static const std::set<std::string> markers = {
      "torch.jit._pickle.build_intlist", "torch.jit._pickle.build_doublelist", "torch.jit._pickle.build_boollist",
      "torch.jit._pickle.build_tensorlist", "torch.jit._pickle.restore_type_tag"};
  return q.rfind("__torch__.", 0) == 0 || markers.count(q) != 0;
}

std::string qualify(const std::string& module, const std::string& name) {
  return normalize_module(module) + "." + name;
}

// ---- numpy helpers ----------------------------------------------------------------------------
// numpy.dtype(descr, align, copy) -> Object{cls "numpy.dtype", args Str descr}; BUILD sets byte order.
Value make_np_dtype(const std::string& descr) { return Value::object("numpy.dtype", Value::string(descr)); }

std::string np_descr_of(const Value& dt, const std::string& where) {
  TB_CHECK(dt.kind() == Value::Kind::Object && dt.as_object().cls == "numpy.dtype", FormatError, where,
           ": expected a numpy.dtype but found ", brief(dt));
  return dt.as_object().args->as_str();
}

struct DtypeBits {
  bool object = false;
  DType dtype = DType::F32;
  bool big = false;
};

DtypeBits np_dtype_bits(const std::string& descr, const std::string& where) {
  DtypeBits b;
  if (descr.size() >= 2 && descr[1] == 'O') {
    b.object = true;
    return b;
  }
  auto d = dtype_from_npy_descr(descr);
  TB_CHECK(d.has_value(), UnsupportedError, where, ": numpy dtype '", descr,
           "' is not supported (structured, string and datetime dtypes are not tensors)");
  b.dtype = d->dtype;
  b.big = d->big_endian;
  return b;
}

Tensor np_tensor_from_bytes(const std::string& data, const DtypeBits& bits, const Shape& shape, bool fortran,
                            const std::string& where) {
  size_t need = checked_nbytes(checked_numel(shape, where), dtype_size(bits.dtype), where);
  TB_CHECK(data.size() == need, FormatError, where, ": numpy array ", dtype_name(bits.dtype), shape_str(shape),
           " needs ", need, " bytes but its pickle holds ", data.size());
  Tensor t;
  if (fortran && shape.size() > 1) {
    Shape rev(shape.rbegin(), shape.rend());
    Tensor f = Tensor::from_bytes(bits.dtype, rev, data.data(), data.size());
    std::vector<int64_t> perm;
    for (int64_t i = int64_t(shape.size()) - 1; i >= 0; --i) perm.push_back(i);
    t = f.permute(perm).contiguous();
  } else {
    t = Tensor::from_bytes(bits.dtype, shape, data.data(), data.size());
  }
  if (bits.big) byteswap_elements(t.data(), bits.dtype, size_t(t.numel()));
  return t;
}

// where() gives the error location; only called on failure (it is built from strings).
template <class Where>
Shape shape_of(const Value& v, const Where& where, const char* what) {
  TB_CHECK(v.is_sequence(), FormatError, where(), ": ", what, " must be a tuple of ints but is ", brief(v));
  Shape s;
  s.reserve(v.items().size());
  for (const auto& x : v.items()) {
    TB_CHECK(x.is_int(), FormatError, where(), ": ", what, " must hold ints but holds ", brief(x));
    s.push_back(x.as_int());
  }
  return s;
}

// latin-1 encoding of a UTF-8 string (what _codecs.encode(s, 'latin1') gives).
std::string utf8_to_latin1(const std::string& s, const std::string& where) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x80) {
      out.push_back(char(c));
      ++i;
    } else if ((c & 0xE0) == 0xC0 && i + 1 < s.size()) {
      unsigned cp = ((c & 0x1Fu) << 6) | ((unsigned char)s[i + 1] & 0x3Fu);
      TB_CHECK(cp < 256, FormatError, where, ": _codecs.encode: character U+", cp, " is not latin-1");
      out.push_back(char(cp));
      i += 2;
    } else {
      throw FormatError(str(where, ": _codecs.encode: character outside latin-1"));
    }
  }
  return out;
}

// Parses n hex digits; false on a non-hex character.
bool parse_hex(const std::string& s, size_t pos, size_t n, uint32_t* out) {
  uint32_t v = 0;
  if (pos + n > s.size()) return false;
  for (size_t i = pos; i < pos + n; ++i) {
    char c = s[i];
    int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
    if (d < 0) return false;
    v = (v << 4) | uint32_t(d);
  }
  *out = v;
  return true;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(char(cp));
  } else if (cp < 0x800) {
    out.push_back(char(0xC0 | (cp >> 6)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(char(0xE0 | (cp >> 12)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(char(0xF0 | (cp >> 18)));
    out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  }
}

// ---- the machine ------------------------------------------------------------------------------
class Machine {
 public:
  Machine(const Reader& r, uint64_t offset, uint64_t size, const Options& o, bool scan_only)
      : r_(r), direct_(r.contiguous_bytes()), pos_(offset), end_(offset + size), opts_(o), scan_only_(scan_only) {
    TB_CHECK(offset <= r.size() && size <= r.size() - offset, FormatError, where(), ": pickle range [", offset, ", ",
             offset + size, ") exceeds the input size ", r.size());
    where_ = opts_.tag + " '" + r.label() + "'";
    if (opts_.budget) {
      budget_ = opts_.budget;
    } else {
      own_budget_.emplace(default_load_limits(), r.label(), size);
      budget_ = &*own_budget_;
    }
    opts_.max_depth = size_t(std::min<uint64_t>(opts_.max_depth, budget_->limits().max_depth));
  }
  ~Machine() {
    if (!ok_) dismantle();
  }

  Result run();
  std::vector<std::string> globals_seen() const { return globals_; }

 private:
  // -- input --
  std::string where() const { return where_.empty() ? opts_.tag + " '" + r_.label() + "'" : where_; }
  // Built on every tensor (shape_of argument), so plain concatenation rather than an ostringstream.
  std::string at() const { return where() + " at byte " + std::to_string(op_pos_); }
  void need(uint64_t n) {
    TB_CHECK(n <= end_ - pos_, FormatError, at(), ": truncated pickle (opcode needs ", n, " more bytes, ", end_ - pos_,
             " left)");
  }
  // Opcodes are read through a window of kWindow bytes: one Reader call (a pread when the file is
  // not mapped) per window instead of one per opcode byte. Longer reads go straight to the Reader.
  static constexpr uint64_t kWindow = 64 * 1024;
  void fetch(void* dst, uint64_t n) {  // caller checked need(n)
    if (direct_) {  // a mapped file or memory: no window needed
      std::memcpy(dst, direct_ + pos_, size_t(n));
      return;
    }
    if (n > kWindow) {
      r_.read_at(pos_, dst, size_t(n));
      return;
    }
    if (pos_ < win_pos_ || pos_ + n > win_pos_ + win_.size()) {
      win_.resize(size_t(std::min(kWindow, end_ - pos_)));
      r_.read_at(pos_, win_.data(), win_.size());
      win_pos_ = pos_;
    }
    if (n) std::memcpy(dst, win_.data() + (pos_ - win_pos_), size_t(n));
  }
  uint8_t u8() {
    need(1);
    if (direct_) return direct_[pos_++];
    uint8_t b;
    fetch(&b, 1);
    ++pos_;
    return b;
  }
  uint64_t uint_le(size_t n) {
    need(n);
    uint8_t b[8];
    fetch(b, n);
    pos_ += n;
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= uint64_t(b[i]) << (8 * i);
    return v;
  }
  std::string bytes(uint64_t n) {
    need(n);
    std::string s(size_t(n), '\0');
    fetch(s.data(), n);
    pos_ += n;
    return s;
  }
  std::string line() {
    std::string s;
    for (;;) {
      TB_CHECK(pos_ < end_, FormatError, at(), ": truncated pickle (unterminated text line)");
      char c = char(u8());
      if (c == '\n') break;
      TB_CHECK(s.size() < (1u << 20), FormatError, at(), ": text line longer than 1 MiB");
      s.push_back(c);
    }
    if (!s.empty() && s.back() == '\r') s.pop_back();
    return s;
  }

  // -- stack --
  void push(Value v) {
    TB_CHECK(stack_.size() < (size_t(1) << 26), FormatError, at(), ": pickle stack too large");
    if (v.kind() == Value::Kind::Tuple) {
      // Tuples are immutable: their nesting depth is known now (lists/dicts are checked at the end).
      // Only tuples that hold tuples are recorded; a tuple missing from theight_ has height 1.
      uint32_t h = 1;
      for (const auto& c : v.items())
        if (c.kind() == Value::Kind::Tuple) {
          auto it = theight_.find(c.identity());
          h = std::max(h, (it == theight_.end() ? 1u : it->second.first) + 1);
        }
      if (h > 1) {
        TB_CHECK(h <= opts_.max_depth, FormatError, at(), ": tuples nested deeper than ", opts_.max_depth,
                 " levels (limit Options::max_depth)");
        theight_.try_emplace(v.identity(), h, v);  // holding v keeps its address from being reused
      }
    }
    stack_.push_back(std::move(v));
  }
  Value pop() {
    TB_CHECK(stack_.size() > base(), FormatError, at(), ": opcode '", opname(), "' needs a value but the stack is empty",
             marks_.empty() ? "" : " (above the last MARK)");
    Value v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  Value& top() {
    TB_CHECK(stack_.size() > base(), FormatError, at(), ": opcode '", opname(), "' needs a value but the stack is empty");
    return stack_.back();
  }
  size_t base() const { return marks_.empty() ? 0 : marks_.back(); }
  ValueList pop_mark() {
    TB_CHECK(!marks_.empty(), FormatError, at(), ": opcode '", opname(), "' needs a MARK but there is none");
    size_t m = marks_.back();
    marks_.pop_back();
    ValueList items(std::make_move_iterator(stack_.begin() + std::ptrdiff_t(m)), std::make_move_iterator(stack_.end()));
    stack_.resize(m);
    return items;
  }
  void mark() {
    TB_CHECK(marks_.size() < opts_.max_depth, FormatError, at(), ": nesting deeper than ", opts_.max_depth,
             " MARKs (limit Options::max_depth)");
    marks_.push_back(stack_.size());
  }

  // -- memo --
  // Memo indices are dense in practice (0, 1, 2, ... as pickle writes them): a vector indexed by
  // the index, with a map for the rare far-off index (LONG_BINPUT 4294967295 must not size the vector).
  void memo_put(uint64_t idx) {
    Value v = top();
    if (idx < memo_dense_.size() && memo_dense_[idx]) {
      *memo_dense_[idx] = std::move(v);
      return;
    }
    if (idx >= memo_dense_.size()) {
      auto it = memo_sparse_.find(idx);
      if (it != memo_sparse_.end()) {
        it->second = std::move(v);
        return;
      }
    }
    TB_CHECK(memo_count_ < opts_.max_memo, FormatError, at(), ": more than ", opts_.max_memo, " memo entries");
    ++memo_count_;
    if (idx < memo_dense_.size() || idx <= 2 * memo_count_ + 1024) {
      if (idx >= memo_dense_.size()) memo_dense_.resize(size_t(idx) + 1);
      memo_dense_[idx] = std::move(v);
    } else {
      memo_sparse_.emplace(idx, std::move(v));
    }
  }
  Value memo_get(uint64_t idx) {
    if (idx < memo_dense_.size() && memo_dense_[idx]) return resolved(*memo_dense_[idx]);
    auto it = memo_sparse_.find(idx);
    TB_CHECK(it != memo_sparse_.end(), FormatError, at(), ": memo index ", idx, " was never stored (bad BINGET/GET)");
    return resolved(it->second);
  }
  Value resolved(const Value& v) {
    if (!replaced_.empty()) {
      auto it = replaced_.find(v.identity());
      if (it != replaced_.end()) return it->second;
    }
    return v;
  }

  char opname() const { return char(op_); }

  // -- budget: copies of n values or bytes that the input's bytes do not account for --
  void charge_values(uint64_t n) {
    budget_->charge_objects_lazy(n, [this] { return at() + ": copying a container"; });
  }
  void charge_bytes(uint64_t n, const char* what) {
    budget_->charge_bytes_lazy(n, [this, what] { return at() + ": " + what; });
  }

  // -- calls (never executed: interpreted or refused) --
  void note_global(const std::string& q) {
    if (!seen_globals_.insert(q).second) return;
    globals_.push_back(q);
    if (!allowed(q)) unsafe_.push_back(q);
  }
  bool allowed(const std::string& q) const {
    return allowed_qual(q) || (opts_.allow_torchscript_classes && torchscript_qual(q));
  }
  Value call(const Value& callable, Value args);
  // allowed_qual(q) of a global object, remembered per object (a state dict calls the same two
  // globals once per tensor); the map holds the object so its address is not reused.
  bool allowed_global(const Value& callable, const std::string& q) {
    auto it = allowed_cache_.find(callable.identity());
    if (it != allowed_cache_.end()) return it->second.first;
    bool ok = allowed(q);
    allowed_cache_.try_emplace(callable.identity(), ok, callable);
    return ok;
  }
  Value instantiate(const Value& cls, Value args);
  void build(Value& obj, Value state);
  Value rebuild_tensor(const std::string& fn, const ValueList& a);
  Value opaque(const std::string& cls, Value args) {
    // Reaching here in strict mode means the global was already recorded as unsafe.
    return Value::object(cls, std::move(args));
  }

  void dismantle();
  void validate(const Value& root);
  void charge_tree(uint64_t nodes, uint64_t leaves, uint64_t name_bytes);
  void add_to_set(const Value& set, ValueList items);

  const Reader& r_;
  const uint8_t* direct_;  // r_'s bytes when it has them in memory (mapped file), else nullptr
  uint64_t pos_, end_;
  uint64_t op_pos_ = 0;
  std::vector<uint8_t> win_;  // input window: bytes [win_pos_, win_pos_ + win_.size())
  uint64_t win_pos_ = 0;
  uint8_t op_ = 0;
  Options opts_;
  bool scan_only_;
  std::optional<LoadBudget> own_budget_;  // when the caller gave none
  LoadBudget* budget_ = nullptr;
  std::string where_;
  std::vector<Value> stack_;
  std::vector<size_t> marks_;
  std::vector<std::optional<Value>> memo_dense_;  // empty: index never stored
  std::unordered_map<uint64_t, Value> memo_sparse_;
  uint64_t memo_count_ = 0;
  std::unordered_map<const void*, std::pair<uint32_t, Value>> theight_;  // tuple nesting heights
  std::unordered_map<const void*, std::pair<bool, Value>> allowed_cache_;
  std::unordered_map<const void*, Value> replaced_;  // numpy objects turned into tensors by BUILD
  std::vector<std::string> globals_, unsafe_;
  std::unordered_set<std::string> seen_globals_;
  int protocol_ = 0;
  bool ok_ = false;
};

std::string list_names(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& n : v) s += (s.empty() ? "" : ", ") + n;
  return s;
}

Value Machine::call(const Value& callable, Value args) {
  const std::string* qp = global_name_ptr(callable);
  if (!qp) {
    TB_CHECK(callable.kind() == Value::Kind::Object, FormatError, at(), ": REDUCE of a non-callable ", brief(callable));
    // calling an opaque object (unknown class instance) -> opaque result
    return opaque(callable.as_object().cls + "()", std::move(args));
  }
  const std::string& q = *qp;
  TB_CHECK(args.kind() == Value::Kind::Tuple || args.is_none(), FormatError, at(), ": arguments of ", q,
           " must be a tuple but are ", brief(args));
  ValueList empty;
  const ValueList& a = args.is_none() ? empty : args.items();
  auto nargs = [&](size_t lo, size_t hi) {
    TB_CHECK(a.size() >= lo && a.size() <= hi, FormatError, at(), ": ", q, " takes ", lo, lo == hi ? "" : str("..", hi),
             " arguments but the pickle gives ", a.size());
  };
  if (scan_only_) return Value::none();
  if (!allowed_global(callable, q)) return opaque(q, std::move(args));
  // The calls of every tensor of a state dict come first.
  if (q.rfind("torch._utils._rebuild_", 0) == 0 || q.rfind("torch._tensor._rebuild_from_type", 0) == 0)
    return rebuild_tensor(q, a);
  if (q.rfind("torch.jit._pickle.", 0) == 0) {  // typed-container markers: the container itself
    nargs(1, 2);
    return a[0];
  }

  if (q == "collections.OrderedDict" || q == "collections.Counter" || q == "builtins.dict" ||
      q == "collections.defaultdict") {
    Value d = Value::dict(q == "builtins.dict" ? "" : q);
    size_t first = q == "collections.defaultdict" ? 1 : 0;  // defaultdict(default_factory, items)
    if (a.size() > first && !a[first].is_none()) {
      const Value& src = a[first];
      if (src.is_dict()) {
        charge_values(src.dict_data().items.size());
        d.dict_data().items = src.dict_data().items;
      } else {
        TB_CHECK(src.is_sequence(), FormatError, at(), ": ", q, " argument must be pairs but is ", brief(src));
        charge_values(src.items().size());
        for (const auto& kv : src.items()) {
          TB_CHECK(kv.is_sequence() && kv.items().size() == 2, FormatError, at(), ": ", q, " item is not a pair");
          d.dict_data().items.emplace_back(kv.items()[0], kv.items()[1]);
        }
      }
    }
    return d;
  }
  if (q == "builtins.set" || q == "builtins.frozenset") {
    nargs(0, 1);
    Value s = Value::set();
    if (!a.empty()) {
      if (a[0].is_dict()) {
        charge_values(a[0].dict_data().items.size());
        for (const auto& kv : a[0].dict_data().items) s.items().push_back(kv.first);
      } else {
        TB_CHECK(a[0].kind() == Value::Kind::List || a[0].kind() == Value::Kind::Tuple ||
                     a[0].kind() == Value::Kind::Set,
                 FormatError, at(), ": ", q, " argument must be a sequence but is ", brief(a[0]));
        charge_values(a[0].items().size());
        s.items() = a[0].items();
      }
    }
    return s;
  }
  if (q == "builtins.list" || q == "builtins.tuple") {
    nargs(0, 1);
    ValueList items;
    if (!a.empty()) {
      charge_values(a[0].items().size());
      items = a[0].items();
    }
    return q == "builtins.list" ? Value::list(std::move(items)) : Value::tuple(std::move(items));
  }
  if (q == "builtins.complex") {
    nargs(0, 2);
    double re = a.size() > 0 ? a[0].as_float() : 0.0, im = a.size() > 1 ? a[1].as_float() : 0.0;
    return Value::complex({re, im});
  }
  if (q == "builtins.slice") {
    nargs(1, 3);
    ValueList t = a;
    while (t.size() < 3) t.push_back(Value());
    return Value::tuple(t);
  }
  if (q == "builtins.bytearray" || q == "builtins.bytes") {
    nargs(0, 2);
    if (a.empty()) return Value::bytes("");
    if (a[0].kind() == Value::Kind::Str || a[0].kind() == Value::Kind::Bytes) charge_bytes(a[0].as_str().size(), "copying a string");
    if (a[0].kind() == Value::Kind::List) charge_bytes(a[0].items().size(), "building bytes from a list");
    if (a[0].kind() == Value::Kind::Str && a.size() == 2) return Value::bytes(utf8_to_latin1(a[0].as_str(), at()));
    if (a[0].kind() == Value::Kind::Bytes || a[0].kind() == Value::Kind::Str) return Value::bytes(a[0].as_str());
    if (a[0].kind() == Value::Kind::List) {
      std::string b;
      for (const auto& x : a[0].items()) b.push_back(char(x.as_int()));
      return Value::bytes(b);
    }
    throw FormatError(str(at(), ": ", q, " argument ", brief(a[0]), " not understood"));
  }
  if (q == "builtins.int" || q == "builtins.float" || q == "builtins.bool" || q == "builtins.str") {
    nargs(0, 1);
    if (a.empty()) return q == "builtins.str" ? Value::string("") : Value::integer(0);
    return a[0];
  }
  if (q == "builtins.object") return Value::object("builtins.object");
  if (q == "_codecs.encode") {
    nargs(1, 2);
    TB_CHECK(a[0].kind() == Value::Kind::Str || a[0].kind() == Value::Kind::Bytes, FormatError, at(),
             ": _codecs.encode expects a str but got ", brief(a[0]));
    std::string enc = a.size() > 1 ? a[1].as_str() : "utf-8";
    charge_bytes(a[0].as_str().size(), "copying a string");
    if (enc == "latin1" || enc == "latin-1" || enc == "iso-8859-1")
      return Value::bytes(a[0].kind() == Value::Kind::Bytes ? a[0].as_str() : utf8_to_latin1(a[0].as_str(), at()));
    if (enc == "utf-8" || enc == "utf8" || enc == "ascii") return Value::bytes(a[0].as_str());
    throw UnsupportedError(str(at(), ": _codecs.encode with encoding '", enc, "'"));
  }
  if (q == "copyreg._reconstructor") {
    nargs(2, 3);
    Value inst = instantiate(a[0], Value::tuple());
    if (a.size() == 3 && !a[2].is_none() && inst.kind() == Value::Kind::Object) *inst.as_object().args = a[2];
    return inst;
  }
  if (q == "torch.Size") {
    nargs(0, 1);
    if (!a.empty()) charge_values(a[0].items().size());
    return Value::tuple(a.empty() ? ValueList{} : a[0].items());
  }
  if (q == "torch.device") {
    nargs(1, 2);
    std::string s = a[0].as_str();
    if (a.size() == 2 && !a[1].is_none()) s += ":" + std::to_string(a[1].as_int());
    return Value::string(s);
  }
  if (q == "torch.serialization._get_layout") {
    nargs(1, 1);
    return Value::string(a[0].as_str());
  }
  if (q == "builtins.range" || q == "builtins.xrange") {
    nargs(1, 3);
    int64_t start = a.size() > 1 ? a[0].as_int() : 0, stop = a.size() > 1 ? a[1].as_int() : a[0].as_int();
    int64_t step = a.size() > 2 ? a[2].as_int() : 1;
    TB_CHECK(step != 0, FormatError, at(), ": range() with step 0");
    // Materialised when small (a tiny pickle must not become a huge list); else kept as an object.
    int64_t n = step > 0 ? (stop > start ? (stop - start + step - 1) / step : 0)
                         : (start > stop ? (start - stop - step - 1) / -step : 0);
    if (n > 65536) return Value::object("builtins.range", std::move(args));
    charge_values(uint64_t(n));
    ValueList items;
    for (int64_t i = 0, x = start; i < n; ++i, x += step) items.push_back(Value::integer(x));
    return Value::list(std::move(items));
  }
  if (q == "numpy.core.multiarray._reconstruct" || q == "numpy.core._internal._reconstruct") {
    nargs(3, 3);
    return Value::object("numpy.ndarray");
  }
  if (q == "numpy.dtype") {
    nargs(1, 3);
    std::string d = a[0].as_str();
    // numpy pickles the dtype's kind+size without byte order ("f8"); BUILD adds it.
    if (!d.empty() && d[0] != '<' && d[0] != '>' && d[0] != '|' && d[0] != '=') d = "=" + d;
    return make_np_dtype(d);
  }
  if (q == "numpy.core.multiarray.scalar") {
    nargs(1, 2);
    std::string descr = np_descr_of(a[0], at());
    DtypeBits bits = np_dtype_bits(descr, at());
    if (bits.object) return a.size() > 1 ? a[1] : Value();
    TB_CHECK(a.size() == 2, FormatError, at(), ": numpy scalar without data");
    charge_bytes(a[1].as_str().size(), "a numpy scalar");
    return Value::tensor(np_tensor_from_bytes(a[1].as_str(), bits, {}, false, at()));
  }
  if (q == "numpy.ndarray") return Value::object("numpy.ndarray");
  if (is_torch_storage_class(q) || q.rfind("torch.nn.", 0) == 0 || q == "torch.Tensor") return instantiate(callable, args);
  // Other allowed names (dtypes, layouts) are not callables.
  return opaque(q, std::move(args));
}

Value Machine::instantiate(const Value& cls, Value args) {
  std::string q;
  if (!global_name(cls, &q)) {
    TB_CHECK(cls.kind() == Value::Kind::Object, FormatError, at(), ": cannot instantiate ", brief(cls));
    return Value::object(cls.as_object().cls, std::move(args));
  }
  if (scan_only_) return Value::none();
  if (q == "collections.OrderedDict" || q == "collections.Counter" || q == "builtins.dict" ||
      q == "collections.defaultdict")
    return Value::dict(q == "builtins.dict" ? "" : q);
  if (q == "builtins.list") return Value::list();
  if (q == "builtins.set" || q == "builtins.frozenset") return Value::set();
  if (q == "builtins.object") return Value::object("builtins.object");
  if (q == "numpy.ndarray") return Value::object("numpy.ndarray");
  if (q == "torch.nn.parameter.Parameter" || q == "torch.Tensor" || q == "torch.nn.parameter.Buffer") {
    // Parameter.__new__(cls, data, requires_grad): the data tensor is the value.
    if (args.is_sequence() && !args.items().empty() && args.items()[0].is_tensor()) return args.items()[0];
    return Value::object(q, std::move(args));
  }
  // torch.nn.modules.* classes, user classes (opt-in) -> opaque objects.
  return Value::object(q, std::move(args));
}

Value Machine::rebuild_tensor(const std::string& fn, const ValueList& a) {
  auto nargs = [&](size_t lo, size_t hi) {
    TB_CHECK(a.size() >= lo && a.size() <= hi, FormatError, at(), ": ", fn, " takes ", lo, "..", hi,
             " arguments but the pickle gives ", a.size());
  };
  const bool v2 = fn == "torch._utils._rebuild_tensor_v2";  // what torch.save writes for every tensor
  if (!v2 && (fn == "torch._utils._rebuild_parameter" || fn == "torch._utils._rebuild_parameter_with_state")) {
    nargs(2, 4);
    return a[0];
  }
  if (!v2 && (fn == "torch._tensor._rebuild_from_type_v2" || fn == "torch._tensor._rebuild_from_type")) {
    nargs(3, 4);
    Value inner = call(a[0], a[2]);
    return inner;
  }
  if (!v2 && fn == "torch._utils._rebuild_meta_tensor_no_storage")
    throw UnsupportedError(str(at(), ": tensor on the 'meta' device has no data"));
  bool v3 = !v2 && fn == "torch._utils._rebuild_tensor_v3";
  if (v2) nargs(6, 7);
  else if (fn == "torch._utils._rebuild_tensor") nargs(4, 4);
  else if (v3) nargs(7, 8);
  else throw UnsupportedError(str(at(), ": ", fn, " is not supported (quantized/sparse/nested tensors)"));
  const Value& storage = a[0];
  if (storage.is_none()) return Value();  // dry run (persistent_load returned None)
  TB_CHECK(storage.is_tensor(), FormatError, at(), ": ", fn, " expects a storage but got ", brief(storage));
  const Tensor& st = storage.as_tensor();
  DType dt = st.dtype();
  if (v3) {
    std::string dq;
    TB_CHECK(global_name(a[6], &dq) && torch_dtype_of_global(dq), FormatError, at(), ": ", fn,
             " expects a torch dtype as 7th argument but got ", brief(a[6]));
    dt = *torch_dtype_of_global(dq);
  }
  int64_t off = a[1].as_int();
  auto loc = [this] { return at(); };
  Shape size = shape_of(a[2], loc, "tensor size"), stride = shape_of(a[3], loc, "tensor stride");
  TB_CHECK(size.size() == stride.size(), FormatError, at(), ": tensor size ", shape_str(size), " and stride ",
           shape_str(stride), " differ in rank");
  TB_CHECK(off >= 0 && off < (int64_t(1) << 60), FormatError, at(), ": bad storage offset ", off);
  int64_t off_bytes = 0, byte_off = 0;  // checked; the message is built only on overflow
  if (__builtin_mul_overflow(off, int64_t(dtype_size(dt)), &off_bytes) ||
      __builtin_add_overflow(st.byte_offset(), off_bytes, &byte_off)) {
    const std::string off_what = str(at(), ": storage offset ", off, " of a ", dtype_name(dt), " tensor");
    byte_off = checked_add(st.byte_offset(), checked_mul(off, int64_t(dtype_size(dt)), off_what), off_what);
  }
  try {
    return Value::tensor(Tensor(st.storage(), dt, std::move(size), std::move(stride), byte_off));
  } catch (const ShapeError& e) {  // size and stride were moved: read them again for the message
    size = shape_of(a[2], loc, "tensor size");
    stride = shape_of(a[3], loc, "tensor stride");
    throw FormatError(str(at(), ": tensor ", dtype_name(dt), shape_str(size), " stride ", shape_str(stride),
                          " at element offset ", off, " does not fit its storage of ", st.storage()->nbytes(),
                          " bytes (", e.message(), ")"));
  }
}

void Machine::add_to_set(const Value& set, ValueList items) {
  auto& v = set.items();
  for (auto& x : items) v.push_back(std::move(x));
}

void Machine::build(Value& obj, Value state) {
  if (scan_only_) return;
  switch (obj.kind()) {
    case Value::Kind::Dict: {
      // OrderedDict.__setstate__-less BUILD: attributes (e.g. _metadata), never items.
      auto& d = obj.dict_data();
      if (!d.attrs) d.attrs = std::make_shared<ValueDict>();
      if (state.is_dict()) {
        charge_values(state.dict_data().items.size());
        for (auto& kv : state.dict_data().items) d.attrs->items.push_back(kv);
      } else if (state.kind() == Value::Kind::Tuple && state.items().size() == 2 && state.items()[0].is_dict()) {
        charge_values(state.items()[0].dict_data().items.size());
        for (auto& kv : state.items()[0].dict_data().items) d.attrs->items.push_back(kv);
      } else if (!state.is_none()) {
        d.attrs->items.emplace_back(Value::string("__state__"), state);
      }
      return;
    }
    case Value::Kind::Tensor:
      return;  // tensor state (requires_grad, hooks, python attributes) is not kept
    case Value::Kind::Object: {
      auto& o = obj.as_object();
      if (o.cls == "numpy.dtype") {
        // state (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
        TB_CHECK(state.kind() == Value::Kind::Tuple && state.items().size() >= 2, FormatError, at(),
                 ": numpy.dtype state must be a tuple but is ", brief(state));
        const auto& s = state.items();
        if (s.size() > 3 && !s[3].is_none())
          throw UnsupportedError(str(at(), ": structured numpy dtype (fields) is not supported"));
        if (s.size() > 2 && !s[2].is_none())
          throw UnsupportedError(str(at(), ": numpy sub-array dtype is not supported"));
        std::string d = o.args->as_str();
        std::string order = s[1].as_str();
        if (order == "=") order = "<";
        if (!d.empty() && (d[0] == '=' || d[0] == '<' || d[0] == '>' || d[0] == '|')) d = d.substr(1);
        *o.args = Value::string(order + d);
        return;
      }
      if (o.cls == "numpy.ndarray") {
        TB_CHECK(state.kind() == Value::Kind::Tuple && (state.items().size() == 5 || state.items().size() == 4),
                 FormatError, at(), ": numpy.ndarray state must be a 4- or 5-tuple but is ", brief(state));
        const auto& s = state.items();
        size_t i = s.size() == 5 ? 1 : 0;
        Shape shape = shape_of(s[i], [this] { return at(); }, "numpy array shape");
        std::string descr = np_descr_of(s[i + 1], at());
        bool fortran = s[i + 2].as_bool();
        const Value& data = s[i + 3];
        DtypeBits bits = np_dtype_bits(descr, at());
        Value result;
        if (bits.object) {
          int64_t n = checked_numel(shape);
          TB_CHECK(data.kind() == Value::Kind::List && int64_t(data.items().size()) == n, FormatError, at(),
                   ": numpy object array of shape ", shape_str(shape), " needs a list of ", n, " objects but has ",
                   brief(data));
          if (shape.empty()) {
            result = data.items()[0];
          } else {
            TB_CHECK(shape.size() == 1, UnsupportedError, at(), ": numpy object arrays with ", shape.size(),
                     " dimensions are not supported (only 0-d and 1-d)");
            charge_values(data.items().size());
            result = Value::list(data.items());
          }
        } else {
          TB_CHECK(data.kind() == Value::Kind::Bytes || data.kind() == Value::Kind::Str, FormatError, at(),
                   ": numpy array data must be bytes but is ", brief(data));
          const std::string& raw = data.as_str();
          charge_bytes(raw.size(), "a numpy array's data");
          // Python-2 'str' data read as text: undo nothing (bytes kept raw by the VM)
          result = Value::tensor(np_tensor_from_bytes(raw, bits, shape, fortran, at()));
        }
        replaced_[obj.identity()] = result;
        obj = result;
        return;
      }
      *o.state = std::move(state);
      return;
    }
    default:
      throw FormatError(str(at(), ": BUILD on a ", obj.kind_name(), " (", brief(obj), ")"));
  }
}

// Breaks every container reachable from the stack and memo iteratively, so that destroying a
// hostile deep or cyclic structure cannot overflow the C++ stack or leak.
void Machine::dismantle() {
  std::vector<Value> work;
  for (auto& v : stack_) work.push_back(std::move(v));
  stack_.clear();
  for (auto& v : memo_dense_)
    if (v) work.push_back(std::move(*v));
  memo_dense_.clear();
  for (auto& kv : memo_sparse_) work.push_back(std::move(kv.second));
  memo_sparse_.clear();
  for (auto& kv : replaced_) work.push_back(std::move(kv.second));
  replaced_.clear();
  for (auto& kv : allowed_cache_) work.push_back(std::move(kv.second.second));
  allowed_cache_.clear();
  for (auto& kv : theight_) work.push_back(std::move(kv.second.second));
  theight_.clear();
  std::vector<Value> grave;
  while (!work.empty()) {
    Value v = std::move(work.back());
    work.pop_back();
    switch (v.kind()) {
      case Value::Kind::List:
      case Value::Kind::Tuple:
      case Value::Kind::Set: {
        auto& it = v.items();
        for (auto& x : it) work.push_back(std::move(x));
        it.clear();
        break;
      }
      case Value::Kind::Dict: {
        auto& d = v.dict_data();
        for (auto& kv : d.items) {
          work.push_back(std::move(kv.first));
          work.push_back(std::move(kv.second));
        }
        d.items.clear();
        if (d.attrs) {
          for (auto& kv : d.attrs->items) work.push_back(std::move(kv.second));
          d.attrs->items.clear();
        }
        break;
      }
      case Value::Kind::Object: {
        auto& o = v.as_object();
        for (auto* p : {&o.args, &o.state, &o.items})
          if (*p) {
            work.push_back(std::move(**p));
            **p = Value();
          }
        break;
      }
      default: break;
    }
  }
}

// Depth limit, cycle check and cost of the result (iterative). The cost is what walking the tree
// costs, a shared value counted at every place it appears (each container is visited once here):
// a pickle may hand one list out twice (tied weights), but 40 levels of lists that each hold the
// level below twice stand for 2^40 values in a few hundred bytes.
void Machine::validate(const Value& root) {
  std::unordered_set<const void*> on_path;
  auto children = [](const Value& v, std::vector<const Value*>& out) {
    out.clear();
    switch (v.kind()) {
      case Value::Kind::List:
      case Value::Kind::Tuple:
      case Value::Kind::Set:
        for (const auto& x : v.items()) out.push_back(&x);
        break;
      case Value::Kind::Dict:
        for (const auto& kv : v.dict_data().items) {
          out.push_back(&kv.first);
          out.push_back(&kv.second);
        }
        if (v.dict_data().attrs)
          for (const auto& kv : v.dict_data().attrs->items) out.push_back(&kv.second);
        break;
      case Value::Kind::Object: {
        const auto& o = v.as_object();
        for (const auto* p : {&o.args, &o.state, &o.items})
          if (*p) out.push_back(p->get());
        break;
      }
      default: break;
    }
  };
  auto is_container = [](const Value& v) {
    return v.kind() == Value::Kind::List || v.kind() == Value::Kind::Tuple || v.kind() == Value::Kind::Set ||
           v.kind() == Value::Kind::Dict || v.kind() == Value::Kind::Object;
  };
  // Per finished container: the values under it (itself included), the leaves flattening reaches
  // (objects and sets are walked too: module state dicts are flattened later) and the bytes of
  // their dotted names below it. Saturating sums: a bomb's counts exceed 64 bits.
  struct Cost {
    uint64_t nodes = 1, leaves = 1, names = 0;
  };
  std::unordered_map<const void*, Cost> done;
  auto cost_of = [&](const Value& v) {
    if (!is_container(v)) return Cost{};
    return done.at(v.identity());
  };
  auto finish = [&](const Value& v) {
    Cost c{1, 0, 0};
    auto add = [&c](const Cost& k, uint64_t name_len) {
      c.nodes = LoadBudget::sat_add(c.nodes, k.nodes);
      c.leaves = LoadBudget::sat_add(c.leaves, k.leaves);
      c.names = LoadBudget::sat_add(c.names, LoadBudget::sat_add(k.names, LoadBudget::sat_mul(k.leaves, name_len + 1)));
    };
    auto key_len = [](const Value& k) -> uint64_t { return k.is_str() ? k.as_str().size() : 80; };
    switch (v.kind()) {
      case Value::Kind::List:
      case Value::Kind::Tuple:
      case Value::Kind::Set: {
        const auto& items = v.items();
        uint64_t digits = 1;
        for (size_t i = 0, next = 10; i < items.size(); ++i) {
          if (i == next) ++digits, next *= 10;
          add(cost_of(items[i]), digits);
        }
        break;
      }
      case Value::Kind::Dict:
        for (const auto& [k, x] : v.dict_data().items) {
          c.nodes = LoadBudget::sat_add(c.nodes, cost_of(k).nodes);
          add(cost_of(x), key_len(k));
        }
        if (v.dict_data().attrs)
          for (const auto& [k, x] : v.dict_data().attrs->items) add(cost_of(x), key_len(k));
        break;
      case Value::Kind::Object: {
        const auto& o = v.as_object();
        for (const auto* p : {&o.args, &o.state, &o.items})
          if (*p) add(cost_of(**p), 0);
        break;
      }
      default: break;
    }
    c.leaves = std::max<uint64_t>(c.leaves, 1);
    done[v.identity()] = c;
  };
  struct Node {
    const Value* v;
    std::vector<const Value*> kids;
    size_t i;
  };
  std::vector<Node> path;
  auto enter = [&](const Value* v) {
    if (!is_container(*v)) return;
    const void* id = v->identity();
    if (on_path.count(id)) {
      // Opaque objects kept by allow_unknown_globals may point back at an ancestor (a config node's
      // parent, as OmegaConf keeps it): that reference becomes a placeholder, which breaks the cycle
      // for everything that walks the tree later. Plain containers that contain themselves are refused.
      TB_CHECK(opts_.allow_unknown_globals && v->kind() == Value::Kind::Object, FormatError, where(),
               ": the pickle builds a recursive structure (a ", v->kind_name(),
               " that contains itself); weight files never do");
      *const_cast<Value*>(v) = Value::string("<recursive reference to a " + v->as_object().cls + " object>");
      return;
    }
    if (done.count(id)) return;  // shared: its cost is known
    TB_CHECK(path.size() < opts_.max_depth, FormatError, where(), ": objects nested deeper than ", opts_.max_depth,
             " levels (limit Options::max_depth)");
    Node n{v, {}, 0};
    children(*v, n.kids);
    on_path.insert(id);
    path.push_back(std::move(n));
  };
  enter(&root);
  while (!path.empty()) {
    budget_->tick("checking the pickle's objects");
    Node& n = path.back();
    if (n.i < n.kids.size()) {
      const Value* c = n.kids[n.i++];
      enter(c);
    } else {
      on_path.erase(n.v->identity());
      finish(*n.v);
      path.pop_back();
    }
  }
  if (is_container(root)) {
    Cost c = done.at(root.identity());
    charge_tree(c.nodes, c.leaves, c.names);
  }
}

void Machine::charge_tree(uint64_t nodes, uint64_t leaves, uint64_t name_bytes) {
  // What flattening costs per leaf besides its name: an entry (name + value) and a short rendering.
  constexpr uint64_t kLeafBytes = 128;
  budget_->charge_objects(nodes, "the pickle's tree, counting a shared value at every place it appears,");
  budget_->charge_bytes(LoadBudget::sat_add(name_bytes, LoadBudget::sat_mul(leaves, kLeafBytes)),
                        "flattening the pickle's tree to dotted names");
}

Result Machine::run() {
  bool stopped = false;
  try {
    while (!stopped) {
      op_pos_ = pos_;
      TB_CHECK(pos_ < end_, FormatError, where(), ": truncated pickle (no STOP opcode before byte ", end_, ")");
      budget_->tick("running the pickle");
      op_ = u8();
      switch (op_) {
        case 0x80: {  // PROTO
          protocol_ = u8();
          TB_CHECK(protocol_ <= 5, UnsupportedError, at(), ": pickle protocol ", protocol_, " (supported: 0-5)");
          break;
        }
        case 0x95:  // FRAME
          uint_le(8);
          break;
        case '.':  // STOP
          stopped = true;
          break;
        case '(': mark(); break;
        case '0': pop(); break;
        case '1': pop_mark(); break;
        case '2': push(top()); break;
        case 'N': push(Value()); break;
        case 0x88: push(Value::boolean(true)); break;
        case 0x89: push(Value::boolean(false)); break;
        case 'K': push(Value::integer(int64_t(uint_le(1)))); break;
        case 'M': push(Value::integer(int64_t(uint_le(2)))); break;
        case 'J': push(Value::integer(int64_t(int32_t(uint32_t(uint_le(4)))))); break;
        case 0x8a:    // LONG1
        case 0x8b: {  // LONG4
          uint64_t n = op_ == 0x8a ? uint_le(1) : uint_le(4);
          std::string b = bytes(n);
          if (n == 0) {
            push(Value::integer(0));
            break;
          }
          bool neg = (uint8_t(b.back()) & 0x80) != 0;
          // Strip redundant sign-extension bytes, then fit into int64.
          size_t len = b.size();
          while (len > 1 && uint8_t(b[len - 1]) == (neg ? 0xFF : 0x00) &&
                 ((uint8_t(b[len - 2]) & 0x80) != 0) == neg)
            --len;
          if (len > 8) {
            push(Value::object("builtins.int", Value::bytes(b)));  // too large: raw two's complement bytes
            break;
          }
          uint64_t v = neg ? ~uint64_t(0) : 0;
          for (size_t i = 0; i < len; ++i) {
            v &= ~(uint64_t(0xFF) << (8 * i));
            v |= uint64_t(uint8_t(b[i])) << (8 * i);
          }
          push(Value::integer(int64_t(v)));
          break;
        }
        case 'I': {  // INT (text)
          std::string s = line();
          if (s == "01") push(Value::boolean(true));
          else if (s == "00") push(Value::boolean(false));
          else {
            char* e = nullptr;
            errno = 0;
            long long v = std::strtoll(s.c_str(), &e, 10);
            TB_CHECK(!s.empty() && e && *e == '\0' && errno == 0, FormatError, at(), ": bad INT '", s, "'");
            push(Value::integer(v));
          }
          break;
        }
        case 'L': {  // LONG (text)
          std::string s = line();
          if (!s.empty() && s.back() == 'L') s.pop_back();
          char* e = nullptr;
          errno = 0;
          long long v = std::strtoll(s.c_str(), &e, 10);
          TB_CHECK(!s.empty() && e && *e == '\0' && errno == 0, FormatError, at(), ": bad or too large LONG '", s, "'");
          push(Value::integer(v));
          break;
        }
        case 'F': {  // FLOAT (text)
          std::string s = line();
          char* e = nullptr;
          double d = std::strtod(s.c_str(), &e);
          TB_CHECK(!s.empty() && e && *e == '\0', FormatError, at(), ": bad FLOAT '", s, "'");
          push(Value::real(d));
          break;
        }
        case 'G': {  // BINFLOAT: big-endian double
          need(8);
          uint8_t b[8];
          fetch(b, 8);
          pos_ += 8;
          uint64_t u = 0;
          for (int i = 0; i < 8; ++i) u = (u << 8) | b[i];
          double d;
          std::memcpy(&d, &u, 8);
          push(Value::real(d));
          break;
        }
        case 'X': push(Value::string(bytes(uint_le(4)))); break;        // BINUNICODE
        case 0x8c: push(Value::string(bytes(uint_le(1)))); break;       // SHORT_BINUNICODE
        case 0x8d: push(Value::string(bytes(uint_le(8)))); break;       // BINUNICODE8
        case 'B': push(Value::bytes(bytes(uint_le(4)))); break;         // BINBYTES
        case 'C': push(Value::bytes(bytes(uint_le(1)))); break;         // SHORT_BINBYTES
        case 0x8e: push(Value::bytes(bytes(uint_le(8)))); break;        // BINBYTES8
        case 0x96: push(Value::bytes(bytes(uint_le(8)))); break;        // BYTEARRAY8
        case 'T':                                                        // BINSTRING (py2 str)
        case 'U': {                                                      // SHORT_BINSTRING
          uint64_t n = op_ == 'T' ? uint_le(4) : uint_le(1);
          std::string s = bytes(n);
          bool ascii = std::all_of(s.begin(), s.end(), [](char c) { return (unsigned char)c < 0x80; });
          // Python 2 str: text (dict keys, names) when ASCII; raw bytes (array data) otherwise.
          push(ascii && n < 256 ? Value::string(s) : Value::bytes(s));
          break;
        }
        case 'S': {  // STRING (text, quoted repr)
          std::string s = line();
          TB_CHECK(s.size() >= 2 && (s[0] == '\'' || s[0] == '"') && s.back() == s[0], FormatError, at(),
                   ": bad STRING literal");
          std::string out;
          for (size_t i = 1; i + 1 < s.size(); ++i) {
            char c = s[i];
            if (c != '\\' || i + 2 >= s.size()) {
              out.push_back(c);
              continue;
            }
            char e = s[++i];
            switch (e) {
              case 'n': out.push_back('\n'); break;
              case 't': out.push_back('\t'); break;
              case 'r': out.push_back('\r'); break;
              case 'x': {
                uint32_t hv = 0;
                TB_CHECK(parse_hex(s, i + 1, 2, &hv), FormatError, at(), ": bad \\x escape");
                out.push_back(char(hv));
                i += 2;
                break;
              }
              default: out.push_back(e);
            }
          }
          push(Value::bytes(out));
          break;
        }
        case 'V': {  // UNICODE (raw-unicode-escape)
          std::string s = line();
          // Decode \uXXXX escapes; other bytes are latin-1 code points.
          std::string res;
          for (size_t i = 0; i < s.size(); ++i) {
            if (s[i] == '\\' && i + 1 < s.size() && (s[i + 1] == 'u' || s[i + 1] == 'U')) {
              size_t nd = s[i + 1] == 'u' ? 4 : 8;
              TB_CHECK(i + 2 + nd <= s.size(), FormatError, at(), ": bad UNICODE escape");
              uint32_t cp = 0;
              TB_CHECK(parse_hex(s, i + 2, nd, &cp) && cp < 0x110000, FormatError, at(), ": bad UNICODE escape");
              append_utf8(res, cp);
              i += 1 + nd;
            } else {
              append_utf8(res, (unsigned char)s[i]);
            }
          }
          push(Value::string(res));
          break;
        }
        case ')': push(Value::tuple()); break;
        case 't': push(Value::tuple(pop_mark())); break;
        case 0x85: {
          Value a = pop();
          push(Value::tuple({a}));
          break;
        }
        case 0x86: {
          Value b = pop(), a = pop();
          push(Value::tuple({a, b}));
          break;
        }
        case 0x87: {
          Value c = pop(), b = pop(), a = pop();
          push(Value::tuple({a, b, c}));
          break;
        }
        case ']': push(Value::list()); break;
        case 'l': push(Value::list(pop_mark())); break;
        case '}': push(Value::dict()); break;
        case 'd': {
          ValueList items = pop_mark();
          TB_CHECK(items.size() % 2 == 0, FormatError, at(), ": DICT with an odd number of items");
          Value d = Value::dict();
          for (size_t i = 0; i < items.size(); i += 2) d.dict_data().items.emplace_back(items[i], items[i + 1]);
          push(d);
          break;
        }
        case 0x8f: push(Value::set()); break;
        case 0x91: push(Value::set(pop_mark())); break;  // FROZENSET
        case 0x90: {                                      // ADDITEMS
          ValueList items = pop_mark();
          Value& s = top();
          TB_CHECK(s.kind() == Value::Kind::Set, FormatError, at(), ": ADDITEMS on a ", s.kind_name());
          add_to_set(s, std::move(items));
          break;
        }
        case 'a':
        case 'e': {  // APPEND / APPENDS
          ValueList items;
          if (op_ == 'a') items.push_back(pop());
          else items = pop_mark();
          Value& l = top();
          if (scan_only_) break;
          if (l.kind() == Value::Kind::List) {
            auto& v = l.items();
            for (auto& x : items) v.push_back(std::move(x));
          } else if (l.kind() == Value::Kind::Object) {
            auto& o = l.as_object();
            if (!o.items || o.items->is_none()) o.items = std::make_shared<Value>(Value::list());
            TB_CHECK(o.items->kind() == Value::Kind::List, FormatError, at(), ": APPEND on ", o.cls);
            for (auto& x : items) o.items->items().push_back(std::move(x));
          } else {
            throw FormatError(str(at(), ": APPEND on a ", l.kind_name(), " (", brief(l), ")"));
          }
          break;
        }
        case 's':
        case 'u': {  // SETITEM / SETITEMS
          ValueList items;
          if (op_ == 's') {
            Value v = pop(), k = pop();
            items = {k, v};
          } else {
            items = pop_mark();
          }
          TB_CHECK(items.size() % 2 == 0, FormatError, at(), ": SETITEMS with an odd number of items");
          Value& d = top();
          if (scan_only_) break;
          ValueDict* dd = nullptr;
          if (d.is_dict()) {
            dd = &d.dict_data();
          } else if (d.kind() == Value::Kind::Object) {
            auto& o = d.as_object();
            if (!o.items || o.items->is_none()) o.items = std::make_shared<Value>(Value::dict());
            TB_CHECK(o.items->is_dict(), FormatError, at(), ": SETITEM on ", o.cls);
            dd = &o.items->dict_data();
          } else {
            throw FormatError(str(at(), ": SETITEM on a ", d.kind_name(), " (", brief(d), ")"));
          }
          for (size_t i = 0; i < items.size(); i += 2) dd->items.emplace_back(items[i], items[i + 1]);
          break;
        }
        case 'p': {  // PUT (text)
          std::string s = line();
          char* e = nullptr;
          unsigned long long idx = std::strtoull(s.c_str(), &e, 10);
          TB_CHECK(!s.empty() && e && *e == '\0', FormatError, at(), ": bad PUT index '", s, "'");
          memo_put(idx);
          break;
        }
        case 'q': memo_put(uint_le(1)); break;
        case 'r': memo_put(uint_le(4)); break;
        case 0x94: memo_put(memo_count_); break;  // MEMOIZE
        case 'g': {
          std::string s = line();
          char* e = nullptr;
          unsigned long long idx = std::strtoull(s.c_str(), &e, 10);
          TB_CHECK(!s.empty() && e && *e == '\0', FormatError, at(), ": bad GET index '", s, "'");
          push(memo_get(idx));
          break;
        }
        case 'h': push(memo_get(uint_le(1))); break;
        case 'j': push(memo_get(uint_le(4))); break;
        case 'c': {  // GLOBAL
          std::string mod = line(), name = line();
          std::string q = qualify(mod, name);
          note_global(q);
          push(make_global(q));
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          Value name = pop(), mod = pop();
          TB_CHECK(name.is_str() && mod.is_str(), FormatError, at(), ": STACK_GLOBAL needs two str but got ",
                   brief(mod), " and ", brief(name));
          std::string q = qualify(mod.as_str(), name.as_str());
          note_global(q);
          push(make_global(q));
          break;
        }
        case 'i': {  // INST module\nname\n + MARK args
          std::string mod = line(), name = line();
          std::string q = qualify(mod, name);
          note_global(q);
          ValueList args = pop_mark();
          push(instantiate(make_global(q), Value::tuple(std::move(args))));
          break;
        }
        case 'o': {  // OBJ: MARK cls args...
          ValueList items = pop_mark();
          TB_CHECK(!items.empty(), FormatError, at(), ": OBJ without a class");
          Value cls = items[0];
          items.erase(items.begin());
          push(instantiate(cls, Value::tuple(std::move(items))));
          break;
        }
        case 0x81: {  // NEWOBJ cls args
          Value args = pop(), cls = pop();
          push(instantiate(cls, std::move(args)));
          break;
        }
        case 0x92: {  // NEWOBJ_EX cls args kwargs
          Value kwargs = pop(), args = pop(), cls = pop();
          push(instantiate(cls, std::move(args)));
          break;
        }
        case 'R': {  // REDUCE
          Value args = pop(), fn = pop();
          push(call(fn, std::move(args)));
          break;
        }
        case 'b': {  // BUILD
          Value state = pop();
          build(top(), std::move(state));
          break;
        }
        case 'Q':
        case 'P': {  // BINPERSID / PERSID
          Value pid = op_ == 'Q' ? pop() : Value::string(line());
          if (scan_only_) {
            push(Value());
            break;
          }
          TB_CHECK(bool(opts_.persistent_load), FormatError, at(),
                   ": the pickle references external data (persistent id ", brief(pid),
                   ") but no persistent_load handler was given");
          push(opts_.persistent_load(pid));
          break;
        }
        case 0x82:
        case 0x83:
        case 0x84:
          throw UnsupportedError(str(at(), ": EXT opcodes (copyreg extension registry) are not supported"));
        case 0x97:
        case 0x98:
          throw UnsupportedError(str(at(), ": out-of-band buffers (pickle protocol 5 NEXT_BUFFER) are not supported"));
        default:
          throw FormatError(str(at(), ": unknown pickle opcode 0x", std::hex, int(op_), std::dec,
                                " (not a pickle, or a corrupted one)"));
      }
    }
  } catch (Error& e) {
    if (!unsafe_.empty() && !opts_.allow_unknown_globals && !scan_only_)
      throw UnsafeError(str(where(), ": refusing to load: the pickle references globals outside the allow-list: ",
                            list_names(unsafe_), " (nothing was executed; the file failed to parse after that: ",
                            e.message(), ")"));
    throw;
  }
  if (!unsafe_.empty() && !opts_.allow_unknown_globals && !scan_only_)
    throw UnsafeError(str(where(), ": refusing to load: the pickle references globals outside the allow-list: ",
                          list_names(unsafe_),
                          ". Nothing was executed. If you trust the file's structure, allow unknown globals to keep "
                          "them as opaque objects (they are never called)"));
  TB_CHECK(stack_.size() == 1 || scan_only_, FormatError, where(), ": pickle ended with ", stack_.size(),
           " values on the stack (expected 1)");
  Result res;
  res.end = pos_;
  res.protocol = protocol_;
  if (!scan_only_) {
    res.value = std::move(stack_.back());
    stack_.pop_back();
    try {
      validate(res.value);
    } catch (...) {
      stack_.push_back(std::move(res.value));
      throw;
    }
  }
  ok_ = true;
  return res;
}

}  // namespace

Result load_one(const Reader& reader, uint64_t offset, uint64_t size, const Options& opts) {
  Machine m(reader, offset, size, opts, false);
  return m.run();
}

Value load(const Reader& reader, uint64_t offset, uint64_t size, const Options& opts) {
  return load_one(reader, offset, size, opts).value;
}

Value load(const std::vector<uint8_t>& bytes, const std::string& label, const Options& opts) {
  auto r = memory_reader(bytes, label);
  return load(*r, 0, r->size(), opts);
}

std::vector<std::string> globals_in(const Reader& reader, uint64_t offset, uint64_t size) {
  Machine m(reader, offset, size, Options{}, true);
  m.run();
  return m.globals_seen();
}

bool is_allowed_global(const std::string& module, const std::string& name) {
  return allowed_qual(qualify(module, name));
}

}  // namespace tb::pickle
