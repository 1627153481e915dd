/* Token embedding: a row lookup forward, a scatter-add backward. */
#include "cpu/ops.h"
#include "cpu/vec.h"

#include <string.h>

/* Channels per slice in the backward scatter: one thread owns a whole slice. */
#define MN_EMBEDDING_CHANNEL_BLOCK 32

// ids (N), table (V, C) -> out (N, C)
void mn_embedding_forward(float *out, const int32_t *ids, const float *table, int N, int C, int threads) {
    #pragma omp parallel for schedule(static) num_threads(threads) if ((size_t)N * C >= MN_PAR_MIN_ELEMS)
    for (int n = 0; n < N; n++) {
        memcpy(out + (size_t)n * C, table + (size_t)ids[n] * C, (size_t)C * sizeof(float));
    }
}

// dout (N, C) -> dtable (V, C) += rows scattered by ids (N)
// Several positions may share an id, so threads split the channels rather than the rows:
// every dtable element is summed by one thread in n order, for any thread count.
void mn_embedding_backward(float *dtable, const float *dout, const int32_t *ids, int N, int C, int threads) {
    int n_blocks = (C + MN_EMBEDDING_CHANNEL_BLOCK - 1) / MN_EMBEDDING_CHANNEL_BLOCK;
    #pragma omp parallel for schedule(static) num_threads(threads) if ((size_t)N * C >= MN_PAR_MIN_ELEMS)
    for (int blk = 0; blk < n_blocks; blk++) {
        int c0 = blk * MN_EMBEDDING_CHANNEL_BLOCK;
        int c1 = c0 + MN_EMBEDDING_CHANNEL_BLOCK < C ? c0 + MN_EMBEDDING_CHANNEL_BLOCK : C;
        for (int n = 0; n < N; n++) {
            float *dst = dtable + (size_t)ids[n] * C;      // (C)
            const float *src = dout + (size_t)n * C;       // (C)
            for (int c = c0; c < c1; c++) {
                dst[c] += src[c];
            }
        }
    }
}
