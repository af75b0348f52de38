// Our own packed SGEMM for row-major C = alpha * A @ op(B) (+ C), A not transposed. Register-blocked
// micro-kernel (MR rows x 16 columns) compiled for AVX-512 and for AVX2+FMA, chosen at run time.
// It beats OpenBLAS on the skinny shapes of small networks (K or N <= a few hundred: the seed MLP),
// while OpenBLAS stays faster on large square products; cpu_backend.cpp picks per shape (see bench/).
#pragma once

#include <cstdint>

#include "compute/cpu/thread_pool.h"

namespace tb::compute::cpu {

/** The relu op's value rule, also applied by the fused GEMM: NaN stays NaN, -0 becomes +0. */
inline float relu_value(float v) { return v > 0.0f || v != v ? v : 0.0f; }

/** True when this CPU has a kernel (AVX2+FMA or AVX-512). */
bool sgemm_available();
/** C[M,N] = alpha * A[M,K] @ (trans_b ? B[N,K]^T : B[K,N]) + (accumulate ? C : 0) + col_bias[j]
 *  (col_bias may be null), then max(0, C) when relu; lda = K, ldb as packed row-major, ldc = N.
 *  Requires sgemm_available(). */
void sgemm_packed(ThreadPool& pool, int64_t m, int64_t n, int64_t k, float alpha, const float* a, const float* b,
                  bool trans_b, bool accumulate, float* c, const float* col_bias = nullptr, bool relu = false);

}  // namespace tb::compute::cpu
