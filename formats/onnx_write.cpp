// ONNX writer for a checkpoint's tensors (API in formats/onnx.h): the weights-only model with
// optional external data, streamed without holding the tensors' bytes in a ModelProto, and the
// format adapter that joins it to the reader in onnx.cpp.
#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include <climits>

#include "formats/adapters.h"
#include "formats/detail/open_beneath.h"
#include "formats/naming.h"
#include "formats/onnx.h"
#include "formats/onnx_walk.h"
#include "tensor/atomic_output.h"
#include "tensor/byte_size.h"
#include "tensor/checked.h"

namespace tb {

namespace fs = std::filesystem;

namespace onnx_detail {

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
