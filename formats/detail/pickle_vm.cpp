// The pickle VM: opcodes, stack and memo (framework-neutral; rules come from a Globals table).
// See pickle.h for the Value mapping and the safety model, pickle_rules.h for the tables.
#include "formats/detail/pickle_vm.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <optional>
#include <unordered_map>
#include <unordered_set>

namespace tb::pickle {

namespace {

// A GLOBAL pushes Object{cls = "global", args = Str("module.name")}; interpreting it happens when it
// is called (REDUCE, NEWOBJ, OBJ, INST) or used as an argument (a dtype).
Value make_global(const std::string& qual) { return Value::object("global", Value::string(qual)); }

std::string normalize_module(std::string mod) {
  if (mod == "__builtin__") return "builtins";
  if (mod == "copy_reg") return "copyreg";
  if (mod.rfind("numpy._core", 0) == 0) return "numpy.core" + mod.substr(11);
  return mod;
}

/** The decimal integer that is all of s (text INT and LONG); nullopt when s is not one or overflows. */
std::optional<long long> text_int(const std::string& s) {
  char* e = nullptr;
  errno = 0;
  long long v = std::strtoll(s.c_str(), &e, 10);
  if (s.empty() || !e || *e != '\0' || errno != 0) return std::nullopt;
  return v;
}

class Machine final : public Context {
 public:
  Machine(const Reader& r, uint64_t offset, uint64_t size, const Options& o, const Globals& table, bool scan_only)
      : r_(r),
        direct_(r.contiguous_bytes()),
        pos_(offset),
        end_(offset + size),
        opts_(o),
        table_(table),
        scan_only_(scan_only) {
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
    if (!scan_only_) memo_reads_ = MemoReads::scan(r, offset, size);
  }
  ~Machine() override {
    if (!ok_) dismantle(take_all());
  }

  Result run();
  std::vector<std::string> globals_seen() const { return globals_; }

  // -- Context: what rules may use --
  std::string at() const override { return where() + " at byte " + std::to_string(op_pos_); }
  void charge_values(uint64_t n) override {
    budget_->charge_objects_lazy(n, [this] { return at() + ": copying a container"; });
  }
  void charge_bytes(uint64_t n, const char* what) override {
    budget_->charge_bytes_lazy(n, [this, what] { return at() + ": " + what; });
  }
  Value call(const Value& callable, Value args) override;
  Value instantiate(const Value& cls, Value args) override;

 private:
  // -- input --
  std::string where() const { return where_.empty() ? opts_.tag + " '" + r_.label() + "'" : where_; }
  void need(uint64_t n) {
    TB_CHECK(n <= end_ - pos_, FormatError, at(), ": truncated pickle (opcode needs ", n, " more bytes, ", end_ - pos_,
             " left)");
  }
  // Opcodes are read through a window of kWindow bytes: one Reader call (a pread when the file is
  // not mapped) per window instead of one per opcode byte. Longer reads go straight to the Reader.
  static constexpr uint64_t kWindow = 64 * 1024;
  void fetch(void* dst, uint64_t n) {  // caller checked need(n)
    if (direct_) {                     // a mapped file or memory: no window needed
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
    uint8_t buf[8];
    const uint8_t* b = buf;
    if (direct_)
      b = direct_ + pos_;
    else
      fetch(buf, n);
    pos_ += n;
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= uint64_t(b[i]) << (8 * i);
    return v;
  }
  std::string bytes(uint64_t n) {
    need(n);
    if (direct_) {
      std::string s(reinterpret_cast<const char*>(direct_ + pos_), size_t(n));
      pos_ += n;
      return s;
    }
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
      const uint32_t h = tuple_height(v);
      if (h > 1)
        TB_CHECK(h <= opts_.max_depth, FormatError, at(), ": tuples nested deeper than ", opts_.max_depth,
                 " levels (limit Options::max_depth)");
      // Recorded: heights >= 3, and height 2 when the tuple is long. A tuple missing from theight_
      // thus has height 1, or 2 and at most kShortTuple items (tuple_height finds out by looking at
      // them): a torch argument tuple, which holds the size and stride tuples, needs no hash table.
      if (h > 2 || (h == 2 && v.items().size() > kShortTuple))
        theight_.try_emplace(v.identity(), h, v);  // holding v keeps its address from being reused
    }
    stack_.push_back(std::move(v));
  }
  static constexpr size_t kShortTuple = 16;
  // 1 + the height of the highest tuple among t's items (1 when it holds none).
  uint32_t tuple_height(const Value& t) const {
    uint32_t h = 1;
    for (const auto& c : t.items()) {
      if (c.kind() != Value::Kind::Tuple) continue;
      uint32_t ch = 1;
      if (c.items().size() > kShortTuple) {
        ch = 0;  // long: recorded when it holds tuples
      } else {
        for (const auto& g : c.items())
          if (g.kind() == Value::Kind::Tuple) {
            ch = 0;  // holds tuples: height 2, or recorded when higher
            break;
          }
      }
      if (ch == 0) {
        auto it = theight_.find(c.identity());
        ch = it != theight_.end() ? it->second.first : c.items().size() > kShortTuple ? 1 : 2;
      }
      h = std::max(h, ch + 1);
    }
    return h;
  }
  Value pop() {
    TB_CHECK(stack_.size() > base(), FormatError, at(), ": opcode '", opname(),
             "' needs a value but the stack is empty", marks_.empty() ? "" : " (above the last MARK)");
    Value v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  Value& top() {
    TB_CHECK(stack_.size() > base(), FormatError, at(), ": opcode '", opname(),
             "' needs a value but the stack is empty");
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
  // An entry no GET reads (memo_reads_) is counted but its value is not kept.
  void memo_put(uint64_t idx) {
    const Value& v = top();
    const bool keep = memo_reads_.read(idx);
    if (idx < memo_stored_.size() && memo_stored_[size_t(idx)]) {  // overwritten
      if (keep) *memo_dense_[size_t(idx)] = v;
      return;
    }
    if (idx >= memo_stored_.size()) {
      auto it = memo_sparse_.find(idx);
      if (it != memo_sparse_.end()) {
        it->second = v;
        return;
      }
    }
    TB_CHECK(memo_count_ < opts_.max_memo, FormatError, at(), ": more than ", opts_.max_memo, " memo entries");
    ++memo_count_;
    if (idx < memo_stored_.size() || idx <= 2 * memo_count_ + 1024) {
      if (idx >= memo_stored_.size()) memo_stored_.resize(size_t(idx) + 1);
      memo_stored_[size_t(idx)] = 1;
      if (!keep) return;
      if (idx >= memo_dense_.size()) memo_dense_.resize(size_t(idx) + 1);
      memo_dense_[size_t(idx)] = v;
    } else {
      memo_sparse_.emplace(idx, v);
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
      if (it != replaced_.end()) return it->second.second;
    }
    return v;
  }

  char opname() const { return char(op_); }

  // -- calls (never executed: interpreted or refused) --
  void note_global(const std::string& q) {
    if (!seen_globals_.insert(q).second) return;
    globals_.push_back(q);
    if (!table_.find(q)) unsafe_.push_back(q);
  }
  // The rule of a global object, remembered per object (a state dict calls the same two globals
  // once per tensor); the map holds the object so its address is not reused.
  const Rule* rule_of(const Value& callable, const std::string& q) {
    auto it = rule_cache_.find(callable.identity());
    if (it != rule_cache_.end()) return it->second.first;
    const Rule* r = table_.find(q);
    rule_cache_.try_emplace(callable.identity(), r, callable);
    return r;
  }
  void build(Value& obj, Value state);
  Value opaque(const std::string& cls, Value args) {
    // Reaching here in strict mode means the global was already recorded as unsafe.
    return Value::object(cls, std::move(args));
  }

  void add_to_set(const Value& set, ValueList items);
  std::vector<Value> take_all();  // every value the machine holds, for dismantle()
  // One group of opcodes each; false when op_ is not in the group.
  bool op_number();
  bool op_string();
  bool op_container();
  bool op_call();
  void finish(Result& res);

  const Reader& r_;
  const uint8_t* direct_;  // r_'s bytes when it has them in memory (mapped file), else nullptr
  uint64_t pos_, end_;
  uint64_t op_pos_ = 0;
  std::vector<uint8_t> win_;  // input window: bytes [win_pos_, win_pos_ + win_.size())
  uint64_t win_pos_ = 0;
  uint8_t op_ = 0;
  Options opts_;
  const Globals& table_;
  bool scan_only_;
  std::optional<LoadBudget> own_budget_;  // when the caller gave none
  LoadBudget* budget_ = nullptr;
  std::string where_;
  std::vector<Value> stack_;
  std::vector<size_t> marks_;
  MemoReads memo_reads_;                          // the indices some GET reads (default: all)
  std::vector<uint8_t> memo_stored_;              // by index: 1 when stored (kept or not)
  std::vector<std::optional<Value>> memo_dense_;  // the kept entries; empty: not stored or not kept
  std::unordered_map<uint64_t, Value> memo_sparse_;
  uint64_t memo_count_ = 0;
  std::unordered_map<const void*, std::pair<uint32_t, Value>> theight_;  // tuple nesting heights
  std::unordered_map<const void*, std::pair<const Rule*, Value>> rule_cache_;
  // numpy objects turned into tensors by BUILD: the object and what replaces it
  std::unordered_map<const void*, std::pair<Value, Value>> replaced_;
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
  const std::string* qp = global_name(callable);
  if (!qp) {
    TB_CHECK(callable.kind() == Value::Kind::Object, FormatError, at(), ": REDUCE of a non-callable ", brief(callable));
    // calling an opaque object (unknown class instance) -> opaque result
    return opaque(callable.as_object().cls + "()", std::move(args));
  }
  const std::string& q = *qp;
  TB_CHECK(args.kind() == Value::Kind::Tuple || args.is_none(), FormatError, at(), ": arguments of ", q,
           " must be a tuple but are ", brief(args));
  if (scan_only_) return Value::none();
  const Rule* r = rule_of(callable, q);
  // Unknown globals (refused at the end unless allowed) and names that are not callables (dtypes,
  // layouts) give opaque objects.
  if (!r || !r->call) return opaque(q, std::move(args));
  static const ValueList empty;
  const ValueList& a = args.is_none() ? empty : args.items();
  return r->call(*this, q, args, a);
}

Value Machine::instantiate(const Value& cls, Value args) {
  const std::string* qp = global_name(cls);
  if (!qp) {
    TB_CHECK(cls.kind() == Value::Kind::Object, FormatError, at(), ": cannot instantiate ", brief(cls));
    return Value::object(cls.as_object().cls, std::move(args));
  }
  if (scan_only_) return Value::none();
  const std::string& q = *qp;
  const Rule* r = table_.find(q);
  if (!r || !r->make) return Value::object(q, std::move(args));  // module classes, user classes (opt-in)
  static const ValueList empty;
  const ValueList& a = args.is_sequence() ? args.items() : empty;
  return r->make(*this, q, args, a);
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
    case Value::Kind::Tensor: return;  // tensor state (requires_grad, hooks, python attributes) is not kept
    case Value::Kind::Object: {
      auto& o = obj.as_object();
      if (const BuildRule* rule = table_.build_rule(o.cls)) {
        if (std::optional<Value> result = (*rule)(*this, obj, state)) {
          replaced_[obj.identity()] = {obj, *result};  // holding obj keeps its address from being reused
          obj = std::move(*result);
        }
        return;
      }
      *o.state = std::move(state);
      return;
    }
    default: throw FormatError(str(at(), ": BUILD on a ", obj.kind_name(), " (", brief(obj), ")"));
  }
}

std::vector<Value> Machine::take_all() {
  std::vector<Value> work;
  for (auto& v : stack_) work.push_back(std::move(v));
  stack_.clear();
  for (auto& v : memo_dense_)
    if (v) work.push_back(std::move(*v));
  memo_dense_.clear();
  for (auto& kv : memo_sparse_) work.push_back(std::move(kv.second));
  memo_sparse_.clear();
  for (auto& kv : replaced_) {
    work.push_back(std::move(kv.second.first));
    work.push_back(std::move(kv.second.second));
  }
  replaced_.clear();
  for (auto& kv : rule_cache_) work.push_back(std::move(kv.second.second));
  rule_cache_.clear();
  for (auto& kv : theight_) work.push_back(std::move(kv.second.second));
  theight_.clear();
  return work;
}

// PROTO, FRAME, stack manipulation, None, bools, ints and floats.
bool Machine::op_number() {
  switch (op_) {
    case 0x80: {  // PROTO
      protocol_ = u8();
      TB_CHECK(protocol_ <= 5, UnsupportedError, at(), ": pickle protocol ", protocol_, " (supported: 0-5)");
      break;
    }
    case 0x95:  // FRAME
      uint_le(8);
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
      while (len > 1 && uint8_t(b[len - 1]) == (neg ? 0xFF : 0x00) && ((uint8_t(b[len - 2]) & 0x80) != 0) == neg) --len;
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
      if (s == "01")
        push(Value::boolean(true));
      else if (s == "00")
        push(Value::boolean(false));
      else {
        const auto v = text_int(s);
        TB_CHECK(v, FormatError, at(), ": bad INT '", s, "'");
        push(Value::integer(*v));
      }
      break;
    }
    case 'L': {  // LONG (text)
      std::string s = line();
      if (!s.empty() && s.back() == 'L') s.pop_back();
      const auto v = text_int(s);
      TB_CHECK(v, FormatError, at(), ": bad or too large LONG '", s, "'");
      push(Value::integer(*v));
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
    default: return false;
  }
  return true;
}

// str and bytes, binary and text forms.
bool Machine::op_string() {
  switch (op_) {
    case 'X': push(Value::string(bytes(uint_le(4)))); break;   // BINUNICODE
    case 0x8c: push(Value::string(bytes(uint_le(1)))); break;  // SHORT_BINUNICODE
    case 0x8d: push(Value::string(bytes(uint_le(8)))); break;  // BINUNICODE8
    case 'B': push(Value::bytes(bytes(uint_le(4)))); break;    // BINBYTES
    case 'C': push(Value::bytes(bytes(uint_le(1)))); break;    // SHORT_BINBYTES
    case 0x8e: push(Value::bytes(bytes(uint_le(8)))); break;   // BINBYTES8
    case 0x96: push(Value::bytes(bytes(uint_le(8)))); break;   // BYTEARRAY8
    case 'T':                                                  // BINSTRING (py2 str)
    case 'U': {                                                // SHORT_BINSTRING
      uint64_t n = op_ == 'T' ? uint_le(4) : uint_le(1);
      std::string s = bytes(n);
      bool ascii = std::all_of(s.begin(), s.end(), [](char c) { return (unsigned char)c < 0x80; });
      // Python 2 str: text (dict keys, names) when ASCII; raw bytes (array data) otherwise.
      push(ascii && n < 256 ? Value::string(s) : Value::bytes(s));
      break;
    }
    case 'S': push(Value::bytes(decode_string_literal(line(), at()))); break;  // STRING (quoted repr)
    case 'V': push(Value::string(decode_raw_unicode(line(), at()))); break;    // UNICODE (raw-unicode-escape)
    default: return false;
  }
  return true;
}

// Tuples, lists, dicts and sets, and adding to them.
bool Machine::op_container() {
  switch (op_) {
    case ')': push(Value::tuple()); break;
    case 't': push(Value::tuple(pop_mark())); break;
    case 0x85:    // TUPLE1
    case 0x86:    // TUPLE2
    case 0x87: {  // TUPLE3: the last n values, moved (no copies)
      const size_t n = size_t(op_ - 0x84);
      TB_CHECK(stack_.size() >= base() + n, FormatError, at(), ": opcode '", opname(),
               "' needs a value but the stack is empty", marks_.empty() ? "" : " (above the last MARK)");
      ValueList items(std::make_move_iterator(stack_.end() - std::ptrdiff_t(n)), std::make_move_iterator(stack_.end()));
      stack_.resize(stack_.size() - n);
      push(Value::tuple(std::move(items)));
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
    case 0x90: {                                     // ADDITEMS
      ValueList items = pop_mark();
      Value& s = top();
      TB_CHECK(s.kind() == Value::Kind::Set, FormatError, at(), ": ADDITEMS on a ", s.kind_name());
      add_to_set(s, std::move(items));
      break;
    }
    case 'a':
    case 'e': {  // APPEND / APPENDS
      ValueList items;
      if (op_ == 'a')
        items.push_back(pop());
      else
        items = pop_mark();
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
        items.reserve(2);
        items.push_back(std::move(k));
        items.push_back(std::move(v));
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
      for (size_t i = 0; i < items.size(); i += 2) dd->items.emplace_back(std::move(items[i]), std::move(items[i + 1]));
      break;
    }
    default: return false;
  }
  return true;
}

// Memo, globals, calls, instantiation, BUILD and persistent ids.
bool Machine::op_call() {
  switch (op_) {
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
      TB_CHECK(name.is_str() && mod.is_str(), FormatError, at(), ": STACK_GLOBAL needs two str but got ", brief(mod),
               " and ", brief(name));
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
      TB_CHECK(bool(opts_.persistent_load), FormatError, at(), ": the pickle references external data (persistent id ",
               brief(pid), ") but no persistent_load handler was given");
      push(opts_.persistent_load(pid));
      break;
    }
    case 0x82:
    case 0x83:
    case 0x84: throw UnsupportedError(str(at(), ": EXT opcodes (copyreg extension registry) are not supported"));
    case 0x97:
    case 0x98:
      throw UnsupportedError(str(at(), ": out-of-band buffers (pickle protocol 5 NEXT_BUFFER) are not supported"));
    default: return false;
  }
  return true;
}
Result Machine::run() {
  try {
    for (;;) {
      op_pos_ = pos_;
      TB_CHECK(pos_ < end_, FormatError, where(), ": truncated pickle (no STOP opcode before byte ", end_, ")");
      budget_->tick("running the pickle");
      op_ = u8();
      if (op_ == '.') break;  // STOP
      if (op_number() || op_string() || op_container() || op_call()) continue;
      throw FormatError(
          str(at(), ": unknown pickle opcode 0x", std::hex, int(op_), std::dec, " (not a pickle, or a corrupted one)"));
    }
  } catch (Error& e) {
    if (!unsafe_.empty() && !opts_.allow_unknown_globals && !scan_only_)
      throw UnsafeError(str(
          where(), ": refusing to load: the pickle references globals outside the allow-list: ", list_names(unsafe_),
          " (nothing was executed; the file failed to parse after that: ", e.message(), ")"));
    throw;
  }
  if (!unsafe_.empty() && !opts_.allow_unknown_globals && !scan_only_)
    throw UnsafeError(
        str(where(), ": refusing to load: the pickle references globals outside the allow-list: ", list_names(unsafe_),
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
      check_tree(res.value, {opts_.max_depth, opts_.allow_unknown_globals, budget_, where()});
    } catch (...) {
      stack_.push_back(std::move(res.value));
      throw;
    }
  }
  ok_ = true;
  return res;
}

}  // namespace

std::string qualify(const std::string& module, const std::string& name) {
  return normalize_module(module) + "." + name;
}

Result run_vm(const Reader& reader, uint64_t offset, uint64_t size, const Options& opts, const Globals& table,
              bool scan_only, std::vector<std::string>* globals_seen) {
  Machine m(reader, offset, size, opts, table, scan_only);
  Result r = m.run();
  if (globals_seen) *globals_seen = m.globals_seen();
  return r;
}

}  // namespace tb::pickle
