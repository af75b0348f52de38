// Runs an ONNX graph as it is written: any DAG of the supported ops (branches, residual adds,
// concatenations), any number of inputs and outputs, on a compute backend. Ops the backends have
// (Gemm, MatMul, Add, Mul, Relu, Conv, MaxPool, BatchNormalization, Softmax, Cast, reshapes) run
// there; the rest run on the host (nn/host_ops.h). Every node is checked when the module is built:
// an op, attribute or value order it cannot run is refused then, naming the node, never at run time
// with a partial result.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "formats/onnx.h"
#include "nn/module.h"

namespace tb::nn {

/** An ONNX graph run node by node on backend(), as an nn Module; initializers are graph values, not
 *  registered parameters (state_dict() is empty). */
class OnnxGraphModule : public Module {
 public:
  /** Checks every node and keeps the graph; label names the file in errors. Throws
   *  UnsupportedError "[onnx] 'file': node 'n' (Op) cannot run: why". */
  OnnxGraphModule(OnnxGraph graph, std::string label);

  /** "OnnxGraph". */
  std::string type_name() const override { return "OnnxGraph"; }
  /** "N nodes, inputs: a [N, 20]; outputs: y". */
  std::string extra_repr() const override;

  /** The graph's inputs (initializers excluded) and outputs, in graph order. */
  const std::vector<OnnxValueInfo>& inputs() const { return graph_.inputs; }
  /** The graph outputs, in graph order. */
  const std::vector<OnnxValueInfo>& outputs() const { return graph_.outputs; }

  /** Host tensors in (one per graph input, in order), host tensors out (one per graph output) on
   *  backend(). float64 inputs of float inputs run as float32, as numpy arrays usually are meant. */
  std::vector<Tensor> run(const std::vector<Tensor>& inputs);
  /** The Module interface for graphs of one input and one output. */
  Tensor forward(const Tensor& x) override;

  /** The op types the runner supports (default domain). */
  static const std::vector<std::string>& supported_ops();

 private:
  /** Runs the nodes on backend() with inputs already where they should be; returns backend tensors.
   *  ShapeError when the input count differs from the graph's. */
  std::vector<Tensor> run_values(std::vector<Tensor> inputs);
  OnnxGraph graph_;
  std::string label_;
  std::map<std::string, size_t> last_use_;  // value -> index of the last node reading it
};

/** Runs any model on host inputs: an OnnxGraphModule takes one tensor per graph input and gives one per
 *  output; any other module takes exactly one and gives one (Module::operator()). */
std::vector<Tensor> run_model(Module& model, const std::vector<Tensor>& inputs);

/** read_onnx_graph + OnnxGraphModule (needs an ONNX build; UnsupportedError otherwise). */
std::shared_ptr<OnnxGraphModule> onnx_graph_module(const std::filesystem::path& file);

}  // namespace tb::nn
