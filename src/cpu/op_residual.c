/* Residual sum: out = a + b. */
#include "cpu/ops.h"
#include "cpu/vec.h"

// a (N), b (N) -> out (N)
void mn_residual_forward(float *out, const float *a, const float *b, size_t N, int threads) {
    #pragma omp parallel for schedule(static) num_threads(threads) if (N >= MN_PAR_MIN_ELEMS)
    for (size_t i = 0; i < N; i++) {
        out[i] = a[i] + b[i];
    }
}

// dout (N) -> da (N) +=, db (N) += ; db may be NULL (one-sided accumulate)
void mn_residual_backward(float *da, float *db, const float *dout, size_t N, int threads) {
    if (db == NULL) {
        #pragma omp parallel for schedule(static) num_threads(threads) if (N >= MN_PAR_MIN_ELEMS)
        for (size_t i = 0; i < N; i++) {
            da[i] += dout[i];
        }
        return;
    }
    #pragma omp parallel for schedule(static) num_threads(threads) if (N >= MN_PAR_MIN_ELEMS)
    for (size_t i = 0; i < N; i++) {
        da[i] += dout[i];
        db[i] += dout[i];
    }
}
