// ONNX TensorProto files (.pb): one serialized onnx.TensorProto, the format of ONNX test data
// (test_data_set_0/input_0.pb). Read and written as a single tensor named by TensorProto.name
// (a lone unnamed tensor when that is empty). Detected only with the .pb extension AND a strict parse:
// no unknown fields, a known data_type and exactly the data its dims need, so other protobufs
// named .pb (TensorFlow graphs, ONNX SequenceProto files) are not taken for tensors.
#include <climits>

#include "formats/adapters.h"
#include "formats/onnx_walk.h"

namespace tb {

namespace fs = std::filesystem;

namespace {

constexpr int kMaxKnownOnnxType = 16;  // BFLOAT16, the last type ONNX 1.12 knows

bool has_pb_extension(const fs::path& p) {
  std::string e = p.extension().string();
  return e == ".pb" || e == ".PB" || e == ".Pb" || e == ".pB";
}

std::shared_ptr<onnx::TensorProto> parse(const Source& src) {
  TB_CHECK(src.reader != nullptr, FormatError, "[onnx-tensor] '", src.label(), "' is a folder, not a TensorProto file");
  TB_CHECK(src.reader->size() <= uint64_t(INT_MAX), UnsupportedError, "[onnx-tensor] '", src.label(),
           "' is over 2 GiB, the limit of one protobuf message");
  auto tp = std::make_shared<onnx::TensorProto>();
  bool ok;
  if (const uint8_t* bytes = src.reader->contiguous_bytes()) {
    ok = tp->ParseFromArray(bytes, int(src.reader->size()));
  } else {
    auto buf = src.reader->read_bytes(0, size_t(src.reader->size()));
    ok = tp->ParseFromArray(buf.data(), int(buf.size()));
  }
  TB_CHECK(ok, FormatError, "[onnx-tensor] '", src.label(), "': not a serialized ONNX TensorProto");
  return tp;
}

/** "" when tp is a complete, self-consistent TensorProto with nothing unknown in it, else why not. */
std::string strict_problem(const onnx::TensorProto& tp) {
  if (!tp.unknown_fields().empty()) return "it has fields a TensorProto does not have";
  if (tp.has_segment() && !tp.segment().unknown_fields().empty()) return "its segment has unknown fields";
  for (const auto& kv : tp.external_data())
    if (!kv.unknown_fields().empty()) return "its external_data has unknown fields";
  if (!tp.has_data_type() || tp.data_type() < 1 || tp.data_type() > kMaxKnownOnnxType)
    return str("data_type ", tp.data_type(), " is not an ONNX tensor type");
  uint64_t n = 1;
  for (int64_t d : tp.dims()) {
    if (d < 0 || (d > 0 && n > (uint64_t(1) << 40) / uint64_t(d))) return "its dims are negative or huge";
    n *= uint64_t(d);
  }
  if (tp.data_location() == onnx::TensorProto::EXTERNAL)
    return tp.external_data_size() ? "" : "external data without a location";
  if (tp.data_type() == onnx::TensorProto::STRING)
    return uint64_t(tp.string_data_size()) == n ? "" : "string_data does not match its dims";
  auto dt = dtype_from_onnx(tp.data_type());
  uint64_t have = 0, want = n;
  if (tp.has_raw_data()) {
    have = tp.raw_data().size();
    want = dt ? n * dtype_size(*dt) : have;
  } else {
    const bool complex =
        tp.data_type() == onnx::TensorProto::COMPLEX64 || tp.data_type() == onnx::TensorProto::COMPLEX128;
    have = uint64_t(tp.float_data_size() + tp.int32_data_size() + tp.int64_data_size() + tp.double_data_size() +
                    tp.uint64_data_size());
    want = complex ? 2 * n : n;
  }
  return have == want ? "" : str("it holds ", have, " data values or bytes where its dims need ", want);
}

bool sniff_tensor_pb(const Source& src) {
  try {
    if (!src.reader || !has_pb_extension(src.path) || src.reader->size() == 0 || src.reader->size() > uint64_t(INT_MAX))
      return false;
    return strict_problem(*parse(src)).empty();
  } catch (...) {
    return false;
  }
}

Checkpoint load_tensor_pb(const Source& src, const LoadOptions& opts) {
  auto tp = parse(src);
  std::string problem = strict_problem(*tp);
  TB_CHECK(problem.empty(), FormatError, "[onnx-tensor] '", src.label(), "': not a valid ONNX TensorProto: ", problem);
  onnx_detail::Decoder dec(src, opts, tp);
  Tensor t = dec.tensor(*tp, tp->name());
  TB_CHECK(t.defined(), UnsupportedError, "[onnx-tensor] '", src.label(),
           "': ", dec.skipped().empty() ? "no data" : dec.skipped()[0].second);
  Checkpoint ck;
  ck.format = "onnx-tensor";
  ck.info.emplace_back("data_type", onnx_detail::onnx_type_name(tp->data_type()));
  if (tp->name().empty()) {
    ck.root = Value::tensor(t);
  } else {
    ck.root = Value::dict();
    ck.root.set_item(Value::string(tp->name()), Value::tensor(t));
  }
  return ck;
}

void save_tensor_pb(const Checkpoint& ckpt, const fs::path& path, const SaveOptions& opts) {
  StateDict sd = ckpt.state_dict();
  TB_CHECK(sd.size() == 1, UnsupportedError, "[onnx-tensor] cannot write '", path.string(),
           "': a TensorProto file holds exactly one tensor, and there are ", sd.size(), " (choose one with --select)");
  const auto& [name, t] = sd.entries()[0];
  TB_CHECK(t.nbytes() <= uint64_t(INT_MAX) - (1u << 20), UnsupportedError, "[onnx-tensor] cannot write '",
           path.string(), "': '", name, "' is ", t.nbytes(), " bytes, over protobuf's 2 GiB limit for one message");
  onnx::TensorProto tp;
  onnx_detail::fill_tensor_proto(tp, name, t);
  if (name.empty()) tp.clear_name();
  std::string bytes;
  TB_CHECK(tp.SerializeToString(&bytes), InternalError, "[onnx-tensor] protobuf serialization failed for '",
           path.string(), "'");
  AtomicFileWriter w(path, opts.overwrite);
  w.write(bytes);
  w.commit();
}

}  // namespace

const FormatAdapter& onnx_tensor_format() {
  static const FormatAdapter a{.name = "onnx-tensor",
                               .description = "one ONNX TensorProto (.pb, ONNX test data)",
                               .extensions = {".pb"},
                               .sniff = sniff_tensor_pb,
                               .load = load_tensor_pb,
                               .save = save_tensor_pb};
  return a;
}

}  // namespace tb
