// Host (CPU, single-threaded) kernels for the ops the compute backends do not have: elementwise maps
// and numpy-broadcast arithmetic, average pooling with ONNX's attributes, padding, concatenation and
// log-softmax. They take host tensors of any floating dtype, compute in double, and return contiguous
// host tensors of the input's dtype (one rounding: float32 +, -, *, / give float32's own results). Modules and the ONNX
// graph runner download device tensors before calling them and upload the results.
#pragma once

#include <array>
#include <functional>
#include <vector>

#include "tensor/tensor.h"

namespace tb::nn::host {

/** fn applied to every element; the result has x's dtype. UnsupportedError naming `what` for
 *  non-floating dtypes (as for every kernel here). */
Tensor map(const Tensor& x, const std::function<double(double)>& fn, const char* what);

enum class Arith { Add, Sub, Mul, Div };
/** a (op) b with numpy broadcasting (the backends' rule, compute/shape_infer.h); both floating, the
 *  result in a's dtype. */
Tensor arith(const Tensor& a, const Tensor& b, Arith op, const char* what);

/** 2-D pooling window geometry, ONNX style: pads are {top, left, bottom, right}. */
struct Window2d {
  std::array<int64_t, 2> kernel{1, 1}, stride{1, 1}, dilation{1, 1};
  std::array<int64_t, 4> pads{0, 0, 0, 0};
  bool ceil_mode = false;
  /** Output length of one spatial dim (0 = H, 1 = W) of input length n; ShapeError when < 1. */
  int64_t out_size(int dim, int64_t n) const;
};

/** Average pooling of (N, C, H, W). count_include_pad divides by the window clipped to the padded
 *  input (PyTorch's and ONNX's rule); otherwise by the number of input elements in the window. */
Tensor avg_pool2d(const Tensor& x, const Window2d& w, bool count_include_pad);
/** The mean over every dim after the first two: (N, C, ...) -> (N, C, 1, ...). */
Tensor global_avg_pool(const Tensor& x);
/** (N, C, H, W) padded by {top, left, bottom, right} with value (any dtype; value converted). */
Tensor pad2d(const Tensor& x, const std::array<int64_t, 4>& pads, double value);
/** Concatenation along axis (negative counts from the end); same dtype and other dims. */
Tensor concat(const std::vector<Tensor>& xs, int64_t axis);
/** log(softmax(x)) along axis, computed as x - max - log(sum(exp(x - max))). */
Tensor log_softmax(const Tensor& x, int64_t axis);

}  // namespace tb::nn::host
