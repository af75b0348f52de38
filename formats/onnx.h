// ONNX models (.onnx) through the official ONNX library and Protocol Buffers.
//
// Byte layout (onnx/onnx.proto; FORMATS.md section 5):
//   1. The file is one serialized protobuf `ModelProto`: ir_version (1, varint; usually the first
//      field, tag byte 0x08), producer_name (2), producer_version (3), opset_import (8),
//      metadata_props (14), graph (7). A single protobuf message is limited to 2 GiB.
//   2. `graph` (GraphProto) holds nodes (1), name (2), initializer (5, TensorProto), input (11),
//      output (12), value_info (13) and sparse_initializer (15, SparseTensorProto). Weights are the
//      initializers, the sparse initializers and the `value` attributes of `Constant` nodes.
//   3. A TensorProto has dims (1), data_type (2, TensorProto.DataType), name (8) and its data in
//      exactly one place: raw_data (9, row-major little-endian, bool one byte), a typed field
//      (float_data 4, int32_data 5 also carrying 8/16-bit ints, bool and f16/bf16/f8 bit patterns,
//      int64_data 7, double_data 10, uint64_data 11 for uint32/uint64), or external data
//      (data_location 14 = EXTERNAL, external_data 13: location / offset / length / checksum).
//   4. External data: `location` is a path relative to the model's folder (no "..", not absolute, no
//      symbolic link on the way, a regular file: formats/detail/open_beneath.h); bytes at
//      [offset, offset + length) of that file have the raw_data encoding. We write
//      `<model>.onnx.data` with every tensor at a 4096-aligned offset (`<model>.onnx.tb<8 hex>.data`
//      while that name belongs to the model being replaced: the model's rename is the commit point, then
//      the previous data file is deleted). Inline raw_data is streamed:
//      libprotobuf serializes everything else, the raw_data fields are written around it (same bytes).
//   5. torch.onnx.export may rename a Linear weight to `onnx::MatMul_N` and store it transposed
//      ([in, out]) when it feeds MatMul then Add(bias); the loader maps it back to `<layer>.weight`
//      ([out, in]) when the graph makes that unambiguous and reports it in Checkpoint::info.
//
// Loading gives a flat state dict (initializer names), metadata_props as metadata, and info
// {ir_version, producer_name, producer_version, opset, graph, renamed..., skipped...}.
// Saving writes a weights-only model: every tensor is an initializer and also a graph output (so
// onnxruntime can load and return it); the ONNX checker accepts it.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "formats/format.h"

namespace tb {

/** True when the bytes look like a serialized ONNX ModelProto (cheap; never throws). */
bool sniff_onnx(const Source& src);

/** Reads initializers (dense, sparse densified, Constant nodes) of any supported dtype. External
 *  data files are memory-mapped when opts.mmap, and tensors are views into them. */
Checkpoint load_onnx(const Source& src, const LoadOptions& opts = {});

/** The ONNX writer's options (--option KEY=VALUE). */
struct OnnxWriteOptions : WriteOptions {
  /** "keep": an ONNX source's graph is written again around the tensors; "drop": weights only. */
  std::string graph = "keep";
  /** "auto": tensors go to "<file>.data" when their total exceeds external_data_threshold; "always";
   *  "never". Above 2 GiB external data is always used (and "never" is refused). */
  std::string external_data = "auto";
  uint64_t external_data_threshold = uint64_t(1) << 30;  // "5GB", "512M" (tb::parse_byte_size)
  std::string producer_name = "tensorbridge";            // the model's producer_name
};

/** Writes a weights-only ONNX model (ir_version 8, opset 13), or a kept source graph (graph=keep).
 *  Metadata becomes metadata_props. */
void write_onnx(const Checkpoint& ckpt, const std::filesystem::path& path, const OnnxWriteOptions& opts);
/** write_onnx with SaveOptions::options parsed as OnnxWriteOptions (keys graph, external_data,
 *  external_data_threshold, producer_name). */
void save_onnx(const Checkpoint& ckpt, const std::filesystem::path& path, const SaveOptions& opts = {});

// ---- graph export ----------------------------------------------------------------------------

/** One layer of a sequential network, named like PyTorch modules ("hidden" -> "hidden.weight"). */
struct OnnxLayer {
  /** The layer types export_onnx_graph can emit. */
  enum class Kind {
    Linear,
    ReLU,
    Conv2d,
    MaxPool2d,
    Flatten,
    BatchNorm,
    Add,
    Sigmoid,
    Tanh,
    Softmax,
    LeakyReLU,
    GlobalAvgPool
  };
  Kind kind = Kind::ReLU;
  /** Parameter prefix in the state dict: "<name>.weight", "<name>.bias", "<name>.running_mean"... */
  std::string name;
  bool bias = true;  // Linear / Conv2d: whether "<name>.bias" exists
  // Conv2d / MaxPool2d (2 values each, PyTorch semantics; empty = defaults). Conv kernel comes from the weight.
  std::vector<int64_t> kernel;    // MaxPool2d kernel size (required)
  std::vector<int64_t> stride;    // Conv2d default 1, MaxPool2d default = kernel
  std::vector<int64_t> padding;   // default 0 (symmetric)
  std::vector<int64_t> dilation;  // default 1
  int64_t groups = 1;             // Conv2d
  bool ceil_mode = false;         // MaxPool2d
  double eps = 1e-5;              // BatchNorm
  int64_t start_dim = 1;          // Flatten (end_dim = -1)
  int64_t axis = -1;              // Softmax: the axis normalised over (ONNX opset 13 and PyTorch's dim)
  double alpha = 0.01;            // LeakyReLU: the negative slope
  /** Add: the current value plus the output of layer add_from (an earlier index; -1 = graph input). */
  int add_from = -1;
};

/** A sequential network for export_onnx_graph: its layers in order, input/output names and shape, opset. */
struct OnnxGraphSpec {
  std::vector<OnnxLayer> layers;
  /** Input shape; a dim < 0 is symbolic ("N" for the first, "d<i>" otherwise). */
  Shape input_shape;
  std::string input_name = "input";
  std::string output_name = "output";
  std::string graph_name = "tensorbridge";
  int opset = 13;
};

/** Builds the graph (Linear -> Gemm transB=1, ReLU, Conv, MaxPool, Flatten, BatchNormalization, Add,
 *  Sigmoid, Tanh, Softmax, LeakyRelu, GlobalAveragePool)
 *  with the state dict's tensors as initializers, runs ONNX shape inference (strict) and the ONNX
 *  checker, and returns the serialized ModelProto. Throws KeyError/ShapeError naming the layer. */
std::string export_onnx_graph(const OnnxGraphSpec& spec, const StateDict& weights);

/** export_onnx_graph written atomically to path (refuses to overwrite unless opts.overwrite). */
void save_onnx_graph(const OnnxGraphSpec& spec, const StateDict& weights, const std::filesystem::path& path,
                     const SaveOptions& opts = {});

/** A sequential network recovered from an ONNX graph: what nn needs to build and load the model. */
struct OnnxImport {
  OnnxGraphSpec spec;  // layers in order; input name/shape (symbolic dims are -1) and output name
  StateDict weights;   // "<layer>.weight", "<layer>.bias", "<layer>.running_mean", ... in PyTorch layout
  /** What was changed on the way (weights renamed to "<index>.weight", Gemm transB=0 / MatMul
   *  weights transposed to [out, in], Identity/Dropout nodes dropped). */
  std::vector<std::string> notes;
};

/** Reads a graph made of Gemm (alpha = beta = 1, transA = 0), MatMul [+ Add bias], Relu, Conv,
 *  MaxPool, Flatten(axis 1), BatchNormalization, Add (residual), Identity and Dropout, forming one
 *  chain from the single input to the single output. Layer names come from the weight names when
 *  they look like "<prefix>.weight" (torch export), else from the layer index. Throws
 *  UnsupportedError naming the first node that does not fit. */
OnnxImport import_onnx_graph(const Source& src, const LoadOptions& opts = {});
struct OnnxGraph;
/** The same from a graph already read (read_onnx_graph below); label names the file in errors. */
OnnxImport import_onnx_graph(const OnnxGraph& graph, const std::string& label);

// ---- plain view of a graph (for runners; no protobuf types) ---------------------------------

struct OnnxAttribute {
  enum class Type { Int, Float, String, Ints, Floats, Tensor, Other };
  std::string name;
  Type type = Type::Other;
  int64_t i = 0;
  double f = 0;
  std::string s;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  Tensor t;
};

/** One NodeProto as read_onnx_graph gives it: op, domain, name, value names and attributes. */
struct OnnxNode {
  std::string op_type, domain, name;
  std::vector<std::string> inputs, outputs;  // "" = omitted optional input
  std::vector<OnnxAttribute> attributes;
  /** Attribute by name or nullptr. */
  const OnnxAttribute* attr(const std::string& n) const {
    for (const auto& a : attributes)
      if (a.name == n) return &a;
    return nullptr;
  }
  /** Integer attribute, or dflt when absent. */
  int64_t attr_i(const std::string& n, int64_t dflt) const {
    const auto* a = attr(n);
    return a ? a->i : dflt;
  }
  /** Float attribute, or dflt when absent. */
  double attr_f(const std::string& n, double dflt) const {
    const auto* a = attr(n);
    return a ? a->f : dflt;
  }
  /** Integer list attribute, empty when absent. */
  std::vector<int64_t> attr_ints(const std::string& n) const {
    const auto* a = attr(n);
    return a ? a->ints : std::vector<int64_t>{};
  }
  /** String attribute, or dflt when absent. */
  std::string attr_s(const std::string& n, const std::string& dflt) const {
    const auto* a = attr(n);
    return a ? a->s : dflt;
  }
};

/** A graph input or output: value name, element type and shape. */
struct OnnxValueInfo {
  std::string name;
  int elem_type = 0;  // TensorProto.DataType (0 = not a tensor / unknown)
  Shape shape;        // unknown or symbolic dims are -1; empty when no shape is given
};

/** A GraphProto as read_onnx_graph gives it: nodes in file order, initializers, inputs, outputs, opset. */
struct OnnxGraph {
  std::string name;  // GraphProto.name
  std::vector<OnnxNode> nodes;
  StateDict initializers;  // ONNX names, no renaming
  std::vector<OnnxValueInfo> inputs, outputs;
  int64_t opset = 0;  // default-domain opset version
};

/** The graph's nodes (topological order as stored), initializers and I/O, without protobuf types. */
OnnxGraph read_onnx_graph(const Source& src, const LoadOptions& opts = {});

/** Reads one serialized TensorProto (the input_0.pb / output_0.pb files of ONNX test data). */
Tensor load_onnx_tensor(const Source& src);

/** Runs the ONNX checker and strict shape inference on a model file (external data resolved
 *  relative to it); throws FormatError with the checker's message. */
void check_onnx_model(const std::filesystem::path& path);

}  // namespace tb
