// NumPy .npy reader and writer; layout in npy.h.
#include "formats/npy.h"
#include "tensor/checked.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <limits>
#include <unordered_set>

#include "formats/adapters.h"
#include "formats/detail/pickle.h"
#include "formats/detail/pickle_numpy.h"

namespace tb {

namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMaxHeader = 1u << 20;  // numpy itself refuses > 10000 without allow_pickle
constexpr size_t kMaxDims = 64;
constexpr const char* kNote = "tensorbridge:dtype=";

// ---- a Python literal parser for the header dict ----
struct LitKV;  // a named pair: std::pair<Lit, Lit> of the incomplete Lit is rejected by clang
struct Lit {
  enum Kind { Str, Int, Bool, None, Tuple, Dict } kind = None;
  std::string s;
  int64_t i = 0;
  bool b = false;
  std::vector<Lit> items;
  std::vector<LitKV> kv;
};
struct LitKV {
  Lit first, second;
};

class LitParser {
 public:
  LitParser(const std::string& text, const std::string& label) : t_(text), label_(label) {}

  Lit parse_all() {
    Lit v = value(0);
    skip();
    TB_CHECK(p_ == t_.size(), FormatError, err(), "unexpected text after the header dict at character ", p_, ": '",
             t_.substr(p_, 20), "'");
    return v;
  }
  const std::string& comment() const { return comment_; }

 private:
  std::string err() const { return str("[npy] '", label_, "': header "); }
  void skip() {
    while (p_ < t_.size()) {
      char c = t_[p_];
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' || c == '\0') {
        ++p_;
      } else if (c == '#') {
        size_t e = t_.find('\n', p_);
        if (e == std::string::npos) e = t_.size();
        comment_ += t_.substr(p_ + 1, e - p_ - 1);
        p_ = e;
      } else if (c == '\\' && p_ + 1 < t_.size() && t_[p_ + 1] == '\n') {
        p_ += 2;
      } else {
        break;
      }
    }
  }
  bool eat(char c) {
    skip();
    if (p_ < t_.size() && t_[p_] == c) {
      ++p_;
      return true;
    }
    return false;
  }
  Lit value(int depth) {
    TB_CHECK(depth < 32, FormatError, err(), "nests deeper than 32 levels");
    skip();
    TB_CHECK(p_ < t_.size(), FormatError, err(), "ends early (expected a value): '", t_, "'");
    char c = t_[p_];
    if (c == '{') {
      ++p_;
      Lit d;
      d.kind = Lit::Dict;
      while (!eat('}')) {
        Lit k = value(depth + 1);
        TB_CHECK(eat(':'), FormatError, err(), "expected ':' after a dict key at character ", p_);
        Lit v = value(depth + 1);
        d.kv.push_back(LitKV{std::move(k), std::move(v)});
        if (eat('}')) break;
        TB_CHECK(eat(','), FormatError, err(), "expected ',' or '}' at character ", p_);
      }
      return d;
    }
    if (c == '(' || c == '[') {
      char close = c == '(' ? ')' : ']';
      ++p_;
      Lit tup;
      tup.kind = Lit::Tuple;
      bool comma = false;
      while (!eat(close)) {
        tup.items.push_back(value(depth + 1));
        if (eat(close)) break;
        TB_CHECK(eat(','), FormatError, err(), "expected ',' or '", close, "' at character ", p_);
        comma = true;
      }
      // "(3)" is just 3 in Python: a parenthesised single value without a comma
      if (c == '(' && tup.items.size() == 1 && !comma) return tup.items[0];
      return tup;
    }
    if (c == '\'' || c == '"' ||
        ((c == 'u' || c == 'b' || c == 'U' || c == 'B') && p_ + 1 < t_.size() &&
         (t_[p_ + 1] == '\'' || t_[p_ + 1] == '"'))) {
      if (c != '\'' && c != '"') ++p_;
      return string_lit();
    }
    if (c == '-' || c == '+' || std::isdigit(static_cast<unsigned char>(c))) return int_lit();
    for (auto [word, kind, b] : {std::tuple{"True", Lit::Bool, true}, std::tuple{"False", Lit::Bool, false},
                                 std::tuple{"None", Lit::None, false}}) {
      size_t n = std::strlen(word);
      if (t_.compare(p_, n, word) == 0 &&
          (p_ + n == t_.size() || !(std::isalnum(static_cast<unsigned char>(t_[p_ + n])) || t_[p_ + n] == '_'))) {
        p_ += n;
        Lit l;
        l.kind = kind;
        l.b = b;
        return l;
      }
    }
    throw FormatError(str(err(), "has an unexpected token at character ", p_, ": '", t_.substr(p_, 20), "'"));
  }
  Lit string_lit() {
    char q = t_[p_++];
    Lit l;
    l.kind = Lit::Str;
    while (true) {
      TB_CHECK(p_ < t_.size(), FormatError, err(), "has an unterminated string");
      char c = t_[p_++];
      if (c == q) break;
      if (c == '\\') {
        TB_CHECK(p_ < t_.size(), FormatError, err(), "has an unterminated string");
        char e = t_[p_++];
        switch (e) {
          case 'n': l.s += '\n'; break;
          case 't': l.s += '\t'; break;
          case 'r': l.s += '\r'; break;
          case '0': l.s += '\0'; break;
          case 'x': {
            TB_CHECK(p_ + 2 <= t_.size() && std::isxdigit(static_cast<unsigned char>(t_[p_])) &&
                         std::isxdigit(static_cast<unsigned char>(t_[p_ + 1])),
                     FormatError, err(), "has a bad \\x escape");
            l.s += char(std::stoi(t_.substr(p_, 2), nullptr, 16));
            p_ += 2;
            break;
          }
          default: l.s += e; break;  // \\ \' \" and anything else kept literally
        }
      } else {
        l.s += c;
      }
    }
    return l;
  }
  Lit int_lit() {
    size_t start = p_;
    bool neg = false;
    if (t_[p_] == '-' || t_[p_] == '+') neg = t_[p_++] == '-';
    TB_CHECK(p_ < t_.size() && std::isdigit(static_cast<unsigned char>(t_[p_])), FormatError, err(),
             "has a bad number at character ", start);
    uint64_t v = 0;
    while (p_ < t_.size() && std::isdigit(static_cast<unsigned char>(t_[p_]))) {
      TB_CHECK(v <= (uint64_t(std::numeric_limits<int64_t>::max()) - 9) / 10, FormatError, err(),
               "has a number too large: '", t_.substr(start, 30), "'");
      v = v * 10 + uint64_t(t_[p_++] - '0');
    }
    if (p_ < t_.size() && (t_[p_] == 'L' || t_[p_] == 'l')) ++p_;  // Python 2 long
    TB_CHECK(p_ >= t_.size() || !(std::isalnum(static_cast<unsigned char>(t_[p_])) || t_[p_] == '.'), FormatError,
             err(), "has a non-integer number at character ", start, ": '", t_.substr(start, 20), "'");
    Lit l;
    l.kind = Lit::Int;
    l.i = neg ? -int64_t(v) : int64_t(v);
    return l;
  }

  const std::string& t_;
  const std::string& label_;
  size_t p_ = 0;
  std::string comment_;
};

std::string lit_repr(const Lit& l) {
  switch (l.kind) {
    case Lit::Str: return "'" + l.s + "'";
    case Lit::Int: return std::to_string(l.i);
    case Lit::Bool: return l.b ? "True" : "False";
    case Lit::None: return "None";
    case Lit::Tuple: {
      std::string s = "(";
      for (size_t i = 0; i < l.items.size(); ++i) s += (i ? ", " : "") + lit_repr(l.items[i]);
      return s + ")";
    }
    case Lit::Dict: return "{...}";
  }
  return "?";
}

// ---- object arrays (pickles) ----
// Note [tensors of other frameworks in object arrays]
// np.save of a TensorFlow EagerTensor inside a list/dict pickles it through EagerTensor.__reduce__,
// i.e. tensorflow.python.framework.ops.convert_to_tensor(<numpy array>). The pickle VM never calls it;
// we let it through as an opaque object and replace the object by its numpy array argument. Any other
// global outside the pickle VM's allow-list is refused (UnsafeError naming it) unless the caller asked
// for opaque objects.
const std::vector<std::string>& tensor_makers() {
  static const std::vector<std::string> v = {
      "tensorflow.python.framework.ops.convert_to_tensor",
      "tensorflow.python.framework.constant_op.constant",
  };
  return v;
}

bool is_tensor_maker(const std::string& q) {
  return std::find(tensor_makers().begin(), tensor_makers().end(), q) != tensor_makers().end();
}

/** Replaces known tensor-maker objects by their array argument, in place (bounded depth, cycles safe;
 *  a shared container is visited once). */
Value unwrap_tensor_makers(const Value& v, size_t depth, std::unordered_set<const void*>& seen) {
  TB_CHECK(depth < 1000, FormatError, "[npy] object nested deeper than 1000 levels");
  switch (v.kind()) {
    case Value::Kind::Object: {
      const auto& o = v.as_object();
      if (is_tensor_maker(o.cls) && o.args && o.args->is_sequence() && !o.args->items().empty() &&
          o.args->items()[0].is_tensor())
        return o.args->items()[0];
      return v;
    }
    case Value::Kind::List:
    case Value::Kind::Tuple:
    case Value::Kind::Set:
    case Value::Kind::Dict: {
      const void* id = v.identity();
      if (id && !seen.insert(id).second) return v;
      if (v.is_dict()) {
        for (auto& kv : v.dict_data().items) kv.second = unwrap_tensor_makers(kv.second, depth + 1, seen);
      } else {
        for (auto& x : v.items()) x = unwrap_tensor_makers(x, depth + 1, seen);
      }
      return v;
    }
    default: return v;
  }
}

Value load_npy_object(const std::shared_ptr<Reader>& r, const NpyHeader& h, const LoadOptions& opts,
                      LoadBudget& budget) {
  const std::string& L = r->label();
  TB_CHECK(h.data_size > 0, FormatError, "[npy] '", L, "': object array without pickle data");
  std::vector<std::string> unknown;
  bool makers = false;
  for (const std::string& g : pickle::globals_in(*r, h.data_offset, h.data_size)) {
    size_t dot = g.rfind('.');
    std::string mod = dot == std::string::npos ? std::string() : g.substr(0, dot);
    std::string name = dot == std::string::npos ? g : g.substr(dot + 1);
    if (pickle::is_allowed_global(mod, name)) continue;
    if (is_tensor_maker(g)) {
      makers = true;
      continue;
    }
    unknown.push_back(g);
  }
  if (!unknown.empty() && !opts.allow_unknown_globals) {
    std::string names;
    for (const auto& n : unknown) names += (names.empty() ? "" : ", ") + n;
    throw UnsafeError(str("[npy] '", L, "': the object array's pickle references ", names,
                          ", which is not on the allow-list; nothing was imported or called. Load with ",
                          "allow_unknown_globals to keep such objects as opaque values"));
  }
  pickle::Options po;
  po.tag = "[npy]";
  po.allow_unknown_globals = opts.allow_unknown_globals || makers;
  po.budget = &budget;
  Value v;
  try {
    v = pickle::load(*r, h.data_offset, h.data_size, po);
  } catch (Error& e) {
    e.add_context(
        str("while reading the object array (descr '", h.descr, "', shape ", shape_str(h.shape), ") of '", L, "'"));
    throw;
  }
  if (makers) {
    std::unordered_set<const void*> seen;
    v = unwrap_tensor_makers(v, 0, seen);
  }
  return v;
}

void write_npy_object(Writer& w, const Value& root, const std::string& path) {
  pickle::Pickler pk(3);
  pk.on_tensor = [&path](pickle::Pickler& p, const Tensor& t) {
    // A single .npy keeps such dtypes as raw bits plus a header note; a pickled array has no place
    // for the note, so it would come back as uint16 / uint8.
    TB_CHECK(!npy_descr(t.dtype()).empty(), UnsupportedError, "[npy] '", path, "': a pickled object array cannot hold ",
             dtype_name(t.dtype()), " tensors (numpy has no such dtype); write them to .npz or one .npy per tensor");
    pickle::write_numpy_array(p, t, std::string(npy_descr(t.dtype())));
  };
  // A list becomes a 1-d object array of its items; anything else a 0-d object array holding it.
  bool as_list = root.kind() == Value::Kind::List;
  Shape shape = as_list ? Shape{int64_t(root.items().size())} : Shape{};
  pk.bytes().push_back(0x80);
  pk.bytes().push_back(3);
  pickle::write_numpy_reconstruct(pk);
  pk.mark();
  pk.integer(1);
  pickle::write_numpy_shape(pk, shape);
  pickle::write_numpy_dtype_call(pk, "O8");
  pickle::write_numpy_dtype_state(pk, "|", 63);  // 63: the flags numpy gives the object dtype
  pk.boolean(false);
  if (as_list) {
    pk.value(root);
  } else {
    pk.empty_list();
    pk.value(root);
    pk.bytes().push_back('a');  // APPEND
  }
  pk.tuple();
  pk.build();
  pk.bytes().push_back('.');
  std::string h = "{'descr': '|O', 'fortran_order': False, 'shape': (";
  if (as_list) h += std::to_string(shape[0]) + ",";
  h += "), }";
  if (as_list) h.append(21 - std::to_string(shape[0]).size(), ' ');
  size_t hlen = h.size() + 1, pad = 64 - (10 + hlen) % 64;
  TB_CHECK(hlen + pad <= 0xFFFF, InternalError, "object header too long");
  std::string out("\x93NUMPY\x01\x00", 8);
  out += char((hlen + pad) & 0xFF);
  out += char((hlen + pad) >> 8);
  out += h;
  out.append(pad, ' ');
  out += '\n';
  w.write(out);
  w.write(pk.bytes().data(), pk.bytes().size());
}

}  // namespace

NpyHeader read_npy_header(const Reader& r) {
  const std::string& L = r.label();
  TB_CHECK(r.size() >= 10, FormatError, "[npy] '", L, "': ", r.size(), " bytes is too small for a .npy file (the",
           " magic and header length alone take 10 bytes)");
  uint8_t pre[12] = {};
  r.read_at(0, pre, std::min<uint64_t>(12, r.size()));
  TB_CHECK(std::memcmp(pre, kMagic, 6) == 0, FormatError, "[npy] '", L, "': missing the \\x93NUMPY magic");
  NpyHeader h;
  h.major = pre[6];
  h.minor = pre[7];
  TB_CHECK((h.major == 1 || h.major == 2 || h.major == 3) && h.minor == 0, UnsupportedError, "[npy] '", L,
           "': format version ", h.major, ".", h.minor, " is not one of 1.0, 2.0, 3.0");
  uint64_t hlen, start;
  if (h.major == 1) {
    hlen = uint64_t(pre[8]) | (uint64_t(pre[9]) << 8);
    start = 10;
  } else {
    TB_CHECK(r.size() >= 12, FormatError, "[npy] '", L, "': truncated in the header length");
    hlen = uint64_t(pre[8]) | (uint64_t(pre[9]) << 8) | (uint64_t(pre[10]) << 16) | (uint64_t(pre[11]) << 24);
    start = 12;
  }
  TB_CHECK(hlen <= kMaxHeader, FormatError, "[npy] '", L, "': header length ", hlen, " is above the limit of ",
           kMaxHeader, " bytes");
  TB_CHECK(hlen <= r.size() - start, FormatError, "[npy] '", L, "' is truncated: the header claims ", hlen,
           " bytes but only ", r.size() - start, " follow");
  std::string text = r.read_string(start, size_t(hlen));
  h.data_offset = start + hlen;

  LitParser lp(text, L);
  Lit d = lp.parse_all();
  TB_CHECK(d.kind == Lit::Dict, FormatError, "[npy] '", L, "': header is not a dict: '", text.substr(0, 80), "'");
  const Lit *descr = nullptr, *fortran = nullptr, *shape = nullptr;
  for (const auto& [k, v] : d.kv) {
    TB_CHECK(k.kind == Lit::Str, FormatError, "[npy] '", L, "': header keys must be strings, found ", lit_repr(k));
    const Lit** slot = k.s == "descr" ? &descr : k.s == "fortran_order" ? &fortran : k.s == "shape" ? &shape : nullptr;
    TB_CHECK(slot != nullptr, FormatError, "[npy] '", L, "': unexpected header key '", k.s,
             "' (expected exactly 'descr', 'fortran_order', 'shape')");
    TB_CHECK(*slot == nullptr, FormatError, "[npy] '", L, "': header key '", k.s, "' appears twice");
    *slot = &v;
  }
  TB_CHECK(descr && fortran && shape, FormatError, "[npy] '", L, "': header lacks ",
           !descr     ? "'descr'"
           : !fortran ? "'fortran_order'"
                      : "'shape'",
           ": '", text.substr(0, 120), "'");
  TB_CHECK(fortran->kind == Lit::Bool, FormatError, "[npy] '", L, "': 'fortran_order' must be True or False, found ",
           lit_repr(*fortran));
  h.fortran_order = fortran->b;
  TB_CHECK(shape->kind == Lit::Tuple || shape->kind == Lit::Int, FormatError, "[npy] '", L,
           "': 'shape' must be a tuple of ints, found ", lit_repr(*shape));
  if (shape->kind == Lit::Int) {
    h.shape.push_back(shape->i);  // "(3)" parses as 3; numpy would reject it, accepting is harmless
  } else {
    TB_CHECK(shape->items.size() <= kMaxDims, FormatError, "[npy] '", L, "': ", shape->items.size(),
             " dimensions is above the limit of ", kMaxDims);
    for (const Lit& dim : shape->items) {
      TB_CHECK(dim.kind == Lit::Int && dim.i >= 0, FormatError, "[npy] '", L,
               "': 'shape' must hold non-negative ints, found ", lit_repr(*shape));
      h.shape.push_back(dim.i);
    }
  }
  TB_CHECK(descr->kind == Lit::Str, UnsupportedError, "[npy] '", L, "': structured dtype ", lit_repr(*descr),
           " is not supported (only plain numeric, bool and object arrays)");
  h.descr = descr->s;
  int64_t numel = 0;
  try {
    numel = checked_numel(h.shape);
  } catch (const ShapeError&) {
    throw FormatError(str("[npy] '", L, "': shape ", shape_str(h.shape), " overflows"));
  }
  const uint64_t avail = r.size() - h.data_offset;
  if (h.descr == "|O" || h.descr == "O" || h.descr == "<O" || h.descr == ">O" || h.descr == "=O" || h.descr == "|O8" ||
      h.descr == "<O8" || h.descr == "|O4") {
    h.object = true;
    h.data_size = avail;
    return h;
  }
  // Fixed-width text ('<U3' UTF-32, '|S5' bytes): not tensors, but small string leaves are kept as values.
  {
    std::string_view dsv = h.descr;
    bool be = !dsv.empty() && dsv[0] == '>';
    if (!dsv.empty() && (dsv[0] == '<' || dsv[0] == '>' || dsv[0] == '|' || dsv[0] == '=')) dsv.remove_prefix(1);
    if (dsv.size() >= 2 && (dsv[0] == 'U' || dsv[0] == 'S') &&
        std::all_of(dsv.begin() + 1, dsv.end(), [](char ch) { return std::isdigit(static_cast<unsigned char>(ch)); }) &&
        dsv.size() <= 10) {
      h.text_kind = dsv[0];
      h.text_width = std::stoull(std::string(dsv.substr(1)));
      h.big_endian = be;
      uint64_t isz = h.text_kind == 'U' ? 4 * h.text_width : h.text_width;
      TB_CHECK(isz == 0 || uint64_t(numel) <= (uint64_t(1) << 40) / isz, FormatError, "[npy] '", L, "': shape ",
               shape_str(h.shape), " of '", h.descr, "' overflows");
      h.data_size = uint64_t(numel) * isz;
      TB_CHECK(h.data_size <= avail, FormatError, "[npy] '", L, "' is truncated: ", h.descr, " ", shape_str(h.shape),
               " needs ", h.data_size, " bytes of data but only ", avail, " follow the header");
      return h;
    }
  }
  auto nd = dtype_from_npy_descr(h.descr);
  TB_CHECK(nd.has_value(), UnsupportedError, "[npy] '", L, "': dtype '", h.descr,
           "' is not supported (numeric, bool and object arrays only; strings, datetimes, void and structured ",
           "dtypes are not tensors)");
  h.dtype = nd->dtype;
  h.big_endian = nd->big_endian;
  // Our own note for dtypes numpy lacks: raw bits under an unsigned descr of the same size.
  const std::string& c = lp.comment();
  if (size_t at = c.find(kNote); at != std::string::npos) {
    size_t s = at + std::strlen(kNote), e = s;
    while (e < c.size() && (std::isalnum(static_cast<unsigned char>(c[e])) || c[e] == '_')) ++e;
    auto real = dtype_from_name(c.substr(s, e - s));
    TB_CHECK(real && dtype_size(*real) == dtype_size(h.dtype), FormatError, "[npy] '", L, "': dtype note '",
             c.substr(s, e - s), "' does not fit descr '", h.descr, "'");
    h.dtype = *real;
    h.tb_dtype_note = true;
  }
  uint64_t isz = dtype_size(h.dtype);
  TB_CHECK(numel == 0 || uint64_t(numel) <= std::numeric_limits<uint64_t>::max() / isz, FormatError, "[npy] '", L,
           "': shape ", shape_str(h.shape), " overflows");
  h.data_size = uint64_t(numel) * isz;
  TB_CHECK(h.data_size <= avail, FormatError, "[npy] '", L, "' is truncated: ", h.descr, " ", shape_str(h.shape),
           " needs ", h.data_size, " bytes of data but only ", avail, " follow the header");
  return h;
}

namespace {

Tensor tensor_from(const Reader& r, const NpyHeader& h, const LoadOptions& opts, LoadBudget& budget) {
  const size_t isz = dtype_size(h.dtype);
  const bool swap = h.big_endian == host_little_endian() && isz > 1;
  std::shared_ptr<Storage> st;
  if (!swap && opts.mmap) {
    st = r.map(h.data_offset, size_t(h.data_size));
    size_t align = std::min<size_t>(isz, 8);
    if (st && h.data_size > 0 && reinterpret_cast<uintptr_t>(st->data()) % align != 0) st = nullptr;
  }
  if (!st) {
    budget.charge_bytes(h.data_size, str("the array (", h.descr, " ", shape_str(h.shape), ")"));
    st = Storage::allocate(size_t(h.data_size), false);
    if (h.data_size) r.read_at(h.data_offset, st->data(), size_t(h.data_size));
    if (swap) byteswap_elements(st->data(), h.dtype, size_t(h.data_size / isz));
  }
  Shape strides;
  if (h.fortran_order) {
    strides.resize(h.shape.size());
    int64_t s = 1;
    for (size_t i = 0; i < h.shape.size(); ++i) {
      strides[i] = s;
      s = checked_mul(s, std::max<int64_t>(h.shape[i], 1),
                      str("[npy] '", r.label(), "': Fortran strides of shape ", shape_str(h.shape)));
    }
  } else {
    strides = contiguous_strides(h.shape);
  }
  return Tensor(std::move(st), h.dtype, h.shape, std::move(strides), 0);
}

}  // namespace

namespace {
void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

/** '<U'/'|S' arrays as Python would give them: str/bytes for 0-d, a list for 1-d (small ones only). */
Value text_value(const Reader& r, const NpyHeader& h, LoadBudget& budget) {
  TB_CHECK(h.shape.size() <= 1 && h.data_size <= (1u << 20), UnsupportedError, "[npy] '", r.label(), "': text array '",
           h.descr, "' ", shape_str(h.shape), " is not a tensor (only small 0-d/1-d text arrays are kept as strings)");
  // The element count, not the bytes, is the cost: a zero-width dtype ('|S0') has no bytes at all.
  const size_t n = size_t(checked_numel(h.shape));
  const std::string what = str("text array '", h.descr, "' ", shape_str(h.shape));
  budget.charge_objects(n, what);
  budget.charge_bytes(LoadBudget::sat_mul(n, sizeof(Value) + sizeof(std::string)), what);
  std::vector<uint8_t> b = r.read_bytes(h.data_offset, size_t(h.data_size));
  size_t isz = h.text_kind == 'U' ? 4 * h.text_width : h.text_width;
  ValueList items;
  items.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    std::string s;
    if (h.text_kind == 'S') {
      s.assign(reinterpret_cast<const char*>(b.data() + i * isz), isz);
      s.erase(s.find_last_not_of('\0') + 1);
      items.push_back(Value::bytes(s));
    } else {
      for (size_t k = 0; k < h.text_width; ++k) {
        const uint8_t* p = b.data() + i * isz + 4 * k;
        uint32_t cp = h.big_endian ? (uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3])
                                   : (uint32_t(p[3]) << 24 | uint32_t(p[2]) << 16 | uint32_t(p[1]) << 8 | p[0]);
        if (cp == 0) break;
        TB_CHECK(cp <= 0x10FFFF, FormatError, "[npy] '", r.label(), "': invalid code point ", cp, " in '", h.descr,
                 "'");
        append_utf8(s, cp);
      }
      items.push_back(Value::string(s));
    }
  }
  if (h.shape.empty()) return items.empty() ? Value::string("") : items[0];
  return Value::list(std::move(items));
}
}  // namespace

Value load_npy_value(const std::shared_ptr<Reader>& r, const LoadOptions& opts, LoadBudget& budget) {
  NpyHeader h = read_npy_header(*r);
  if (h.object) return load_npy_object(r, h, opts, budget);
  if (h.text_kind) return text_value(*r, h, budget);
  return Value::tensor(tensor_from(*r, h, opts, budget));
}

Value load_npy_value(const std::shared_ptr<Reader>& r, const LoadOptions& opts) {
  LoadBudget budget(opts.limits, r->label(), r->size());
  return load_npy_value(r, opts, budget);
}

Tensor load_npy_tensor(const std::shared_ptr<Reader>& r, const LoadOptions& opts) {
  NpyHeader h = read_npy_header(*r);
  TB_CHECK(!h.object, UnsupportedError, "[npy] '", r->label(),
           "' is an object array (a pickled Python object), not a numeric array");
  TB_CHECK(!h.text_kind, UnsupportedError, "[npy] '", r->label(), "': text array '", h.descr, "' is not a tensor");
  LoadBudget budget(opts.limits, r->label(), r->size());
  return tensor_from(*r, h, opts, budget);
}

std::string npy_header_bytes(DType dtype, const Shape& shape, bool fortran_order) {
  std::string descr(npy_descr(dtype));
  std::string note;
  if (descr.empty()) {
    TB_ASSERT(dtype_size(dtype) == 1 || dtype_size(dtype) == 2, "no raw-bits descr for ", dtype_name(dtype));
    descr = dtype_size(dtype) == 2 ? "<u2" : "|u1";
    note = str(" # ", kNote, dtype_name(dtype));
  }
  std::string s = "{'descr': '" + descr + "', 'fortran_order': " + (fortran_order ? "True" : "False") + ", 'shape': (";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  if (shape.size() == 1) s += ",";
  s += "), }";
  s += note;
  if (!shape.empty()) {  // numpy's GROWTH_AXIS_MAX_DIGITS spare room
    size_t digits = std::to_string(shape[fortran_order ? shape.size() - 1 : 0]).size();
    s.append(digits < 21 ? 21 - digits : 0, ' ');
  }
  const size_t hlen = s.size() + 1;
  bool v1 = true;
  size_t prefix = 10;
  size_t pad = 64 - (prefix + hlen) % 64;
  if (hlen + pad > 0xFFFF) {
    v1 = false;
    prefix = 12;
    pad = 64 - (prefix + hlen) % 64;
  }
  std::string out(kMagic, 6);
  out += char(v1 ? 1 : 2);
  out += char(0);
  uint64_t total = hlen + pad;
  for (size_t i = 0; i < (v1 ? 2u : 4u); ++i) out += char((total >> (8 * i)) & 0xFF);
  out += s;
  out.append(pad, ' ');
  out += '\n';
  return out;
}

void write_npy(Writer& w, const Tensor& t) {
  TB_CHECK(host_little_endian(), UnsupportedError, "[npy] writing on a big-endian host is not supported");
  w.write(npy_header_bytes(t.dtype(), t.shape()));
  w.write_tensor(t);
}

Checkpoint load_npy(const Source& src, const LoadOptions& opts) {
  TB_CHECK(src.reader != nullptr, FormatError, "[npy] '", src.label(), "' is a folder, not a .npy file");
  NpyHeader h = read_npy_header(*src.reader);
  LoadBudget budget(opts.limits, src.label(), src.reader->size());
  Checkpoint c;
  c.format = "npy";
  c.info.emplace_back("npy version", str(h.major, ".", h.minor));
  c.info.emplace_back("descr", h.descr);
  if (h.fortran_order) c.info.emplace_back("fortran_order", "True");
  if (h.tb_dtype_note) c.info.emplace_back("dtype note", std::string(dtype_name(h.dtype)));
  if (h.object) {
    c.root = load_npy_object(src.reader, h, opts, budget);
    c.info.emplace_back("object array", "pickle");
  } else if (h.text_kind) {
    c.root = text_value(*src.reader, h, budget);
  } else {
    c.root = Value::tensor(tensor_from(*src.reader, h, opts, budget));
  }
  return c;
}

void write_npy_file(const Checkpoint& ckpt, const std::filesystem::path& path, const NpyWriteOptions& opts) {
  const std::string P = path.string();
  if (opts.object && !ckpt.root.is_tensor()) {
    AtomicFileWriter w(path, opts.overwrite);
    write_npy_object(w, ckpt.root, P);
    w.commit();
    return;
  }
  Tensor t;
  if (ckpt.root.is_tensor()) {
    t = ckpt.root.as_tensor();
  } else {
    StateDict sd = ckpt.state_dict();
    TB_CHECK(sd.size() == 1, UnsupportedError, "[npy] cannot write '", P, "': a .npy file holds one array but this ",
             "checkpoint has ", sd.size(), " tensors; write a .npz instead, or pass option object=1 to store the ",
             "whole tree as a pickled object array (numpy then needs allow_pickle=True)");
    t = sd.entries()[0].second;
  }
  AtomicFileWriter w(path, opts.overwrite);
  write_npy(w, t);
  w.commit();
}

void save_npy(const Checkpoint& ckpt, const std::filesystem::path& path, const SaveOptions& opts) {
  npy_format().save(ckpt, path, opts);
}

const FormatAdapter& npy_format() {
  static const FormatAdapter a = with_writer<NpyWriteOptions>(
      {.name = "npy",
       .description = "NumPy .npy array (v1-v3, any byte order, Fortran order, pickled object arrays)",
       .extensions = {".npy"},
       .sniff =
           [](const Source& s) {
             return s.reader && s.reader->size() >= 10 && s.reader->read_string(0, 6) == std::string(kMagic, 6);
           },
       .load = load_npy,
       .keeps_tree = true},
      {flag_option<NpyWriteOptions>("object", &NpyWriteOptions::object,
                                    "1 writes a whole tree as a pickled object array (default 0)")},
      write_npy_file);
  return a;
}

}  // namespace tb
