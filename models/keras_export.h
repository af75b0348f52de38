// nn models -> Keras 3 `.keras` archives: a Sequential config.json built from the modules and the
// weights in Keras layouts (nn/style.h), so `keras.saving.load_model(path).predict(x_nhwc)` gives the
// model's outputs. The Keras model takes channels-last inputs (NHWC) where the nn model takes NCHW.
#pragma once

#include <filesystem>

#include "formats/format.h"
#include "nn/module.h"

namespace tb::nn {

/** Writes model as a .keras archive for inputs of input_shape (PyTorch layout, the batch dim < 0 or any
 *  value, e.g. {-1, 3, 32, 32}). Supported: Sequential chains (and the seed MLP) of Linear, Conv2d
 *  (groups, dilation; padding through ZeroPadding2D), MaxPool2d (no padding, floor mode), AvgPool2d,
 *  AdaptiveAvgPool2d(1), BatchNorm1d/2d, Flatten, ReLU, Sigmoid, Tanh, LeakyReLU, Softmax, Dropout,
 *  Identity. Anything else gives UnsupportedError naming the module and why. */
void save_keras_model(Module& model, const Shape& input_shape, const std::filesystem::path& path,
                      const SaveOptions& opts = {});

}  // namespace tb::nn
