#include "compute/cpu/blas.h"

#include <cblas.h>
#include <dlfcn.h>

#include <atomic>
#include <mutex>

#ifndef TB_OPENBLAS_PATH
#define TB_OPENBLAS_PATH "libopenblas.so.0"
#endif

namespace tb::compute::cpu {
namespace {

using SgemmFn = decltype(&cblas_sgemm);
using SetThreadsFn = void (*)(int);

struct Blas {
  SgemmFn sgemm = nullptr;
  SetThreadsFn set_threads = nullptr;
};

std::atomic<bool> g_loaded{false};

const Blas& blas() {
  static Blas b;
  static std::once_flag once;
  std::call_once(once, [] {
    // The path CMake found at configure time, then the soname (a library moved since the build).
    for (const char* name : {TB_OPENBLAS_PATH, "libopenblas.so.0"}) {
      void* h = ::dlopen(name, RTLD_NOW | RTLD_LOCAL);
      if (!h) continue;
      b.sgemm = reinterpret_cast<SgemmFn>(::dlsym(h, "cblas_sgemm"));
      b.set_threads = reinterpret_cast<SetThreadsFn>(::dlsym(h, "openblas_set_num_threads"));
      if (b.sgemm) break;
      b = Blas{};
    }
    g_loaded = b.sgemm != nullptr;
  });
  return b;
}

/** The product without OpenBLAS: correct, not fast. */
void loop_sgemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* a, int lda, const float* b, int ldb,
                float beta, float* c, int ldc) {
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      double s = 0;
      for (int p = 0; p < k; ++p)
        s += double(ta ? a[p * lda + i] : a[i * lda + p]) * double(tb ? b[j * ldb + p] : b[p * ldb + j]);
      float& out = c[i * ldc + j];
      out = float(alpha * s) + (beta == 0.0f ? 0.0f : beta * out);
    }
}

}  // namespace

void blas_sgemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* a, int lda, const float* b, int ldb,
                float beta, float* c, int ldc, int threads) {
  const Blas& bl = blas();
  if (!bl.sgemm) return loop_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  if (bl.set_threads) bl.set_threads(threads);
  bl.sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b,
           ldb, beta, c, ldc);
}

bool blas_loaded() { return g_loaded; }

}  // namespace tb::compute::cpu
