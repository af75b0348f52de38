// Float32 reference kernels for nn forward passes on the CPU (PyTorch semantics, NCHW layout).
// Inputs of other dtypes are converted to float32; outputs are new contiguous float32 tensors.
// Sums accumulate in double so results stay within float32 rounding of the exact value.
#pragma once

#include "tensor/tensor.h"

namespace tb::nn::cpu {

/** x (..., in) @ weight(out, in)^T + bias(out) -> (..., out). bias may be undefined. */
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias);
Tensor relu(const Tensor& x);
/** x (N, C, H, W), weight (O, C/groups, kH, kW), bias (O) or undefined. */
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride_h, int64_t stride_w,
              int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w, int64_t groups);
/** Padding counts as -inf; floor mode. */
Tensor max_pool2d(const Tensor& x, int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w,
                  int64_t pad_h, int64_t pad_w);
/** Normalises over dim 1 (channels) with running statistics; weight/bias may be undefined. */
Tensor batch_norm(const Tensor& x, const Tensor& mean, const Tensor& var, const Tensor& weight, const Tensor& bias,
                  double eps);
Tensor flatten(const Tensor& x, int64_t start_dim, int64_t end_dim);
Tensor softmax(const Tensor& x, int64_t dim);

}  // namespace tb::nn::cpu
