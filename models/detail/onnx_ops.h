// The ops of the ONNX graph runner (nn/onnx_runner.h), one function each: a static check of a node's
// attributes when the graph is built, and its evaluation on a backend. Internal to nn.
#pragma once

#include <string>
#include <vector>

#include "compute/backend.h"
#include "formats/onnx.h"

namespace tb::nn::onnx_ops {

/** One node being checked or run. fail() throws UnsupportedError naming the file and the node. */
struct NodeCall {
  const OnnxNode& node;
  size_t index;  // position in the graph, named in messages when the node has no name
  int64_t opset;
  const std::string& label;
  [[noreturn]] void fail(const std::string& why) const;
};

/** True when op_type (default domain) is one the runner has. */
bool known(const std::string& op_type);
/** The op types, for messages and docs. */
const std::vector<std::string>& op_names();

/** Refuses attributes the runner cannot honour (training modes, 3-D kernels, string casts, ...). */
void check(const NodeCall& call);

/** Evaluates the node: in holds the values of node.inputs (undefined for omitted optional ones);
 *  returns one tensor per node output (undefined for outputs nobody may read). */
std::vector<Tensor> run(const NodeCall& call, compute::Backend& be, const std::vector<Tensor>& in);

}  // namespace tb::nn::onnx_ops
