// CPU backend: the reference for every op. GEMM (and so Linear, MatMul and Conv2d via im2col) runs
// on our packed kernel for skinny shapes and on OpenBLAS cblas_sgemm (loaded on first use, blas.h)
// for large ones, as measured in bench/; the elementwise, pooling and normalisation kernels are
// split over a std::thread pool.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <mutex>
#include <thread>

#include "compute/backend.h"
#include "compute/cpu/blas.h"
#include "compute/cpu/sgemm.h"
#include "compute/cpu/thread_pool.h"
#include "compute/shape_infer.h"
#include "tensor/checked.h"

namespace tb::compute::cpu {
namespace {

using detail::check_dtype;

/** Contiguous f32 copy (or the tensor itself when already contiguous f32). */
Tensor as_f32(const Tensor& t) {
  TB_CHECK(t.storage()->data() != nullptr, BackendError,
           "[cpu] a device tensor was passed to the CPU backend; download() it from its backend first");
  return t.dtype() == DType::F32 ? t.contiguous() : t.contiguous().to(DType::F32);
}
/** Recycles large output buffers: a fresh multi-megabyte malloc is a fresh mmap whose page faults
 *  cost as much as the op itself (seed MLP at batch 4096). Bounded; thread-safe. */
class BufferCache : public std::enable_shared_from_this<BufferCache> {
 public:
  std::shared_ptr<Storage> get(size_t nbytes) {
    if (nbytes < (size_t(1) << 16)) return Storage::allocate(nbytes, false);
    void* p = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(nbytes);
      if (it != free_.end()) {
        p = it->second;
        free_.erase(it);
        cached_ -= nbytes;
      }
    }
    if (!p) p = std::aligned_alloc(64, (nbytes + 63) / 64 * 64);
    if (!p) throw std::bad_alloc();
    auto self = shared_from_this();
    std::shared_ptr<void> keep(p, [self, nbytes](void* q) { self->put(q, nbytes); });
    return Storage::wrap(p, nbytes, keep, Storage::Kind::Heap);
  }
  ~BufferCache() {
    for (auto& [n, p] : free_) std::free(p);
  }

 private:
  void put(void* p, size_t nbytes) {
    std::lock_guard<std::mutex> lock(mu_);
    if (cached_ + nbytes > kMaxCached) {
      std::free(p);
      return;
    }
    free_.emplace(nbytes, p);
    cached_ += nbytes;
  }
  static constexpr size_t kMaxCached = size_t(256) << 20;
  std::mutex mu_;
  std::multimap<size_t, void*> free_;
  size_t cached_ = 0;
};

/** GEMM engine: TB_CPU_GEMM=own|openblas forces one (benchmarks); default picks per shape. */
int gemm_engine() {
  static const int e = [] {
    const char* v = std::getenv("TB_CPU_GEMM");
    if (v && std::string(v) == "own") return 1;
    if (v && std::string(v) == "openblas") return 2;
    return 0;
  }();
  return e;
}

/** Rounds an f32 result back to the storage dtype of the op's first input. */
Tensor to_dtype(const Tensor& t, DType d) { return d == DType::F32 ? t : t.to(d); }

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int threads) : threads_(threads), pool_(threads), cache_(std::make_shared<BufferCache>()) {}

  std::string name() const override { return "cpu"; }
  bool supports(Op op, DType dtype) const override { return detail::supports_dtype(op, dtype); }
  Tensor upload(const Tensor& host) override { return host.contiguous(); }
  Tensor download(const Tensor& t) override { return t.contiguous(); }
  bool owns(const Tensor& t) const override { return t.defined() && t.storage()->data() != nullptr; }

  Tensor gemm(const Tensor& a, const Tensor& b, const Tensor* c, const GemmParams& p) override {
    check_dtype(*this, Op::Gemm, a);
    check_dtype(*this, Op::Gemm, b);
    auto g = detail::gemm_geom(a, b, c, p);
    Tensor A = as_f32(a), B = as_f32(b);
    Tensor Y = empty({g.m, g.n});
    float* y = Y.data_as<float>();
    float beta = 0.0f;
    const bool row_bias = c && p.beta != 0.0f && c->numel() == g.n && (c->dim() == 1 || c->shape()[0] == 1);
    if (row_bias && !p.trans_a && sgemm_available() && use_own_gemm(g.m, g.n, g.k)) {
      // Linear's bias: folded into the kernel's store (no separate pass over C)
      Tensor C = as_f32(*c);
      std::vector<float> bias(C.data_as<float>(), C.data_as<float>() + g.n);
      if (p.beta != 1.0f)
        for (auto& v : bias) v *= p.beta;
      sgemm_packed(pool_, g.m, g.n, g.k, p.alpha, A.data_as<float>(), B.data_as<float>(), p.trans_b, false, y,
                   bias.data(), p.relu);
      return to_dtype(Y, a.dtype());
    }
    if (c && p.beta != 0.0f) {
      Tensor C = as_f32(*c);
      Shape st = detail::broadcast_strides(C.shape(), {g.m, g.n});
      const float* cp = C.data_as<float>();
      pool_.parallel_for(g.m, 64, [&](int64_t r0, int64_t r1) {
        for (int64_t i = r0; i < r1; ++i)
          for (int64_t j = 0; j < g.n; ++j) y[i * g.n + j] = p.beta * cp[i * st[0] + j * st[1]];
      });
      beta = 1.0f;
    }
    sgemm(p.trans_a, p.trans_b, g.m, g.n, g.k, p.alpha, A.data_as<float>(), B.data_as<float>(), beta, y);
    if (p.relu) relu_in_place(y, g.m * g.n);
    return to_dtype(Y, a.dtype());
  }

  Tensor matmul(const Tensor& a, const Tensor& b) override {
    check_dtype(*this, Op::MatMul, a);
    check_dtype(*this, Op::MatMul, b);
    auto g = detail::matmul_geom(a, b);
    Tensor A = as_f32(a), B = as_f32(b);
    Tensor Y = empty(g.out_shape);
    for (int64_t i = 0; i < g.batch; ++i) {
      sgemm(false, false, g.m, g.n, g.k, 1.0f, A.data_as<float>() + g.a_batch_index[size_t(i)] * g.m * g.k,
            B.data_as<float>() + g.b_batch_index[size_t(i)] * g.k * g.n, 0.0f, Y.data_as<float>() + i * g.m * g.n);
    }
    return to_dtype(Y, a.dtype());
  }

  Tensor add(const Tensor& a, const Tensor& b) override { return binary(Op::Add, a, b); }
  Tensor mul(const Tensor& a, const Tensor& b) override { return binary(Op::Mul, a, b); }

  Tensor relu(const Tensor& x) override {
    check_dtype(*this, Op::Relu, x);
    Tensor X = as_f32(x);
    Tensor Y = empty(X.shape());
    const float* xp = X.data_as<float>();
    float* yp = Y.data_as<float>();
    pool_.parallel_for(X.numel(), 1 << 14, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) yp[i] = relu_value(xp[i]);
    });
    return to_dtype(Y, x.dtype());
  }
  void relu_in_place(float* y, int64_t n) {
    pool_.parallel_for(n, 1 << 14, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) y[i] = relu_value(y[i]);
    });
  }

  Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor* bias, const Conv2dParams& p) override {
    check_dtype(*this, Op::Conv2d, x);
    check_dtype(*this, Op::Conv2d, w);
    auto g = detail::conv2d_geom(x, w, bias, p);
    Tensor X = as_f32(x), W = as_f32(w);
    Tensor Bv = bias ? as_f32(*bias) : Tensor();
    Tensor Y = empty({g.n, g.o, g.oh, g.ow});
    const int64_t cg = g.c / g.groups, og = g.o / g.groups;
    const int64_t kdim = cg * g.kh * g.kw, npix = g.oh * g.ow;
    const bool direct =
        g.kh == 1 && g.kw == 1 && p.stride[0] == 1 && p.stride[1] == 1 && p.padding[0] == 0 && p.padding[1] == 0;
    std::vector<float> col(direct ? 0 : size_t(kdim * npix));
    for (int64_t n = 0; n < g.n; ++n) {
      for (int64_t gi = 0; gi < g.groups; ++gi) {
        const float* xin = X.data_as<float>() + (n * g.c + gi * cg) * g.h * g.w;
        const float* src = xin;
        if (!direct) {
          im2col(xin, cg, g, p, col.data());
          src = col.data();
        }
        float* out = Y.data_as<float>() + (n * g.o + gi * og) * npix;
        sgemm(false, false, og, npix, kdim, 1.0f, W.data_as<float>() + gi * og * kdim, src, 0.0f, out);
      }
      if (bias) {
        const float* bp = Bv.data_as<float>();
        float* out = Y.data_as<float>() + n * g.o * npix;
        pool_.parallel_for(g.o, 4, [&](int64_t o0, int64_t o1) {
          for (int64_t o = o0; o < o1; ++o)
            for (int64_t i = 0; i < npix; ++i) out[o * npix + i] += bp[o];
        });
      }
    }
    return to_dtype(Y, x.dtype());
  }

  Tensor max_pool2d(const Tensor& x, const Pool2dParams& p) override {
    check_dtype(*this, Op::MaxPool2d, x);
    auto g = detail::pool2d_geom(x, p);
    Tensor X = as_f32(x);
    Shape out_shape = x.dim() == 4 ? Shape{g.n, g.c, g.oh, g.ow} : Shape{g.c, g.oh, g.ow};
    Tensor Y = empty(out_shape);
    const float* xp = X.data_as<float>();
    float* yp = Y.data_as<float>();
    pool_.parallel_for(g.n * g.c, 1, [&](int64_t p0, int64_t p1) {
      for (int64_t plane = p0; plane < p1; ++plane) {
        const float* in = xp + plane * g.h * g.w;
        float* out = yp + plane * g.oh * g.ow;
        for (int64_t oy = 0; oy < g.oh; ++oy)
          for (int64_t ox = 0; ox < g.ow; ++ox) {
            float m = -std::numeric_limits<float>::infinity();
            for (int64_t ky = 0; ky < g.kernel[0]; ++ky) {
              int64_t iy = oy * g.stride[0] - g.padding[0] + ky * g.dilation[0];
              if (iy < 0 || iy >= g.h) continue;
              for (int64_t kx = 0; kx < g.kernel[1]; ++kx) {
                int64_t ix = ox * g.stride[1] - g.padding[1] + kx * g.dilation[1];
                if (ix < 0 || ix >= g.w) continue;
                float v = in[iy * g.w + ix];
                if (v > m || std::isnan(v)) m = v;
                if (std::isnan(m)) break;
              }
            }
            out[oy * g.ow + ox] = m;
          }
      }
    });
    return detail::is_pooled_integer(x.dtype()) ? detail::narrow_pooled(Y, x.dtype()) : to_dtype(Y, x.dtype());
  }

  Tensor batch_norm(const Tensor& x, const Tensor& mean, const Tensor& var, const Tensor* weight, const Tensor* bias,
                    double eps) override {
    check_dtype(*this, Op::BatchNorm, x);
    int64_t c = detail::batch_norm_channels(x, mean, var, weight, bias);
    std::vector<float> scale(static_cast<size_t>(c)), shift(static_cast<size_t>(c));
    Tensor M = as_f32(mean), V = as_f32(var);
    Tensor Wt = weight ? as_f32(*weight) : Tensor(), Bt = bias ? as_f32(*bias) : Tensor();
    for (int64_t i = 0; i < c; ++i) {
      double s = 1.0 / std::sqrt(double(V.data_as<float>()[i]) + eps) * (weight ? Wt.data_as<float>()[i] : 1.0f);
      scale[size_t(i)] = float(s);
      shift[size_t(i)] = float((bias ? Bt.data_as<float>()[i] : 0.0f) - M.data_as<float>()[i] * s);
    }
    Tensor X = as_f32(x);
    Tensor Y = empty(X.shape());
    int64_t inner = 1;
    for (int64_t d = 2; d < X.dim(); ++d) inner *= X.shape()[size_t(d)];
    const float* xp = X.data_as<float>();
    float* yp = Y.data_as<float>();
    pool_.parallel_for(X.shape()[0] * c, std::max<int64_t>(1, 4096 / std::max<int64_t>(inner, 1)),
                       [&](int64_t r0, int64_t r1) {
                         for (int64_t r = r0; r < r1; ++r) {
                           float s = scale[size_t(r % c)], b = shift[size_t(r % c)];
                           for (int64_t i = 0; i < inner; ++i) yp[r * inner + i] = xp[r * inner + i] * s + b;
                         }
                       });
    return to_dtype(Y, x.dtype());
  }

  Tensor softmax(const Tensor& x, int64_t axis) override {
    check_dtype(*this, Op::Softmax, x);
    int64_t ax = detail::normalize_axis(axis, x.dim(), "softmax");
    Tensor X = as_f32(x);
    Tensor Y = empty(X.shape());
    int64_t outer = 1, len = x.dim() ? X.shape()[size_t(ax)] : 1, inner = 1;
    for (int64_t d = 0; d < ax; ++d) outer *= X.shape()[size_t(d)];
    for (int64_t d = ax + 1; d < X.dim(); ++d) inner *= X.shape()[size_t(d)];
    const float* xp = X.data_as<float>();
    float* yp = Y.data_as<float>();
    pool_.parallel_for(outer * inner, 256, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        int64_t base = (r / inner) * len * inner + r % inner;
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t i = 0; i < len; ++i) m = std::max(m, xp[base + i * inner]);
        double sum = 0;
        for (int64_t i = 0; i < len; ++i) {
          float e = std::exp(xp[base + i * inner] - m);
          yp[base + i * inner] = e;
          sum += e;
        }
        float inv = float(1.0 / sum);
        for (int64_t i = 0; i < len; ++i) yp[base + i * inner] *= inv;
      }
    });
    return to_dtype(Y, x.dtype());
  }

  Tensor cast(const Tensor& x, DType to) override {
    check_dtype(*this, Op::Cast, x);
    TB_CHECK(detail::supports_dtype(Op::Cast, to), UnsupportedError, "[cpu] cast: target ", dtype_name(to),
             " is not one of float32, float16, bfloat16");
    return x.contiguous().to(to).contiguous();
  }

 private:
  void sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, const float* b, float beta,
             float* c) {
    if (m == 0 || n == 0) return;
    if (k == 0) {
      for (int64_t i = 0; i < m * n; ++i) c[i] = beta == 0.0f ? 0.0f : c[i] * beta;
      return;
    }
    if (!ta && (beta == 0.0f || beta == 1.0f) && sgemm_available() && use_own_gemm(m, n, k)) {
      sgemm_packed(pool_, m, n, k, alpha, a, b, tb, beta == 1.0f, c);
      return;
    }
    blas_sgemm(ta, tb, int(m), int(n), int(k), alpha, a, ta ? int(m) : int(k), b, tb ? int(k) : int(n), beta, c, int(n),
               threads_);
  }

  /** Measured with bench/bench_compute (2 threads, AVX-512): our kernel wins on skinny products
   *  (small K or N, the MLP shapes), OpenBLAS on large square ones. */
  static bool use_own_gemm(int64_t m, int64_t n, int64_t k) {
    if (gemm_engine() != 0) return gemm_engine() == 1;
    (void)m;
    return std::min(n, k) <= 256;
  }

  void im2col(const float* x, int64_t cg, const detail::ConvGeom& g, const Conv2dParams& p, float* col) {
    const int64_t npix = g.oh * g.ow;
    pool_.parallel_for(cg * g.kh * g.kw, 4, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        int64_t ci = r / (g.kh * g.kw), ky = (r / g.kw) % g.kh, kx = r % g.kw;
        const float* plane = x + ci * g.h * g.w;
        float* dst = col + r * npix;
        for (int64_t oy = 0; oy < g.oh; ++oy) {
          int64_t iy = oy * p.stride[0] - p.padding[0] + ky * p.dilation[0];
          for (int64_t ox = 0; ox < g.ow; ++ox) {
            int64_t ix = ox * p.stride[1] - p.padding[1] + kx * p.dilation[1];
            dst[oy * g.ow + ox] = (iy >= 0 && iy < g.h && ix >= 0 && ix < g.w) ? plane[iy * g.w + ix] : 0.0f;
          }
        }
      }
    });
  }

  Tensor binary(Op op, const Tensor& a, const Tensor& b) {
    check_dtype(*this, op, a);
    check_dtype(*this, op, b);
    Shape out = detail::broadcast_shapes(a.shape(), b.shape(), op_name(op));
    Tensor A = as_f32(a), B = as_f32(b);
    Tensor Y = empty(out);
    const float* ap = A.data_as<float>();
    const float* bp = B.data_as<float>();
    float* yp = Y.data_as<float>();
    const bool is_add = op == Op::Add;
    const int64_t n = Y.numel();
    if (A.shape() == out && B.shape() == out) {
      pool_.parallel_for(n, 1 << 14, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) yp[i] = is_add ? ap[i] + bp[i] : ap[i] * bp[i];
      });
      return to_dtype(Y, a.dtype());
    }
    Shape sa = detail::broadcast_strides(A.shape(), out), sb = detail::broadcast_strides(B.shape(), out);
    Shape cs = contiguous_strides(out);
    const int64_t inner = out.empty() ? 1 : out.back();
    const int64_t ia = out.empty() ? 0 : sa.back(), ib = out.empty() ? 0 : sb.back();
    pool_.parallel_for(n / std::max<int64_t>(inner, 1), std::max<int64_t>(1, 8192 / std::max<int64_t>(inner, 1)),
                       [&](int64_t r0, int64_t r1) {
                         for (int64_t r = r0; r < r1; ++r) {
                           int64_t oa = 0, ob = 0, rem = r * inner;
                           for (size_t d = 0; d + 1 < out.size(); ++d) {
                             int64_t idx = rem / cs[d];
                             rem %= cs[d];
                             oa += idx * sa[d];
                             ob += idx * sb[d];
                           }
                           float* yr = yp + r * inner;
                           for (int64_t i = 0; i < inner; ++i) {
                             float u = ap[oa + i * ia], v = bp[ob + i * ib];
                             yr[i] = is_add ? u + v : u * v;
                           }
                         }
                       });
    return to_dtype(Y, a.dtype());
  }

  /** Uninitialised contiguous f32 tensor (every op writes all of its output). */
  Tensor empty(const Shape& shape) {
    return Tensor(cache_->get(checked_nbytes(checked_numel(shape), 4, "a CPU buffer")), DType::F32, shape,
                  contiguous_strides(shape));
  }

  int threads_;
  ThreadPool pool_;
  std::shared_ptr<BufferCache> cache_;
};

}  // namespace

std::unique_ptr<Backend> make_backend(int threads) {
  if (threads <= 0) threads = int(std::max(1u, std::thread::hardware_concurrency()));
  return std::make_unique<CpuBackend>(threads);
}

}  // namespace tb::compute::cpu
