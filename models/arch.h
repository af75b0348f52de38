// Architecture from the file: build an nn model (with its weights loaded) without hand-written C++
// architecture, from
//   1. a whole-module PyTorch pickle (torch.save(model)) or OneFlow folder (flow.save(model)): the
//      pickled module tree, class names and hyper-parameters (in_features, kernel_size, stride, eps, ...)
//      as formats/pt.h exposes them; a user class (__main__.MLP) loads as a UserModule without forward;
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
#include "nn/arch_match.h"
#include "nn/module.h"
#include "tensor/value.h"

namespace tb::nn {

/** A model built from a file, with where the architecture came from. */
struct FileModel {
  Module::Ptr model;
  /** "pt module tree", "oneflow module tree", "keras model_config", "onnx graph" or "built-in <spec>". */
  std::string architecture;
  /** With a built-in architecture: how the file's keys were mapped onto it. */
  ArchMapping mapping;
};

/** The module tree of a pickled nn.Module (pt_module_tree(); torch.nn and oneflow.nn classes), weights
 *  not loaded. Known classes: Sequential, Linear, Conv2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1),
 *  Flatten, BatchNorm1d/2d, ReLU, LeakyReLU, Sigmoid, Tanh, Softmax, Dropout, Identity. Any other class
 *  (a user's __main__.MLP) becomes a UserModule holding its children: it loads, but cannot run. */
Module::Ptr module_from_pt_tree(const Value& module);

/** A Keras model_config JSON string -> model (weights not loaded). Layers: InputLayer, Dense (with its
 *  activation), Activation, Conv2D (channels_last, padding valid or same with stride 1), MaxPooling2D,
 *  Flatten, Dropout, BatchNormalization. */
Module::Ptr module_from_keras_config(const std::string& model_config_json);

/** Builds and loads a model from a file holding its architecture (whole-module .pt, OneFlow whole-module
 *  folder, Keras full-model .h5, .onnx). Throws UnsupportedError when the file holds only weights (give
 *  a built-in arch). A pickled user class (__main__.MLP) needs opts.allow_unknown_globals (kept as an
 *  opaque object, never called) and gives a tree with UserModules (see require_forward). */
FileModel load_model(const std::filesystem::path& file, const LoadOptions& opts = {});

/** How a weights file is loaded into a built-in architecture. */
struct ArchLoad {
  std::string key;     // dotted path of the state dict inside the file ("model_state_dict")
  bool strip = false;  // strip "module." / "_orig_mod." prefixes first
  LoadOptions load;    // reader options (allow_unknown_globals for whole modules of user classes)
  ArchOptions arch;    // structure matching or strict names
};

/** Loads a weights file (or the weights of a whole module) into builtin_model(arch) by structure
 *  (nn/arch_match.h); Keras-style keys are converted first. FileModel::mapping says how. */
FileModel load_model(const std::filesystem::path& file, const std::string& arch, const ArchLoad& how);
/** The same with default reader and matching options. */
FileModel load_model(const std::filesystem::path& file, const std::string& arch, const std::string& key = {},
                     bool strip = false);

/** Throws UnsupportedError when m holds a user-class module (no forward in the file), naming file, the
 *  class, its layers and an --arch layer sequence to run it with. */
void require_forward(Module& m, const std::string& file);

}  // namespace tb::nn
