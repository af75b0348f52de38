// Shape rules shared by the backends and nn's host kernels (nn/host_ops.cpp): broadcasting, matmul,
// conv, pooling.
#pragma once

#include <string_view>

#include "compute/backend.h"

namespace tb::compute::detail {

/** numpy broadcast of two shapes; ShapeError naming op when incompatible. */
Shape broadcast_shapes(const Shape& a, const Shape& b, std::string_view op);
/** Element strides that read a contiguous tensor of shape `in` as `out` (0 on broadcast dims);
 *  the result has out.size() entries. */
Shape broadcast_strides(const Shape& in, const Shape& out);

/** Geometry of a 2-D convolution after validation. */
struct ConvGeom {
  int64_t n, c, h, w, o, kh, kw, oh, ow, groups;
};
/** Validates x [N, C, H, W], w [O, C/groups, kH, kW], bias [O] and the params; ShapeError naming the
 *  problem, else the sizes including the output's oh, ow. */
ConvGeom conv2d_geom(const Tensor& x, const Tensor& w, const Tensor* bias, const Conv2dParams& p);

/** Geometry of a 2-D max pool after validation (stride resolved from kernel when {0, 0}). */
struct PoolGeom {
  int64_t n, c, h, w, oh, ow;
  std::array<int64_t, 2> kernel, stride, padding, dilation;
};
/** Validates x ([N, C, H, W] or [C, H, W], then n = 1) and p; ShapeError on bad params or an empty output. */
PoolGeom pool2d_geom(const Tensor& x, const Pool2dParams& p);

/** Validated gemm sizes: A is [M,K] after op(), B is [K,N]; c broadcastable to [M,N]. */
struct GemmGeom {
  int64_t m, n, k;
};
/** Validates the operands of Backend::gemm (2-D, inner sizes agree, c broadcastable); ShapeError. */
GemmGeom gemm_geom(const Tensor& a, const Tensor& b, const Tensor* c, const GemmParams& p);

/** matmul: output shape, batch shape and per-operand batch strides (in matrices, 0 = broadcast). */
struct MatMulGeom {
  Shape out_shape;
  int64_t batch, m, n, k;
  std::vector<int64_t> a_batch_index, b_batch_index;  // matrix index of a/b for each output batch
};
/** numpy matmul shapes (1-D promoted, batch dims broadcast); ShapeError when they do not fit. */
MatMulGeom matmul_geom(const Tensor& a, const Tensor& b);

/** Resolves one -1 and checks the element count. */
Shape reshape_shape(const Shape& in, Shape out);
/** Normalised axis in [0, rank). */
int64_t normalize_axis(int64_t axis, int64_t rank, std::string_view op);
/** What every backend computes (through f32): float32, float16 and bfloat16 for every op, and
 *  8- and 16-bit integers for max_pool2d, exact in f32 (its result keeps the integer dtype). */
bool supports_dtype(Op op, DType t);
/** True for the integer dtypes max_pool2d pools through f32. */
bool is_pooled_integer(DType t);
/** A max_pool2d result computed in f32 (host tensor), narrowed to the input's integer dtype; a
 *  window that covered only padding (-inf) becomes the dtype's lowest value. */
Tensor narrow_pooled(const Tensor& y_f32, DType dt);
/** Throws UnsupportedError unless backend.supports(op, t.dtype()). */
void check_dtype(const Backend& backend, Op op, const Tensor& t);
/** Checks batch-norm parameter shapes ([C] each); returns C. */
int64_t batch_norm_channels(const Tensor& x, const Tensor& mean, const Tensor& var, const Tensor* weight,
                            const Tensor* bias);

}  // namespace tb::compute::detail
