/* Token embedding: a row lookup forward, a scatter-add backward. */
#include "cpu/ops.h"
#include "cpu/team.h"
#include "cpu/vec.h"

#include <string.h>

/* Channels per slice in the backward scatter: one thread owns a whole slice. */
#define MN_EMBEDDING_CHANNEL_BLOCK 32

static void embedding_rows_part(float *out, const int32_t *ids, const float *table, int N, int C, int t, int nt) {
    size_t n0, n1;
    mn_share((size_t)N, 1, t, nt, &n0, &n1);
    for (size_t n = n0; n < n1; n++) {
        memcpy(out + n * C, table + (size_t)ids[n] * C, (size_t)C * sizeof(float));
    }
}

// ids (N), table (V, C) -> out (N, C)
void mn_embedding_forward(float *out, const int32_t *ids, const float *table, int N, int C, int threads) {
    MN_RUN_TEAM(mn_team(threads, (double)N * C, MN_PAR_MIN_ELEMS), embedding_rows_part, out, ids, table, N, C);
}

static void embedding_scatter_part(float *dtable, const float *dout, const int32_t *ids, int N, int C, int t,
                                   int nt) {
    size_t b0, b1;
    mn_share((size_t)(C + MN_EMBEDDING_CHANNEL_BLOCK - 1) / MN_EMBEDDING_CHANNEL_BLOCK, 1, t, nt, &b0, &b1);
    for (size_t blk = b0; blk < b1; blk++) {
        int c0 = (int)blk * MN_EMBEDDING_CHANNEL_BLOCK;
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

// dout (N, C) -> dtable (V, C) += rows scattered by ids (N)
// Several positions may share an id, so threads split the channels rather than the rows:
// every dtable element is summed by one thread in n order, for any thread count.
void mn_embedding_backward(float *dtable, const float *dout, const int32_t *ids, int N, int C, int threads) {
    MN_RUN_TEAM(mn_team(threads, (double)N * C, MN_PAR_MIN_ELEMS), embedding_scatter_part, dtable, dout, ids, N, C);
}
