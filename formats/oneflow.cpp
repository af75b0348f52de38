// OneFlow adapter: variable folders (meta text proto + raw out), flow.save directories, legacy
// snapshots, nn.Graph variables and the flow.save single-file pickle. Layouts: formats/oneflow.h.
#include "formats/oneflow.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <unordered_map>

#include "formats/adapters.h"
#include "formats/detail/open_beneath.h"
#include "formats/naming.h"
#include "tensor/checked.h"
#include "formats/detail/pickle.h"
#include "tensor/atomic_output.h"

namespace fs = std::filesystem;

namespace tb {

namespace {

constexpr const char* kTag = "[oneflow]";
constexpr size_t kMaxMetaBytes = 64 * 1024;
constexpr size_t kMaxRank = 64;
constexpr size_t kMaxDepth = 1000;
constexpr uint64_t kMaxPickleBytes = uint64_t(1) << 30;
constexpr const char* kFolderNoun = "the checkpoint folder";
using Kind = ConfinedFolder::Kind;

// DataType names and the OneFlow >= 0.8 enum numbers (oneflow/core/common/data_type.proto).
struct OfType {
  const char* name;
  int number;
  std::optional<DType> dtype;  // nullopt: OneFlow type we cannot represent
};
const std::vector<OfType>& of_types() {
  static const std::vector<OfType> t = {
      {"kChar", 1, DType::I8},        {"kFloat", 2, DType::F32},     {"kDouble", 3, DType::F64},
      {"kInt8", 4, DType::I8},        {"kInt32", 5, DType::I32},     {"kInt64", 6, DType::I64},
      {"kUInt8", 7, DType::U8},       {"kOFRecord", 8, std::nullopt}, {"kFloat16", 9, DType::F16},
      {"kTensorBuffer", 10, std::nullopt}, {"kBFloat16", 11, DType::BF16}, {"kBool", 12, DType::Bool},
      {"kUInt16", 13, DType::U16},    {"kUInt32", 14, DType::U32},   {"kUInt64", 15, DType::U64},
      {"kUInt128", 16, std::nullopt}, {"kInt16", 17, DType::I16},    {"kInt128", 18, std::nullopt},
      {"kComplex32", 19, std::nullopt}, {"kComplex64", 20, DType::C64}, {"kComplex128", 21, DType::C128},
  };
  return t;
}

bool is_single_component(const std::string& s) {
  return !s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos &&
         s.find('\\') == std::string::npos && s.find('\0') == std::string::npos;
}

bool is_dir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}
/** An entry that is not a folder: a file, or a link or FIFO that the loader then refuses by name. */
bool is_entry(const fs::path& p) {
  std::error_code ec;
  auto st = fs::symlink_status(p, ec);
  return !ec && fs::exists(st) && !fs::is_directory(st);
}
bool is_variable_dir(const fs::path& p) { return is_entry(p / "meta") && is_entry(p / "out"); }

// ---------------------------------------------------------------------------------------------
// meta: a bounded protobuf text-format reader (only what VariableMetaInfo needs, unknown fields skipped).

class TextProto {
 public:
  TextProto(std::string_view text, const std::string& label) : s_(text), label_(label) {}

  OneflowMeta parse() {
    OneflowMeta m;
    bool have_type = false;
    while (skip_ws(), pos_ < s_.size()) {
      std::string name = ident();
      if (name == "shape") {
        expect_open(name);
        char close = s_[pos_ - 1] == '{' ? '}' : '>';
        while (skip_ws(), pos_ < s_.size() && s_[pos_] != close) {
          std::string f = ident();
          if (f == "dim") {
            colon(f);
            for (int64_t d : int_values(f)) {
              TB_CHECK(m.shape.size() < kMaxRank, FormatError, kTag, " '", label_, "': shape has more than ", kMaxRank,
                       " dims");
              TB_CHECK(d >= 0, FormatError, kTag, " '", label_, "': negative dim ", d, " in shape");
              m.shape.push_back(d);
            }
          } else {
            skip_field(f, 1);
          }
          separator();
        }
        TB_CHECK(pos_ < s_.size(), FormatError, kTag, " '", label_, "': unterminated 'shape' block");
        ++pos_;
      } else if (name == "data_type") {
        colon(name);
        std::string v = ident();
        auto dt = dtype_from_oneflow(v);
        if (!dt) {
          bool known = false;
          for (const auto& t : of_types()) known |= (v == t.name || v == std::to_string(t.number));
          TB_CHECK(!known, UnsupportedError, kTag, " '", label_, "': data_type ", v,
                   " has no tensorbridge equivalent");
          throw FormatError(str(kTag, " '", label_, "': unknown data_type '", v, "'"));
        }
        m.dtype = *dt;
        have_type = true;
      } else {
        skip_field(name, 0);
      }
      separator();
    }
    TB_CHECK(have_type, FormatError, kTag, " '", label_, "': no data_type field (expected e.g. 'data_type: kFloat')");
    return m;
  }

 private:
  void skip_ws() {
    while (pos_ < s_.size()) {
      char c = s_[pos_];
      if (c == '#') {
        while (pos_ < s_.size() && s_[pos_] != '\n') ++pos_;
      } else if (std::isspace(static_cast<unsigned char>(c))) {
        ++pos_;
      } else {
        break;
      }
    }
  }
  static bool ident_char(char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-' || c == '+';
  }
  std::string ident() {
    skip_ws();
    size_t b = pos_;
    while (pos_ < s_.size() && ident_char(s_[pos_])) ++pos_;
    if (b == pos_) {
      std::string found = pos_ < s_.size() ? str("'", s_[pos_], "'") : std::string("end of text");
      throw FormatError(str(kTag, " '", label_, "': expected a field name or value at byte ", pos_, " but found ", found));
    }
    return std::string(s_.substr(b, pos_ - b));
  }
  bool peek(char c) {
    skip_ws();
    return pos_ < s_.size() && s_[pos_] == c;
  }
  void colon(const std::string& field) {
    TB_CHECK(peek(':'), FormatError, kTag, " '", label_, "': expected ':' after '", field, "'");
    ++pos_;
  }
  void expect_open(const std::string& field) {
    if (peek(':')) ++pos_;
    TB_CHECK(peek('{') || peek('<'), FormatError, kTag, " '", label_, "': expected '{' after '", field, "'");
    ++pos_;
  }
  void separator() {
    if (peek(';') || peek(',')) ++pos_;
  }
  int64_t to_int(const std::string& v, const std::string& field) {
    TB_CHECK(!v.empty() && v.size() <= 20, FormatError, kTag, " '", label_, "': '", field, "' is not an integer: '", v,
             "'");
    size_t i = 0;
    bool neg = false;
    if (v[0] == '-' || v[0] == '+') neg = v[i++] == '-';
    TB_CHECK(i < v.size(), FormatError, kTag, " '", label_, "': '", field, "' is not an integer: '", v, "'");
    uint64_t acc = 0;
    for (; i < v.size(); ++i) {
      TB_CHECK(std::isdigit(static_cast<unsigned char>(v[i])), FormatError, kTag, " '", label_, "': '", field,
               "' is not an integer: '", v, "'");
      TB_CHECK(acc <= (uint64_t(INT64_MAX) - 9) / 10, FormatError, kTag, " '", label_, "': '", field, "' value ", v,
               " overflows int64");
      acc = acc * 10 + uint64_t(v[i] - '0');
    }
    return neg ? -int64_t(acc) : int64_t(acc);
  }
  std::vector<int64_t> int_values(const std::string& field) {
    std::vector<int64_t> out;
    if (peek('[')) {
      ++pos_;
      while (!peek(']')) {
        TB_CHECK(pos_ < s_.size(), FormatError, kTag, " '", label_, "': unterminated list for '", field, "'");
        out.push_back(to_int(ident(), field));
        if (peek(',')) ++pos_;
      }
      ++pos_;
    } else {
      out.push_back(to_int(ident(), field));
    }
    return out;
  }
  void skip_string() {
    char q = s_[pos_++];
    while (pos_ < s_.size() && s_[pos_] != q) pos_ += (s_[pos_] == '\\') ? 2 : 1;
    TB_CHECK(pos_ < s_.size(), FormatError, kTag, " '", label_, "': unterminated string");
    ++pos_;
  }
  void skip_scalar(const std::string& field) {
    skip_ws();
    TB_CHECK(pos_ < s_.size(), FormatError, kTag, " '", label_, "': missing value for '", field, "'");
    if (s_[pos_] == '"' || s_[pos_] == '\'') {
      while (peek('"') || peek('\'')) skip_string();  // adjacent strings concatenate
    } else if (s_[pos_] == '[') {
      ++pos_;
      while (!peek(']')) {
        TB_CHECK(pos_ < s_.size(), FormatError, kTag, " '", label_, "': unterminated list for '", field, "'");
        skip_scalar(field);
        if (peek(',')) ++pos_;
      }
      ++pos_;
    } else {
      ident();
    }
  }
  void skip_field(const std::string& field, size_t depth) {
    TB_CHECK(depth < 32, FormatError, kTag, " '", label_, "': text proto nested deeper than 32 levels");
    if (peek(':')) {
      ++pos_;
      if (!peek('{') && !peek('<')) return skip_scalar(field);
    }
    TB_CHECK(peek('{') || peek('<'), FormatError, kTag, " '", label_, "': expected ':' or '{' after '", field, "'");
    char close = s_[pos_] == '{' ? '}' : '>';
    ++pos_;
    while (!peek(close)) {
      TB_CHECK(pos_ < s_.size(), FormatError, kTag, " '", label_, "': unterminated block '", field, "'");
      std::string f = ident();
      skip_field(f, depth + 1);
      separator();
    }
    ++pos_;
  }

  std::string_view s_;
  const std::string& label_;
  size_t pos_ = 0;
};

std::string meta_of(const Tensor& t) { return str(dtype_name(t.dtype()), shape_str(t.shape())); }

}  // namespace

// ---------------------------------------------------------------------------------------------
// public helpers

std::optional<DType> dtype_from_oneflow(std::string_view v) {
  for (const auto& t : of_types())
    if (v == t.name || v == std::to_string(t.number)) return t.dtype;
  return std::nullopt;
}

std::string_view oneflow_dtype_name(DType dt) {
  switch (dt) {
    case DType::F32: return "kFloat";
    case DType::F64: return "kDouble";
    case DType::F16: return "kFloat16";
    case DType::BF16: return "kBFloat16";
    case DType::I8: return "kInt8";
    case DType::I16: return "kInt16";
    case DType::I32: return "kInt32";
    case DType::I64: return "kInt64";
    case DType::U8: return "kUInt8";
    case DType::U16: return "kUInt16";
    case DType::U32: return "kUInt32";
    case DType::U64: return "kUInt64";
    case DType::Bool: return "kBool";
    case DType::C64: return "kComplex64";
    case DType::C128: return "kComplex128";
    default: break;
  }
  throw UnsupportedError(str(kTag, " OneFlow has no data type for ", dtype_name(dt)));
}

OneflowMeta parse_oneflow_meta(std::string_view text, const std::string& label) {
  TB_CHECK(text.size() <= kMaxMetaBytes, FormatError, kTag, " '", label, "': meta is ", text.size(),
           " bytes; expected a small text proto (at most ", kMaxMetaBytes, ")");
  return TextProto(text, label).parse();
}

std::string oneflow_meta_text(const OneflowMeta& meta) {
  std::string s = "shape {\n";
  for (int64_t d : meta.shape) s += str("  dim: ", d, "\n");
  s += str("}\ndata_type: ", oneflow_dtype_name(meta.dtype), "\n");
  return s;
}

namespace {
/** "[oneflow] '<folder>':", the start of messages about entries of a folder. */
std::string folder_context(const ConfinedFolder& f) { return str(kTag, " '", f.path().string(), "':"); }

/** Reads a variable folder: meta and out are opened inside it, never through a link. */
Tensor load_variable(const ConfinedFolder& var, bool mmap) {
  const std::string dir = var.path().string(), ctx = folder_context(var);
  TB_CHECK(var.kind("out") != Kind::Missing, FormatError, kTag, " '", dir, "': variable folder has no 'out' data file");
  TB_CHECK(var.kind("meta") != Kind::Missing, FormatError, kTag, " '", dir,
           "': variable folder has no 'meta' file, so its shape and dtype are unknown (OneFlow cannot load it either)");
  std::string text, meta_label;
  {
    auto r = var.open_file("meta", ctx, false);
    meta_label = r->label();
    TB_CHECK(r->size() <= kMaxMetaBytes, FormatError, kTag, " '", meta_label, "': meta is ", r->size(),
             " bytes; expected a small text proto (at most ", kMaxMetaBytes, ")");
    text = r->read_string(0, size_t(r->size()));
  }
  OneflowMeta m = parse_oneflow_meta(text, meta_label);
  const std::string what = str(kTag, " '", meta_label, "'");
  const uint64_t need = checked_nbytes(checked_numel(m.shape, what), dtype_size(m.dtype), what);
  auto r = var.open_file("out", ctx, mmap);
  TB_CHECK(r->size() == need, FormatError, kTag, " '", r->label(), "': variable '", var.path().filename().string(),
           "' (", dtype_name(m.dtype), " ", shape_str(m.shape), ") needs ", need, " bytes but the file has ", r->size(),
           need > r->size() ? ". Truncated copy?" : "");
  auto storage = r->load(0, size_t(need));
  return Tensor(storage, m.dtype, m.shape, contiguous_strides(m.shape), 0);
}
}  // namespace

Tensor load_oneflow_variable(const fs::path& dir, bool mmap) { return load_variable(ConfinedFolder(dir, kFolderNoun), mmap); }

bool is_oneflow_folder(const fs::path& p) {
  try {
    if (!is_dir(p)) return false;
    if (is_entry(p / "pickled_data") || is_entry(p / "snapshot_done") || is_entry(p / "variables" / "snapshot_done"))
      return true;
    if (is_variable_dir(p)) return true;
    std::error_code ec;
    size_t seen = 0;
    for (fs::directory_iterator it(p, ec), end; !ec && it != end && seen < 4096; it.increment(ec), ++seen)
      if (it->is_directory(ec) && is_variable_dir(it->path())) return true;
  } catch (...) {
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// loading

namespace {

/** Sorted names of the sub-folders that are variable folders (others are reported through skipped).
 *  A symbolic link among the entries is refused, never followed. */
std::vector<std::string> variable_dirs(const ConfinedFolder& dir, std::vector<std::string>* skipped) {
  std::vector<std::string> out;
  for (const auto& [name, kind] : dir.list()) {
    if (kind == Kind::Symlink) dir.open_folder(name, folder_context(dir));  // throws why
    if (kind != Kind::Folder) continue;
    if (dir.kind(name + "/out") != Kind::Missing)
      out.push_back(name);
    else if (skipped)
      skipped->push_back(name);
  }
  return out;
}

/** Loads the named variable folders one at a time (each opened inside dir). */
Value variables_dict(const ConfinedFolder& dir, const std::vector<std::string>& vars, bool mmap) {
  Value d = Value::dict();
  for (const auto& name : vars) {
    try {
      d.set_item(Value::string(naming::decode_name(name, naming::Target::Folder)),
                 Value::tensor(load_variable(dir.open_folder(name, folder_context(dir)), mmap)));
    } catch (Error& e) {
      e.add_context(str("while loading OneFlow variable '", name, "'"));
      throw;
    }
  }
  return d;
}

Checkpoint load_snapshot(const ConfinedFolder& dir, bool mmap, const std::string& kind) {
  Checkpoint c;
  c.format = "oneflow";
  std::vector<std::string> skipped;
  auto vars = variable_dirs(dir, &skipped);
  c.root = variables_dict(dir, vars, mmap);
  c.info.emplace_back("layout", kind);
  c.info.emplace_back("variables", std::to_string(vars.size()));
  if (!skipped.empty()) {
    std::string s;
    for (const auto& n : skipped) s += (s.empty() ? "" : ", ") + n;
    c.info.emplace_back("folders without tensor data (skipped, as flow.load does)", s);
  }
  return c;
}

bool is_oneflow_global(const std::string& g) { return g.rfind("oneflow.", 0) == 0; }

/** Runs a OneFlow pickle: OneFlow's own classes come back as opaque objects (nothing is ever called);
 *  any other global outside the VM's allow-list is refused unless the caller opted in. */
Value run_pickle(const Reader& r, const LoadOptions& opts, LoadBudget& budget) {
  TB_CHECK(r.size() <= kMaxPickleBytes, FormatError, kTag, " '", r.label(), "': pickle is ", r.size(),
           " bytes; expected at most ", kMaxPickleBytes);
  std::vector<std::string> unknown;
  for (const auto& g : pickle::globals_in(r, 0, r.size())) {
    auto dot = g.rfind('.');
    std::string mod = dot == std::string::npos ? std::string() : g.substr(0, dot);
    std::string name = dot == std::string::npos ? g : g.substr(dot + 1);
    if (!is_oneflow_global(g) && !pickle::is_allowed_global(mod, name)) unknown.push_back(g);
  }
  if (!unknown.empty() && !opts.allow_unknown_globals) {
    std::string list;
    for (const auto& g : unknown) list += (list.empty() ? "" : ", ") + g;
    throw UnsafeError(str(kTag, " '", r.label(), "': the pickle references ", list,
                          ", which is neither a OneFlow class nor on the allow-list; nothing was run. Pass "
                          "allow_unknown_globals (--allow-unknown-globals) to keep such objects as opaque values"));
  }
  pickle::Options po;
  po.allow_unknown_globals = true;
  po.tag = kTag;
  po.max_depth = kMaxDepth;
  po.budget = &budget;
  return pickle::load(r, 0, r.size(), po);
}

/** Turns OneFlow objects of a loaded pickle into tensors and modules into their state dicts. */
class Resolver {
 public:
  Resolver(const ConfinedFolder* dir, bool mmap, const std::string& label, LoadBudget& budget)
      : dir_(dir), mmap_(mmap), label_(label), budget_(budget) {}

  Value resolve(const Value& v, size_t depth = 0) {
    TB_CHECK(depth < kMaxDepth, FormatError, kTag, " '", label_, "': object nested deeper than ", kMaxDepth);
    const void* id = v.identity();
    if (id) {
      auto it = done_.find(id);
      if (it != done_.end()) return it->second;
    }
    switch (v.kind()) {
      case Value::Kind::List:
      case Value::Kind::Tuple:
      case Value::Kind::Set: {
        done_[id] = v;
        for (auto& item : v.items()) item = resolve(item, depth + 1);
        return v;
      }
      case Value::Kind::Dict: {
        done_[id] = v;
        for (auto& kv : v.dict_data().items) kv.second = resolve(kv.second, depth + 1);
        return v;
      }
      case Value::Kind::Object: {
        Value out = resolve_object(v, depth);
        done_[id] = out;
        return out;
      }
      default: return v;
    }
  }

  std::vector<std::pair<std::string, std::string>> modules;  // path -> class
  size_t tensors = 0;

 private:
  static const Value* state_dict_of(const ValueObject& o) {
    if (o.state && o.state->is_dict()) return o.state.get();
    return nullptr;
  }

  Value resolve_object(const Value& v, size_t depth) {
    ValueObject& o = v.as_object();
    const Value* st = state_dict_of(o);
    if (is_oneflow_global(o.cls) && st) {
      if (const Value* p = st->get("path")) return Value::tensor(tensor_from_path(*p));
      if (const Value* d = st->get("data")) return Value::tensor(tensor_from_data(*d, st->get("dtype")));
    }
    // A module (OneFlow's, or a user class kept by allow_unknown_globals): its state dict, with the
    // module tree beside it (like formats/pt.cpp, read by pt_module_tree()).
    if (st && (is_oneflow_global(o.cls) ? st->get("_parameters") || st->get("_modules")
                                        : st->get("_parameters") && st->get("_modules"))) {
      Value sd = Value::dict("collections.OrderedDict");
      module_state(v, "", sd, depth);
      sd.dict_data().attrs = std::make_shared<ValueDict>();
      sd.dict_data().attrs->items.emplace_back(Value::string("__module__"), v);
      return sd;
    }
    // Keep other objects, resolving what they hold (so tensors inside stay reachable for writers).
    if (o.args) *o.args = resolve(*o.args, depth + 1);
    if (o.state) *o.state = resolve(*o.state, depth + 1);
    if (o.items) *o.items = resolve(*o.items, depth + 1);
    return v;
  }

  Tensor tensor_from_path(const Value& p) {
    TB_CHECK(p.is_str(), FormatError, kTag, " '", label_, "': tensor state 'path' is ", p.repr(), ", expected a string");
    const std::string& rel = p.as_str();
    TB_CHECK(dir_, FormatError, kTag, " '", label_, "': tensor refers to external folder '", rel,
             "' but this is a single-file pickle");
    TB_CHECK(is_single_component(rel), UnsafeError, kTag, " '", label_, "': tensor folder '", rel,
             "' is not a plain name inside the checkpoint folder; refusing to leave it");
    auto it = by_path_.find(rel);
    if (it != by_path_.end()) return it->second;
    Tensor t;
    try {
      t = load_variable(dir_->open_folder(rel, str(kTag, " '", label_, "': tensor folder")), mmap_);
    } catch (Error& e) {
      e.add_context(str("while loading tensor folder '", rel, "' referenced by pickled_data"));
      throw;
    }
    ++tensors;
    by_path_[rel] = t;
    return t;
  }

  Tensor tensor_from_data(const Value& d, const Value* dtype) {
    TB_CHECK(d.is_tensor(), FormatError, kTag, " '", label_, "': tensor state 'data' is ", d.repr(),
             ", expected a numpy array");
    Tensor t = d.as_tensor();
    if (dtype) {
      std::optional<DType> want;
      if (dtype->kind() == Value::Kind::Object) {
        const ValueObject& dobj = dtype->as_object();
        if (dobj.state && dobj.state->is_int()) want = dtype_from_oneflow(std::to_string(dobj.state->as_int()));
        if (!want && dobj.args && dobj.args->is_sequence() && dobj.args->items().size() == 1 &&
            dobj.args->items()[0].is_int())
          want = dtype_from_oneflow(std::to_string(dobj.args->items()[0].as_int()));
        if (!want) {
          auto dot = dobj.cls.rfind('.');
          want = dtype_from_name(dot == std::string::npos ? dobj.cls : dobj.cls.substr(dot + 1));
        }
      } else if (dtype->is_int()) {
        want = dtype_from_oneflow(std::to_string(dtype->as_int()));
      }
      if (want && *want != t.dtype()) {
        budget_.charge_bytes(LoadBudget::sat_mul(uint64_t(t.numel()), dtype_size(*want)), "converting a tensor's dtype");
        t = t.to(*want);
      }
    }
    ++tensors;
    return t;
  }

  void module_state(const Value& mod, const std::string& prefix, Value& out, size_t depth) {
    TB_CHECK(depth < kMaxDepth, FormatError, kTag, " '", label_, "': modules nested deeper than ", kMaxDepth);
    const ValueObject& o = mod.as_object();
    modules.emplace_back(prefix.empty() ? std::string("(root)") : prefix.substr(0, prefix.size() - 1), o.cls);
    const Value* st = state_dict_of(o);
    if (!st) return;
    std::set<std::string> non_persistent;
    if (const Value* np = st->get("_non_persistent_buffers_set"); np && (np->is_sequence() || np->kind() == Value::Kind::Set))
      for (const auto& x : np->items())
        if (x.is_str()) non_persistent.insert(x.as_str());
    for (const char* group : {"_parameters", "_buffers"}) {
      const Value* g = st->get(group);
      if (!g || !g->is_dict()) continue;
      for (const auto& [k, val] : g->dict_data().items) {
        if (!k.is_str() || val.is_none()) continue;
        if (std::string(group) == "_buffers" && non_persistent.count(k.as_str())) continue;
        Value t = resolve(val, depth + 1);
        if (t.is_tensor()) out.set_item(Value::string(prefix + k.as_str()), t);
      }
    }
    if (const Value* m = st->get("_modules"); m && m->is_dict()) {
      for (const auto& [k, child] : m->dict_data().items) {
        if (!k.is_str() || child.kind() != Value::Kind::Object) continue;
        module_state(child, prefix + k.as_str() + ".", out, depth + 1);
      }
    }
  }

  const ConfinedFolder* dir_;
  bool mmap_;
  std::string label_;
  LoadBudget& budget_;
  std::unordered_map<const void*, Value> done_;
  std::map<std::string, Tensor> by_path_;
};

Checkpoint finish_pickle(const Value& top, Resolver& res, const std::string& label, bool single_file) {
  TB_CHECK(top.is_dict(), FormatError, kTag, " '", label, "': expected the flow.save wrapper dict "
           "{'protocol_version': 1, 'data': ...} but the pickle holds ", top.repr());
  const Value* ver = top.get("protocol_version");
  const Value* data = top.get("data");
  TB_CHECK(ver && data, FormatError, kTag, " '", label, "': the pickle is a dict without the flow.save keys "
           "'protocol_version' and 'data' (keys found: ", top.repr(), ")");
  TB_CHECK(ver->is_int() && ver->as_int() == 1, UnsupportedError, kTag, " '", label,
           "': flow.save protocol_version ", ver->repr(), "; only version 1 is known");
  Checkpoint c;
  c.format = "oneflow";
  c.root = res.resolve(*data);
  c.info.emplace_back("layout", single_file ? "flow.save single file (pickle with numpy arrays)"
                                            : "flow.save directory (pickled_data + tensor folders)");
  c.info.emplace_back("protocol_version", "1");
  if (top.get("oneflow")) c.info.emplace_back("magic key", "oneflow");
  if (top.get("__oneflow__")) c.info.emplace_back("magic key", "__oneflow__");
  c.info.emplace_back("tensors", std::to_string(res.tensors));
  for (const auto& [path, cls] : res.modules) c.info.emplace_back(str("module ", path), cls);
  return c;
}

Checkpoint load_pickle_dir(const ConfinedFolder& dir, const LoadOptions& opts) {
  auto r = dir.open_file("pickled_data", folder_context(dir), false);
  LoadBudget budget(opts.limits, r->label(), r->size());
  Value top = run_pickle(*r, opts, budget);
  Resolver res(&dir, opts.mmap, r->label(), budget);
  return finish_pickle(top, res, r->label(), false);
}

Checkpoint load_single_file(const Reader& r, const LoadOptions& opts) {
  LoadBudget budget(opts.limits, r.label(), r.size());
  Value top = run_pickle(r, opts, budget);
  TB_CHECK(top.is_dict() && (top.get("oneflow") || top.get("__oneflow__")), FormatError, kTag, " '", r.label(),
           "': not a flow.save file: expected a dict with the key 'oneflow' or '__oneflow__' but found ", top.repr());
  Resolver res(nullptr, false, r.label(), budget);
  return finish_pickle(top, res, r.label(), true);
}

bool sniff_single_file(const Reader& r) {
  if (r.size() < 32) return false;
  size_t n = size_t(std::min<uint64_t>(r.size(), 128));
  std::string head = r.read_string(0, n);
  if (uint8_t(head[0]) != 0x80) return false;
  auto pv = head.find("protocol_version");
  if (pv == std::string::npos) return false;
  return head.find("\x07oneflow", pv) != std::string::npos || head.find("\x0b__oneflow__", pv) != std::string::npos;
}

}  // namespace

Checkpoint load_oneflow(const Source& src, const LoadOptions& opts) {
  if (src.reader) return load_single_file(*src.reader, opts);
  const fs::path& dir = src.path;
  TB_CHECK(is_dir(dir), IoError, kTag, " '", dir.string(), "' is not a folder");
  // The folder the user named may be a link; everything inside it is opened without following one.
  const ConfinedFolder root(dir, kFolderNoun);
  if (root.kind("pickled_data") != Kind::Missing) return load_pickle_dir(root, opts);
  if (root.kind("snapshot_done") != Kind::Missing)
    return load_snapshot(root, opts.mmap, "legacy snapshot (snapshot_done)");
  if (root.kind("variables") == Kind::Folder && root.kind("variables/snapshot_done") != Kind::Missing)
    return load_snapshot(root.open_folder("variables", folder_context(root)), opts.mmap,
                         "saved model: variables/ legacy snapshot");
  if (root.kind("meta") != Kind::Missing && root.kind("out") != Kind::Missing) {
    Checkpoint c;
    c.format = "oneflow";
    c.root = Value::dict();
    c.root.set_item(Value::string(dir.filename().string()), Value::tensor(load_variable(root, opts.mmap)));
    c.info.emplace_back("layout", "single variable folder (meta + out)");
    return c;
  }
  auto vars = variable_dirs(root, nullptr);
  TB_CHECK(!vars.empty(), FormatError, kTag, " '", dir.string(),
           "': no OneFlow layout found (expected pickled_data, snapshot_done, or variable folders with meta + out)");
  Checkpoint c;
  c.format = "oneflow";
  c.root = variables_dict(root, vars, opts.mmap);
  c.info.emplace_back("layout", "variable folders (nn.Graph / snapshot without snapshot_done)");
  c.info.emplace_back("variables", std::to_string(vars.size()));
  return c;
}

// ---------------------------------------------------------------------------------------------
// writing

namespace {

/** A protocol-4 pickler producing the bytes CPython's pickle.dumps(obj, 4) produces for the Values
 *  OneFlow state dicts contain (framing, MEMOIZE, SHORT_BINUNICODE, STACK_GLOBAL, batching). Strings
 *  are memoised by value (CPython by identity; identifiers and dict keys are interned in practice). */
class Proto4Pickler {
 public:
  std::function<void(Proto4Pickler&, const Value&)> on_tensor;

  std::vector<uint8_t> dump(const Value& v) {
    out_.clear();
    frame_.clear();
    put(0x80);
    put(4);
    flush_out();
    save(v, 0);
    put('.');
    commit_frame(true);
    return out_;
  }

  void save_global(const std::string& module, const std::string& name) {
    commit_frame(false);
    std::string key = module + "\n" + name;
    auto it = globals_.find(key);
    if (it != globals_.end()) return get(it->second);
    save_str(module);
    save_str(name);
    put(0x93);  // STACK_GLOBAL
    globals_[key] = memoize();
  }
  void empty_tuple() {
    commit_frame(false);
    put(')');
  }
  void newobj() { put(0x81); }
  void build() { put('b'); }
  /** Memoises an object just created (NEWOBJ) under its identity. */
  void memoize_identity(const void* id) { ids_[id] = memoize(); }
  bool get_identity(const void* id) {
    auto it = ids_.find(id);
    if (it == ids_.end()) return false;
    commit_frame(false);
    get(it->second);
    return true;
  }
  /** A numpy array as numpy 1.x pickles it: _reconstruct(ndarray, (0,), b'b') + BUILD
   *  (1, shape, dtype, False, raw bytes); dtypes are singletons (memoised by descr). */
  void save_ndarray(const Tensor& t) {
    std::string descr(npy_descr(t.dtype()));
    TB_CHECK(!descr.empty(), UnsupportedError, kTag, " numpy has no dtype for ", dtype_name(t.dtype()),
             ", so a single-file OneFlow pickle cannot hold it (use the folder layout)");
    save_global("numpy.core.multiarray", "_reconstruct");
    commit_frame(false);
    save_global("numpy", "ndarray");
    save(Value::integer(0), 1);
    put(0x85);  // TUPLE1
    memoize();
    commit_frame(false);
    if (b_memo_ < 0) {
      save_bytes("b");
      b_memo_ = int64_t(next_memo_) - 1;
    } else {
      get(uint32_t(b_memo_));
    }
    put(0x87);  // TUPLE3
    memoize();
    put('R');
    memoize();
    commit_frame(false);
    put('(');
    save(Value::integer(1), 1);
    ValueList dims;
    for (int64_t d : t.shape()) dims.push_back(Value::integer(d));
    save(Value::tuple(std::move(dims)), 1);
    commit_frame(false);
    auto it = np_dtypes_.find(descr);
    if (it != np_dtypes_.end()) {
      get(it->second);
    } else {
      save_global("numpy", "dtype");
      save(Value::tuple({Value::string(descr.substr(1)), Value::boolean(false), Value::boolean(true)}), 1);
      put('R');
      np_dtypes_[descr] = memoize();
      save(Value::tuple({Value::integer(3), Value::string(descr.substr(0, 1)), Value::none(), Value::none(),
                         Value::none(), Value::integer(-1), Value::integer(-1), Value::integer(0)}),
           1);
      put('b');
    }
    save(Value::boolean(false), 1);
    commit_frame(false);
    std::string raw(t.nbytes(), '\0');
    t.copy_to(raw.data());
    save_bytes(raw);
    put('t');
    memoize();
    put('b');
  }
  /** A OneFlow dtype (pybind11 class with py::pickle): __newobj__ + BUILD(DataType number). */
  void save_flow_dtype(int number) {
    commit_frame(false);
    auto it = flow_dtypes_.find(number);
    if (it != flow_dtypes_.end()) return get(it->second);
    save_global("oneflow._oneflow_internal", "dtype");
    empty_tuple();
    put(0x81);
    flow_dtypes_[number] = memoize();
    save(Value::integer(number), 1);
    put('b');
  }
  void mark() { put('('); }
  void setitems_op() { put('u'); }
  void empty_dict_memo() {
    commit_frame(false);
    put('}');
    memoize();
  }
  void save_key(const std::string& k) { save(Value::string(k), 1); }

  void save(const Value& v, size_t depth) {
    TB_CHECK(depth < kMaxDepth, FormatError, kTag, " value nested deeper than ", kMaxDepth);
    commit_frame(false);
    const void* id = v.identity();
    if (id && v.kind() != Value::Kind::Tensor) {
      auto it = ids_.find(id);
      if (it != ids_.end()) return get(it->second);
    }
    if (id) keep_.push_back(v);  // like CPython's memo, hold every object so no address is reused
    switch (v.kind()) {
      case Value::Kind::None: return put('N');
      case Value::Kind::Bool: return put(v.as_bool() ? 0x88 : 0x89);
      case Value::Kind::Int: return save_int(v.as_int());
      case Value::Kind::Float: {
        double d = v.as_float();
        uint64_t bits;
        std::memcpy(&bits, &d, 8);
        put('G');
        for (int i = 7; i >= 0; --i) put(uint8_t(bits >> (8 * i)));
        return;
      }
      case Value::Kind::Str: return save_str(v.as_str());
      case Value::Kind::Bytes: return save_bytes(v.as_str());
      case Value::Kind::Tuple: return save_tuple(v, depth);
      case Value::Kind::List: {
        put(']');
        ids_[id] = memoize();
        batch(v.items(), depth, 'a', 'e', false);
        return;
      }
      case Value::Kind::Set: {
        put(0x8f);
        ids_[id] = memoize();
        batch(v.items(), depth, 0, 0x90, true);
        return;
      }
      case Value::Kind::Dict: return save_dict(v, depth);
      case Value::Kind::Tensor:
        TB_ASSERT(on_tensor);
        return on_tensor(*this, v);
      case Value::Kind::Complex:
      case Value::Kind::Object:
        throw UnsupportedError(str(kTag, " cannot write ", v.repr(), " (", v.kind_name(),
                                   ") into pickled_data: only tensors, dicts, lists, tuples, sets, strings, bytes and "
                                   "numbers are written"));
    }
  }

 private:
  void put(uint8_t b) { frame_.push_back(b); }
  void put_bytes(const void* p, size_t n) {
    auto* c = static_cast<const uint8_t*>(p);
    frame_.insert(frame_.end(), c, c + n);
  }
  template <class T>
  void put_le(T v, size_t n = sizeof(T)) {
    for (size_t i = 0; i < n; ++i) put(uint8_t(uint64_t(v) >> (8 * i)));
  }
  void flush_out() {
    out_.insert(out_.end(), frame_.begin(), frame_.end());
    frame_.clear();
  }
  void commit_frame(bool force) {
    if (frame_.empty()) return;
    if (frame_.size() >= kFrameTarget || force) {
      if (frame_.size() >= 4) {
        out_.push_back(0x95);
        uint64_t n = frame_.size();
        for (int i = 0; i < 8; ++i) out_.push_back(uint8_t(n >> (8 * i)));
      }
      flush_out();
    }
  }
  /** Large payloads go outside frames, as CPython's _Framer.write_large_bytes does. */
  void large(const std::vector<uint8_t>& header, const std::string& payload) {
    commit_frame(true);
    out_.insert(out_.end(), header.begin(), header.end());
    out_.insert(out_.end(), payload.begin(), payload.end());
  }
  uint32_t memoize() {
    put(0x94);
    return next_memo_++;
  }
  void get(uint32_t idx) {
    if (idx < 256) {
      put('h');
      put(uint8_t(idx));
    } else {
      put('j');
      put_le<uint32_t>(idx);
    }
  }
  void save_int(int64_t i) {
    if (i >= 0 && i <= 0xff) {
      put('K');
      put(uint8_t(i));
    } else if (i >= 0 && i <= 0xffff) {
      put('M');
      put_le<uint16_t>(uint16_t(i));
    } else if (i >= -0x80000000LL && i <= 0x7fffffffLL) {
      put('J');
      put_le<uint32_t>(uint32_t(int32_t(i)));
    } else {
      // LONG1: minimal two's complement little-endian
      std::vector<uint8_t> b;
      int64_t x = i;
      for (;;) {
        b.push_back(uint8_t(x & 0xff));
        int64_t rest = x >> 8;
        bool sign = (b.back() & 0x80) != 0;
        if ((rest == 0 && !sign) || (rest == -1 && sign)) break;
        x = rest;
      }
      put(0x8a);
      put(uint8_t(b.size()));
      put_bytes(b.data(), b.size());
    }
  }
  void save_str(const std::string& s) {
    commit_frame(false);
    auto it = strings_.find(s);
    if (it != strings_.end()) return get(it->second);
    put_sized(0x8c, 'X', 0x8d, s);  // SHORT_BINUNICODE / BINUNICODE / BINUNICODE8
    strings_[s] = memoize();
  }
  // A length-prefixed payload: op1 with a 1-byte length, op4 with 4 bytes, op8 with 8 bytes; large
  // payloads go through large() so they sit outside a frame, as CPython writes them.
  void put_sized(uint8_t op1, uint8_t op4, uint8_t op8, const std::string& s) {
    size_t n = s.size();
    if (n <= 0xff) {
      put(op1);
      put(uint8_t(n));
      put_bytes(s.data(), n);
    } else if (n > 0xffffffffULL || n >= kFrameTarget) {
      const int width = n > 0xffffffffULL ? 8 : 4;
      std::vector<uint8_t> h{width == 8 ? op8 : op4};
      for (int i = 0; i < width; ++i) h.push_back(uint8_t(uint64_t(n) >> (8 * i)));
      large(h, s);
    } else {
      put(op4);
      put_le<uint32_t>(uint32_t(n));
      put_bytes(s.data(), n);
    }
  }
  void save_bytes(const std::string& s) {
    put_sized('C', 'B', 0x8e, s);  // SHORT_BINBYTES / BINBYTES / BINBYTES8
    memoize();
  }
  void save_tuple(const Value& v, size_t depth) {
    const auto& items = v.items();
    if (items.empty()) return put(')');
    if (items.size() <= 3) {
      for (const auto& x : items) save(x, depth + 1);
      put(uint8_t(0x85 + items.size() - 1));
    } else {
      put('(');
      for (const auto& x : items) save(x, depth + 1);
      put('t');
    }
    ids_[v.identity()] = memoize();
  }
  void batch(const ValueList& items, size_t depth, uint8_t single, uint8_t multi, bool always_mark) {
    for (size_t b = 0; b < items.size(); b += 1000) {
      size_t e = std::min(items.size(), b + 1000);
      if (e - b == 1 && !always_mark) {
        save(items[b], depth + 1);
        put(single);
        continue;
      }
      put('(');
      for (size_t i = b; i < e; ++i) save(items[i], depth + 1);
      put(multi);
    }
  }
  void setitems(const std::vector<std::pair<Value, Value>>& items, size_t depth) {
    for (size_t b = 0; b < items.size(); b += 1000) {
      size_t e = std::min(items.size(), b + 1000);
      if (e - b == 1) {
        save(items[b].first, depth + 1);
        save(items[b].second, depth + 1);
        put('s');
        continue;
      }
      put('(');
      for (size_t i = b; i < e; ++i) {
        save(items[i].first, depth + 1);
        save(items[i].second, depth + 1);
      }
      put('u');
    }
  }
  void save_dict(const Value& v, size_t depth) {
    const ValueDict& d = v.dict_data();
    // Only OrderedDict keeps its class; other dict subclasses (defaultdict, Counter) are written as
    // plain dicts, since their reduce arguments (default factories) are code.
    const std::string& cls = d.cls;
    if (cls != "collections.OrderedDict") {
      put('}');
      ids_[v.identity()] = memoize();
      setitems(d.items, depth);
      return;
    }
    // OrderedDict.__reduce__ -> (cls, (), vars(self) or None, None, items).
    save_global("collections", "OrderedDict");
    empty_tuple();
    put('R');
    ids_[v.identity()] = memoize();
    setitems(d.items, depth);
    Value state;
    if (d.attrs && !d.attrs->items.empty()) {
      state = Value::dict();
      for (const auto& kv : d.attrs->items)  // a module tree kept beside a state dict is not state
        if (kv.second.kind() != Value::Kind::Object) state.set_item(kv.first, kv.second);
      if (state.dict_data().items.empty()) state = Value();
    }
    if (!state.is_none()) {
      save(state, depth + 1);
      put('b');
    }
  }

  static constexpr size_t kFrameTarget = 64 * 1024;
  std::vector<uint8_t> out_, frame_;
  uint32_t next_memo_ = 0;
  std::unordered_map<const void*, uint32_t> ids_;
  std::vector<Value> keep_;
  int64_t b_memo_ = -1;
  std::map<std::string, uint32_t> np_dtypes_;
  std::map<int, uint32_t> flow_dtypes_;
  std::unordered_map<std::string, uint32_t> strings_;
  std::unordered_map<std::string, uint32_t> globals_;
};

/** A file inside the output's TempFolder: created new, not fsynced (TempFolder::commit syncs the
 *  whole folder once); the TempFolder removes it with the rest when the write fails. */
void write_part(const fs::path& p, const std::function<void(Writer&)>& fill) {
  DirHandle dir(p.parent_path(), p);
  NewFileWriter w(dir, p.filename().string());
  TB_CHECK(w.created(), IoError, kTag, " cannot create '", p.string(), "': it exists");
  fill(w);
  w.finish(/*sync=*/false);
  w.keep();
}

void write_file(const fs::path& p, const void* data, size_t n) {
  write_part(p, [&](Writer& w) { w.write(data, n); });
}

void write_variable(const fs::path& dir, const Tensor& t, const std::string& key) {
  OneflowMeta m;
  m.dtype = t.dtype();
  m.shape = t.shape();
  std::string meta;
  try {
    meta = oneflow_meta_text(m);
  } catch (Error& e) {
    e.add_context(str("while writing tensor '", key, "' (", meta_of(t), ")"));
    throw;
  }
  std::error_code ec;
  fs::create_directory(dir, ec);
  TB_CHECK(!ec, IoError, kTag, " cannot create '", dir.string(), "': ", ec.message());
  write_part(dir / "out", [&](Writer& w) { w.write_tensor(t); });
  write_file(dir / "meta", meta.data(), meta.size());
}

/** Only an empty folder or a OneFlow folder is ever replaced by a new OneFlow folder. */
void refuse_foreign_folder(const fs::path& target) {
  std::error_code ec;
  bool empty_dir = is_dir(target) && fs::is_empty(target, ec);
  TB_CHECK(!is_dir(target) || empty_dir || is_oneflow_folder(target), IoError, kTag, " refusing to replace folder '",
           target.string(), "': it is neither empty nor a OneFlow checkpoint");
}

int64_t int_option(const SaveOptions& opts, const std::string& key, int64_t fallback) {
  std::string v = opts.option(key);
  if (v.empty()) return fallback;
  try {
    size_t used = 0;
    long long x = std::stoll(v, &used);
    TB_CHECK(used == v.size() && x >= 0, UnsupportedError, "");
    return x;
  } catch (...) {
    throw UnsupportedError(str(kTag, " option ", key, "=", v, ": expected a non-negative integer"));
  }
}

/** A flat name -> tensor dict becomes what Module.state_dict() returns (OrderedDict + _metadata). */
Value as_saved_data(const Value& root) {
  bool flat = root.is_dict() && root.dict_data().cls.empty();
  if (flat)
    for (const auto& kv : root.dict_data().items) flat &= kv.first.is_str() && kv.second.is_tensor();
  if (!flat) return root;
  Value data = Value::dict("collections.OrderedDict");
  data.dict_data().attrs = std::make_shared<ValueDict>();
  data.dict_data().attrs->items.emplace_back(Value::string("_metadata"), Value::dict("collections.OrderedDict"));
  for (const auto& kv : root.dict_data().items) data.set_item(kv.first, kv.second);
  return data;
}

bool is_parameter(const Tensor& t, const std::string& tensor_class) {
  return tensor_class == "parameter" || (tensor_class == "auto" && (is_floating(t.dtype()) || is_complex(t.dtype())));
}

int oneflow_number(DType dt) {
  std::string_view name = oneflow_dtype_name(dt);
  for (const auto& t : of_types())
    if (name == t.name) return t.number;
  TB_ASSERT(false, "no DataType number for ", name);
  return 0;
}

/** flow.save(obj, file): one protocol-4 pickle; tensors carry numpy arrays and OneFlow dtypes. */
void save_single_file(const Checkpoint& ckpt, const fs::path& file, const SaveOptions& opts,
                      const std::string& tensor_class) {
  std::string magic = opts.option("magic", "__oneflow__");
  TB_CHECK(magic == "__oneflow__" || magic == "oneflow", UnsupportedError, kTag, " option magic=", magic,
           ": expected __oneflow__ (OneFlow >= 0.9) or oneflow");
  Proto4Pickler p;
  p.on_tensor = [&](Proto4Pickler& pk, const Value& v) {
    if (pk.get_identity(v.identity())) return;
    const Tensor& t = v.as_tensor();
    if (is_parameter(t, tensor_class))
      pk.save_global("oneflow.nn", "Parameter");
    else
      pk.save_global("oneflow", "Tensor");
    pk.empty_tuple();
    pk.newobj();
    pk.memoize_identity(v.identity());
    pk.empty_dict_memo();
    pk.mark();
    pk.save_key("data");
    pk.save_ndarray(t);
    pk.save_key("dtype");
    pk.save_flow_dtype(oneflow_number(t.dtype()));
    pk.save_key("device");
    pk.save_key("cpu");
    pk.setitems_op();
    pk.build();
  };
  Value top = Value::dict();
  top.set_item(Value::string("protocol_version"), Value::integer(1));
  top.set_item(Value::string(magic), Value::none());
  top.set_item(Value::string("data"), as_saved_data(ckpt.root));
  std::vector<uint8_t> bytes = p.dump(top);
  AtomicFileWriter w(file, opts.overwrite);
  w.write(bytes.data(), bytes.size());
  w.commit();
}

}  // namespace

void save_oneflow(const Checkpoint& ckpt, const fs::path& dir, const SaveOptions& opts) {
  std::string layout = opts.option("layout", "pickle");
  std::string tensor_class = opts.option("tensor_class", "auto");
  TB_CHECK(layout == "pickle" || layout == "snapshot" || layout == "single", UnsupportedError, kTag, " option layout=",
           layout, ": expected 'pickle' (flow.save folder), 'single' (flow.save file) or 'snapshot' (legacy snapshot)");
  TB_CHECK(tensor_class == "auto" || tensor_class == "parameter" || tensor_class == "tensor", UnsupportedError, kTag,
           " option tensor_class=", tensor_class, ": expected auto, parameter or tensor");
  int64_t next = int_option(opts, "first_tensor", 0);
  for (const auto& [key, t] : ckpt.state_dict()) {
    try {
      (void)oneflow_dtype_name(t.dtype());
    } catch (Error& e) {
      e.add_context(str("while writing tensor '", key, "' (", meta_of(t), ") to '", dir.string(), "'"));
      throw;
    }
  }
  std::error_code ec;
  if (fs::exists(fs::symlink_status(dir, ec)))
    TB_CHECK(opts.overwrite, IoError, kTag, " '", dir.string(), "' already exists; pass overwrite (--force) to replace it");
  if (layout == "single") return save_single_file(ckpt, dir, opts, tensor_class);
  const auto st = fs::symlink_status(dir, ec);
  TB_CHECK(!fs::is_symlink(st), IoError, kTag, " '", dir.string(),
           "' is a symbolic link; refusing to replace it (write to the folder it points to, or remove the link)");
  TB_CHECK(!fs::exists(st) || fs::is_directory(st) || fs::is_regular_file(st), IoError, kTag, " '", dir.string(),
           "' is neither a folder nor a regular file; refusing to replace it");
  if (fs::is_directory(st)) refuse_foreign_folder(dir);

  TempFolder tmp(dir);
  if (layout == "snapshot") {
    // One folder per tensor, named by the naming rule (formats/naming.h): always one safe component.
    StateDict sd = ckpt.state_dict();
    const std::vector<std::string> folders = naming::stored_names(sd, naming::Target::Folder);
    for (size_t i = 0; i < sd.size(); ++i) {
      TB_ASSERT(is_single_component(folders[i]) && folders[i] != "snapshot_done", "[oneflow] folder name '", folders[i],
                "' for tensor '", sd.entries()[i].first, "'");
      write_variable(tmp.path() / folders[i], sd.entries()[i].second, sd.entries()[i].first);
    }
    write_file(tmp.path() / "snapshot_done", "", 0);
  } else {
    Proto4Pickler p;
    p.on_tensor = [&](Proto4Pickler& pk, const Value& v) {
      if (pk.get_identity(v.identity())) return;
      const Tensor& t = v.as_tensor();
      bool param = is_parameter(t, tensor_class);
      std::string rel = str("tensor_", next++);
      write_variable(tmp.path() / rel, t, rel);
      if (param)
        pk.save_global("oneflow.nn", "Parameter");
      else
        pk.save_global("oneflow", "Tensor");
      pk.empty_tuple();
      pk.newobj();
      pk.memoize_identity(v.identity());
      Value state = Value::dict();
      state.set_item(Value::string("path"), Value::string(rel));
      pk.save(state, 1);
      pk.build();
    };
    Value top = Value::dict();
    top.set_item(Value::string("protocol_version"), Value::integer(1));
    top.set_item(Value::string("data"), as_saved_data(ckpt.root));
    std::vector<uint8_t> bytes = p.dump(top);
    write_file(tmp.path() / "pickled_data", bytes.data(), bytes.size());
  }
  tmp.commit(opts.overwrite, refuse_foreign_folder);  // exchanged with an existing target, which is then removed
}

namespace {
/** The OneFlow writer's options (--option KEY=VALUE), checked before save_oneflow reads them. */
struct OneflowWriteOptions : WriteOptions {
  std::string layout = "pickle";        // pickle (flow.save folder), single (flow.save file), snapshot (legacy)
  std::string magic = "__oneflow__";    // the pickle's magic: __oneflow__ (OneFlow >= 0.9) or oneflow
  std::string tensor_class = "auto";    // auto, parameter or tensor
  uint64_t first_tensor = 0;            // number of the first tensor_N folder
};

OptionTable<OneflowWriteOptions> oneflow_options() {
  using O = OneflowWriteOptions;
  return {choice_option<O>("layout", &O::layout, {"pickle", "single", "snapshot"},
                           "pickle (flow.save folder, default), single (flow.save file) or snapshot (legacy)"),
          choice_option<O>("magic", &O::magic, {"__oneflow__", "oneflow"}, "__oneflow__ (OneFlow >= 0.9, default) or oneflow"),
          choice_option<O>("tensor_class", &O::tensor_class, {"auto", "parameter", "tensor"},
                           "auto (default), parameter or tensor"),
          count_option<O>("first_tensor", &O::first_tensor, "number of the first tensor_N folder (default 0)")};
}
}  // namespace

const FormatAdapter& oneflow_format() {
  static const FormatAdapter a = with_checked_writer<OneflowWriteOptions>(
      {.name = "oneflow",
       .description = "OneFlow flow.save folder (pickled_data + tensor_N/{meta,out}), nn.Graph variables, legacy "
                      "snapshots, flow.save single-file pickle",
       .sniff = [](const Source& src) -> bool {
         try {
           return src.reader ? sniff_single_file(*src.reader) : is_oneflow_folder(src.path);
         } catch (...) {
           return false;
         }
       },
       .load = load_oneflow,
       .keeps_tree = true},
      oneflow_options(), save_oneflow);
  return a;
}

}  // namespace tb
