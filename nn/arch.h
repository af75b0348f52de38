// Architecture from the file: build an nn model (with its weights loaded) without hand-written C++
// architecture, from
//   1. a whole-module PyTorch pickle (torch.save(model)): the pickled module tree, class names and
//      hyper-parameters (in_features, kernel_size, stride, eps, ...) as formats/pt.h exposes them;
//   2. a Keras full-model .h5 (model.save): the JSON `model_config` root attribute (Sequential, or a
//      Functional model whose layers form one chain); the network runs in PyTorch layout (NCHW) with
//      Keras's weights converted by nn/style.h, and takes / returns Keras's NHWC arrays (Permute
//      layers are added around the conv part);
//   3. an ONNX graph (a chain of Gemm/MatMul+Add, Conv, Relu, MaxPool, Flatten, BatchNormalization,
//      Softmax, Sigmoid, Tanh, Dropout, Identity nodes) through the ONNX library.
// Every layer type outside these lists is refused with UnsupportedError naming the type (and the
// layer). Nothing from the file is executed: classes are matched by name, never imported.
#pragma once

#include <filesystem>
#include <string>

#include "formats/format.h"
#include "nn/module.h"
#include "tensor/value.h"

namespace tb::nn {

/** A model built from a file, with where the architecture came from. */
struct FileModel {
  Module::Ptr model;
  /** "pt module tree", "keras model_config", "onnx graph" or "built-in <spec>". */
  std::string architecture;
};

/** The module tree of a pickled nn.Module (pt_module_tree()); weights are not loaded. Known classes:
 *  torch.nn Sequential, Linear, Conv2d, MaxPool2d, Flatten, BatchNorm1d/2d, ReLU, Sigmoid, Tanh,
 *  Softmax, Dropout, Identity; a user class with exactly the children hidden, out (both Linear) is the
 *  seed MLP (out(relu(hidden(x)))). */
Module::Ptr module_from_pt_tree(const Value& module);

/** A Keras model_config JSON string -> model (weights not loaded). Layers: InputLayer, Dense (with its
 *  activation), Activation, Conv2D (channels_last, padding valid or same with stride 1), MaxPooling2D,
 *  Flatten, Dropout, BatchNormalization. */
Module::Ptr module_from_keras_config(const std::string& model_config_json);

/** Builds and loads a model from a file holding its architecture (whole-module .pt, Keras full-model
 *  .h5, .onnx). Throws UnsupportedError when the file holds only weights (give a built-in arch).
 *  A pickled user class (__main__.MLP) needs opts.allow_unknown_globals (kept as an opaque object,
 *  never called). */
FileModel load_model(const std::filesystem::path& file, const LoadOptions& opts = {});

/** Loads weights-only file into builtin_model(arch) (torch keys; Keras-style keys are converted;
 *  "module."/"_orig_mod." prefixes stripped when strip). */
FileModel load_model(const std::filesystem::path& file, const std::string& arch, const std::string& key = {},
                     bool strip = false);

}  // namespace tb::nn
