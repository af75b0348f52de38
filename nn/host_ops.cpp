#include "nn/host_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "compute/shape_infer.h"
#include "tensor/checked.h"

namespace tb::nn::host {
namespace {

// Kernels compute in double and round once to the input's dtype: +, -, *, / of float32 values then
// give exactly float32's results, and float64 models keep their precision.
std::vector<double> values(const Tensor& x, const char* what) {
  TB_CHECK(is_floating(x.dtype()), UnsupportedError, what, " computes on floating-point tensors, not ",
           dtype_name(x.dtype()), " (", x.describe(), ")");
  return x.to(DType::F64).contiguous().to_vector<double>();
}

Tensor finish(const std::vector<double>& v, const Shape& shape, DType dtype) {
  return Tensor::from_vector(DType::F64, shape, v).to(dtype);
}

}  // namespace

Tensor map(const Tensor& x, const std::function<double(double)>& fn, const char* what) {
  std::vector<double> v = values(x, what);
  for (double& f : v) f = fn(f);
  return finish(v, x.shape(), x.dtype());
}

Tensor arith(const Tensor& a, const Tensor& b, Arith op, const char* what) {
  const Shape shape = compute::detail::broadcast_shapes(a.shape(), b.shape(), what);
  const std::vector<double> va = values(a, what), vb = values(b, what);
  const size_t r = shape.size();
  // Element strides of a and b in the output's index space (0 along broadcast dims).
  const Shape sa = compute::detail::broadcast_strides(a.shape(), shape),
              sb = compute::detail::broadcast_strides(b.shape(), shape);
  int64_t n = 1;
  for (int64_t d : shape) n = checked_mul(n, d, what);
  std::vector<double> out(static_cast<size_t>(n));
  std::vector<int64_t> idx(r, 0);
  int64_t ia = 0, ib = 0;
  for (int64_t k = 0; k < n; ++k) {
    const double x = va[size_t(ia)], y = vb[size_t(ib)];
    double z = 0;
    switch (op) {
      case Arith::Add: z = x + y; break;
      case Arith::Sub: z = x - y; break;
      case Arith::Mul: z = x * y; break;
      case Arith::Div: z = x / y; break;
    }
    out[size_t(k)] = z;
    for (size_t d = r; d-- > 0;) {  // odometer step
      ia += sa[d], ib += sb[d];
      if (++idx[d] < shape[d]) break;
      ia -= sa[d] * shape[d], ib -= sb[d] * shape[d];
      idx[d] = 0;
    }
  }
  return finish(out, shape, a.dtype());
}

int64_t Window2d::out_size(int dim, int64_t n) const {
  const int64_t span = dilation[size_t(dim)] * (kernel[size_t(dim)] - 1) + 1;
  const int64_t padded = n + pads[size_t(dim)] + pads[size_t(dim) + 2];
  TB_CHECK(padded >= span, ShapeError, "pooling: the window (", span, ") is larger than the padded input (", padded,
           ")");
  const int64_t s = stride[size_t(dim)];
  int64_t out = ceil_mode ? (padded - span + s - 1) / s + 1 : (padded - span) / s + 1;
  // PyTorch and ONNX drop a last window that would start in the end padding.
  if (ceil_mode && (out - 1) * s >= n + pads[size_t(dim)]) --out;
  return out;
}

Tensor avg_pool2d(const Tensor& x, const Window2d& w, bool count_include_pad) {
  TB_CHECK(x.dim() == 4, ShapeError, "AveragePool expects (N, C, H, W) input, got ", x.describe());
  const std::vector<double> v = values(x, "AveragePool");
  const int64_t N = x.shape()[0], C = x.shape()[1], H = x.shape()[2], W = x.shape()[3];
  const int64_t OH = w.out_size(0, H), OW = w.out_size(1, W);
  std::vector<double> out(size_t(checked_mul(checked_mul(N * C, OH, "AveragePool"), OW, "AveragePool")));
  for (int64_t nc = 0; nc < N * C; ++nc)
    for (int64_t oy = 0; oy < OH; ++oy)
      for (int64_t ox = 0; ox < OW; ++ox) {
        double sum = 0;
        int64_t inside = 0, padded = 0;
        for (int64_t ky = 0; ky < w.kernel[0]; ++ky) {
          const int64_t y = oy * w.stride[0] - w.pads[0] + ky * w.dilation[0];
          if (y >= H + w.pads[2]) continue;
          for (int64_t kx = 0; kx < w.kernel[1]; ++kx) {
            const int64_t xx = ox * w.stride[1] - w.pads[1] + kx * w.dilation[1];
            if (xx >= W + w.pads[3]) continue;
            ++padded;
            if (y < 0 || y >= H || xx < 0 || xx >= W) continue;
            ++inside;
            sum += v[size_t((nc * H + y) * W + xx)];
          }
        }
        const int64_t div = count_include_pad ? padded : inside;
        out[size_t((nc * OH + oy) * OW + ox)] = div ? sum / double(div) : 0.0;
      }
  return finish(out, {N, C, OH, OW}, x.dtype());
}

Tensor global_avg_pool(const Tensor& x) {
  TB_CHECK(x.dim() >= 3, ShapeError, "GlobalAveragePool expects (N, C, ...) input with spatial dims, got ",
           x.describe());
  const std::vector<double> v = values(x, "GlobalAveragePool");
  const int64_t NC = x.shape()[0] * x.shape()[1];
  const int64_t plane = NC ? x.numel() / NC : 0;
  TB_CHECK(plane > 0 || NC == 0, ShapeError, "GlobalAveragePool of an empty plane: ", x.describe());
  std::vector<double> out(static_cast<size_t>(NC));
  for (int64_t i = 0; i < NC; ++i) {
    double sum = 0;  // the mean in double, rounded once
    for (int64_t j = 0; j < plane; ++j) sum += v[size_t(i * plane + j)];
    out[size_t(i)] = sum / double(plane);
  }
  Shape shape = x.shape();
  for (size_t d = 2; d < shape.size(); ++d) shape[d] = 1;
  return finish(out, shape, x.dtype());
}

Tensor pad2d(const Tensor& x, const std::array<int64_t, 4>& pads, double value) {
  TB_CHECK(x.dim() == 4, ShapeError, "pad: expects (N, C, H, W) input, got ", x.describe());
  for (int64_t p : pads) TB_CHECK(p >= 0, ShapeError, "pad: negative padding ", p);
  const int64_t N = x.shape()[0], C = x.shape()[1], H = x.shape()[2], W = x.shape()[3];
  const int64_t PH = H + pads[0] + pads[2], PW = W + pads[1] + pads[3];
  Tensor fill = Tensor::from_vector(DType::F64, {}, std::vector<double>{value}).to(x.dtype());
  Tensor out = Tensor::zeros(x.dtype(), {N, C, PH, PW});
  const size_t es = x.itemsize();
  uint8_t* o = out.data();
  for (int64_t i = 0; i < out.numel(); ++i) std::memcpy(o + size_t(i) * es, fill.data(), es);
  Tensor src = x.contiguous();
  const uint8_t* s = src.data();
  for (int64_t nc = 0; nc < N * C; ++nc)
    for (int64_t y = 0; y < H; ++y)
      std::memcpy(o + size_t(((nc * PH + y + pads[0]) * PW + pads[1])) * es, s + size_t((nc * H + y) * W) * es,
                  size_t(W) * es);
  return out;
}

Tensor concat(const std::vector<Tensor>& xs, int64_t axis) {
  TB_CHECK(!xs.empty(), ShapeError, "Concat of no tensors");
  const Tensor& first = xs.front();
  axis = compute::detail::normalize_axis(axis, first.dim(), "Concat");
  Shape shape = first.shape();
  shape[size_t(axis)] = 0;
  for (const Tensor& t : xs) {
    TB_CHECK(t.dtype() == first.dtype() && t.dim() == first.dim(), ShapeError, "Concat: ", t.describe(),
             " does not match ", first.describe());
    for (int64_t d = 0; d < t.dim(); ++d)
      TB_CHECK(d == axis || t.shape()[size_t(d)] == first.shape()[size_t(d)], ShapeError, "Concat along ", axis, ": ",
               t.describe(), " does not match ", first.describe());
    shape[size_t(axis)] += t.shape()[size_t(axis)];
  }
  Tensor out = Tensor::zeros(first.dtype(), shape);
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= shape[size_t(d)];
  for (int64_t d = axis + 1; d < first.dim(); ++d) inner *= shape[size_t(d)];
  const size_t es = first.itemsize();
  const size_t row = size_t(shape[size_t(axis)] * inner) * es;
  size_t at = 0;
  for (const Tensor& t : xs) {
    Tensor c = t.contiguous();
    const size_t part = size_t(t.shape()[size_t(axis)] * inner) * es;
    for (int64_t o = 0; o < outer; ++o)
      std::memcpy(out.data() + size_t(o) * row + at, c.data() + size_t(o) * part, part);
    at += part;
  }
  return out;
}

Tensor log_softmax(const Tensor& x, int64_t axis) {
  axis = compute::detail::normalize_axis(axis, x.dim(), "LogSoftmax");
  std::vector<double> v = values(x, "LogSoftmax");
  int64_t outer = 1, inner = 1;
  const int64_t n = x.shape()[size_t(axis)];
  for (int64_t d = 0; d < axis; ++d) outer *= x.shape()[size_t(d)];
  for (int64_t d = axis + 1; d < x.dim(); ++d) inner *= x.shape()[size_t(d)];
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      auto at = [&](int64_t k) -> double& { return v[size_t((o * n + k) * inner + i)]; };
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t k = 0; k < n; ++k) mx = std::max(mx, at(k));
      double sum = 0;
      for (int64_t k = 0; k < n; ++k) sum += std::exp(at(k) - mx);
      const double lse = std::log(sum);
      for (int64_t k = 0; k < n; ++k) at(k) = at(k) - mx - lse;
    }
  return finish(v, x.shape(), x.dtype());
}

}  // namespace tb::nn::host
