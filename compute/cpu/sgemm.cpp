#include "compute/cpu/sgemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>

namespace tb::compute::cpu {
namespace {

typedef float v16 __attribute__((vector_size(64)));
constexpr int64_t NR = 16, KC = 256, NC = 512;

template <int MR>
inline __attribute__((always_inline)) void micro(int64_t kc, const float* const* arow, const float* bp, float* c,
                                                 int64_t ldc, int mr, int nr, float alpha, bool acc_c,
                                                 const float* bias) {
  v16 acc[MR];
  for (int r = 0; r < MR; ++r) acc[r] = v16{};
  for (int64_t k = 0; k < kc; ++k) {
    v16 b;
    std::memcpy(&b, bp + k * NR, sizeof b);
    for (int r = 0; r < MR; ++r) acc[r] += arow[r][k] * b;
  }
  for (int r = 0; r < mr; ++r) {
    float* crow = c + r * ldc;
    if (nr == NR) {
      v16 old = v16{};
      if (acc_c) {
        std::memcpy(&old, crow, sizeof old);
      } else if (bias) {
        std::memcpy(&old, bias, sizeof old);
      }
      v16 out = old + alpha * acc[r];
      std::memcpy(crow, &out, sizeof out);
    } else {
      for (int j = 0; j < nr; ++j) crow[j] = (acc_c ? crow[j] : bias ? bias[j] : 0.0f) + alpha * acc[r][j];
    }
  }
}

struct Job {
  int64_t m, n, k, j0, k0, kc, strips;
  float alpha;
  const float* a;
  const float* bp;
  bool acc_c;
  float* c;
  const float* bias;
  bool relu;  // on the last K block only
};

/** Row blocks [b0, b1) of one packed (k, n) panel. */
template <int MR>
inline __attribute__((always_inline)) void blocks(const Job& J, int64_t b0, int64_t b1) {
  for (int64_t blk = b0; blk < b1; ++blk) {
    const int64_t i0 = blk * MR;
    const int mr = int(std::min<int64_t>(MR, J.m - i0));
    const float* arow[MR];
    for (int r = 0; r < MR; ++r) arow[r] = J.a + (i0 + std::min(r, mr - 1)) * J.k + J.k0;
    for (int64_t s = 0; s < J.strips; ++s) {
      const int64_t jb = J.j0 + s * NR;
      const int nr = int(std::min(NR, J.n - jb));
      float* ct = J.c + i0 * J.n + jb;
      micro<MR>(J.kc, arow, J.bp + s * J.kc * NR, ct, J.n, mr, nr, J.alpha, J.acc_c, J.bias ? J.bias + jb : nullptr);
      if (J.relu)  // on the tile just stored (still in L1)
        for (int r = 0; r < mr; ++r)
          for (int j = 0; j < nr; ++j) ct[r * J.n + j] = relu_value(ct[r * J.n + j]);
    }
  }
}

__attribute__((target("avx512f"))) void blocks_avx512(const Job& J, int64_t b0, int64_t b1) { blocks<12>(J, b0, b1); }
__attribute__((target("avx2,fma"))) void blocks_avx2(const Job& J, int64_t b0, int64_t b1) { blocks<6>(J, b0, b1); }

void run(int mr_max, void (*kernel)(const Job&, int64_t, int64_t), ThreadPool& pool, int64_t m, int64_t n, int64_t k,
         float alpha, const float* a, const float* b, bool trans_b, bool accumulate, float* c, const float* bias,
         bool relu) {
  const int64_t nc_max = std::min(n, NC);
  const int64_t strips_max = (nc_max + NR - 1) / NR;
  std::unique_ptr<float, decltype(&std::free)> packed(
      static_cast<float*>(std::aligned_alloc(64, size_t(strips_max * KC * NR * 4 + 64))), &std::free);
  float* bp = packed.get();
  for (int64_t j0 = 0; j0 < n; j0 += NC) {
    const int64_t nc = std::min(NC, n - j0), strips = (nc + NR - 1) / NR;
    for (int64_t k0 = 0; k0 < k; k0 += KC) {
      const int64_t kc = std::min(KC, k - k0);
      // pack B[k0:k0+kc, j0:j0+nc] as strips of [kc][16], zero-padded on the right
      pool.parallel_for(strips, 4, [&](int64_t s0, int64_t s1) {
        for (int64_t s = s0; s < s1; ++s) {
          float* dst = bp + s * kc * NR;
          const int64_t jb = j0 + s * NR, w = std::min(NR, n - jb);
          for (int64_t kk = 0; kk < kc; ++kk) {
            float* d = dst + kk * NR;
            if (trans_b) {
              for (int64_t j = 0; j < w; ++j) d[j] = b[(jb + j) * k + k0 + kk];
            } else {
              std::memcpy(d, b + (k0 + kk) * n + jb, size_t(w) * 4);
            }
            for (int64_t j = w; j < NR; ++j) d[j] = 0.0f;
          }
        }
      });
      Job job{m, n, k, j0, k0, kc, strips, alpha, a, bp, accumulate || k0 > 0, c, bias, relu && k0 + kc >= k};
      pool.parallel_for((m + mr_max - 1) / mr_max, 8, [&](int64_t b0, int64_t b1) { kernel(job, b0, b1); });
    }
  }
}

int level() {
  static const int l = [] {
    __builtin_cpu_init();
    if (std::getenv("TB_NO_OWN_SGEMM")) return 0;
    if (__builtin_cpu_supports("avx512f")) return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
    return 0;
  }();
  return l;
}

}  // namespace

bool sgemm_available() { return level() > 0; }

void sgemm_packed(ThreadPool& pool, int64_t m, int64_t n, int64_t k, float alpha, const float* a, const float* b,
                  bool trans_b, bool accumulate, float* c, const float* col_bias, bool relu) {
  if (level() == 2) {
    run(12, blocks_avx512, pool, m, n, k, alpha, a, b, trans_b, accumulate, c, col_bias, relu);
  } else {
    run(6, blocks_avx2, pool, m, n, k, alpha, a, b, trans_b, accumulate, c, col_bias, relu);
  }
}

}  // namespace tb::compute::cpu
