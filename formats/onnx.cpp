// ONNX initializers in and out (layout: formats/onnx.h). Protobuf parsing is done by the official
// generated classes; this file adds the checks, the dtype decoding, external data and name recovery.
#include "formats/onnx.h"

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>

#include "formats/adapters.h"
#include "formats/detail/open_beneath.h"
#include "formats/naming.h"
#include "formats/onnx_walk.h"
#include "tensor/atomic_output.h"
#include "tensor/byte_size.h"
#include "tensor/checked.h"

namespace tb {

namespace fs = std::filesystem;

namespace {

// ---- sniffing -------------------------------------------------------------------------------------

bool read_varint(const Reader& r, uint64_t& pos, uint64_t end, uint64_t& out) {
  out = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (pos >= end) return false;
    uint8_t b = r.read_le<uint8_t>(pos++);
    out |= uint64_t(b & 0x7f) << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

}  // namespace

bool sniff_onnx(const Source& src) {
  try {
    if (!src.reader) return false;
    const Reader& r = *src.reader;
    uint64_t end = r.size();
    if (end < 4 || r.read_le<uint8_t>(0) != 0x08) return false;  // field 1 (ir_version), varint
    // Walk the top-level fields of ModelProto: every tag must be a ModelProto field with its wire
    // type and the fields must end exactly at the end of the file, with ir_version and a graph.
    uint64_t pos = 0;
    bool has_ir = false, has_graph = false;
    for (int count = 0; pos < end; ++count) {
      if (count > 4096) return false;
      uint64_t tag = 0, v = 0;
      if (!read_varint(r, pos, end, tag)) return false;
      uint64_t field = tag >> 3, wire = tag & 7;
      switch (field) {
        case 1:
        case 5:  // ir_version, model_version
          if (wire != 0 || !read_varint(r, pos, end, v)) return false;
          if (field == 1) {
            if (v < 1 || v > 64) return false;
            has_ir = true;
          }
          break;
        case 2:
        case 3:
        case 4:
        case 6:
        case 7:
        case 8:
        case 14:
        case 20:
        case 25:
          if (wire != 2 || !read_varint(r, pos, end, v) || v > end - pos) return false;
          pos += v;
          if (field == 7) has_graph = true;
          break;
        default: return false;
      }
    }
    return pos == end && has_ir && has_graph;
  } catch (...) {
    return false;
  }
}

namespace onnx_detail {

std::string onnx_type_name(int t) {
  static const char* names[] = {
      "UNDEFINED", "FLOAT",      "UINT8",      "INT8",         "UINT16",         "INT16",      "INT32",
      "INT64",     "STRING",     "BOOL",       "FLOAT16",      "DOUBLE",         "UINT32",     "UINT64",
      "COMPLEX64", "COMPLEX128", "BFLOAT16",   "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ",
      "UINT4",     "INT4",       "FLOAT4E2M1", "FLOAT8E8M0",   "UINT2",          "INT2"};
  if (t >= 0 && t < int(sizeof(names) / sizeof(names[0]))) return names[t];
  return str("type ", t);
}

/** name, dims and data_type: everything of an initializer but its data. */
void fill_tensor_header(onnx::TensorProto& tp, const std::string& name, const Tensor& t) {
  tp.set_name(name);
  for (int64_t d : t.shape()) tp.add_dims(d);
  tp.set_data_type(info(t.dtype()).onnx);
}

void fill_tensor_proto(onnx::TensorProto& tp, const std::string& name, const Tensor& t) {
  fill_tensor_header(tp, name, t);
  std::string* raw = tp.mutable_raw_data();
  raw->resize(t.nbytes());
  if (t.nbytes()) t.copy_to(raw->data());
}

}  // namespace onnx_detail

namespace {

using onnx_detail::onnx_type_name;

struct LoadContext {
  const Source& src;
  const LoadOptions& opts;
  std::shared_ptr<void> model;                              // keeps raw_data strings alive for tensor views
  std::map<std::string, std::shared_ptr<Reader>> external;  // location -> reader
  std::vector<std::pair<std::string, std::string>> skipped;
  std::optional<ConfinedFolder> folder;  // the model's folder (external data), opened on first use
  LoadBudget budget;                     // dense copies of typed fields and densified sparse tensors are charged here
  std::string where(const std::string& name) const { return str("[onnx] '", src.label(), "': tensor '", name, "'"); }
};

Shape tensor_shape(const LoadContext& c, const google::protobuf::RepeatedField<int64_t>& dims,
                   const std::string& name) {
  TB_CHECK(dims.size() <= 64, FormatError, c.where(name), " has ", dims.size(), " dims; at most 64 are accepted");
  Shape s(dims.begin(), dims.end());
  for (int64_t d : s) TB_CHECK(d >= 0, FormatError, c.where(name), " has a negative dim in ", shape_str(s));
  checked_nbytes(checked_numel(s, c.where(name)), 16, c.where(name));  // fits in bytes for every dtype
  return s;
}

uint64_t parse_decimal(const LoadContext& c, const std::string& name, const std::string& key, const std::string& v) {
  TB_CHECK(
      !v.empty() && v.size() <= 19 && std::all_of(v.begin(), v.end(), [](char ch) { return ch >= '0' && ch <= '9'; }),
      FormatError, c.where(name), ": external_data '", key, "' should be a decimal number but is '", v, "'");
  return std::stoull(v);
}

/** The reader of an external data file, opened inside the model's folder (never through a link,
 *  never a FIFO or a device); one per location. */
const Reader& external_reader(LoadContext& c, const std::string& name, const std::string& location) {
  TB_CHECK(!c.src.path.empty() && c.src.reader, UnsupportedError, c.where(name),
           " uses external data, which needs the model's folder (load it from a file)");
  TB_CHECK(!location.empty(), FormatError, c.where(name), " has external data without a 'location'");
  auto& reader = c.external[location];
  if (reader) return *reader;
  if (!c.folder) {
    fs::path dir = c.src.path.parent_path();
    c.folder.emplace(dir.empty() ? fs::path(".") : dir, "the model's folder");
  }
  reader = c.folder->open_file(location, str(c.where(name), ": external data location"), c.opts.mmap);
  return *reader;
}

Tensor load_external(LoadContext& c, const onnx::TensorProto& tp, DType dt, const Shape& shape) {
  const std::string& name = tp.name();
  std::string location;
  uint64_t offset = 0, length = 0;
  bool has_length = false;
  for (const auto& kv : tp.external_data()) {
    if (kv.key() == "location")
      location = kv.value();
    else if (kv.key() == "offset")
      offset = parse_decimal(c, name, "offset", kv.value());
    else if (kv.key() == "length") {
      length = parse_decimal(c, name, "length", kv.value());
      has_length = true;
    }
  }
  const Reader& reader = external_reader(c, name, location);
  uint64_t need = checked_nbytes(checked_numel(shape), dtype_size(dt), c.where(name));
  if (has_length)
    TB_CHECK(length == need, FormatError, c.where(name), " (", dtype_name(dt), " ", shape_str(shape), ") needs ", need,
             " bytes but external_data length is ", length);
  TB_CHECK(offset <= reader.size() && need <= reader.size() - offset, FormatError, c.where(name), " (", dtype_name(dt),
           " ", shape_str(shape), ") needs bytes [", offset, ", ", offset + need, ") of '", location,
           "' but that file has ", reader.size(), " bytes. Truncated download?");
  if (need == 0) return Tensor::zeros(dt, shape);
  auto storage = reader.load(offset, size_t(need));
  return Tensor(storage, dt, shape, contiguous_strides(shape));
}

template <class Field>
void check_count(const LoadContext& c, const std::string& name, const char* field, const Field& f, int64_t expect) {
  TB_CHECK(int64_t(f.size()) == expect, FormatError, c.where(name), ": ", field, " holds ", f.size(),
           " values but the dims need ", expect);
}

/** Decodes a TensorProto into a tensor; returns an undefined tensor (and notes why) for types we lack. */
Tensor decode_tensor(LoadContext& c, const onnx::TensorProto& tp, const std::string& name) {
  int type = tp.data_type();
  auto dt_opt = dtype_from_onnx(type);
  if (!dt_opt) {
    c.skipped.emplace_back(name, str(onnx_type_name(type), " has no tensorbridge dtype"));
    return {};
  }
  DType dt = *dt_opt;
  Shape shape = tensor_shape(c, tp.dims(), name);
  int64_t n = checked_numel(shape);
  size_t isz = dtype_size(dt);
  TB_CHECK(uint64_t(n) <= (uint64_t(1) << 62) / isz, FormatError, c.where(name), " is too large: ", shape_str(shape));
  size_t need = size_t(n) * isz;

  if (tp.data_location() == onnx::TensorProto::EXTERNAL) return load_external(c, tp, dt, shape);
  if (tp.has_raw_data()) {
    const std::string& raw = tp.raw_data();
    TB_CHECK(raw.size() == need, FormatError, c.where(name), " (", dtype_name(dt), " ", shape_str(shape), ") needs ",
             need, " bytes but raw_data has ", raw.size());
    if (need == 0) return Tensor::zeros(dt, shape);
    // A view of the parsed protobuf's own buffer: no second copy of the weights.
    auto storage = Storage::wrap(const_cast<char*>(raw.data()), raw.size(), c.model);
    return Tensor(storage, dt, shape, contiguous_strides(shape));
  }
  // Check the typed field's count against the dims before allocating what the dims claim.
  {
    int64_t have = 0, want = n;
    const char* field = "int32_data";
    switch (dt) {
      case DType::F32: have = tp.float_data_size(), field = "float_data"; break;
      case DType::C64: have = tp.float_data_size(), field = "float_data", want = 2 * n; break;
      case DType::F64: have = tp.double_data_size(), field = "double_data"; break;
      case DType::C128: have = tp.double_data_size(), field = "double_data", want = 2 * n; break;
      case DType::I64: have = tp.int64_data_size(), field = "int64_data"; break;
      case DType::U32:
      case DType::U64: have = tp.uint64_data_size(), field = "uint64_data"; break;
      default: have = tp.int32_data_size(); break;
    }
    TB_CHECK(have == want, FormatError, c.where(name), ": ", field, " holds ", have, " values but the dims need ",
             want);
  }
  c.budget.charge_bytes(need, str("tensor '", name, "' (", dtype_name(dt), " ", shape_str(shape), ")"));
  Tensor t = Tensor::zeros(dt, shape);
  uint8_t* out = t.data();
  switch (dt) {
    case DType::F32:
      check_count(c, name, "float_data", tp.float_data(), n);
      if (need) std::memcpy(out, tp.float_data().data(), need);  // an empty field has no buffer (null)
      break;
    case DType::C64:
      check_count(c, name, "float_data", tp.float_data(), 2 * n);
      if (need) std::memcpy(out, tp.float_data().data(), need);  // an empty field has no buffer (null)
      break;
    case DType::F64:
      check_count(c, name, "double_data", tp.double_data(), n);
      if (need) std::memcpy(out, tp.double_data().data(), need);  // an empty field has no buffer (null)
      break;
    case DType::C128:
      check_count(c, name, "double_data", tp.double_data(), 2 * n);
      if (need) std::memcpy(out, tp.double_data().data(), need);  // an empty field has no buffer (null)
      break;
    case DType::I64:
      check_count(c, name, "int64_data", tp.int64_data(), n);
      if (need) std::memcpy(out, tp.int64_data().data(), need);  // an empty field has no buffer (null)
      break;
    case DType::U32:
    case DType::U64: {
      check_count(c, name, "uint64_data", tp.uint64_data(), n);
      for (int64_t i = 0; i < n; ++i) {
        uint64_t v = tp.uint64_data(int(i));
        if (dt == DType::U32) {
          auto w = uint32_t(v);
          std::memcpy(out + 4 * i, &w, 4);
        } else {
          std::memcpy(out + 8 * i, &v, 8);
        }
      }
      break;
    }
    default: {
      // int32_data: one element per int32 (8/16-bit ints, bool, f16/bf16/f8 as bit patterns).
      check_count(c, name, "int32_data", tp.int32_data(), n);
      for (int64_t i = 0; i < n; ++i) {
        auto v = uint32_t(tp.int32_data(int(i)));
        if (dt == DType::Bool) v = v != 0;
        std::memcpy(out + isz * size_t(i), &v, isz);  // little-endian: the low bytes
      }
      break;
    }
  }
  return t;
}

Tensor densify(LoadContext& c, const onnx::SparseTensorProto& sp, const std::string& name) {
  Tensor values = decode_tensor(c, sp.values(), name);
  if (!values.defined()) return {};
  Shape shape = tensor_shape(c, sp.dims(), name);
  int64_t total = checked_numel(shape);
  TB_CHECK(values.dim() == 1, FormatError, c.where(name), ": sparse values should be 1-D but are ",
           shape_str(values.shape()));
  int64_t nnz = values.numel();
  Tensor idx = decode_tensor(c, sp.indices(), name + " (indices)");
  TB_CHECK(idx.defined() && idx.dtype() == DType::I64, FormatError, c.where(name), ": sparse indices should be int64");
  bool linear = idx.dim() == 1 && idx.shape()[0] == nnz;
  bool coords = idx.dim() == 2 && idx.shape()[0] == nnz && idx.shape()[1] == int64_t(shape.size());
  TB_CHECK(linear || coords, FormatError, c.where(name), ": sparse indices ", shape_str(idx.shape()), " should be [",
           nnz, "] or [", nnz, ", ", shape.size(), "]");
  // The dense tensor is what the header claims, not what the file holds: it is charged in full.
  c.budget.charge_bytes(LoadBudget::sat_mul(uint64_t(total), values.itemsize()),
                        str("densifying sparse tensor '", name, "' (", dtype_name(values.dtype()), " ",
                            shape_str(shape), ", ", nnz, " values)"));
  Tensor dense = Tensor::zeros(values.dtype(), shape);
  auto iv = idx.to_vector<int64_t>();
  Tensor vals = values.contiguous();
  size_t isz = vals.itemsize();
  Shape strides = contiguous_strides(shape);
  for (int64_t k = 0; k < nnz; ++k) {
    int64_t pos = 0;
    if (linear) {
      pos = iv[size_t(k)];
    } else {
      for (size_t d = 0; d < shape.size(); ++d) {
        int64_t x = iv[size_t(k) * shape.size() + d];
        TB_CHECK(x >= 0 && x < shape[d], FormatError, c.where(name), ": sparse index ", x, " out of range for dim ", d,
                 " of ", shape_str(shape));
        pos += x * strides[d];
      }
    }
    TB_CHECK(pos >= 0 && pos < total, FormatError, c.where(name), ": sparse index ", pos, " out of range for ",
             shape_str(shape));
    std::memcpy(dense.data() + size_t(pos) * isz, vals.data() + size_t(k) * isz, isz);
  }
  return dense;
}

/** Tensor held by a Constant node's attribute; undefined for string constants. */
Tensor constant_value(LoadContext& c, const onnx::NodeProto& node, const std::string& name) {
  for (const auto& a : node.attribute()) {
    const std::string& an = a.name();
    if (an == "value") return decode_tensor(c, a.t(), name);
    if (an == "sparse_value") return densify(c, a.sparse_tensor(), name);
    if (an == "value_float") return Tensor::from_vector<float>(DType::F32, {}, {a.f()});
    if (an == "value_int") return Tensor::from_vector<int64_t>(DType::I64, {}, {a.i()});
    if (an == "value_floats")
      return Tensor::from_vector<float>(DType::F32, {int64_t(a.floats_size())},
                                        std::vector<float>(a.floats().begin(), a.floats().end()));
    if (an == "value_ints")
      return Tensor::from_vector<int64_t>(DType::I64, {int64_t(a.ints_size())},
                                          std::vector<int64_t>(a.ints().begin(), a.ints().end()));
  }
  c.skipped.emplace_back(name, "Constant node without a numeric value");
  return {};
}

/** onnx.h point 5: torch's `onnx::MatMul_N` ([in, out]) feeding MatMul then Add(<layer>.bias) becomes
 *  `<layer>.weight` ([out, in], a transposed view) when exactly one initializer maps to that name. */
void recover_names(const onnx::GraphProto& g, StateDict& sd, std::vector<std::pair<std::string, std::string>>& info,
                   std::map<std::string, std::string>* applied = nullptr) {
  std::unordered_map<std::string, int> uses;
  std::unordered_map<std::string, const onnx::NodeProto*> producer;
  std::unordered_map<std::string, std::vector<const onnx::NodeProto*>> consumers;
  for (const auto& node : g.node()) {
    for (const auto& in : node.input()) {
      ++uses[in];
      consumers[in].push_back(&node);
    }
    for (const auto& out : node.output()) producer[out] = &node;
  }
  for (const auto& o : g.output()) ++uses[o.name()];
  std::map<std::string, std::string> renames;  // old -> new
  std::map<std::string, int> targets;
  for (const auto& [name, t] : sd) {
    if (name.rfind("onnx::MatMul_", 0) != 0 || t.dim() != 2 || uses[name] != 1) continue;
    const auto& cons = consumers[name];
    if (cons.size() != 1 || cons[0]->op_type() != "MatMul" || cons[0]->input_size() != 2 || cons[0]->input(1) != name)
      continue;
    const std::string& mm_out = cons[0]->output(0);
    const auto& next = consumers[mm_out];
    if (next.size() != 1 || next[0]->op_type() != "Add" || next[0]->input_size() != 2 || uses[mm_out] != 1) continue;
    const std::string& other = next[0]->input(0) == mm_out ? next[0]->input(1) : next[0]->input(0);
    const Tensor* bias = sd.find(other);
    const std::string suffix = ".bias";
    if (!bias || other.size() <= suffix.size() ||
        other.compare(other.size() - suffix.size(), suffix.size(), suffix) != 0)
      continue;
    if (bias->dim() != 1 || bias->shape()[0] != t.shape()[1]) continue;
    std::string target = other.substr(0, other.size() - suffix.size()) + ".weight";
    if (sd.contains(target)) continue;
    renames[name] = target;
    ++targets[target];
  }
  for (const auto& [from, to] : renames) {
    if (targets[to] != 1) continue;  // two candidates for one name: ambiguous, keep ONNX names
    Tensor w = sd.at(from);
    info.emplace_back("renamed", str(from, " -> ", to, " (MatMul weight ", shape_str(w.shape()), " transposed back to ",
                                     shape_str({w.shape()[1], w.shape()[0]}), ")"));
    sd.set(from, w.transpose(0, 1));
    sd.rename(from, to);
    if (applied) (*applied)[from] = to;
  }
}

std::string opset_text(const onnx::ModelProto& m, std::string* default_version) {
  std::string all;
  for (const auto& op : m.opset_import()) {
    std::string dom = op.domain().empty() ? "ai.onnx" : op.domain();
    if (op.domain().empty() || op.domain() == "ai.onnx") *default_version = std::to_string(op.version());
    all += (all.empty() ? "" : ", ") + dom + "=" + std::to_string(op.version());
  }
  return all;
}

}  // namespace

namespace onnx_detail {

std::shared_ptr<onnx::ModelProto> parse_model(const Source& src) {
  TB_CHECK(src.reader != nullptr, FormatError, "[onnx] '", src.label(), "' is a folder, not an .onnx file");
  const Reader& r = *src.reader;
  TB_CHECK(r.size() <= uint64_t(INT_MAX), UnsupportedError, "[onnx] '", src.label(), "' is ", r.size(),
           " bytes; a single protobuf message cannot exceed 2 GiB, so a valid ONNX model this large must keep its "
           "weights in external data files");
  auto model = std::make_shared<onnx::ModelProto>();
  bool ok;
  if (const uint8_t* bytes = r.contiguous_bytes()) {
    ok = model->ParseFromArray(bytes, int(r.size()));
  } else {
    auto buf = r.read_bytes(0, size_t(r.size()));
    ok = model->ParseFromArray(buf.data(), int(buf.size()));
  }
  TB_CHECK(ok, FormatError, "[onnx] '", src.label(),
           "': not a valid ONNX model (the protobuf ModelProto does not parse)");
  return model;
}

StateDict read_graph_tensors(const Source& src, const LoadOptions& opts, const std::shared_ptr<onnx::ModelProto>& model,
                             std::vector<std::pair<std::string, std::string>>* skipped, int* constants) {
  LoadContext c{
      src, opts, model, {}, {}, {}, LoadBudget(opts.limits, src.label(), src.reader ? src.reader->size() : 0)};
  StateDict sd;
  const onnx::GraphProto& g = model->graph();
  auto add = [&](const std::string& stored, Tensor t, const char* kind) {
    if (!t.defined()) return;
    const std::string name = naming::decode_name(stored, naming::Target::Onnx);
    TB_CHECK(!sd.contains(name), FormatError, "[onnx] '", src.label(), "': two ", kind, "s are named '", name, "'");
    sd.insert(name, std::move(t));
  };
  for (const auto& tp : g.initializer()) {
    c.budget.tick("reading initializers");
    try {
      add(tp.name(), decode_tensor(c, tp, tp.name()), "initializer");
    } catch (Error& e) {
      e.add_context(str("while reading initializer '", tp.name(), "'"));
      throw;
    }
  }
  for (const auto& sp : g.sparse_initializer())
    add(sp.values().name(), densify(c, sp, sp.values().name()), "initializer");
  int n = 0;
  for (const auto& node : g.node()) {
    if (node.op_type() != "Constant" || !(node.domain().empty() || node.domain() == "ai.onnx") ||
        node.output_size() != 1)
      continue;
    add(node.output(0), constant_value(c, node, node.output(0)), "Constant");
    ++n;
  }
  if (constants) *constants = n;
  if (skipped) *skipped = c.skipped;
  return sd;
}

}  // namespace onnx_detail

Tensor load_onnx_tensor(const Source& src) {
  TB_CHECK(src.reader != nullptr, FormatError, "[onnx] '", src.label(), "' is a folder, not a TensorProto file");
  TB_CHECK(src.reader->size() <= uint64_t(INT_MAX), UnsupportedError, "[onnx] '", src.label(), "' is over 2 GiB");
  auto tp = std::make_shared<onnx::TensorProto>();
  auto buf = src.reader->read_bytes(0, size_t(src.reader->size()));
  TB_CHECK(tp->ParseFromArray(buf.data(), int(buf.size())), FormatError, "[onnx] '", src.label(),
           "': not a serialized TensorProto");
  LoadOptions opts;
  LoadContext c{src, opts, tp, {}, {}, {}, LoadBudget(opts.limits, src.label(), src.reader->size())};
  Tensor t = decode_tensor(c, *tp, tp->name());
  TB_CHECK(t.defined(), UnsupportedError, "[onnx] '", src.label(),
           "': ", c.skipped.empty() ? "no data" : c.skipped[0].second);
  return t;
}

Checkpoint load_onnx(const Source& src, const LoadOptions& opts) {
  auto model = onnx_detail::parse_model(src);
  Checkpoint ck;
  ck.format = "onnx";
  ck.info.emplace_back("ir_version", std::to_string(model->ir_version()));
  ck.info.emplace_back("producer_name", model->producer_name());
  ck.info.emplace_back("producer_version", model->producer_version());
  std::string def;
  std::string all = opset_text(*model, &def);
  ck.info.emplace_back("opset", def);
  if (all != "ai.onnx=" + def) ck.info.emplace_back("opset_imports", all);
  for (const auto& kv : model->metadata_props()) ck.metadata[kv.key()] = kv.value();

  const onnx::GraphProto& g = model->graph();
  if (!g.name().empty()) ck.info.emplace_back("graph", g.name());
  std::vector<std::pair<std::string, std::string>> skipped;
  onnx_detail::WeightCounts counts;
  auto kept = std::make_shared<onnx_detail::KeptModel>();
  StateDict sd = onnx_detail::read_all_weights(src, opts, *model, &skipped, &counts, &kept->untouched);
  ck.info.emplace_back("initializers", std::to_string(counts.initializers + counts.sparse));
  if (counts.constants) ck.info.emplace_back("constants", std::to_string(counts.constants));
  if (counts.in_subgraphs) ck.info.emplace_back("subgraph weights", std::to_string(counts.in_subgraphs));
  ck.info.emplace_back("nodes", std::to_string(g.node_size()));
  recover_names(g, sd, ck.info, &kept->transposed);
  for (const auto& [name, why] : skipped) ck.info.emplace_back("skipped", str(name, ": ", why));
  ck.root = Value::from_state_dict(sd);
  kept->skeleton = model;
  kept->metadata = ck.metadata;
  ck.native.format = "onnx";
  ck.native.data = kept;
  return ck;
}

// ---- writing --------------------------------------------------------------------------------------

namespace {

constexpr uint64_t kMaxProto = uint64_t(INT_MAX);  // 2 GiB - 1: protobuf's limit for one message
constexpr uint64_t kAlign = 4096;

// ---- protobuf wire format, for the parts of the ModelProto written without libprotobuf -------------
// A field is a varint key (field_number << 3 | wire_type) then its value; wire type 2 (length-delimited:
// strings, bytes, embedded messages) is a varint byte count then the bytes.
constexpr int kModelGraph = 7;        // ModelProto.graph (GraphProto)
constexpr int kGraphInitializer = 5;  // GraphProto.initializer (repeated TensorProto)
constexpr int kTensorRawData = 9;     // TensorProto.raw_data (bytes)

uint64_t varint_size(uint64_t v) {
  uint64_t n = 1;
  for (; v >= 0x80; v >>= 7) ++n;
  return n;
}

/** Bytes of a length-delimited field holding `len` bytes: key, length, payload. */
uint64_t delimited_size(uint64_t len) { return 1 + varint_size(len) + len; }

void write_delimited_key(Writer& w, int field, uint64_t len) {
  uint8_t b[11];
  size_t n = 0;
  b[n++] = uint8_t(field << 3 | 2);  // fields < 16 have a one-byte key
  for (; len >= 0x80; len >>= 7) b[n++] = uint8_t(len | 0x80);
  b[n++] = uint8_t(len);
  w.write(b, n);
}

/** Offset in `bytes` (a message serialized by libprotobuf, which writes known fields in field-number
 *  order) of the first top-level field numbered above `field`, or bytes.size(): where a field `field`
 *  goes to give the bytes libprotobuf would write. `bytes` must not hold that field itself. */
size_t insertion_point(const std::string& bytes, int field) {
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  size_t pos = 0, end = bytes.size();
  auto varint = [&] {
    uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
      TB_ASSERT(pos < end && shift < 64, "[onnx] truncated varint in a serialized message");
      uint8_t b = p[pos++];
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
  };
  while (pos < end) {
    size_t start = pos;
    uint64_t key = varint(), number = key >> 3;
    TB_ASSERT(number != uint64_t(field), "[onnx] field ", field, " is already in the serialized message");
    if (number > uint64_t(field)) return start;
    switch (key & 7) {
      case 0: varint(); break;
      case 1: pos += 8; break;
      case 2: {
        uint64_t len = varint();
        TB_ASSERT(len <= end - pos, "[onnx] truncated field in a serialized message");
        pos += size_t(len);
        break;
      }
      case 5: pos += 4; break;
      default: TB_ASSERT(false, "[onnx] unexpected wire type ", key & 7, " in a serialized message");
    }
    TB_ASSERT(pos <= end, "[onnx] truncated field in a serialized message");
  }
  return end;
}

/** Writes `m` with raw[i] as raw_data of initializer i (undefined: the initializer is complete as it is)
 *  to `w`, byte for byte as m.SerializeToString would after filling those raw_data fields, without
 *  ever holding a tensor's bytes: libprotobuf serializes the small parts (the model without its graph,
 *  the graph without its initializers, each initializer without its raw_data), the raw_data fields
 *  are written here around them, with every length computed up front. Consumes m's graph. */
void stream_model(onnx::ModelProto& m, const std::vector<Tensor>& raw, Writer& w, const fs::path& path) {
  onnx::GraphProto* g = m.mutable_graph();
  TB_ASSERT(size_t(g->initializer_size()) == raw.size(), "[onnx] one payload slot per initializer");
  google::protobuf::RepeatedPtrField<onnx::TensorProto> inits;
  inits.Swap(g->mutable_initializer());
  std::vector<uint64_t> sizes(raw.size());  // serialized size of each complete TensorProto
  uint64_t graph_size = g->ByteSizeLong();
  for (size_t i = 0; i < raw.size(); ++i) {
    TB_ASSERT(!raw[i].defined() || !inits[int(i)].has_raw_data(), "[onnx] raw_data given twice");
    sizes[i] = inits[int(i)].ByteSizeLong() + (raw[i].defined() ? delimited_size(raw[i].nbytes()) : 0);
    graph_size += delimited_size(sizes[i]);
  }
  std::string graph_bytes = g->SerializeAsString();
  m.clear_graph();
  std::string model_bytes = m.SerializeAsString();
  uint64_t size = model_bytes.size() + delimited_size(graph_size);
  TB_CHECK(size <= kMaxProto, UnsupportedError, "[onnx] cannot write '", path.string(), "': the model would be ", size,
           " bytes, over protobuf's 2 GiB limit for one message; use external_data=always");

  const uint64_t start = w.tell();
  size_t model_split = insertion_point(model_bytes, kModelGraph);
  size_t graph_split = insertion_point(graph_bytes, kGraphInitializer);
  w.write(model_bytes.data(), model_split);
  write_delimited_key(w, kModelGraph, graph_size);
  w.write(graph_bytes.data(), graph_split);
  std::string tp_bytes;
  for (size_t i = 0; i < raw.size(); ++i) {
    tp_bytes.clear();
    TB_CHECK(inits[int(i)].SerializeToString(&tp_bytes), InternalError, "[onnx] protobuf serialization failed for '",
             path.string(), "'");
    write_delimited_key(w, kGraphInitializer, sizes[i]);
    if (!raw[i].defined()) {
      w.write(tp_bytes);
      continue;
    }
    size_t split = insertion_point(tp_bytes, kTensorRawData);
    w.write(tp_bytes.data(), split);
    const uint64_t n = raw[i].nbytes();
    write_delimited_key(w, kTensorRawData, n);
    const uint64_t before = w.tell();
    w.write_tensor(raw[i]);
    TB_ASSERT(w.tell() - before == n, "[onnx] tensor '", inits[int(i)].name(), "' wrote ", w.tell() - before,
              " bytes instead of ", n);
    w.write(tp_bytes.data() + split, tp_bytes.size() - split);
  }
  w.write(graph_bytes.data() + graph_split, graph_bytes.size() - graph_split);
  w.write(model_bytes.data() + model_split, model_bytes.size() - model_split);
  TB_ASSERT(w.tell() - start == size, "[onnx] wrote ", w.tell() - start, " bytes for '", path.string(),
            "' but computed ", size);
}

/** The ONNX checker, which validates the structure (versions, opset, names, types, one data field per
 *  initializer) and, in ONNX 1.12, never the raw_data bytes or their count. Initializers whose bytes
 *  are streamed have no raw_data in `m`: they get a one-byte stand-in for the check, cleared after. */
void run_checker(onnx::ModelProto& m, const std::vector<Tensor>& raw, const fs::path& path) {
  auto* inits = m.mutable_graph()->mutable_initializer();
  for (size_t i = 0; i < raw.size(); ++i)
    if (raw[i].defined()) inits->Mutable(int(i))->set_raw_data(std::string(1, '\0'));
  std::string failure;
  try {
    onnx::checker::check_model(m);
  } catch (const std::exception& e) {
    failure = e.what();
  }
  for (size_t i = 0; i < raw.size(); ++i)
    if (raw[i].defined()) inits->Mutable(int(i))->clear_raw_data();
  if (!failure.empty())
    throw InternalError(str("[onnx] the weights-only model for '", path.string(), "' fails the ONNX checker: ", failure,
                            " (please report)"));
}

/** "<model>.data": the external data file's name when it is free (and fits in a file name). */
std::string plain_data_name(const std::string& model) { return fit_name_stem(model, 5) + ".data"; }
/** What a generation-token data name starts with: "<model>" (shortened when the name would be too long). */
std::string data_stem(const std::string& model) { return fit_name_stem(model, 16); }
/** The external data names save_onnx gives the model's data: "<model>.data", "<model>.tb<8 hex>.data". */
bool is_data_name(const std::string& f, const std::string& model) {
  if (f == plain_data_name(model)) return true;
  const std::string stem = data_stem(model);
  return f.size() == stem.size() + 16 && f.compare(0, stem.size(), stem) == 0 && f[stem.size()] == '.' &&
         is_generation_token(std::string_view(f).substr(stem.size() + 1, 10)) &&
         f.compare(f.size() - 5, 5, ".data") == 0;
}

/** save_onnx; with in_memory, the writer before streaming (raw_data inside the ModelProto, serialized
 *  by libprotobuf into a string): the tests' reference for the streamed bytes. */
void write_weights_model(const Checkpoint& ckpt, const fs::path& path, const OnnxWriteOptions& opts, bool in_memory) {
  StateDict sd = ckpt.state_dict();
  const std::string& mode = opts.external_data;
  const uint64_t threshold = opts.external_data_threshold;
  uint64_t total = 0;
  bool has_f8 = false;
  for (const auto& [name, t] : sd) {
    total += t.nbytes();
    has_f8 |= t.dtype() == DType::F8E4M3FN || t.dtype() == DType::F8E5M2;
  }
  bool external = mode == "always" || (mode == "auto" && total > threshold) || total > kMaxProto - (64u << 20);
  TB_CHECK(!(external && mode == "never"), UnsupportedError, "[onnx] cannot write '", path.string(), "': ", total,
           " bytes of tensors do not fit in one protobuf message (2 GiB limit); allow external data "
           "(external_data=auto)");

  onnx::ModelProto m;
  m.set_ir_version(8);
  m.set_producer_name(opts.producer_name);
  m.set_producer_version("0.1.0");
  auto* op = m.add_opset_import();
  op->set_domain("");
  op->set_version(13);
  for (const auto& [k, v] : ckpt.metadata) {
    auto* p = m.add_metadata_props();
    p->set_key(k);
    p->set_value(v);
  }
  auto* g = m.mutable_graph();
  g->set_name("tensorbridge_weights");
  g->set_doc_string("weights only: every initializer is also a graph output");

  // The model first, so that an existing target is refused before anything is written. The external
  // data file gets a name no file has now ("<model>.data" when free, else with a generation token):
  // the previous model keeps reading its own data until the new model is renamed into place.
  AtomicFileWriter w(path, opts.overwrite);
  DirHandle dir(folder_of(path), path);
  const std::string model_name = path.filename().string();
  std::unique_ptr<NewFileWriter> data_w;
  if (external) {
    data_w = std::make_unique<NewFileWriter>(dir, plain_data_name(model_name));
    while (!data_w->created())
      data_w = std::make_unique<NewFileWriter>(dir, data_stem(model_name) + "." + generation_token() + ".data");
  }

  std::vector<Tensor> raw;  // per initializer: the tensor whose bytes stream_model writes as raw_data
  raw.reserve(sd.size());
  // Initializer names follow the naming rule (formats/naming.h): never empty, '%' escaped.
  const std::vector<std::string> stored = naming::stored_names(sd, naming::Target::Onnx);
  for (size_t index = 0; index < sd.size(); ++index) {
    const std::string& name = stored[index];
    const Tensor& t = sd.entries()[index].second;
    auto* tp = g->add_initializer();
    raw.emplace_back();
    if (external && t.nbytes() > 0) {
      onnx_detail::fill_tensor_header(*tp, name, t);
      uint64_t pad = (kAlign - data_w->tell() % kAlign) % kAlign;
      data_w->write_zeros(size_t(pad));
      uint64_t offset = data_w->tell();
      data_w->write_tensor(t);
      tp->set_data_location(onnx::TensorProto::EXTERNAL);
      auto add_kv = [&](const char* k, const std::string& v) {
        auto* e = tp->add_external_data();
        e->set_key(k);
        e->set_value(v);
      };
      add_kv("location", data_w->name());
      add_kv("offset", std::to_string(offset));
      add_kv("length", std::to_string(t.nbytes()));
    } else if (in_memory || t.nbytes() == 0) {
      onnx_detail::fill_tensor_proto(*tp, name, t);  // an empty tensor keeps its empty raw_data field
    } else {
      onnx_detail::fill_tensor_header(*tp, name, t);
      raw.back() = t;
    }
    auto* out = g->add_output();
    out->set_name(name);
    auto* tt = out->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(info(t.dtype()).onnx);
    auto* shp = tt->mutable_shape();
    for (int64_t d : t.shape()) shp->add_dim()->set_dim_value(d);
  }
  // The checker of ONNX 1.12 predates float8; for those files only our own structure is written.
  const bool check = !external && !has_f8;
  if (in_memory) {
    uint64_t size = m.ByteSizeLong();
    TB_CHECK(size <= kMaxProto, UnsupportedError, "[onnx] cannot write '", path.string(), "': the model would be ",
             size, " bytes, over protobuf's 2 GiB limit for one message; use external_data=always");
    if (check) run_checker(m, raw, path);
    std::string bytes;
    TB_CHECK(m.SerializeToString(&bytes), InternalError, "[onnx] protobuf serialization failed for '", path.string(),
             "'");
    w.write(bytes);
  } else {
    if (check) run_checker(m, raw, path);
    stream_model(m, raw, w, path);
  }
  if (data_w) data_w->finish();
  FolderLock lock(dir);  // commit and clean-up as one step against other writers of this model
  {
    SignalBlock block;  // the committed model and its data leave the signal handler's list together
    w.commit();
    if (data_w) data_w->keep();
  }
  // The previous model's data file (and any a killed writer left): our names only, not the new one.
  const std::string keep = data_w ? data_w->name() : std::string();
  remove_unlocked_files(dir, [&](const std::string& f) { return f != keep && is_data_name(f, model_name); });
  dir.sync();
}

}  // namespace

namespace {
OptionTable<OnnxWriteOptions> onnx_options() {
  using O = OnnxWriteOptions;
  return {choice_option<O>("graph", &O::graph, {"keep", "drop"},
                           "keep (an ONNX source's graph, default) or drop (weights only)"),
          choice_option<O>("external_data", &O::external_data, {"auto", "always", "never"},
                           "auto (default), always or never"),
          size_option<O>("external_data_threshold", &O::external_data_threshold,
                         "size above which auto moves weights to a .data file (default 1GiB)"),
          text_option<O>("producer_name", &O::producer_name, "the model's producer_name (default tensorbridge)")};
}
}  // namespace

void write_onnx(const Checkpoint& ckpt, const fs::path& path, const OnnxWriteOptions& opts) {
  if (onnx_detail::keeps_graph(ckpt, opts)) return onnx_detail::save_kept_graph(ckpt, path, opts);
  write_weights_model(ckpt, path, opts, false);
}

void save_onnx(const Checkpoint& ckpt, const fs::path& path, const SaveOptions& opts) {
  onnx_format().save(ckpt, path, opts);
}

namespace onnx_detail {

void save_onnx_in_memory(const Checkpoint& ckpt, const fs::path& path, const SaveOptions& opts) {
  write_weights_model(ckpt, path, parse_options(onnx_options(), "onnx", path, opts), true);
}

void stream_model_to(onnx::ModelProto& m, const std::vector<Tensor>& raw, Writer& w, const fs::path& path) {
  stream_model(m, raw, w, path);
}

// Decoder: LoadContext behind a stable interface for onnx_walk.cpp.
struct Decoder::Impl {
  Source src;
  LoadOptions opts;
  LoadContext c;
  Impl(const Source& s, const LoadOptions& o, std::shared_ptr<void> keep)
      : src(s), opts(o), c{src,
                           opts,
                           std::move(keep),
                           {},
                           {},
                           {},
                           LoadBudget(opts.limits, src.label(), src.reader ? src.reader->size() : 0)} {}
};
Decoder::Decoder(const Source& src, const LoadOptions& opts, std::shared_ptr<void> keep_alive)
    : impl_(std::make_unique<Impl>(src, opts, std::move(keep_alive))) {}
Decoder::~Decoder() = default;
Tensor Decoder::tensor(const onnx::TensorProto& tp, const std::string& name) {
  return decode_tensor(impl_->c, tp, name);
}
Tensor Decoder::sparse(const onnx::SparseTensorProto& sp, const std::string& name) {
  return densify(impl_->c, sp, name);
}
Tensor Decoder::constant(const onnx::NodeProto& node, const std::string& name) {
  return constant_value(impl_->c, node, name);
}
const std::vector<std::pair<std::string, std::string>>& Decoder::skipped() const { return impl_->c.skipped; }

}  // namespace onnx_detail

const FormatAdapter& onnx_format() {
  static const FormatAdapter a = with_writer<OnnxWriteOptions>(
      {.name = "onnx",
       .description = "ONNX model initializers (official ONNX library; external data, graph export)",
       .extensions = {".onnx"},
       .sniff = sniff_onnx,
       .load = load_onnx},
      onnx_options(), write_onnx);
  return a;
}

}  // namespace tb
