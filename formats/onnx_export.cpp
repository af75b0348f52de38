// Graph export of sequential networks to ONNX (API in formats/onnx.h), checked with the ONNX
// library's own strict shape inference and checker before anything is written.
#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>

#include <climits>
#include <map>
#include <set>

#include "formats/onnx.h"

namespace tb {
namespace onnx_detail {
// Defined in onnx.cpp.
void fill_tensor_proto(onnx::TensorProto& tp, const std::string& name, const Tensor& t);
}  // namespace onnx_detail

namespace {

const char* kind_name(OnnxLayer::Kind k) {
  switch (k) {
    case OnnxLayer::Kind::Linear: return "Linear";
    case OnnxLayer::Kind::ReLU: return "ReLU";
    case OnnxLayer::Kind::Conv2d: return "Conv2d";
    case OnnxLayer::Kind::MaxPool2d: return "MaxPool2d";
    case OnnxLayer::Kind::Flatten: return "Flatten";
    case OnnxLayer::Kind::BatchNorm: return "BatchNorm";
    case OnnxLayer::Kind::Add: return "Add";
    case OnnxLayer::Kind::Sigmoid: return "Sigmoid";
    case OnnxLayer::Kind::Tanh: return "Tanh";
    case OnnxLayer::Kind::Softmax: return "Softmax";
    case OnnxLayer::Kind::LeakyReLU: return "LeakyReLU";
    case OnnxLayer::Kind::GlobalAvgPool: return "GlobalAvgPool";
  }
  return "?";
}

struct Builder {
  const OnnxGraphSpec& spec;
  const StateDict& weights;
  onnx::GraphProto* g;
  std::set<std::string> added;
  std::string layer_label;

  /** Adds "<prefix>.<param>" as an initializer (once) and returns its name. */
  const Tensor& param(const OnnxLayer& l, const std::string& p, int64_t rank) {
    std::string name = l.name.empty() ? p : l.name + "." + p;
    const Tensor* t = weights.find(name);
    TB_CHECK(t != nullptr, KeyError, "[onnx] export: ", layer_label, " needs tensor '", name,
             "' which is not in the state dict");
    TB_CHECK(rank < 0 || t->dim() == rank, ShapeError, "[onnx] export: ", layer_label, ": '", name, "' should have ",
             rank, " dims but is ", t->describe());
    if (added.insert(name).second) onnx_detail::fill_tensor_proto(*g->add_initializer(), name, *t);
    return *t;
  }
  std::string pname(const OnnxLayer& l, const std::string& p) const { return l.name.empty() ? p : l.name + "." + p; }
};

void add_ints(onnx::NodeProto* n, const char* name, const std::vector<int64_t>& v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t x : v) a->add_ints(x);
}
void add_int(onnx::NodeProto* n, const char* name, int64_t v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(v);
}
void add_float(onnx::NodeProto* n, const char* name, float v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(v);
}

std::vector<int64_t> pair_or(const std::vector<int64_t>& v, int64_t dflt, const std::string& what,
                             const std::string& layer) {
  if (v.empty()) return {dflt, dflt};
  if (v.size() == 1) return {v[0], v[0]};
  TB_CHECK(v.size() == 2, ShapeError, "[onnx] export: ", layer, ": ", what, " needs 1 or 2 values, got ", v.size());
  return v;
}

onnx::ModelProto build(const OnnxGraphSpec& spec, const StateDict& weights) {
  onnx::ModelProto m;
  m.set_ir_version(spec.opset >= 15 ? 8 : 7);
  m.set_producer_name("tensorbridge");
  m.set_producer_version("0.1.0");
  auto* op = m.add_opset_import();
  op->set_domain("");
  op->set_version(spec.opset);
  auto* g = m.mutable_graph();
  g->set_name(spec.graph_name);
  Builder b{spec, weights, g, {}, {}};

  DType dt = DType::F32;
  for (const auto& [n, t] : weights)
    if (is_floating(t.dtype())) {
      dt = t.dtype();
      break;
    }
  auto* in = g->add_input();
  in->set_name(spec.input_name);
  auto* itt = in->mutable_type()->mutable_tensor_type();
  itt->set_elem_type(info(dt).onnx);
  TB_CHECK(!spec.input_shape.empty(), ShapeError, "[onnx] export: the input shape is empty");
  for (size_t i = 0; i < spec.input_shape.size(); ++i) {
    auto* d = itt->mutable_shape()->add_dim();
    if (spec.input_shape[i] < 0)
      d->set_dim_param(i == 0 ? "N" : "d" + std::to_string(i));
    else
      d->set_dim_value(spec.input_shape[i]);
  }
  TB_CHECK(!spec.layers.empty(), ShapeError, "[onnx] export: the network has no layers");

  std::vector<std::string> outputs;  // value name after each layer
  std::string cur = spec.input_name;
  for (size_t i = 0; i < spec.layers.size(); ++i) {
    const OnnxLayer& l = spec.layers[i];
    b.layer_label = str("layer ", i, " (", kind_name(l.kind), l.name.empty() ? "" : " '" + l.name + "'", ")");
    std::string tag = l.name.empty() ? std::to_string(i) : l.name;
    auto* n = g->add_node();
    auto set = [&](const char* op_type) {
      n->set_op_type(op_type);
      n->set_name(str("/", tag, "/", op_type));
      n->add_input(cur);
    };
    switch (l.kind) {
      case OnnxLayer::Kind::Linear: {
        set("Gemm");
        const Tensor& w = b.param(l, "weight", 2);
        n->add_input(b.pname(l, "weight"));
        if (l.bias) {
          const Tensor& bias = b.param(l, "bias", 1);
          TB_CHECK(bias.shape()[0] == w.shape()[0], ShapeError, "[onnx] export: ", b.layer_label, ": bias ",
                   bias.describe(), " does not match weight ", w.describe());
          n->add_input(b.pname(l, "bias"));
        }
        add_float(n, "alpha", 1.0f);
        add_float(n, "beta", 1.0f);
        add_int(n, "transB", 1);
        break;
      }
      case OnnxLayer::Kind::ReLU: set("Relu"); break;
      case OnnxLayer::Kind::Conv2d: {
        set("Conv");
        const Tensor& w = b.param(l, "weight", 4);
        n->add_input(b.pname(l, "weight"));
        if (l.bias) {
          b.param(l, "bias", 1);
          n->add_input(b.pname(l, "bias"));
        }
        auto pad = pair_or(l.padding, 0, "padding", b.layer_label);
        add_ints(n, "kernel_shape", {w.shape()[2], w.shape()[3]});
        add_ints(n, "strides", pair_or(l.stride, 1, "stride", b.layer_label));
        add_ints(n, "pads", {pad[0], pad[1], pad[0], pad[1]});
        add_ints(n, "dilations", pair_or(l.dilation, 1, "dilation", b.layer_label));
        add_int(n, "group", l.groups);
        break;
      }
      case OnnxLayer::Kind::MaxPool2d: {
        set("MaxPool");
        TB_CHECK(!l.kernel.empty(), ShapeError, "[onnx] export: ", b.layer_label, " needs a kernel size");
        auto k = pair_or(l.kernel, 1, "kernel", b.layer_label);
        auto pad = pair_or(l.padding, 0, "padding", b.layer_label);
        add_ints(n, "kernel_shape", k);
        add_ints(n, "strides", l.stride.empty() ? k : pair_or(l.stride, 1, "stride", b.layer_label));
        add_ints(n, "pads", {pad[0], pad[1], pad[0], pad[1]});
        auto dil = pair_or(l.dilation, 1, "dilation", b.layer_label);
        if (dil != std::vector<int64_t>{1, 1}) add_ints(n, "dilations", dil);
        if (l.ceil_mode) add_int(n, "ceil_mode", 1);
        break;
      }
      case OnnxLayer::Kind::Flatten:
        TB_CHECK(l.start_dim == 1, UnsupportedError, "[onnx] export: ", b.layer_label,
                 ": only Flatten(start_dim=1) maps to ONNX Flatten; got start_dim=", l.start_dim);
        set("Flatten");
        add_int(n, "axis", 1);
        break;
      case OnnxLayer::Kind::BatchNorm: {
        set("BatchNormalization");
        const Tensor& w = b.param(l, "weight", 1);
        for (const char* p : {"weight", "bias", "running_mean", "running_var"}) {
          const Tensor& t = b.param(l, p, 1);
          TB_CHECK(t.shape() == w.shape(), ShapeError, "[onnx] export: ", b.layer_label, ": '", b.pname(l, p), "' is ",
                   t.describe(), " but weight is ", w.describe());
          n->add_input(b.pname(l, p));
        }
        add_float(n, "epsilon", float(l.eps));
        break;
      }
      case OnnxLayer::Kind::Add: {
        set("Add");
        TB_CHECK(l.add_from >= -1 && l.add_from < int(i), ShapeError, "[onnx] export: ", b.layer_label,
                 ": add_from=", l.add_from, " must name an earlier layer (or -1 for the input)");
        n->add_input(l.add_from < 0 ? spec.input_name : outputs[size_t(l.add_from)]);
        break;
      }
      case OnnxLayer::Kind::Sigmoid: set("Sigmoid"); break;
      case OnnxLayer::Kind::Tanh: set("Tanh"); break;
      case OnnxLayer::Kind::Softmax:
        set("Softmax");
        add_int(n, "axis", l.axis);
        break;
      case OnnxLayer::Kind::LeakyReLU:
        set("LeakyRelu");
        add_float(n, "alpha", float(l.alpha));
        break;
      case OnnxLayer::Kind::GlobalAvgPool: set("GlobalAveragePool"); break;
    }
    std::string out = i + 1 == spec.layers.size() ? spec.output_name : str("/", tag, "/", n->op_type(), "_output_", i);
    n->add_output(out);
    outputs.push_back(out);
    cur = out;
  }
  auto* o = g->add_output();
  o->set_name(spec.output_name);
  o->mutable_type()->mutable_tensor_type()->set_elem_type(info(dt).onnx);
  return m;
}

Shape proto_shape(const onnx::TypeProto& t) {
  Shape s;
  if (!t.tensor_type().has_shape()) return s;
  for (const auto& d : t.tensor_type().shape().dim()) s.push_back(d.has_dim_value() ? d.dim_value() : -1);
  return s;
}

/** ONNX 1.12's Gemm/Conv/BatchNormalization inference does not compare the weight with the input, so
 *  the layer sizes are checked here against the inferred input shapes. */
void check_layer_shapes(const onnx::ModelProto& m, const StateDict& weights) {
  const auto& g = m.graph();
  std::map<std::string, Shape> shapes;
  for (const auto& vi : g.input()) shapes[vi.name()] = proto_shape(vi.type());
  for (const auto& vi : g.value_info()) shapes[vi.name()] = proto_shape(vi.type());
  for (const auto& n : g.node()) {
    auto it = shapes.find(n.input(0));
    if (it == shapes.end() || it->second.empty()) continue;
    const Shape& in = it->second;
    int64_t need = -1, axis = 1;
    size_t rank = 0;
    if (n.op_type() == "Gemm") {
      need = weights.at(n.input(1)).shape()[1];
      rank = 2;
    } else if (n.op_type() == "Conv") {
      int64_t group = 1;
      for (const auto& a : n.attribute())
        if (a.name() == "group") group = a.i();
      need = weights.at(n.input(1)).shape()[1] * group;
      rank = 4;
    } else if (n.op_type() == "BatchNormalization") {
      need = weights.at(n.input(1)).shape()[0];
    } else {
      continue;
    }
    TB_CHECK(rank == 0 || in.size() == rank, ShapeError, "[onnx] export: ", n.name(), " expects a ", rank,
             "-D input but gets ", shape_str(in));
    TB_CHECK(in.size() > size_t(axis) && (in[size_t(axis)] < 0 || in[size_t(axis)] == need), ShapeError,
             "[onnx] export: ", n.name(), " expects ", need, " features/channels (from '", n.input(1), "' ",
             weights.at(n.input(1)).describe(), ") but its input is ", shape_str(in));
  }
}

}  // namespace

std::string export_onnx_graph(const OnnxGraphSpec& spec, const StateDict& weights) {
  onnx::ModelProto m = build(spec, weights);
  try {
    onnx::shape_inference::InferShapes(m, onnx::OpSchemaRegistry::Instance(),
                                       onnx::ShapeInferenceOptions(/*check_type=*/true, /*strict=*/1, false));
  } catch (const std::exception& e) {
    throw ShapeError(str("[onnx] export: ONNX shape inference rejects the graph: ", e.what()));
  }
  check_layer_shapes(m, weights);
  // Graph outputs get the inferred shape (inference stores it in value_info when the output had none).
  auto* g = m.mutable_graph();
  for (auto& out : *g->mutable_output()) {
    if (out.type().tensor_type().has_shape()) continue;
    for (const auto& vi : g->value_info())
      if (vi.name() == out.name()) *out.mutable_type() = vi.type();
  }
  try {
    onnx::checker::check_model(m);
  } catch (const std::exception& e) {
    throw InternalError(str("[onnx] export: the ONNX checker rejects our graph: ", e.what(), " (please report)"));
  }
  TB_CHECK(m.ByteSizeLong() <= uint64_t(INT_MAX), UnsupportedError,
           "[onnx] export: the graph with its weights exceeds protobuf's 2 GiB limit for one message");
  std::string bytes;
  TB_CHECK(m.SerializeToString(&bytes), InternalError, "[onnx] export: protobuf serialization failed");
  return bytes;
}

void save_onnx_graph(const OnnxGraphSpec& spec, const StateDict& weights, const std::filesystem::path& path,
                     const SaveOptions& opts) {
  std::string bytes = export_onnx_graph(spec, weights);
  AtomicFileWriter w(path, opts.overwrite);
  w.write(bytes);
  w.commit();
}

void check_onnx_model(const std::filesystem::path& path) {
  try {
    onnx::checker::check_model(path.string());
    onnx::ModelProto m;
    std::string bytes = read_text_file(path, size_t(INT_MAX));
    TB_CHECK(m.ParseFromString(bytes), FormatError, "[onnx] '", path.string(), "': not a valid ONNX model");
    onnx::shape_inference::InferShapes(m, onnx::OpSchemaRegistry::Instance(),
                                       onnx::ShapeInferenceOptions(true, 1, false));
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw FormatError(str("[onnx] '", path.string(), "' fails the ONNX checker: ", e.what()));
  }
}

}  // namespace tb
