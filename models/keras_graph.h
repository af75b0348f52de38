// Keras Functional models that are not one chain (residual Add, Concatenate, several inputs or
// outputs) as a graph for the ONNX graph runner (models/onnx_runner.h): each Keras layer becomes a
// few ONNX-style nodes over Keras's own NHWC values (convolutions and pools are wrapped in
// Transposes to NCHW and back), its weights become initializers, so the model runs on the compute
// backends with the runner's checks, many inputs and outputs, and gives what Keras predict gives.
#pragma once

#include <memory>
#include <string>

#include "models/onnx_runner.h"
#include "tensor/state_dict.h"

namespace tb::nn {

/** True for a Sequential model_config or a Functional one whose layers form one chain from one input
 *  to one output (those build as a Sequential, models/arch.h); false for any other Functional graph. */
bool keras_config_is_chain(const std::string& model_config_json);

/** The graph of a Keras Functional model_config (Keras 2 or 3 form) with its weights from sd (any
 *  Keras layout: Keras 2 "<layer>/<layer>/kernel:0", Keras 3 "layers/<object>/vars/<i>", whose objects
 *  are matched through their vars/name attribute in md or Keras's class-based object names). Layers:
 *  InputLayer, Dense, Activation, ReLU, LeakyReLU, Softmax, Conv2D, DepthwiseConv2D, SeparableConv2D,
 *  MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D, Flatten, Dropout, BatchNormalization, Add,
 *  Subtract, Multiply, Average, Concatenate. Anything else is refused naming the layer and its class.
 *  Graph inputs and outputs are the model's, in its order, named after their layers. */
std::shared_ptr<OnnxGraphModule> keras_graph_module(const std::string& model_config_json, const StateDict& sd,
                                                    const Metadata& md, const std::string& label);

}  // namespace tb::nn
