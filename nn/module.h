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

/** A torch.nn.Module: named parameters, buffers and child modules in registration order, shared by
 *  std::shared_ptr (Ptr). Subclasses give type_name() and usually forward(). */
class Module : public std::enable_shared_from_this<Module> {
 public:
  using Ptr = std::shared_ptr<Module>;
  /** An empty module on the default CPU backend. Not copyable: modules are shared through Ptr. */
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
  /** persistent = false keeps the buffer out of state_dict() (torch's persistent=False). */
  Tensor& register_buffer(const std::string& name, Tensor t, bool persistent = true);
  /** Adds (or replaces) the child under name and returns it. Names must be non-empty without '.' (KeyError),
   *  child non-null (KeyError). */
  Ptr register_module(const std::string& name, Ptr child);
  /** Typed register_module: returns the child as its own type (hidden = register_module("hidden", linear)). */
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> child) {
    register_module(name, Ptr(child));
    return child;
  }

  /** Own parameter / buffer / child by name; throws KeyError. */
  Tensor& parameter(const std::string& name);
  Tensor& buffer(const std::string& name);
  Ptr child(const std::string& name) const;

  /** Direct children with their names, in registration order. */
  const std::vector<std::pair<std::string, Ptr>>& children() const { return children_; }
  /** Recursive, dotted names, in state_dict order. */
  std::vector<std::pair<std::string, Tensor>> named_parameters() const;
  /** Every defined buffer, persistent or not, with dotted names. */
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
  /** Backend copy of an own floating-point parameter or buffer, by slot name. */
  struct DeviceSlot {
    std::string name;
    Tensor tensor;
  };
  /** A registered parameter or buffer; an undefined tensor is a slot torch holds as None. */
  struct Slot {
    std::string name;
    Tensor tensor;
    bool persistent = true;
  };
  /** Rebuilds device_ from the own slots when a backend is set (float32, or the dtype if it can Cast). */
  void upload_own();
  std::shared_ptr<compute::Backend> backend_;
  std::vector<DeviceSlot> device_;
  std::vector<Slot> params_;
  std::vector<Slot> buffers_;
  std::vector<std::pair<std::string, Ptr>> children_;
};

// ---------------------------------------------------------------------------------------------
// Layers

/** torch.nn.Linear: y = x @ weight^T + bias, weight (out_features, in_features) and bias (out_features)
 *  initialised to zeros (load_state_dict fills them). */
class Linear : public Module {
 public:
  /** Registers zero weight and, with bias, zero bias; ShapeError on negative sizes. */
  Linear(int64_t in_features, int64_t out_features, bool bias = true);
  /** "Linear". */
  std::string type_name() const override { return "Linear"; }
  /** "in_features=20, out_features=256, bias=True". */
  std::string extra_repr() const override;
  /** x (..., in_features) to (..., out_features) on backend(). */
  Tensor forward(const Tensor& x) override;
  /** relu(forward(x)) in one pass over the output (Sequential uses it for Linear followed by ReLU). */
  Tensor forward_relu(const Tensor& x);
  int64_t in_features, out_features;  // weight is (out_features, in_features)
  bool has_bias;                      // whether "bias" is registered
};

/** torch.nn.ReLU: max(0, x), no parameters. */
class ReLU : public Module {
 public:
  /** "ReLU". */
  std::string type_name() const override { return "ReLU"; }
  /** max(0, x) elementwise on backend(). */
  Tensor forward(const Tensor& x) override;
};

/** torch.nn.Conv2d on (N, C, H, W): weight (out, in / groups, kernel_h, kernel_w) and optional bias (out),
 *  initialised to zeros. */
class Conv2d : public Module {
 public:
  /** PyTorch's Conv2d keyword arguments (padding is symmetric per axis, in pixels). */
  struct Options {
    int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1, groups = 1;
    bool bias = true;
  };
  /** Square kernel, stride 1, no padding, with bias. */
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size);
  /** Registers the zero weight (and bias); ShapeError unless sizes are positive and groups divides both
   *  channel counts. */
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_h, int64_t kernel_w, Options opts);
  /** "Conv2d". */
  std::string type_name() const override { return "Conv2d"; }
  /** "3, 16, kernel_size=(5, 5), stride=(1, 1)", then padding, dilation, groups, bias only when not default. */
  std::string extra_repr() const override;
  /** (N, in_channels, H, W) to (N, out_channels, H', W') on backend(). */
  Tensor forward(const Tensor& x) override;
  int64_t in_channels, out_channels, kernel_h, kernel_w;  // weight (out, in / groups, kernel_h, kernel_w)
  Options opts;                                           // stride, padding, dilation, groups, bias
};

/** torch.nn.MaxPool2d on (N, C, H, W); padding pads with -inf. No parameters. */
class MaxPool2d : public Module {
 public:
  /** stride 0 means stride = kernel (PyTorch's default). */
  MaxPool2d(int64_t kernel_size, int64_t stride = 0, int64_t padding = 0);
  /** Per-axis kernel, stride and padding; ShapeError unless kernel and stride are positive and padding
   *  is not negative. */
  MaxPool2d(int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w);
  /** "MaxPool2d". */
  std::string type_name() const override { return "MaxPool2d"; }
  /** "kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False" (pairs when the axes differ). */
  std::string extra_repr() const override;
  /** Max over each window, on backend(). */
  Tensor forward(const Tensor& x) override;
  int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w;  // PyTorch's MaxPool2d arguments
  /** Spacing of the window's taps (ONNX dilations, PyTorch dilation); checked by forward(). */
  int64_t dil_h = 1, dil_w = 1;
  /** Rounds the output size up, as PyTorch's ceil_mode and ONNX's ceil_mode=1 do. */
  bool ceil_mode = false;
};

/** torch.nn.Flatten: merges dims start_dim..end_dim into one. */
class Flatten : public Module {
 public:
  /** torch's defaults keep the batch dim: (N, C, H, W) becomes (N, C*H*W). */
  explicit Flatten(int64_t start = 1, int64_t end = -1) : start_dim(start), end_dim(end) {}
  /** "Flatten". */
  std::string type_name() const override { return "Flatten"; }
  /** "start_dim=1, end_dim=-1". */
  std::string extra_repr() const override;
  /** A reshape on backend() (no copy for contiguous input). */
  Tensor forward(const Tensor& x) override;
  int64_t start_dim, end_dim;  // torch.flatten's dims (negative count from the end)
};

/** BatchNorm1d (input (N, C) or (N, C, L)) and BatchNorm2d (N, C, H, W), inference statistics. */
class BatchNorm : public Module {
 public:
  /** dims is 1 or 2 (UnsupportedError otherwise); affine registers weight = 1 and bias = 0,
   *  track_running_stats registers running_mean = 0, running_var = 1 and num_batches_tracked. ShapeError if
   *  num_features <= 0 or eps < 0. */
  BatchNorm(int dims, int64_t num_features, double eps = 1e-5, double momentum = 0.1, bool affine = true,
            bool track_running_stats = true);
  /** "BatchNorm1d" or "BatchNorm2d" by dims. */
  std::string type_name() const override { return dims == 1 ? "BatchNorm1d" : "BatchNorm2d"; }
  /** "16, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True". */
  std::string extra_repr() const override;
  /** (x - running_mean) / sqrt(running_var + eps) * weight + bias over dim 1 on backend(); ShapeError on
   *  the wrong rank, UnsupportedError without running statistics. */
  Tensor forward(const Tensor& x) override;
  int dims;                          // 1: BatchNorm1d, 2: BatchNorm2d
  int64_t num_features;              // channels (dim 1 of the input)
  double eps, momentum;              // PyTorch's meanings (momentum only matters for training)
  bool affine, track_running_stats;  // weight/bias present; running_mean/var/num_batches_tracked present
};
/** torch.nn.BatchNorm1d(n, eps) with PyTorch's other defaults. */
inline std::shared_ptr<BatchNorm> BatchNorm1d(int64_t n, double eps = 1e-5) {
  return std::make_shared<BatchNorm>(1, n, eps);
}
/** torch.nn.BatchNorm2d(n, eps) with PyTorch's other defaults. */
inline std::shared_ptr<BatchNorm> BatchNorm2d(int64_t n, double eps = 1e-5) {
  return std::make_shared<BatchNorm>(2, n, eps);
}

/** Identity at inference. */
class Dropout : public Module {
 public:
  /** prob is only shown by repr(); nothing is dropped at inference. */
  explicit Dropout(double prob = 0.5) : p(prob) {}
  /** "Dropout". */
  std::string type_name() const override { return "Dropout"; }
  /** "p=0.5, inplace=False". */
  std::string extra_repr() const override;
  /** Returns x unchanged (eval mode). */
  Tensor forward(const Tensor& x) override { return x; }
  double p;  // drop probability (unused at inference)
};

/** torch.nn.Identity: forward returns its input, no parameters. */
class Identity : public Module {
 public:
  /** "Identity". */
  std::string type_name() const override { return "Identity"; }
  /** Returns x unchanged. */
  Tensor forward(const Tensor& x) override { return x; }
};

/** torch.nn.Softmax over one dim. */
class Softmax : public Module {
 public:
  /** d: the dim to normalise over (-1: the last). */
  explicit Softmax(int64_t d = -1) : dim(d) {}
  /** "Softmax". */
  std::string type_name() const override { return "Softmax"; }
  /** "dim=-1". */
  std::string extra_repr() const override;
  /** exp(x) / sum(exp(x)) along dim, on backend(). */
  Tensor forward(const Tensor& x) override;
  int64_t dim;  // the dim normalised over (negative counts from the end)
};

/** Sigmoid and Tanh: the compute backend has no op for them, so they run on the host (download,
 *  nn/host_ops.h in double rounded once, upload back to the module's backend). */
class Sigmoid : public Module {
 public:
  /** "Sigmoid". */
  std::string type_name() const override { return "Sigmoid"; }
  /** 1 / (1 + exp(-x)) elementwise, on the host; the result goes back to where x was. */
  Tensor forward(const Tensor& x) override;
};
/** torch.nn.Tanh (on the host, see Sigmoid). */
class Tanh : public Module {
 public:
  /** "Tanh". */
  std::string type_name() const override { return "Tanh"; }
  /** tanh(x) elementwise, on the host; the result goes back to where x was. */
  Tensor forward(const Tensor& x) override;
};

/** LeakyReLU(negative_slope); on the host like Sigmoid. */
class LeakyReLU : public Module {
 public:
  /** slope: the factor for negative inputs (PyTorch's default 0.01). */
  explicit LeakyReLU(double slope = 0.01) : negative_slope(slope) {}
  /** "LeakyReLU". */
  std::string type_name() const override { return "LeakyReLU"; }
  /** "negative_slope=0.01". */
  std::string extra_repr() const override;
  /** x for x >= 0, negative_slope * x otherwise, on the host; the result goes back to where x was. */
  Tensor forward(const Tensor& x) override;
  double negative_slope;  // the slope for x < 0
};

/** AvgPool2d (count_include_pad=True, floor mode, as torch's defaults) on (N, C, H, W); on the host. */
class AvgPool2d : public Module {
 public:
  /** stride 0 means stride = kernel (PyTorch's default). */
  explicit AvgPool2d(int64_t kernel_size, int64_t stride = 0, int64_t padding = 0);
  /** "AvgPool2d". */
  std::string type_name() const override { return "AvgPool2d"; }
  /** "kernel_size=2, stride=2, padding=0". */
  std::string extra_repr() const override;
  /** Window means counting padded zeros; ShapeError unless x is 4-D. Result goes back to where x was. */
  Tensor forward(const Tensor& x) override;
  /** Square window: the same kernel, stride and padding on both axes. */
  int64_t kernel, stride, padding;
};

/** AdaptiveAvgPool2d(1): the mean over H and W of (N, C, H, W), giving (N, C, 1, 1); on the host. */
class GlobalAvgPool2d : public Module {
 public:
  /** "AdaptiveAvgPool2d" (the torch class this stands for). */
  std::string type_name() const override { return "AdaptiveAvgPool2d"; }
  /** "output_size=1". */
  std::string extra_repr() const override { return "output_size=1"; }
  /** (N, C, H, W) to (N, C, 1, 1); ShapeError unless x is 4-D. Result goes back to where x was. */
  Tensor forward(const Tensor& x) override;
};

/** A pickled module of a class this library does not know (a user's `__main__.MLP`): its children,
 *  parameters and buffers load like any module's, but its forward() is Python code the file does not
 *  hold, so forward() throws UnsupportedError saying how to run it (an architecture by structure). */
class UserModule : public Module {
 public:
  /** cls: the pickled class's full name ("__main__.MLP"). */
  explicit UserModule(std::string cls) : class_name(std::move(cls)) {}
  /** The last component of class_name ("MLP"). */
  std::string type_name() const override;
  /** Always throws UnsupportedError, suggesting an --arch spec from guess_arch_spec(). */
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
  /** d: the new order of the input's dims, as for torch.permute. */
  explicit Permute(std::vector<int64_t> d) : dims(std::move(d)) {}
  /** "Permute". */
  std::string type_name() const override { return "Permute"; }
  /** "dims=(0, 3, 1, 2)". */
  std::string extra_repr() const override;
  /** Permutes a host copy and returns it contiguous, uploaded back when x was on backend(). */
  Tensor forward(const Tensor& x) override;
  /** Output dim i is input dim dims[i]. */
  std::vector<int64_t> dims;
};

/** Children named "0", "1", ...; forward chains them. */
class Sequential : public Module {
 public:
  /** Empty; add() appends layers. */
  Sequential() = default;
  /** Adds the layers in order as children "0", "1", ... */
  explicit Sequential(std::vector<Ptr> layers);
  /** "Sequential". */
  std::string type_name() const override { return "Sequential"; }
  /** Runs the children in order, fusing Linear followed by ReLU into one pass; an error gets the context
   *  "in Sequential layer N (Type)". */
  Tensor forward(const Tensor& x) override;
  /** Appends layer as the next numbered child; returns *this for chaining. */
  Sequential& add(Ptr layer);
  /** Number of children. */
  size_t size() const { return children().size(); }
};

// ---------------------------------------------------------------------------------------------
// The seeds' example models.

/** Seed 001's MLP: hidden = Linear(in, hidden), out = Linear(hidden, out); out(relu(hidden(x))). */
class MLP : public Module {
 public:
  /** Two zero-initialised Linear layers with bias: in -> hidden_features -> out_features. */
  explicit MLP(int64_t in = 20, int64_t hidden_features = 256, int64_t out_features = 10);
  /** "MLP". */
  std::string type_name() const override { return "MLP"; }
  /** out(relu(hidden(x))) on backend(). */
  Tensor forward(const Tensor& x) override;
  /** The two children, also registered as "hidden" and "out". */
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
