// OpenBLAS, loaded on first use. Its library constructor starts a pool of worker threads and reserves
// their buffers, which a process that never multiplies large matrices (inspect, convert, diff) should
// not pay for, and which hangs that process at exit when its address space is limited (ulimit -v).
#pragma once

namespace tb::compute::cpu {

/** Row-major C = alpha * op(A) * op(B) + beta * C through OpenBLAS's cblas_sgemm with `threads`
 *  threads; loads OpenBLAS on the first call. Without OpenBLAS (not loadable) a plain loop computes
 *  the same product, slowly. */
void blas_sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda, const float* b,
                int ldb, float beta, float* c, int ldc, int threads);

/** Whether OpenBLAS is loaded in this process (it is only after a blas_sgemm call). */
bool blas_loaded();

}  // namespace tb::compute::cpu
