#include "models/onnx_runner.h"

#include <set>

#include "models/detail/onnx_ops.h"

namespace tb::nn {

namespace {
constexpr int kOnnxFloat = 1;  // TensorProto.FLOAT
}

OnnxGraphModule::OnnxGraphModule(OnnxGraph graph, std::string label)
    : graph_(std::move(graph)), label_(std::move(label)) {
  const std::string where = str("[onnx] '", label_, "'");
  TB_CHECK(!graph_.outputs.empty(), UnsupportedError, where, ": the graph has no outputs");
  std::set<std::string> known;  // values defined so far, in node order
  for (const auto& v : graph_.inputs) known.insert(v.name);
  for (const auto& [name, t] : graph_.initializers) known.insert(name);
  for (size_t i = 0; i < graph_.nodes.size(); ++i) {
    const OnnxNode& n = graph_.nodes[i];
    onnx_ops::NodeCall call{n, i, graph_.opset, label_};
    if (!(n.domain.empty() || n.domain == "ai.onnx")) call.fail("custom domain '" + n.domain + "'");
    if (!onnx_ops::known(n.op_type)) {
      std::string ops;
      for (const auto& o : onnx_ops::op_names()) ops += (ops.empty() ? "" : ", ") + o;
      call.fail("the op is not supported; supported ops: " + ops);
    }
    onnx_ops::check(call);
    for (const auto& in : n.inputs) {
      if (in.empty()) continue;
      if (!known.count(in))
        call.fail(str("its input '", in, "' is not produced by an earlier node, an input or an initializer"));
      last_use_[in] = i;
    }
    for (const auto& out : n.outputs)
      if (!out.empty()) known.insert(out);
  }
  for (const auto& o : graph_.outputs) {
    TB_CHECK(known.count(o.name), UnsupportedError, where, ": the graph output '", o.name, "' is produced by no node");
    last_use_[o.name] = graph_.nodes.size();
  }
}

std::string OnnxGraphModule::extra_repr() const {
  auto list = [](const std::vector<OnnxValueInfo>& vs) {
    std::string s;
    for (const auto& v : vs) s += (s.empty() ? "" : ", ") + v.name + (v.shape.empty() ? "" : " " + shape_str(v.shape));
    return s;
  };
  return str(graph_.nodes.size(), " nodes, inputs: ", list(graph_.inputs), "; outputs: ", list(graph_.outputs));
}

const std::vector<std::string>& OnnxGraphModule::supported_ops() { return onnx_ops::op_names(); }

std::vector<Tensor> OnnxGraphModule::run_values(std::vector<Tensor> inputs) {
  compute::Backend& be = backend();
  TB_CHECK(inputs.size() == graph_.inputs.size(), ShapeError, "[onnx] '", label_, "': the graph takes ",
           graph_.inputs.size(), " inputs, got ", inputs.size());
  std::map<std::string, Tensor> values;
  for (const auto& [name, t] : graph_.initializers) values[name] = t;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const OnnxValueInfo& v = graph_.inputs[i];
    Tensor x = inputs[i];
    if (x.dtype() == DType::F64 && (v.elem_type == kOnnxFloat || v.elem_type == 0)) x = x.to(DType::F32);
    if (auto want = dtype_from_onnx(v.elem_type); want && *want != x.dtype())
      throw ShapeError(
          str("[onnx] '", label_, "': input '", v.name, "' must be ", dtype_name(*want), ", got ", x.describe()));
    bool fits = v.shape.empty() || v.shape.size() == x.shape().size();
    for (size_t d = 0; fits && d < v.shape.size(); ++d) fits = v.shape[d] < 0 || v.shape[d] == x.shape()[d];
    TB_CHECK(fits, ShapeError, "[onnx] '", label_, "': input '", v.name, "' must have shape ", shape_str(v.shape),
             " (-1: any), got ", x.describe());
    values[v.name] = x;
  }
  for (size_t i = 0; i < graph_.nodes.size(); ++i) {
    const OnnxNode& n = graph_.nodes[i];
    onnx_ops::NodeCall call{n, i, graph_.opset, label_};
    std::vector<Tensor> in;
    for (const auto& name : n.inputs) in.push_back(name.empty() ? Tensor() : values.at(name));
    std::vector<Tensor> out;
    try {
      out = onnx_ops::run(call, be, in);
    } catch (const UnsupportedError&) {
      throw;
    } catch (const Error& e) {  // shapes that do not fit: name the node
      call.fail(e.what());
    }
    for (size_t k = 0; k < n.outputs.size() && k < out.size(); ++k)
      if (!n.outputs[k].empty()) values[n.outputs[k]] = out[k];
    for (const auto& name : n.inputs)  // free what no later node reads
      if (!name.empty() && last_use_[name] == i && !graph_.initializers.contains(name)) values.erase(name);
  }
  std::vector<Tensor> outs;
  for (const auto& o : graph_.outputs) outs.push_back(values.at(o.name));
  return outs;
}

std::vector<Tensor> OnnxGraphModule::run(const std::vector<Tensor>& inputs) {
  compute::Backend& be = backend();
  std::vector<Tensor> in;
  for (const Tensor& x : inputs) in.push_back(x.dtype() == DType::F64 ? x : be.upload(x));
  std::vector<Tensor> outs = run_values(std::move(in));
  for (Tensor& y : outs) y = be.download(y);
  return outs;
}

Tensor OnnxGraphModule::forward(const Tensor& x) {
  TB_CHECK(graph_.inputs.size() == 1 && graph_.outputs.size() == 1, UnsupportedError, "[onnx] '", label_,
           "': the graph has ", graph_.inputs.size(), " inputs and ", graph_.outputs.size(),
           " outputs; run it with one --input per input and one --output per output (OnnxGraphModule::run)");
  return run_values({x}).front();
}

std::vector<Tensor> run_model(Module& model, const std::vector<Tensor>& inputs) {
  if (auto* g = dynamic_cast<OnnxGraphModule*>(&model)) return g->run(inputs);
  TB_CHECK(inputs.size() == 1, ShapeError, "nn: ", model.type_name(), " takes one input, got ", inputs.size());
  return {model(inputs.front())};
}

std::shared_ptr<OnnxGraphModule> onnx_graph_module(const std::filesystem::path& file) {
#ifdef TB_MODELS_WITH_ONNX
  return std::make_shared<OnnxGraphModule>(read_onnx_graph(Source::from_path(file)), file.string());
#else
  throw UnsupportedError(
      str("nn: '", file.string(), "': built without ONNX support; reconfigure with -DTB_WITH_ONNX=ON"));
#endif
}

}  // namespace tb::nn
