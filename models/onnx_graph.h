// nn models <-> ONNX graphs (built only with TB_WITH_ONNX): export a model as a full ONNX graph
// (Linear -> Gemm transB=1, ReLU, Conv, MaxPool, Flatten, BatchNormalization) with its weights as
// initializers ("save structure and parameters together"), and build a model from an ONNX graph
// made of those ops (formats/onnx.h import_onnx_graph) so it runs on the compute backends.
#pragma once

#include <filesystem>

#include "formats/format.h"
#include "nn/module.h"

namespace tb::nn {

/** True when this build can export and import ONNX graphs. */
bool onnx_graph_support();

/** Writes model as an ONNX graph for inputs of input_shape (a dim < 0 is symbolic, e.g. {-1, 20}).
 *  Supported: Sequential chains of Linear, ReLU, Conv2d, MaxPool2d, Flatten, BatchNorm1d/2d, Dropout,
 *  Identity, and the seed MLP. Other modules give UnsupportedError naming them. */
void save_onnx_model(Module& model, const Shape& input_shape, const std::filesystem::path& path,
                     const SaveOptions& opts = {});

/** A Sequential built from an ONNX graph with its weights loaded ("0.weight", ...). */
Module::Ptr module_from_onnx_file(const std::filesystem::path& file);

}  // namespace tb::nn
