// ONNX graph -> sequential layer list + state dict (API in formats/onnx.h), the inverse of
// onnx_export.cpp, so nn can build and run models exported by PyTorch, Keras converters or us.
#include <onnx/onnx_pb.h>

#include <map>
#include <set>

#include "formats/onnx.h"

namespace tb {
namespace onnx_detail {
// Defined in onnx.cpp.
std::shared_ptr<onnx::ModelProto> parse_model(const Source& src);
StateDict read_graph_tensors(const Source& src, const LoadOptions& opts, const std::shared_ptr<onnx::ModelProto>& model,
                             std::vector<std::pair<std::string, std::string>>* skipped, int* constants);
}  // namespace onnx_detail

namespace {

/** Walks an ONNX graph's nodes in order, turning each into one layer of a sequential chain. */
struct Importer {
  using Params = std::vector<std::pair<std::string, std::string>>;  // (parameter, ONNX name)

  const OnnxGraph& g;
  const std::string& label;
  const StateDict& tensors;  // by ONNX name
  OnnxImport out;
  std::set<std::string> prefixes;
  int64_t file_opset = 13;
  std::map<std::string, int> consumers;
  std::map<std::string, std::string> alias;  // Identity/Dropout outputs -> their input
  std::map<std::string, int> layer_of;       // value -> index of the layer producing it (-1 = graph input)
  std::string cur;                           // the chain's current end
  std::set<size_t> fused;                    // Add nodes already folded into a MatMul layer

  Importer(const OnnxGraph& graph, const std::string& l) : g(graph), label(l), tensors(graph.initializers) {}

  std::string where(const OnnxNode& n) const {
    return str("[onnx] '", label, "': node '", n.name, "' (", n.op_type, ")");
  }
  [[noreturn]] void unsupported(const OnnxNode& n, const std::string& why) const {
    throw UnsupportedError(str(where(n), " cannot be imported as a sequential layer: ", why));
  }
  const Tensor& tensor(const OnnxNode& n, size_t i) const {
    if (i >= n.inputs.size() || n.inputs[i].empty()) unsupported(n, str("input ", i, " is missing"));
    const Tensor* t = tensors.find(n.inputs[i]);
    if (!t) unsupported(n, str("input ", i, " ('", n.inputs[i], "') is not an initializer"));
    return *t;
  }
  std::string resolve(std::string v) {
    for (int guard = 0; guard < 1000 && alias.count(v); ++guard) v = alias[v];
    return v;
  }

  /** Names a layer from its parameters ("<prefix>.<param>") and stores them under that prefix. */
  std::string add_params(size_t index, const Params& params, const std::vector<Tensor>& values) {
    std::string prefix;
    for (const auto& [param, onnx_name] : params) {
      std::string suffix = "." + param;
      if (onnx_name.size() > suffix.size() &&
          onnx_name.compare(onnx_name.size() - suffix.size(), suffix.size(), suffix) == 0) {
        std::string p = onnx_name.substr(0, onnx_name.size() - suffix.size());
        if (!prefixes.count(p)) {
          prefix = p;
          break;
        }
      }
    }
    if (prefix.empty()) prefix = std::to_string(index);
    while (prefixes.count(prefix)) prefix += "_";
    prefixes.insert(prefix);
    for (size_t i = 0; i < params.size(); ++i) {
      std::string name = prefix + "." + params[i].first;
      if (name != params[i].second) out.notes.push_back(str("'", params[i].second, "' stored as '", name, "'"));
      out.weights.insert(name, values[i]);
    }
    return prefix;
  }

  /** Checks the graph has one input and one output and records them, the name and the opset. */
  void start() {
    TB_CHECK(g.inputs.size() <= 1, UnsupportedError, "[onnx] '", label, "': the graph has several inputs ('",
             g.inputs[0].name, "', '", g.inputs[1].name, "'); a sequential network has one");
    TB_CHECK(!g.inputs.empty(), UnsupportedError, "[onnx] '", label, "': the graph has no input");
    TB_CHECK(g.outputs.size() == 1, UnsupportedError, "[onnx] '", label, "': the graph has ", g.outputs.size(),
             " outputs; a sequential network has one");
    OnnxGraphSpec& spec = out.spec;
    spec.input_name = g.inputs[0].name;
    spec.output_name = g.outputs[0].name;
    spec.graph_name = g.name;
    spec.input_shape = g.inputs[0].shape;
    file_opset = g.opset > 0 ? g.opset : 13;
    spec.opset = int(std::max<int64_t>(13, file_opset));
    for (const auto& n : g.nodes)
      for (const auto& in : n.inputs) ++consumers[in];
    layer_of[spec.input_name] = -1;
    cur = spec.input_name;
  }

  /** Gemm with alpha = beta = 1 and transA = 0: a Linear layer (weight transposed when transB = 0). */
  void gemm(const OnnxNode& n, OnnxLayer& l, size_t index) {
    if (float(n.attr_f("alpha", 1.f)) != 1.f || float(n.attr_f("beta", 1.f)) != 1.f || n.attr_i("transA", 0) != 0)
      unsupported(n, "only alpha = beta = 1 and transA = 0 map to Linear");
    l.kind = OnnxLayer::Kind::Linear;
    Tensor w = tensor(n, 1);
    if (w.dim() != 2) unsupported(n, "the weight is not 2-D: " + w.describe());
    if (n.attr_i("transB", 0) == 0) {
      w = w.transpose(0, 1).contiguous();
      out.notes.push_back(str("'", n.inputs[1], "' (Gemm transB=0, [in, out]) transposed to [out, in]"));
    }
    Params ps = {{"weight", n.inputs[1]}};
    std::vector<Tensor> vs = {w};
    l.bias = n.inputs.size() > 2 && !n.inputs[2].empty();
    if (l.bias) {
      Tensor b = tensor(n, 2);
      if (b.numel() != w.shape()[0] || (b.dim() == 2 && b.shape()[0] != 1) || b.dim() > 2)
        unsupported(n, "the bias " + b.describe() + " is not a per-output vector");
      ps.push_back({"bias", n.inputs[2]});
      vs.push_back(b.reshape({w.shape()[0]}));
    }
    l.name = add_params(index, ps, vs);
  }

  /** MatMul by a 2-D initializer, and the Add of a bias that follows it: one Linear layer. */
  void matmul(size_t ni, const OnnxNode& n, OnnxLayer& l, size_t index, std::string& result) {
    l.kind = OnnxLayer::Kind::Linear;
    const Tensor& b = tensor(n, 1);
    if (b.dim() != 2) unsupported(n, "the weight is not 2-D: " + b.describe());
    Params ps = {{"weight", n.inputs[1]}};
    std::vector<Tensor> vs = {b.transpose(0, 1).contiguous()};
    out.notes.push_back(str("'", n.inputs[1], "' (MatMul, [in, out]) transposed to [out, in]"));
    l.bias = false;
    for (size_t nj = ni + 1; nj < g.nodes.size() && consumers[result] == 1; ++nj) {
      const OnnxNode& a = g.nodes[nj];
      if (a.op_type != "Add" || a.inputs.size() != 2 || (a.inputs[0] != result && a.inputs[1] != result)) continue;
      const std::string& other = a.inputs[0] == result ? a.inputs[1] : a.inputs[0];
      const Tensor* bias = tensors.find(other);
      if (bias && bias->numel() == b.shape()[1] && bias->dim() == 1) {
        l.bias = true;
        ps.push_back({"bias", other});
        vs.push_back(*bias);
        fused.insert(nj);
        result = a.outputs[0];
      }
      break;
    }
    l.name = add_params(index, ps, vs);
  }

  /** Softmax over one axis (before opset 13 only when that axis is the last). */
  void softmax(const OnnxNode& n, OnnxLayer& l) {
    l.kind = OnnxLayer::Kind::Softmax;
    l.axis = n.attr_i("axis", file_opset >= 13 ? -1 : 1);
    // Before opset 13 Softmax normalised over all dims from axis on (the input seen as 2-D); that is
    // one axis only when it is the last, which the rank known here must show.
    int64_t rank = int64_t(out.spec.input_shape.size());
    bool last = l.axis == -1 || (rank > 0 && l.axis == rank - 1 && layer_of[cur] == -1);
    if (file_opset < 13 && !last)
      unsupported(n, str("Softmax before opset 13 with axis=", l.axis,
                         " normalises over several dims; only the last axis maps to nn.Softmax"));
  }

  /** 2-D Conv or MaxPool with explicit symmetric pads. */
  void conv_or_pool(const OnnxNode& n, OnnxLayer& l, size_t index) {
    const std::string ap = n.attr_s("auto_pad", "NOTSET");
    if (ap != "NOTSET") unsupported(n, "auto_pad=" + ap + "; only explicit pads map to PyTorch padding");
    auto pads = n.attr_ints("pads");
    if (pads.empty()) pads = {0, 0, 0, 0};
    if (pads.size() != 4 || pads[0] != pads[2] || pads[1] != pads[3])
      unsupported(n, "only symmetric 2-D pads are supported");
    l.padding = {pads[0], pads[1]};
    l.stride = n.attr_ints("strides");
    l.dilation = n.attr_ints("dilations");
    if (n.op_type == "Conv") {
      l.kind = OnnxLayer::Kind::Conv2d;
      const Tensor& w = tensor(n, 1);
      if (w.dim() != 4) unsupported(n, "only 2-D convolutions (4-D weights) are supported: " + w.describe());
      l.groups = n.attr_i("group", 1);
      Params ps = {{"weight", n.inputs[1]}};
      std::vector<Tensor> vs = {w};
      l.bias = n.inputs.size() > 2 && !n.inputs[2].empty();
      if (l.bias) {
        ps.push_back({"bias", n.inputs[2]});
        vs.push_back(tensor(n, 2));
      }
      l.name = add_params(index, ps, vs);
    } else {
      l.kind = OnnxLayer::Kind::MaxPool2d;
      l.kernel = n.attr_ints("kernel_shape");
      if (l.kernel.size() != 2) unsupported(n, "only 2-D pooling is supported");
      if (n.attr_i("storage_order", 0) != 0) unsupported(n, "storage_order=1");
      l.ceil_mode = n.attr_i("ceil_mode", 0) != 0;
      if (l.stride.empty()) l.stride = {1, 1};  // ONNX default, unlike PyTorch's (= kernel)
    }
  }

  /** BatchNormalization in inference mode. */
  void batch_norm(const OnnxNode& n, OnnxLayer& l, size_t index) {
    l.kind = OnnxLayer::Kind::BatchNorm;
    l.eps = float(n.attr_f("epsilon", 1e-5f));
    if (n.attr_i("training_mode", 0) != 0) unsupported(n, "training_mode=1");
    Params ps;
    std::vector<Tensor> vs;
    size_t i = 1;
    for (const char* p : {"weight", "bias", "running_mean", "running_var"}) {
      vs.push_back(tensor(n, i));
      ps.push_back({p, n.inputs[i++]});
    }
    l.name = add_params(index, ps, vs);
  }

  /** A residual Add of the chain's end and an earlier layer's output. */
  void residual_add(const OnnxNode& n, OnnxLayer& l) {
    if (n.inputs.size() != 2) unsupported(n, "Add needs two inputs");
    std::string a = resolve(n.inputs[0]), b = resolve(n.inputs[1]);
    std::string other = a == cur ? b : (b == cur ? a : std::string());
    if (other.empty() || !layer_of.count(other))
      unsupported(n, "a residual Add needs the previous layer's output and an earlier layer's output");
    l.kind = OnnxLayer::Kind::Add;
    l.add_from = layer_of[other];
  }

  /** Fills l from node ni by its op type; result becomes the value the layer produces. */
  void fill_layer(size_t ni, const OnnxNode& n, OnnxLayer& l, size_t index, std::string& result) {
    const std::string& op = n.op_type;
    if (op == "Gemm") {
      gemm(n, l, index);
    } else if (op == "MatMul") {
      matmul(ni, n, l, index, result);
    } else if (op == "Relu") {
      l.kind = OnnxLayer::Kind::ReLU;
    } else if (op == "Sigmoid" || op == "Tanh") {
      l.kind = op == "Sigmoid" ? OnnxLayer::Kind::Sigmoid : OnnxLayer::Kind::Tanh;
    } else if (op == "LeakyRelu") {
      l.kind = OnnxLayer::Kind::LeakyReLU;
      l.alpha = float(n.attr_f("alpha", 0.01f));
    } else if (op == "Softmax") {
      softmax(n, l);
    } else if (op == "GlobalAveragePool") {
      l.kind = OnnxLayer::Kind::GlobalAvgPool;
    } else if (op == "Conv" || op == "MaxPool") {
      conv_or_pool(n, l, index);
    } else if (op == "Flatten") {
      if (n.attr_i("axis", 1) != 1) unsupported(n, "only axis=1 maps to nn.Flatten()");
      l.kind = OnnxLayer::Kind::Flatten;
    } else if (op == "BatchNormalization") {
      batch_norm(n, l, index);
    } else if (op == "Add") {
      residual_add(n, l);
    } else {
      unsupported(n,
                  "supported ops are Gemm, MatMul(+Add), Relu, Sigmoid, Tanh, LeakyRelu, Softmax, Conv, MaxPool, "
                  "GlobalAveragePool, Flatten, BatchNormalization, Add, Identity, Dropout");
    }
  }

  /** Appends node ni to the chain (Identity and Dropout only alias their input; Constants are skipped). */
  void add_node(size_t ni) {
    const OnnxNode& n = g.nodes[ni];
    const std::string& op = n.op_type;
    if (op == "Constant" || fused.count(ni)) return;
    if (!(n.domain.empty() || n.domain == "ai.onnx")) unsupported(n, "custom domain '" + n.domain + "'");
    if (n.inputs.empty() || n.outputs.empty()) unsupported(n, "no inputs or outputs");
    if (op == "Identity" || op == "Dropout") {
      if (n.outputs.size() > 1 && consumers[n.outputs[1]]) unsupported(n, "the dropout mask is used");
      alias[n.outputs[0]] = n.inputs[0];
      if (op == "Dropout") out.notes.push_back(str("Dropout node '", n.name, "' dropped (inference)"));
      return;
    }
    OnnxLayer l;
    size_t index = out.spec.layers.size();
    std::string data = resolve(n.inputs[0]);
    std::string result = n.outputs[0];
    if (op != "Add" && data != cur)
      unsupported(n, str("its input '", n.inputs[0], "' is not the previous layer's output"));
    if (n.outputs.size() != 1) unsupported(n, str(n.outputs.size(), " outputs (training mode?)"));
    fill_layer(ni, n, l, index, result);
    out.spec.layers.push_back(l);
    layer_of[result] = int(index);
    cur = result;
  }
};

}  // namespace

OnnxImport import_onnx_graph(const OnnxGraph& g, const std::string& label) {
  Importer im(g, label);
  im.start();
  for (size_t ni = 0; ni < g.nodes.size(); ++ni) im.add_node(ni);
  const OnnxGraphSpec& spec = im.out.spec;
  TB_CHECK(im.resolve(spec.output_name) == im.cur, UnsupportedError, "[onnx] '", label, "': the graph output '",
           spec.output_name, "' is not the end of the layer chain");
  TB_CHECK(!spec.layers.empty(), UnsupportedError, "[onnx] '", label, "': the graph has no layers");
  return std::move(im.out);
}

OnnxImport import_onnx_graph(const Source& src, const LoadOptions& opts) {
  return import_onnx_graph(read_onnx_graph(src, opts), src.label());
}

OnnxGraph read_onnx_graph(const Source& src, const LoadOptions& opts) {
  auto model = onnx_detail::parse_model(src);
  OnnxGraph out;
  out.initializers = onnx_detail::read_graph_tensors(src, opts, model, nullptr, nullptr);
  const auto& g = model->graph();
  out.name = g.name();
  for (const auto& op : model->opset_import())
    if (op.domain().empty() || op.domain() == "ai.onnx") out.opset = op.version();
  auto vi = [](const onnx::ValueInfoProto& v) {
    OnnxValueInfo r;
    r.name = v.name();
    if (v.type().has_tensor_type()) {
      r.elem_type = v.type().tensor_type().elem_type();
      for (const auto& d : v.type().tensor_type().shape().dim())
        r.shape.push_back(d.has_dim_value() ? d.dim_value() : -1);
    }
    return r;
  };
  for (const auto& v : g.input())
    if (!out.initializers.contains(v.name())) out.inputs.push_back(vi(v));
  for (const auto& v : g.output()) out.outputs.push_back(vi(v));
  // Attribute tensors are decoded through a one-off model holding just that tensor.
  for (const auto& n : g.node()) {
    OnnxNode node;
    node.op_type = n.op_type();
    node.domain = n.domain();
    node.name = n.name();
    node.inputs.assign(n.input().begin(), n.input().end());
    node.outputs.assign(n.output().begin(), n.output().end());
    for (const auto& a : n.attribute()) {
      OnnxAttribute x;
      x.name = a.name();
      switch (a.type()) {
        case onnx::AttributeProto::INT:
          x.type = OnnxAttribute::Type::Int;
          x.i = a.i();
          break;
        case onnx::AttributeProto::FLOAT:
          x.type = OnnxAttribute::Type::Float;
          x.f = a.f();
          break;
        case onnx::AttributeProto::STRING:
          x.type = OnnxAttribute::Type::String;
          x.s = a.s();
          break;
        case onnx::AttributeProto::INTS:
          x.type = OnnxAttribute::Type::Ints;
          x.ints.assign(a.ints().begin(), a.ints().end());
          break;
        case onnx::AttributeProto::FLOATS:
          x.type = OnnxAttribute::Type::Floats;
          x.floats.assign(a.floats().begin(), a.floats().end());
          break;
        case onnx::AttributeProto::TENSOR: {
          x.type = OnnxAttribute::Type::Tensor;
          auto holder = std::make_shared<onnx::ModelProto>();
          *holder->mutable_graph()->add_initializer() = a.t();
          holder->mutable_graph()->mutable_initializer(0)->set_name("value");
          StateDict one = onnx_detail::read_graph_tensors(src, opts, holder, nullptr, nullptr);
          if (one.contains("value")) x.t = one.at("value");
          break;
        }
        default: break;
      }
      node.attributes.push_back(std::move(x));
    }
    out.nodes.push_back(std::move(node));
  }
  return out;
}

}  // namespace tb
