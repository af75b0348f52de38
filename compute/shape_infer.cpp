#include "compute/shape_infer.h"

#include <algorithm>

namespace tb::compute::detail {

Shape broadcast_shapes(const Shape& a, const Shape& b, std::string_view op) {
  size_t rank = std::max(a.size(), b.size());
  Shape out(rank);
  for (size_t i = 0; i < rank; ++i) {
    int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    TB_CHECK(da == db || da == 1 || db == 1, ShapeError, op, ": shapes ", shape_str(a), " and ", shape_str(b),
             " do not broadcast (dim ", i, ": ", da, " vs ", db, ")");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Shape broadcast_strides(const Shape& in, const Shape& out) {
  Shape st(out.size(), 0);
  Shape cs = contiguous_strides(in);
  size_t off = out.size() - in.size();
  for (size_t i = 0; i < in.size(); ++i) st[off + i] = in[i] == 1 ? 0 : cs[i];
  return st;
}

ConvGeom conv2d_geom(const Tensor& x, const Tensor& w, const Tensor* bias, const Conv2dParams& p) {
  TB_CHECK(x.dim() == 4, ShapeError, "conv2d: input must be [N, C, H, W], got ", shape_str(x.shape()));
  TB_CHECK(w.dim() == 4, ShapeError, "conv2d: weight must be [O, C/groups, kH, kW], got ", shape_str(w.shape()));
  TB_CHECK(p.groups >= 1, ShapeError, "conv2d: groups must be >= 1, got ", p.groups);
  for (int i = 0; i < 2; ++i) {
    TB_CHECK(p.stride[i] >= 1 && p.dilation[i] >= 1 && p.padding[i] >= 0, ShapeError,
             "conv2d: stride and dilation must be >= 1 and padding >= 0");
  }
  ConvGeom g{x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3], w.shape()[0], w.shape()[2], w.shape()[3], 0, 0,
             p.groups};
  TB_CHECK(g.c % g.groups == 0 && g.o % g.groups == 0, ShapeError, "conv2d: channels ", g.c, " -> ", g.o,
           " not divisible by groups ", g.groups);
  TB_CHECK(w.shape()[1] * g.groups == g.c, ShapeError, "conv2d: weight ", shape_str(w.shape()), " expects ",
           w.shape()[1] * g.groups, " input channels but input ", shape_str(x.shape()), " has ", g.c);
  if (bias) {
    TB_CHECK(bias->dim() == 1 && bias->shape()[0] == g.o, ShapeError, "conv2d: bias must be [", g.o, "], got ",
             shape_str(bias->shape()));
  }
  g.oh = (g.h + 2 * p.padding[0] - p.dilation[0] * (g.kh - 1) - 1) / p.stride[0] + 1;
  g.ow = (g.w + 2 * p.padding[1] - p.dilation[1] * (g.kw - 1) - 1) / p.stride[1] + 1;
  TB_CHECK(g.oh >= 1 && g.ow >= 1, ShapeError, "conv2d: kernel ", g.kh, "x", g.kw, " larger than padded input ",
           shape_str(x.shape()));
  return g;
}

static int64_t pool_out(int64_t in, int64_t k, int64_t s, int64_t pad, int64_t d, bool ceil_mode) {
  int64_t span = in + 2 * pad - d * (k - 1) - 1;
  int64_t out = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
  if (ceil_mode && (out - 1) * s >= in + pad) --out;  // the last window must start inside the input
  return out;
}

PoolGeom pool2d_geom(const Tensor& x, const Pool2dParams& p) {
  TB_CHECK(x.dim() == 4 || x.dim() == 3, ShapeError, "max_pool2d: input must be [N, C, H, W] or [C, H, W], got ",
           shape_str(x.shape()));
  PoolGeom g{};
  if (x.dim() == 4) {
    g.n = x.shape()[0], g.c = x.shape()[1], g.h = x.shape()[2], g.w = x.shape()[3];
  } else {
    g.n = 1, g.c = x.shape()[0], g.h = x.shape()[1], g.w = x.shape()[2];
  }
  g.kernel = p.kernel, g.padding = p.padding, g.dilation = p.dilation;
  g.stride = (p.stride[0] == 0 && p.stride[1] == 0) ? p.kernel : p.stride;
  for (int i = 0; i < 2; ++i) {
    TB_CHECK(g.kernel[i] >= 1 && g.stride[i] >= 1 && g.dilation[i] >= 1, ShapeError,
             "max_pool2d: kernel, stride and dilation must be >= 1");
    // ONNX allows any padding below the dilated kernel (PyTorch only half the kernel); a window that
    // covers padding only gives -inf.
    const int64_t span = g.dilation[i] * (g.kernel[i] - 1) + 1;
    TB_CHECK(g.padding[i] >= 0 && g.padding[i] < span, ShapeError, "max_pool2d: padding ", g.padding[i],
             " must be below the dilated kernel size ", span);
  }
  g.oh = pool_out(g.h, g.kernel[0], g.stride[0], g.padding[0], g.dilation[0], p.ceil_mode);
  g.ow = pool_out(g.w, g.kernel[1], g.stride[1], g.padding[1], g.dilation[1], p.ceil_mode);
  TB_CHECK(g.oh >= 1 && g.ow >= 1, ShapeError, "max_pool2d: output would be empty for input ", shape_str(x.shape()));
  return g;
}

GemmGeom gemm_geom(const Tensor& a, const Tensor& b, const Tensor* c, const GemmParams& p) {
  TB_CHECK(a.dim() == 2 && b.dim() == 2, ShapeError, "gemm: A and B must be 2-D, got ", shape_str(a.shape()), " and ",
           shape_str(b.shape()));
  GemmGeom g{};
  g.m = p.trans_a ? a.shape()[1] : a.shape()[0];
  g.k = p.trans_a ? a.shape()[0] : a.shape()[1];
  int64_t kb = p.trans_b ? b.shape()[1] : b.shape()[0];
  g.n = p.trans_b ? b.shape()[0] : b.shape()[1];
  TB_CHECK(g.k == kb, ShapeError, "gemm: inner dimensions differ: A ", shape_str(a.shape()),
           p.trans_a ? " (transposed)" : "", " vs B ", shape_str(b.shape()), p.trans_b ? " (transposed)" : "");
  if (c) {
    TB_CHECK(c->dim() <= 2, ShapeError, "gemm: C must have at most 2 dims, got ", shape_str(c->shape()));
    Shape out = broadcast_shapes(c->shape(), {g.m, g.n}, "gemm (C)");
    TB_CHECK(out == Shape({g.m, g.n}), ShapeError, "gemm: C ", shape_str(c->shape()), " does not broadcast to [", g.m,
             ", ", g.n, "]");
  }
  return g;
}

MatMulGeom matmul_geom(const Tensor& a, const Tensor& b) {
  TB_CHECK(a.dim() >= 1 && b.dim() >= 1, ShapeError, "matmul: operands must have at least 1 dim, got ",
           shape_str(a.shape()), " and ", shape_str(b.shape()));
  Shape as = a.shape(), bs = b.shape();
  bool a1 = as.size() == 1, b1 = bs.size() == 1;
  if (a1) as.insert(as.begin(), 1);
  if (b1) bs.push_back(1);
  MatMulGeom g{};
  g.m = as[as.size() - 2], g.k = as.back(), g.n = bs.back();
  TB_CHECK(bs[bs.size() - 2] == g.k, ShapeError, "matmul: inner dimensions differ: ", shape_str(a.shape()), " @ ",
           shape_str(b.shape()));
  Shape abatch(as.begin(), as.end() - 2), bbatch(bs.begin(), bs.end() - 2);
  Shape batch = broadcast_shapes(abatch, bbatch, "matmul (batch dims)");
  g.batch = checked_numel(batch);
  Shape ast = broadcast_strides(abatch, batch), bst = broadcast_strides(bbatch, batch);
  Shape cs = contiguous_strides(batch);
  g.a_batch_index.resize(size_t(g.batch));
  g.b_batch_index.resize(size_t(g.batch));
  for (int64_t i = 0; i < g.batch; ++i) {
    int64_t ai = 0, bi = 0, rem = i;
    for (size_t d = 0; d < batch.size(); ++d) {
      int64_t idx = rem / cs[d];
      rem %= cs[d];
      ai += idx * ast[d];
      bi += idx * bst[d];
    }
    g.a_batch_index[size_t(i)] = ai;
    g.b_batch_index[size_t(i)] = bi;
  }
  g.out_shape = batch;
  if (!a1) g.out_shape.push_back(g.m);
  if (!b1) g.out_shape.push_back(g.n);
  return g;
}

Shape reshape_shape(const Shape& in, Shape out) {
  int64_t n = checked_numel(in);
  int64_t known = 1, neg = -1;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      TB_CHECK(neg < 0, ShapeError, "reshape: more than one -1 in ", shape_str(out));
      neg = int64_t(i);
    } else {
      TB_CHECK(out[i] >= 0, ShapeError, "reshape: negative dim in ", shape_str(out));
      known *= out[i];
    }
  }
  if (neg >= 0) {
    TB_CHECK(known != 0 && n % known == 0, ShapeError, "reshape: cannot infer -1 in ", shape_str(out), " for ",
             shape_str(in));
    out[size_t(neg)] = n / known;
  }
  TB_CHECK(checked_numel(out) == n, ShapeError, "reshape: ", shape_str(in), " (", n, " elements) cannot become ",
           shape_str(out));
  return out;
}

int64_t normalize_axis(int64_t axis, int64_t rank, std::string_view op) {
  int64_t a = axis < 0 ? axis + rank : axis;
  TB_CHECK(a >= 0 && a < std::max<int64_t>(rank, 1), ShapeError, op, ": axis ", axis, " out of range for rank ", rank);
  return a;
}

bool is_pooled_integer(DType t) { return t == DType::U8 || t == DType::I8 || t == DType::U16 || t == DType::I16; }

bool supports_dtype(Op op, DType t) {
  if (t == DType::F32 || t == DType::F16 || t == DType::BF16) return true;
  return op == Op::MaxPool2d && is_pooled_integer(t);
}

Tensor narrow_pooled(const Tensor& y_f32, DType dt) {
  Tensor y = y_f32.contiguous();
  float* p = y.data_as<float>();
  const float lowest = dt == DType::U8 || dt == DType::U16 ? 0.0f : dt == DType::I8 ? -128.0f : -32768.0f;
  for (int64_t i = 0, n = y.numel(); i < n; ++i)
    if (p[i] < lowest) p[i] = lowest;
  return y.to(dt);
}

void check_dtype(const Backend& backend, Op op, const Tensor& t) {
  TB_CHECK(t.defined(), ShapeError, op_name(op), ": undefined tensor");
  TB_CHECK(backend.supports(op, t.dtype()), UnsupportedError, "[", backend.name(), "] ", op_name(op),
           " does not support ", dtype_name(t.dtype()));
}

int64_t batch_norm_channels(const Tensor& x, const Tensor& mean, const Tensor& var, const Tensor* weight,
                            const Tensor* bias) {
  TB_CHECK(x.dim() >= 2, ShapeError, "batch_norm: input must be [N, C, ...], got ", shape_str(x.shape()));
  int64_t c = x.shape()[1];
  auto chk = [&](const Tensor* t, const char* what) {
    if (!t) return;
    TB_CHECK(t->numel() == c && t->dim() == 1, ShapeError, "batch_norm: ", what, " must be [", c, "], got ",
             shape_str(t->shape()));
  };
  chk(&mean, "running_mean");
  chk(&var, "running_var");
  chk(weight, "weight");
  chk(bias, "bias");
  return c;
}

}  // namespace tb::compute::detail
