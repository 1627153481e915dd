/* Residual sum: out = a + b. */
#include "cpu/ops.h"
#include "cpu/team.h"
#include "cpu/vec.h"

static void residual_sum_part(float *out, const float *a, const float *b, size_t N, int t, int nt) {
    size_t i0, i1;
    mn_share(N, 1, t, nt, &i0, &i1);
    for (size_t i = i0; i < i1; i++) {
        out[i] = a[i] + b[i];
    }
}

// a (N), b (N) -> out (N)
void mn_residual_forward(float *out, const float *a, const float *b, size_t N, int threads) {
    MN_RUN_TEAM(mn_team(threads, (double)N, MN_PAR_MIN_ELEMS), residual_sum_part, out, a, b, N);
}

static void residual_backward_part(float *da, float *db, const float *dout, size_t N, int t, int nt) {
    size_t i0, i1;
    mn_share(N, 1, t, nt, &i0, &i1);
    if (db == NULL) {
        for (size_t i = i0; i < i1; i++) {
            da[i] += dout[i];
        }
        return;
    }
    for (size_t i = i0; i < i1; i++) {
        da[i] += dout[i];
        db[i] += dout[i];
    }
}

// dout (N) -> da (N) +=, db (N) += ; db may be NULL (one-sided accumulate)
void mn_residual_backward(float *da, float *db, const float *dout, size_t N, int threads) {
    MN_RUN_TEAM(mn_team(threads, (double)N, MN_PAR_MIN_ELEMS), residual_backward_part, da, db, dout, N);
}
