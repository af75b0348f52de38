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
#include "formats/detail/pickle.h"
#include "formats/detail/pickle_numpy.h"
#include "formats/naming.h"
#include "formats/oneflow_internal.h"
#include "tensor/atomic_output.h"
#include "tensor/checked.h"

namespace fs = std::filesystem;

namespace tb {

using namespace oneflow_detail;

namespace {

constexpr size_t kMaxMetaBytes = 64 * 1024;
constexpr size_t kMaxRank = 64;
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
      {"kChar", 1, DType::I8},          {"kFloat", 2, DType::F32},
      {"kDouble", 3, DType::F64},       {"kInt8", 4, DType::I8},
      {"kInt32", 5, DType::I32},        {"kInt64", 6, DType::I64},
      {"kUInt8", 7, DType::U8},         {"kOFRecord", 8, std::nullopt},
      {"kFloat16", 9, DType::F16},      {"kTensorBuffer", 10, std::nullopt},
      {"kBFloat16", 11, DType::BF16},   {"kBool", 12, DType::Bool},
      {"kUInt16", 13, DType::U16},      {"kUInt32", 14, DType::U32},
      {"kUInt64", 15, DType::U64},      {"kUInt128", 16, std::nullopt},
      {"kInt16", 17, DType::I16},       {"kInt128", 18, std::nullopt},
      {"kComplex32", 19, std::nullopt}, {"kComplex64", 20, DType::C64},
      {"kComplex128", 21, DType::C128},
  };
  return t;
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
          TB_CHECK(!known, UnsupportedError, kTag, " '", label_, "': data_type ", v, " has no tensorbridge equivalent");
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
      throw FormatError(
          str(kTag, " '", label_, "': expected a field name or value at byte ", pos_, " but found ", found));
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

namespace oneflow_detail {
bool is_single_component(const std::string& s) {
  return !s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos && s.find('\\') == std::string::npos &&
         s.find('\0') == std::string::npos;
}

std::string folder_context(const ConfinedFolder& f) { return str(kTag, " '", f.path().string(), "':"); }

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
}  // namespace oneflow_detail

Tensor load_oneflow_variable(const fs::path& dir, bool mmap) {
  return load_variable(ConfinedFolder(dir, kFolderNoun), mmap);
}

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
  } catch (...) {}
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

/** A pickler for pickled_data and flow.save files: CPython's protocol-4 bytes. */
pickle::Pickler flow_pickler() {
  pickle::Pickler p(4);
  p.tag = kTag;
  p.target = "pickled_data";
  return p;
}

/** A OneFlow dtype (pybind11 class with py::pickle): __newobj__ + BUILD(DataType number); one object
 *  per dtype, memoised. */
void write_flow_dtype(pickle::Pickler& p, int number) {
  p.commit();
  if (p.get_keyed(str("oneflow dtype ", number))) return;
  p.global_("oneflow._oneflow_internal", "dtype");
  p.tuple_n(0);
  p.newobj();
  p.key_last(str("oneflow dtype ", number));
  p.integer(number);
  p.build();
}

/** oneflow.nn.Parameter / oneflow.Tensor created empty (NEWOBJ) and memoised as t; BUILD follows. */
void write_flow_tensor_head(pickle::Pickler& p, const Tensor& t, bool parameter) {
  if (parameter)
    p.global_("oneflow.nn", "Parameter");
  else
    p.global_("oneflow", "Tensor");
  p.tuple_n(0);
  p.newobj();
  p.memo_last(&t);
}

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

/** The pickle flow.save writes for root: {"protocol_version": 1, [magic: None,] "data": root}, every tensor
 *  as OneFlow's tensor head (Parameter or Tensor by tensor_class), the state write_state pickles, BUILD. */
std::vector<uint8_t> flow_pickle(const Value& root, const std::string& magic, const std::string& tensor_class,
                                 const std::function<void(pickle::Pickler&, const Tensor&)>& write_state) {
  pickle::Pickler p = flow_pickler();
  p.on_tensor = [&](pickle::Pickler& pk, const Tensor& t) {
    write_flow_tensor_head(pk, t, is_parameter(t, tensor_class));
    write_state(pk, t);
    pk.build();
  };
  Value top = Value::dict();
  top.set_item(Value::string("protocol_version"), Value::integer(1));
  if (!magic.empty()) top.set_item(Value::string(magic), Value::none());
  top.set_item(Value::string("data"), as_saved_data(root));
  p.dump(top);
  return std::move(p.bytes());
}

/** flow.save(obj, file): one protocol-4 pickle; tensors carry numpy arrays and OneFlow dtypes. */
void save_single_file(const Checkpoint& ckpt, const fs::path& file, const OneflowWriteOptions& opts) {
  const std::vector<uint8_t> bytes =
      flow_pickle(ckpt.root, opts.magic, opts.tensor_class, [](pickle::Pickler& pk, const Tensor& t) {
        std::string descr(npy_descr(t.dtype()));
        TB_CHECK(!descr.empty(), UnsupportedError, kTag, " numpy has no dtype for ", dtype_name(t.dtype()),
                 ", so a single-file OneFlow pickle cannot hold it (use the folder layout)");
        pk.empty_dict();
        pk.mark();
        pk.string("data");
        pickle::write_numpy_array(pk, t, descr);
        pk.string("dtype");
        write_flow_dtype(pk, oneflow_number(t.dtype()));
        pk.string("device");
        pk.string("cpu");
        pk.setitems();
      });
  AtomicFileWriter w(file, opts.overwrite);
  w.write(bytes.data(), bytes.size());
  w.commit();
}

}  // namespace

void write_oneflow(const Checkpoint& ckpt, const fs::path& dir, const OneflowWriteOptions& opts) {
  const std::string& layout = opts.layout;
  uint64_t next = opts.first_tensor;
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
    TB_CHECK(opts.overwrite, IoError, kTag, " '", dir.string(),
             "' already exists; pass overwrite (--force) to replace it");
  if (layout == "single") return save_single_file(ckpt, dir, opts);
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
    const std::vector<uint8_t> bytes =
        flow_pickle(ckpt.root, "", opts.tensor_class, [&](pickle::Pickler& pk, const Tensor& t) {
          std::string rel = str("tensor_", next++);
          write_variable(tmp.path() / rel, t, rel);
          Value state = Value::dict();
          state.set_item(Value::string("path"), Value::string(rel));
          pk.value(state);
        });
    write_file(tmp.path() / "pickled_data", bytes.data(), bytes.size());
  }
  tmp.commit(opts.overwrite, refuse_foreign_folder);  // exchanged with an existing target, which is then removed
}

void save_oneflow(const Checkpoint& ckpt, const fs::path& dir, const SaveOptions& opts) {
  oneflow_format().save(ckpt, dir, opts);
}

namespace {
OptionTable<OneflowWriteOptions> oneflow_options() {
  using O = OneflowWriteOptions;
  return {choice_option<O>("layout", &O::layout, {"pickle", "single", "snapshot"},
                           "pickle (flow.save folder, default), single (flow.save file) or snapshot (legacy)"),
          choice_option<O>("magic", &O::magic, {"__oneflow__", "oneflow"},
                           "__oneflow__ (OneFlow >= 0.9, default) or oneflow"),
          choice_option<O>("tensor_class", &O::tensor_class, {"auto", "parameter", "tensor"},
                           "auto (default), parameter or tensor"),
          count_option<O>("first_tensor", &O::first_tensor, "number of the first tensor_N folder (default 0)")};
}
}  // namespace

const FormatAdapter& oneflow_format() {
  static const FormatAdapter a = with_writer<OneflowWriteOptions>(
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
      oneflow_options(), write_oneflow);
  return a;
}

}  // namespace tb
