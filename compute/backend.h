// Compute backends: one small interface, a CPU reference/fast backend and a Vulkan backend.
//
//   auto be = tb::compute::make_backend("vulkan");      // or "cpu"; UnsupportedError if absent
//   Tensor w = be->upload(host_w);                       // once (weights stay on the device)
//   Tensor y = be->relu(be->linear(be->upload(x), w, &b));   // no host round trip between ops
//   Tensor host_y = be->download(y);                     // waits for the device
//
// Note [device tensors]
// A tensor produced by a backend is an ordinary tb::Tensor. On the CPU backend it is host memory.
// On the Vulkan backend its Storage is Kind::External with data() == nullptr (the bytes live in a
// VkBuffer kept alive by the storage); shape, strides, dtype and views (reshape/view of a
// contiguous tensor) work as usual, but the elements can only be read through download().
// Use Backend::owns(t) to ask whether a tensor lives on that backend. Ops accept host tensors too
// (they are uploaded on the fly), so mixing host weights and device activations is correct, just
// slower. Every op returns a new contiguous tensor; inputs are never modified.
//
// Dtypes: every op runs in f32. F16 and BF16 inputs are accepted where supports() says so: they
// are widened to f32, computed with f32 accumulation and the result is rounded back to the dtype of
// the first input (round to nearest even). cast() converts between F32, F16 and BF16.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tensor/tensor.h"

namespace tb::compute {

/** The operations of the interface (capability queries name them). */
enum class Op { Gemm, MatMul, Add, Mul, Relu, Conv2d, MaxPool2d, BatchNorm, Softmax, Reshape, Cast };
/** Lower-case name of op as error messages use it ("gemm", "max_pool2d"); "?" for an out-of-range value. */
std::string_view op_name(Op op);

/** Y = alpha * op(A) @ op(B) + beta * C, op() transposes when the flag is set (ONNX Gemm). */
struct GemmParams {
  bool trans_a = false;
  bool trans_b = false;
  float alpha = 1.0f;
  float beta = 1.0f;
  /** max(0, .) on the result, in the same pass: Linear followed by ReLU without a second pass
   *  over the output (nn::Sequential fuses them). */
  bool relu = false;
};

/** PyTorch Conv2d: input [N, C, H, W], weight [O, C/groups, kH, kW], bias [O]. */
struct Conv2dParams {
  std::array<int64_t, 2> stride{1, 1}, padding{0, 0}, dilation{1, 1};
  int64_t groups = 1;
};

/** PyTorch MaxPool2d: stride defaults to kernel when {0, 0}; padding pads with -inf. */
struct Pool2dParams {
  std::array<int64_t, 2> kernel{2, 2}, stride{0, 0}, padding{0, 0}, dilation{1, 1};
  bool ceil_mode = false;
};

/** A device that runs the ops. Not thread-safe: use one backend per thread. */
class Backend {
 public:
  /** Not copyable: a backend owns its device state; destroy it through the base pointer. */
  virtual ~Backend() = default;
  Backend() = default;
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  /** "cpu" or "vulkan:0 (llvmpipe ...)". */
  virtual std::string name() const = 0;
  /** Whether op accepts inputs of dtype (F32 always; F16/BF16 per backend). */
  virtual bool supports(Op op, DType dtype) const = 0;

  /** A copy of a host tensor on this backend (CPU: a contiguous host tensor, possibly the same). */
  virtual Tensor upload(const Tensor& host) = 0;
  /** A contiguous host tensor with t's values; waits for pending work. Host tensors pass through. */
  virtual Tensor download(const Tensor& t) = 0;
  /** True when t lives on this backend's device (CPU: any defined host tensor). */
  virtual bool owns(const Tensor& t) const = 0;
  /** Waits until all queued work is done (CPU: no-op). */
  virtual void synchronize() {}

  /** ONNX Gemm on 2-D A [M,K] (or [K,M] with trans_a), B [K,N] (or [N,K]); c may be null or
   *  broadcast to [M,N] from [N], [1,N], [M,1], [M,N] or a single element. */
  virtual Tensor gemm(const Tensor& a, const Tensor& b, const Tensor* c, const GemmParams& p) = 0;
  /** numpy matmul: 1-D operands promoted, batch dims broadcast ([..., M, K] @ [..., K, N]). */
  virtual Tensor matmul(const Tensor& a, const Tensor& b) = 0;
  /** Elementwise sum with numpy broadcasting. */
  virtual Tensor add(const Tensor& a, const Tensor& b) = 0;
  /** Elementwise product with numpy broadcasting. */
  virtual Tensor mul(const Tensor& a, const Tensor& b) = 0;
  /** max(0, x) elementwise. */
  virtual Tensor relu(const Tensor& x) = 0;
  /** 2-D convolution per Conv2dParams; bias may be null. Output [N, O, H', W']. */
  virtual Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor* bias, const Conv2dParams& p) = 0;
  /** Max over each window per Pool2dParams on [N, C, H, W]. */
  virtual Tensor max_pool2d(const Tensor& x, const Pool2dParams& p) = 0;
  /** Inference batch norm over dim 1 of [N, C], [N, C, L] or [N, C, H, W]:
   *  y = (x - mean) / sqrt(var + eps) * weight + bias (weight/bias null = 1/0). */
  virtual Tensor batch_norm(const Tensor& x, const Tensor& mean, const Tensor& var, const Tensor* weight,
                            const Tensor* bias, double eps) = 0;
  /** Softmax along axis (negative counts from the end). */
  virtual Tensor softmax(const Tensor& x, int64_t axis) = 0;
  /** Converts between F32, F16 and BF16 (round to nearest even). */
  virtual Tensor cast(const Tensor& x, DType to) = 0;

  /** Same elements, new shape (one dim may be -1); no copy for contiguous tensors. */
  virtual Tensor reshape(const Tensor& x, Shape shape);
  /** torch.flatten(x, start, end). */
  Tensor flatten(const Tensor& x, int64_t start_dim = 1, int64_t end_dim = -1);
  /** torch.nn.functional.linear: x [..., in] @ w[out, in]^T + bias[out]. */
  Tensor linear(const Tensor& x, const Tensor& w, const Tensor* bias, bool relu = false);
};

/** Names of the backends this build can create on this machine: {"cpu"} or {"cpu", "vulkan"}. */
std::vector<std::string> available_backends();

/** "cpu", "vulkan" (first compute-capable device) or "vulkan:N" (device N of
 *  vulkan::device_names()). Throws UnsupportedError when not built or no device exists. */
std::unique_ptr<Backend> make_backend(std::string_view name);

namespace cpu {
/** The CPU backend; threads = 0 uses std::thread::hardware_concurrency(). */
std::unique_ptr<Backend> make_backend(int threads = 0);
}  // namespace cpu

namespace vulkan {
/** False when built without Vulkan or when no compute-capable device exists. */
bool is_available();
/** Names of the compute-capable devices, in the order "vulkan:N" selects them. */
std::vector<std::string> device_names();
/** Backend on device index (see device_names()); throws UnsupportedError/BackendError. */
std::unique_ptr<Backend> make_backend(int device_index = 0);
}  // namespace vulkan

}  // namespace tb::compute
