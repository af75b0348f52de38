// ONNX initializers in (layout: formats/onnx.h; the writer and the format adapter are in
// onnx_write.cpp). Protobuf parsing is done by the official generated classes; this file adds the
// checks, the dtype decoding, external data and name recovery.
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
  // A field holding the elements as they are in memory: copied whole once its count is checked.
  auto copy_field = [&](const char* field, const auto& values, int64_t count) {
    check_count(c, name, field, values, count);
    if (need) std::memcpy(out, values.data(), need);  // an empty field has no buffer (null)
  };
  switch (dt) {
    case DType::F32: copy_field("float_data", tp.float_data(), n); break;
    case DType::C64: copy_field("float_data", tp.float_data(), 2 * n); break;
    case DType::F64: copy_field("double_data", tp.double_data(), n); break;
    case DType::C128: copy_field("double_data", tp.double_data(), 2 * n); break;
    case DType::I64: copy_field("int64_data", tp.int64_data(), n); break;
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

namespace onnx_detail {

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

}  // namespace tb
