// Internal to the ONNX adapter: the walk over a model's graphs at every depth (subgraphs of If,
// Loop, Scan and any GRAPH/GRAPHS attribute), the names of the weights found there, and the model
// kept by load_onnx so that an ONNX -> ONNX conversion writes the graph again around its tensors.
//
// Naming rule (README "ONNX weights in subgraphs"): weights of the main graph keep their ONNX names;
// a weight of a subgraph is "<owner>/<attribute>/<name>", where owner is the node holding the
// subgraph (its name when no other subgraph-holding node of that graph has it, else
// "<op_type>#<index in the graph's node list>"), attribute the node's attribute ("then_branch",
// "body"), followed by "<i>/" for the i-th graph of a GRAPHS attribute; levels nest
// ("Loop_3/body/If_0/else_branch/w").
#pragma once

#include <onnx/onnx_pb.h>

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "formats/format.h"
#include "formats/onnx.h"

namespace tb::onnx_detail {

/** Deepest subgraph nesting accepted (a hostile file could nest until the stack runs out). */
constexpr int kMaxGraphDepth = 16;

/** The TensorProto decoding of onnx.cpp for one model (external data files opened once); the tensors
 *  it returns keep keep_alive alive. */
class Decoder {
 public:
  /** Decodes tensors of src's model, charging them to one LoadBudget of opts.limits; external data
   *  files are opened on first use. */
  Decoder(const Source& src, const LoadOptions& opts, std::shared_ptr<void> keep_alive);
  /** Releases the decoding state (external data readers, the budget). */
  ~Decoder();
  /** A dense tensor; undefined when its ONNX type has no tensorbridge dtype (noted in skipped()). */
  Tensor tensor(const onnx::TensorProto& tp, const std::string& name);
  /** A sparse tensor, densified. */
  Tensor sparse(const onnx::SparseTensorProto& sp, const std::string& name);
  /** The value of a Constant node (any of its value attributes). */
  Tensor constant(const onnx::NodeProto& node, const std::string& name);
  /** Weights left out: name and why. */
  const std::vector<std::pair<std::string, std::string>>& skipped() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/** Calls fn(graph, scope) on g (scope "") and on every subgraph at any depth, parents first; scope
 *  is the name prefix of the subgraph's weights ("If_0/then_branch/"). Throws FormatError naming
 *  `label` when subgraphs nest deeper than kMaxGraphDepth. */
void for_each_graph(onnx::GraphProto& g, const std::string& label,
                    const std::function<void(onnx::GraphProto&, const std::string&)>& fn);

/** The owner name of node i of g in subgraph scopes (naming rule above); "" for nodes without subgraphs. */
std::vector<std::string> owner_names(const onnx::GraphProto& g);

/** True for a node of the default domain with op_type Constant and one output. */
bool is_constant_node(const onnx::NodeProto& node);

/** What load_onnx keeps in Checkpoint::native for the ONNX writer. */
struct KeptModel {
  /** The source model with its weights' data removed (names, types, doc strings and all else kept). */
  std::shared_ptr<const onnx::ModelProto> skeleton;
  /** Initializer name in the main graph -> loaded name, for the MatMul weights the loader renamed
   *  and transposed (onnx.h point 5). */
  std::map<std::string, std::string> transposed;
  /** Loaded-name slots whose weight was not read (no tensorbridge dtype): kept in the skeleton as is. */
  std::set<std::string> untouched;
  /** metadata_props as loaded, to tell whether the caller changed them. */
  Metadata metadata;
};

/** Counts for `inspect`. */
struct WeightCounts {
  int initializers = 0, sparse = 0, constants = 0, in_subgraphs = 0;
};

/** Reads the initializers, sparse initializers (densified) and Constant values of every graph of the
 *  model under the naming rule, and removes their data from `model` (the tensors keep it alive
 *  elsewhere), leaving the skeleton KeptModel needs. Weights the decoder cannot read stay in the
 *  model, listed in untouched and skipped. */
StateDict read_all_weights(const Source& src, const LoadOptions& opts, onnx::ModelProto& model,
                           std::vector<std::pair<std::string, std::string>>* skipped, WeightCounts* counts,
                           std::set<std::string>* untouched);

/** True when ckpt carries a kept ONNX model and opts do not ask for weights only ("graph=drop"). */
bool keeps_graph(const Checkpoint& ckpt, const OnnxWriteOptions& opts);

/** Writes ckpt's kept model with its tensors in place of the source's (formats/onnx_passthrough.cpp). */
void save_kept_graph(const Checkpoint& ckpt, const std::filesystem::path& path, const OnnxWriteOptions& opts);

// ---- from onnx.cpp --------------------------------------------------------------------------------

/** "FLOAT", "FLOAT16", ... for TensorProto.DataType t. */
std::string onnx_type_name(int t);
/** name, dims and data_type of t into tp (no data). */
void fill_tensor_header(onnx::TensorProto& tp, const std::string& name, const Tensor& t);
/** fill_tensor_header plus the bytes as raw_data. */
void fill_tensor_proto(onnx::TensorProto& tp, const std::string& name, const Tensor& t);
/** Writes m to w with raw[i] (when defined) streamed as raw_data of main-graph initializer i. */
void stream_model_to(onnx::ModelProto& m, const std::vector<Tensor>& raw, Writer& w, const std::filesystem::path& path);

}  // namespace tb::onnx_detail
