/*
 * Matrix multiplication for the kernels: a thin wrapper over OpenBLAS's
 * cblas_sgemm, so the rest of lib/ does not depend on the BLAS interface.
 * This is the only file that calls OpenBLAS.
 */
#include <config.h>

#include <cblas.h>

#include "internal.h"

void rn_sgemm(int m, int n, int k, const float *a, int lda, const float *b,
              int ldb, float *c, int ldc, bool accumulate) {
    // An empty product leaves C alone, or clears it when overwriting;
    // BLAS implementations differ on what they accept for k == 0.
    if (m <= 0 || n <= 0) {
        return;
    }
    if (k <= 0) {
        if (!accumulate) {
            for (int i = 0; i < m; i++) {
                for (int j = 0; j < n; j++) {
                    c[(size_t)i * ldc + j] = 0.0f;
                }
            }
        }
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f,
                a, lda, b, ldb, accumulate ? 1.0f : 0.0f, c, ldc);
}

void resnet_set_threads(int n) {
    openblas_set_num_threads(n > 0 ? n : 1);
}
