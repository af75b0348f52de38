#include "nn/cpu_ops.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace tb::nn::cpu {
namespace {

Tensor as_f32(const Tensor& t) { return t.to(DType::F32).contiguous(); }

const float* fptr(const Tensor& t) { return t.data_as<const float>(); }

int64_t wrap_dim(int64_t d, int64_t rank, const char* op) {
  int64_t r = d < 0 ? d + rank : d;
  TB_CHECK(r >= 0 && r < std::max<int64_t>(rank, 1), ShapeError, op, ": dim ", d, " out of range for rank ", rank);
  return r;
}

}  // namespace

Tensor linear(const Tensor& x_in, const Tensor& w_in, const Tensor& b_in) {
  TB_CHECK(w_in.dim() == 2, ShapeError, "linear: weight must be 2-D [out, in], got ", w_in.describe());
  TB_CHECK(x_in.dim() >= 1, ShapeError, "linear: input must have at least 1 dim");
  const int64_t out = w_in.shape()[0], in = w_in.shape()[1];
  TB_CHECK(x_in.shape().back() == in, ShapeError, "linear: input ", x_in.describe(), " has ", x_in.shape().back(),
           " features but weight ", w_in.describe(), " expects ", in);
  if (b_in.defined())
    TB_CHECK(b_in.numel() == out, ShapeError, "linear: bias ", b_in.describe(), " needs ", out, " elements");
  Tensor x = as_f32(x_in), w = as_f32(w_in);
  Tensor b = b_in.defined() ? as_f32(b_in) : Tensor();
  const int64_t rows = in == 0 ? 0 : x.numel() / in;
  Shape oshape = x.shape();
  oshape.back() = out;
  Tensor y = Tensor::zeros(DType::F32, oshape);
  const float *xp = fptr(x), *wp = fptr(w), *bp = b.defined() ? fptr(b) : nullptr;
  float* yp = y.data_as<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = xp + r * in;
    for (int64_t o = 0; o < out; ++o) {
      const float* wr = wp + o * in;
      double acc = bp ? bp[o] : 0.0;
      for (int64_t i = 0; i < in; ++i) acc += double(xr[i]) * double(wr[i]);
      yp[r * out + o] = float(acc);
    }
  }
  return y;
}

Tensor relu(const Tensor& x_in) {
  Tensor x = as_f32(x_in);
  Tensor y = Tensor::zeros(DType::F32, x.shape());
  const float* xp = fptr(x);
  float* yp = y.data_as<float>();
  for (int64_t i = 0; i < x.numel(); ++i) yp[i] = xp[i] > 0.f ? xp[i] : (std::isnan(xp[i]) ? xp[i] : 0.f);
  return y;
}

Tensor conv2d(const Tensor& x_in, const Tensor& w_in, const Tensor& b_in, int64_t sh, int64_t sw, int64_t ph,
              int64_t pw, int64_t dh, int64_t dw, int64_t groups) {
  TB_CHECK(x_in.dim() == 4, ShapeError, "conv2d: input must be 4-D (N, C, H, W), got ", x_in.describe());
  TB_CHECK(w_in.dim() == 4, ShapeError, "conv2d: weight must be 4-D (O, C/groups, kH, kW), got ", w_in.describe());
  TB_CHECK(groups >= 1 && sh >= 1 && sw >= 1 && dh >= 1 && dw >= 1 && ph >= 0 && pw >= 0, ShapeError,
           "conv2d: invalid stride/padding/dilation/groups");
  const int64_t N = x_in.shape()[0], C = x_in.shape()[1], H = x_in.shape()[2], W = x_in.shape()[3];
  const int64_t O = w_in.shape()[0], Cg = w_in.shape()[1], KH = w_in.shape()[2], KW = w_in.shape()[3];
  TB_CHECK(C == Cg * groups, ShapeError, "conv2d: input has ", C, " channels but weight ", w_in.describe(),
           " with groups=", groups, " expects ", Cg * groups);
  TB_CHECK(O % groups == 0, ShapeError, "conv2d: out channels ", O, " not divisible by groups ", groups);
  if (b_in.defined()) TB_CHECK(b_in.numel() == O, ShapeError, "conv2d: bias needs ", O, " elements");
  const int64_t OH = (H + 2 * ph - dh * (KH - 1) - 1) / sh + 1;
  const int64_t OW = (W + 2 * pw - dw * (KW - 1) - 1) / sw + 1;
  TB_CHECK(OH > 0 && OW > 0, ShapeError, "conv2d: input ", x_in.describe(), " is smaller than the kernel ",
           w_in.describe());
  Tensor x = as_f32(x_in), w = as_f32(w_in);
  Tensor b = b_in.defined() ? as_f32(b_in) : Tensor();
  Tensor y = Tensor::zeros(DType::F32, {N, O, OH, OW});
  const float *xp = fptr(x), *wp = fptr(w), *bp = b.defined() ? fptr(b) : nullptr;
  float* yp = y.data_as<float>();
  const int64_t Og = O / groups;
  std::vector<double> acc(size_t(OH * OW));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o) {
      const int64_t g = o / Og;
      std::fill(acc.begin(), acc.end(), bp ? double(bp[o]) : 0.0);
      for (int64_t c = 0; c < Cg; ++c) {
        const float* xc = xp + ((n * C) + g * Cg + c) * H * W;
        const float* wc = wp + ((o * Cg) + c) * KH * KW;
        for (int64_t ky = 0; ky < KH; ++ky)
          for (int64_t kx = 0; kx < KW; ++kx) {
            const double wv = wc[ky * KW + kx];
            for (int64_t oy = 0; oy < OH; ++oy) {
              const int64_t iy = oy * sh - ph + ky * dh;
              if (iy < 0 || iy >= H) continue;
              for (int64_t ox = 0; ox < OW; ++ox) {
                const int64_t ix = ox * sw - pw + kx * dw;
                if (ix < 0 || ix >= W) continue;
                acc[size_t(oy * OW + ox)] += wv * double(xc[iy * W + ix]);
              }
            }
          }
      }
      float* yo = yp + (n * O + o) * OH * OW;
      for (int64_t i = 0; i < OH * OW; ++i) yo[i] = float(acc[size_t(i)]);
    }
  return y;
}

Tensor max_pool2d(const Tensor& x_in, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
  TB_CHECK(x_in.dim() == 4 || x_in.dim() == 3, ShapeError, "max_pool2d: input must be (N, C, H, W) or (C, H, W), got ",
           x_in.describe());
  TB_CHECK(kh >= 1 && kw >= 1 && sh >= 1 && sw >= 1 && ph >= 0 && pw >= 0 && ph * 2 <= kh && pw * 2 <= kw, ShapeError,
           "max_pool2d: invalid kernel/stride/padding (padding must be at most half the kernel)");
  Tensor x = as_f32(x_in);
  const int64_t H = x.shape()[x.dim() - 2], W = x.shape()[x.dim() - 1];
  const int64_t planes = (H * W) == 0 ? 0 : x.numel() / (H * W);
  const int64_t OH = (H + 2 * ph - kh) / sh + 1, OW = (W + 2 * pw - kw) / sw + 1;
  TB_CHECK(OH > 0 && OW > 0, ShapeError, "max_pool2d: input ", x_in.describe(), " smaller than kernel ", kh, "x", kw);
  Shape os = x.shape();
  os[os.size() - 2] = OH;
  os[os.size() - 1] = OW;
  Tensor y = Tensor::zeros(DType::F32, os);
  const float* xp = fptr(x);
  float* yp = y.data_as<float>();
  for (int64_t p = 0; p < planes; ++p)
    for (int64_t oy = 0; oy < OH; ++oy)
      for (int64_t ox = 0; ox < OW; ++ox) {
        float m = -std::numeric_limits<float>::infinity();
        bool nan = false;
        for (int64_t ky = 0; ky < kh; ++ky) {
          const int64_t iy = oy * sh - ph + ky;
          if (iy < 0 || iy >= H) continue;
          for (int64_t kx = 0; kx < kw; ++kx) {
            const int64_t ix = ox * sw - pw + kx;
            if (ix < 0 || ix >= W) continue;
            const float v = xp[(p * H + iy) * W + ix];
            if (std::isnan(v)) nan = true;
            m = std::max(m, v);
          }
        }
        yp[(p * OH + oy) * OW + ox] = nan ? std::numeric_limits<float>::quiet_NaN() : m;
      }
  return y;
}

Tensor batch_norm(const Tensor& x_in, const Tensor& mean_in, const Tensor& var_in, const Tensor& w_in,
                  const Tensor& b_in, double eps) {
  TB_CHECK(x_in.dim() >= 2, ShapeError, "batch_norm: input must be (N, C, ...), got ", x_in.describe());
  const int64_t N = x_in.shape()[0], C = x_in.shape()[1];
  const int64_t inner = (N * C) == 0 ? 0 : x_in.numel() / (N * C);
  TB_CHECK(mean_in.numel() == C && var_in.numel() == C, ShapeError, "batch_norm: running stats need ", C,
           " elements, got ", mean_in.describe(), " and ", var_in.describe());
  if (w_in.defined()) TB_CHECK(w_in.numel() == C, ShapeError, "batch_norm: weight needs ", C, " elements");
  if (b_in.defined()) TB_CHECK(b_in.numel() == C, ShapeError, "batch_norm: bias needs ", C, " elements");
  Tensor x = as_f32(x_in), mean = as_f32(mean_in), var = as_f32(var_in);
  Tensor w = w_in.defined() ? as_f32(w_in) : Tensor(), b = b_in.defined() ? as_f32(b_in) : Tensor();
  Tensor y = Tensor::zeros(DType::F32, x.shape());
  const float* xp = fptr(x);
  float* yp = y.data_as<float>();
  for (int64_t c = 0; c < C; ++c) {
    // torch's CPU kernel folds into alpha = w / sqrt(var + eps), beta = b - mean * alpha (in float).
    const float invstd = float(1.0 / std::sqrt(double(fptr(var)[c]) + eps));
    const float alpha = w.defined() ? fptr(w)[c] * invstd : invstd;
    const float beta = (b.defined() ? fptr(b)[c] : 0.f) - fptr(mean)[c] * alpha;
    for (int64_t n = 0; n < N; ++n) {
      const int64_t base = (n * C + c) * inner;
      for (int64_t i = 0; i < inner; ++i) yp[base + i] = xp[base + i] * alpha + beta;
    }
  }
  return y;
}

Tensor flatten(const Tensor& x, int64_t start_dim, int64_t end_dim) {
  const int64_t rank = x.dim();
  if (rank == 0) return x.reshape({1});
  const int64_t s = wrap_dim(start_dim, rank, "flatten"), e = wrap_dim(end_dim, rank, "flatten");
  TB_CHECK(s <= e, ShapeError, "flatten: start_dim ", start_dim, " after end_dim ", end_dim);
  Shape out;
  for (int64_t i = 0; i < s; ++i) out.push_back(x.shape()[size_t(i)]);
  int64_t m = 1;
  for (int64_t i = s; i <= e; ++i) m *= x.shape()[size_t(i)];
  out.push_back(m);
  for (int64_t i = e + 1; i < rank; ++i) out.push_back(x.shape()[size_t(i)]);
  return x.reshape(out);
}

Tensor softmax(const Tensor& x_in, int64_t dim) {
  Tensor x = as_f32(x_in);
  const int64_t rank = x.dim();
  if (rank == 0) return Tensor::from_vector<float>(DType::F32, {}, std::vector<float>{1.f});
  const int64_t d = wrap_dim(dim, rank, "softmax");
  int64_t outer = 1, inner = 1;
  const int64_t len = x.shape()[size_t(d)];
  for (int64_t i = 0; i < d; ++i) outer *= x.shape()[size_t(i)];
  for (int64_t i = d + 1; i < rank; ++i) inner *= x.shape()[size_t(i)];
  Tensor y = Tensor::zeros(DType::F32, x.shape());
  const float* xp = fptr(x);
  float* yp = y.data_as<float>();
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      const int64_t base = o * len * inner + i;
      float m = -std::numeric_limits<float>::infinity();
      for (int64_t k = 0; k < len; ++k) m = std::max(m, xp[base + k * inner]);
      double sum = 0;
      for (int64_t k = 0; k < len; ++k) sum += std::exp(double(xp[base + k * inner]) - m);
      for (int64_t k = 0; k < len; ++k) yp[base + k * inner] = float(std::exp(double(xp[base + k * inner]) - m) / sum);
    }
  return y;
}

}  // namespace tb::nn::cpu
