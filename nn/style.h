// Framework styles: moving weights between PyTorch's and Keras's conventions (pure tensor transforms;
// values are permuted, never rounded, so Keras -> torch -> Keras is bit-exact).
//
//   layer        Keras (positional, layer list order)          PyTorch state_dict
//   Dense        kernel (in, out), bias (out)                    Linear weight (out, in) = kernel.T, bias
//   Conv2D       kernel (kH, kW, in/groups, out) HWIO, bias      Conv2d weight (out, in/groups, kH, kW) OIHW
//   BatchNorm    gamma, beta, moving_mean, moving_variance       weight, bias, running_mean, running_var,
//                (epsilon in the config, default 1e-3)           num_batches_tracked (int64 0-d: kept in the
//                                                                 side group torch_only/<layer>/, else 0)
//   Flatten      Keras flattens NHWC activations, torch NCHW: the first Dense after a conv stack gets its
//                kernel rows permuted from (h, w, c) to (c, h, w) order (and back).
//
// Keras loads by position: the k-th Keras layer with weights goes to the k-th torch module with
// weights. Names come from StyleOptions::names (positional) or, by default, from the other side's
// layer names ("hidden" <-> "hidden.weight"; torch "0" -> Keras "layer_0" when not given).
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "nn/module.h"
#include "tensor/state_dict.h"

namespace tb::nn {

/** One Keras layer: class, name and weights in Keras's order (trainable then non-trainable). */
struct KerasLayer {
  std::string name;        // "hidden", "conv2d_1"
  std::string class_name;  // "Dense", "Conv2D", "BatchNormalization", "Flatten", ... ("" unknown, weightless)
  /** Canonical weight names: kernel, bias, gamma, beta, moving_mean, moving_variance. */
  std::vector<std::pair<std::string, Tensor>> weights;
  double epsilon = 1e-3;  // BatchNormalization only
  /** Torch values Keras has no variable for (num_batches_tracked), by torch leaf name. They travel in
   *  Keras files as "torch_only/<layer>/<leaf>" tensors, in the side group Keras ignores (formats/h5.h). */
  std::vector<std::pair<std::string, Tensor>> torch_only;
  /** The weight with canonical name n, or nullptr; points into weights. */
  const Tensor* weight(const std::string& n) const;
};

/** Options of keras_to_torch, torch_to_keras and convert_style. */
struct StyleOptions {
  /** Target names by position of the layers WITH weights: torch module prefixes (Keras -> torch) or Keras
   *  layer names (torch -> Keras). Empty: taken from the source side. */
  std::vector<std::string> names;
  /** Spatial size (H, W) of the activations entering the Flatten before the first Dense after a conv;
   *  empty: inferred as square from the feature count. */
  std::vector<int64_t> flatten_hw;
  /** Keras -> torch: add num_batches_tracked = 0 (int64, 0-d) to BatchNorm layers. */
  bool synthesize_num_batches_tracked = true;
  /** torch -> Keras: BatchNormalization epsilon (PyTorch's default 1e-5 unless the model says otherwise). */
  double torch_bn_eps = 1e-5;
};

/** Groups a Keras weight file's flat keys into layers. Accepts Keras 2 save_weights / model.save keys
 *  ("[model_weights/]hidden/hidden/kernel:0"), the Keras 3 legacy writer ("hidden/mlp/hidden/kernel") and
 *  Keras 3 .weights.h5 ("layers/dense/vars/0"); '/' or '.' separated. layer_order (Keras's layer_names
 *  attribute or the model config) fixes the order; otherwise first appearance. Optimizer state is skipped. */
std::vector<KerasLayer> keras_layers_from_state_dict(const StateDict& sd,
                                                     const std::vector<std::string>& layer_order = {});

/** Keras layers -> PyTorch state_dict. BatchNormalization epsilons go to sd.metadata["<prefix>.eps"]. */
StateDict keras_to_torch(const std::vector<KerasLayer>& layers, const StyleOptions& opts = {});

/** PyTorch state_dict -> Keras layers (Linear -> Dense, Conv2d -> Conv2D, BatchNorm -> BatchNormalization;
 *  num_batches_tracked dropped). Throws UnsupportedError naming a module it cannot map. */
std::vector<KerasLayer> torch_to_keras(const StateDict& sd, const StyleOptions& opts = {});

/** First component of the keys that carry KerasLayer::torch_only values in Keras-style dicts. */
inline constexpr const char* kTorchOnlyGroup = "torch_only";

/** Keras layers as a flat Keras 2 style StateDict ("hidden/hidden/kernel:0", then
 *  "torch_only/hidden/num_batches_tracked" for KerasLayer::torch_only), metadata
 *  "keras.layer_names" = comma-separated layer names in order (what the Keras .h5 writer needs). */
StateDict keras_layers_to_state_dict(const std::vector<KerasLayer>& layers);

/** Whole-file conversion for `convert --style keras|torch`: to "torch" reads Keras-style keys, to "keras"
 *  reads torch-style keys. */
StateDict convert_style(const StateDict& sd, const std::string& to_style, const StyleOptions& opts = {});

/** Dotted paths of the modules that own parameters or buffers, in state_dict order ("hidden", "out";
 *  "0", "3", "7", ...): the positional names for StyleOptions::names. */
std::vector<std::string> weighted_layer_prefixes(Module& m);

/** Sets BatchNorm eps from metadata "<prefix>.eps" (written by keras_to_torch). Returns how many were set. */
int apply_style_metadata(Module& m, const Metadata& md);

}  // namespace tb::nn
