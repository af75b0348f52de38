// nn modules with PyTorch's names and shapes.
//
// A Module owns named parameters, buffers and children, in registration order, exactly like
// torch.nn.Module. state_dict() walks them in PyTorch's order (own parameters, own persistent buffers,
// then each child with "<child>." prefixed), so the keys are the ones torch writes:
//   MLP           hidden.weight, hidden.bias, out.weight, out.bias
//   Sequential    0.weight, 0.bias, 3.weight, ...
//   BatchNorm     weight, bias, running_mean, running_var, num_batches_tracked (int64, 0-d)
// load_state_dict(sd, strict) copies (casting to the module's dtype) and reports missing keys,
// unexpected keys and shape mismatches by name; strict mode throws listing all of them and changes
// nothing.
//
// Forward runs through a compute::Backend (compute/backend.h), in float32. Module::to(backend) uploads
// every floating-point parameter and buffer once; forward() then takes and returns tensors of that
// backend (activations stay on the device between layers, host tensors are accepted and uploaded on
// the fly); operator() is the host convenience: upload the input, forward, download the output.
// Without to() the modules use a per-thread CPU backend.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "compute/backend.h"
#include "tensor/state_dict.h"

namespace tb::compute {
class Backend;
}

namespace tb::nn {

/** Version string of the nn layer. */
const char* version();

/** What load_state_dict found. */
struct LoadReport {
  std::vector<std::string> missing;     // keys the module has and the state dict lacks
  std::vector<std::string> unexpected;  // keys of the state dict the module does not have
  std::vector<std::string> mismatched;  // "key: checkpoint float32[3, 4] vs model [4, 3]"
  std::vector<std::string> loaded;      // keys copied into the module
  /** Nothing missing, unexpected or mis-shaped. */
  bool ok() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  /** Multi-line summary in the order missing, unexpected, mismatched ("" when ok()). */
  std::string describe() const;
};

class Module : public std::enable_shared_from_this<Module> {
 public:
  using Ptr = std::shared_ptr<Module>;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;
  virtual ~Module() = default;

  /** PyTorch class name ("Linear", "Sequential", "MLP"). */
  virtual std::string type_name() const = 0;
  /** Hyper-parameters as PyTorch's extra_repr ("in_features=20, out_features=256, bias=True"). */
  virtual std::string extra_repr() const { return {}; }
  /** Inference forward pass (eval mode) on backend(); input and output live on that backend. */
  virtual Tensor forward(const Tensor& x);
  /** Host in, host out: uploads x, runs forward, downloads the result. */
  Tensor operator()(const Tensor& x);

  /** Registers (or replaces) a parameter / buffer; returns a reference valid until the next registration on this
   * module. */
  Tensor& register_parameter(const std::string& name, Tensor t);
  Tensor& register_buffer(const std::string& name, Tensor t, bool persistent = true);
  Ptr register_module(const std::string& name, Ptr child);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> child) {
    register_module(name, Ptr(child));
    return child;
  }

  /** Own parameter / buffer / child by name; throws KeyError. */
  Tensor& parameter(const std::string& name);
  Tensor& buffer(const std::string& name);
  Ptr child(const std::string& name) const;

  const std::vector<std::pair<std::string, Ptr>>& children() const { return children_; }
  /** Recursive, dotted names, in state_dict order. */
  std::vector<std::pair<std::string, Tensor>> named_parameters() const;
  std::vector<std::pair<std::string, Tensor>> named_buffers() const;
  /** Every module with its dotted path ("" for this one), pre-order. */
  std::vector<std::pair<std::string, Ptr>> named_modules();

  /** PyTorch's state_dict(): parameters and persistent buffers with dotted keys (views, not copies). */
  StateDict state_dict() const;
  /** Copies tensors in by name; see LoadReport. strict: throws KeyError (or ShapeError when the only
   *  problems are shape mismatches) listing everything and leaves the module unchanged. */
  LoadReport load_state_dict(const StateDict& sd, bool strict = true);

  /** Moves the whole tree to backend: floating-point parameters and buffers are uploaded now, once
   *  (integer buffers such as num_batches_tracked stay on the host); later load_state_dict() calls
   *  re-upload what they change. nullptr returns to the default per-thread CPU backend. */
  void to(std::shared_ptr<compute::Backend> backend);
  /** The backend forward runs on (the default CPU backend unless to() chose one). */
  compute::Backend& backend();

  /** PyTorch-like multi-line rendering of the module tree. */
  std::string repr() const;

 protected:
  /** All tensor slots with dotted names (parameters then buffers per module; non-persistent skipped). */
  void collect_slots(const std::string& prefix, std::vector<std::pair<std::string, Tensor*>>& out);
  /** The backend copy of an own parameter / buffer (uploaded by to(); the host tensor otherwise).
   *  Undefined when the slot is undefined. */
  const Tensor& device_tensor(const std::string& name);
  /** Like device_tensor, nullptr when absent or undefined (optional bias). */
  const Tensor* device_tensor_opt(const std::string& name);

 private:
  struct DeviceSlot {
    std::string name;
    Tensor tensor;
  };
  struct Slot {
    std::string name;
    Tensor tensor;
    bool persistent = true;
  };
  void upload_own();
  std::shared_ptr<compute::Backend> backend_;
  std::vector<DeviceSlot> device_;
  std::vector<Slot> params_;
  std::vector<Slot> buffers_;
  std::vector<std::pair<std::string, Ptr>> children_;
};

// ---------------------------------------------------------------------------------------------
// Layers

class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true);
  std::string type_name() const override { return "Linear"; }
  std::string extra_repr() const override;
  Tensor forward(const Tensor& x) override;
  /** relu(forward(x)) in one pass over the output (Sequential uses it for Linear followed by ReLU). */
  Tensor forward_relu(const Tensor& x);
  int64_t in_features, out_features;  // weight is (out_features, in_features)
  bool has_bias;                      // whether "bias" is registered
};

class ReLU : public Module {
 public:
  std::string type_name() const override { return "ReLU"; }
  Tensor forward(const Tensor& x) override;
};

class Conv2d : public Module {
 public:
  struct Options {
    int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1, groups = 1;
    bool bias = true;
  };
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size);
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_h, int64_t kernel_w, Options opts);
  std::string type_name() const override { return "Conv2d"; }
  std::string extra_repr() const override;
  Tensor forward(const Tensor& x) override;
  int64_t in_channels, out_channels, kernel_h, kernel_w;  // weight (out, in / groups, kernel_h, kernel_w)
  Options opts;                                           // stride, padding, dilation, groups, bias
};

class MaxPool2d : public Module {
 public:
  /** stride 0 means stride = kernel (PyTorch's default). */
  MaxPool2d(int64_t kernel_size, int64_t stride = 0, int64_t padding = 0);
  MaxPool2d(int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w);
  std::string type_name() const override { return "MaxPool2d"; }
  std::string extra_repr() const override;
  Tensor forward(const Tensor& x) override;
  int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w;  // PyTorch's MaxPool2d arguments
  /** Spacing of the window's taps (ONNX dilations, PyTorch dilation); checked by forward(). */
  int64_t dil_h = 1, dil_w = 1;
  /** Rounds the output size up, as PyTorch's ceil_mode and ONNX's ceil_mode=1 do. */
  bool ceil_mode = false;
};

class Flatten : public Module {
 public:
  explicit Flatten(int64_t start = 1, int64_t end = -1) : start_dim(start), end_dim(end) {}
  std::string type_name() const override { return "Flatten"; }
  std::string extra_repr() const override;
  Tensor forward(const Tensor& x) override;
  int64_t start_dim, end_dim;  // torch.flatten's dims (negative count from the end)
};

/** BatchNorm1d (input (N, C) or (N, C, L)) and BatchNorm2d (N, C, H, W), inference statistics. */
class BatchNorm : public Module {
 public:
  BatchNorm(int dims, int64_t num_features, double eps = 1e-5, double momentum = 0.1, bool affine = true,
            bool track_running_stats = true);
  std::string type_name() const override { return dims == 1 ? "BatchNorm1d" : "BatchNorm2d"; }
  std::string extra_repr() const override;
  Tensor forward(const Tensor& x) override;
  int dims;                          // 1: BatchNorm1d, 2: BatchNorm2d
  int64_t num_features;              // channels (dim 1 of the input)
  double eps, momentum;              // PyTorch's meanings (momentum only matters for training)
  bool affine, track_running_stats;  // weight/bias present; running_mean/var/num_batches_tracked present
};
inline std::shared_ptr<BatchNorm> BatchNorm1d(int64_t n, double eps = 1e-5) {
  return std::make_shared<BatchNorm>(1, n, eps);
}
inline std::shared_ptr<BatchNorm> BatchNorm2d(int64_t n, double eps = 1e-5) {
  return std::make_shared<BatchNorm>(2, n, eps);
}

/** Identity at inference. */
class Dropout : public Module {
 public:
  explicit Dropout(double prob = 0.5) : p(prob) {}
  std::string type_name() const override { return "Dropout"; }
  std::string extra_repr() const override;
  Tensor forward(const Tensor& x) override { return x; }
  double p;  // drop probability (unused at inference)
};

class Identity : public Module {
 public:
  std::string type_name() const override { return "Identity"; }
  Tensor forward(const Tensor& x) override { return x; }
};

class Softmax : public Module {
 public:
  explicit Softmax(int64_t d = -1) : dim(d) {}
  std::string type_name() const override { return "Softmax"; }
  std::string extra_repr() const override;
  Tensor forward(const Tensor& x) override;
  int64_t dim;  // the dim normalised over (negative counts from the end)
};

/** Sigmoid and Tanh: the compute backend has no op for them, so they run on the host (download,
 *  nn/host_ops.h in double rounded once, upload back to the module's backend). */
class Sigmoid : public Module {
 public:
  std::string type_name() const override { return "Sigmoid"; }
  Tensor forward(const Tensor& x) override;
};
class Tanh : public Module {
 public:
  std::string type_name() const override { return "Tanh"; }
  Tensor forward(const Tensor& x) override;
};

/** LeakyReLU(negative_slope); on the host like Sigmoid. */
class LeakyReLU : public Module {
 public:
  explicit LeakyReLU(double slope = 0.01) : negative_slope(slope) {}
  std::string type_name() const override { return "LeakyReLU"; }
  std::string extra_repr() const override;
  Tensor forward(const Tensor& x) override;
  double negative_slope;  // the slope for x < 0
};

/** AvgPool2d (count_include_pad=True, floor mode, as torch's defaults) on (N, C, H, W); on the host. */
class AvgPool2d : public Module {
 public:
  /** stride 0 means stride = kernel (PyTorch's default). */
  explicit AvgPool2d(int64_t kernel_size, int64_t stride = 0, int64_t padding = 0);
  std::string type_name() const override { return "AvgPool2d"; }
  std::string extra_repr() const override;
  Tensor forward(const Tensor& x) override;
  int64_t kernel, stride, padding;
};

/** AdaptiveAvgPool2d(1): the mean over H and W of (N, C, H, W), giving (N, C, 1, 1); on the host. */
class GlobalAvgPool2d : public Module {
 public:
  std::string type_name() const override { return "AdaptiveAvgPool2d"; }
  std::string extra_repr() const override { return "output_size=1"; }
  Tensor forward(const Tensor& x) override;
};

/** A pickled module of a class this library does not know (a user's `__main__.MLP`): its children,
 *  parameters and buffers load like any module's, but its forward() is Python code the file does not
 *  hold, so forward() throws UnsupportedError saying how to run it (an architecture by structure). */
class UserModule : public Module {
 public:
  explicit UserModule(std::string cls) : class_name(std::move(cls)) {}
  std::string type_name() const override;
  Tensor forward(const Tensor& x) override;
  /** Full Python class name ("__main__.MLP"). */
  std::string class_name;
  /** Own parameter / persistent buffer names in the pickle (nn::load_model registers them from the file's state dict).
   */
  std::vector<std::string> param_names, buffer_names;
};

/** The user-class modules (UserModule) in m's tree, with their dotted paths; empty when m can run. */
std::vector<std::pair<std::string, const UserModule*>> modules_without_forward(Module& m);

/** A layer sequence spec ("linear:20,256 relu linear:256,10") from the layers of m in state_dict
 *  order, with relu between weighted layers: a starting point for --arch (the activations are a guess). */
std::string guess_arch_spec(Module& m);

/** torch.permute(x, dims); on the host like Sigmoid (used to feed NHWC Keras inputs to NCHW layers). */
class Permute : public Module {
 public:
  explicit Permute(std::vector<int64_t> d) : dims(std::move(d)) {}
  std::string type_name() const override { return "Permute"; }
  std::string extra_repr() const override;
  Tensor forward(const Tensor& x) override;
  std::vector<int64_t> dims;
};

/** Children named "0", "1", ...; forward chains them. */
class Sequential : public Module {
 public:
  Sequential() = default;
  explicit Sequential(std::vector<Ptr> layers);
  std::string type_name() const override { return "Sequential"; }
  Tensor forward(const Tensor& x) override;
  Sequential& add(Ptr layer);
  size_t size() const { return children().size(); }
};

// ---------------------------------------------------------------------------------------------
// The seeds' example models.

/** Seed 001's MLP: hidden = Linear(in, hidden), out = Linear(hidden, out); out(relu(hidden(x))). */
class MLP : public Module {
 public:
  explicit MLP(int64_t in = 20, int64_t hidden_features = 256, int64_t out_features = 10);
  std::string type_name() const override { return "MLP"; }
  Tensor forward(const Tensor& x) override;
  std::shared_ptr<Linear> hidden, out;
};

/** The seed CNN: Sequential(Conv2d(3,16,5), ReLU, MaxPool2d(2,2), Conv2d(16,32,5), ReLU, MaxPool2d(2,2),
 *  Flatten, Linear(800,120), ReLU, Linear(120,84), ReLU, Linear(84,10)); input (N, 3, 32, 32). */
std::shared_ptr<Sequential> seed_cnn();

/** Built-in architectures for `run --arch` (nn/arch_spec.cpp): "mlp:20,256,10" (MLP class for three
 *  sizes, else a Sequential of Linear/ReLU), "seed-cnn", or a layer sequence
 *  ("linear:20,256 relu linear:256,10"). Throws UnsupportedError listing the choices. */
Module::Ptr builtin_model(const std::string& spec);

}  // namespace tb::nn
