/* Linear layer in GPT-2's Conv1D layout: y = x @ W + b, W (IC, OC). Products by mn_sgemm. */
#include "cpu/ops.h"
#include "cpu/vec.h"


/* Output channels per slice in the bias-gradient sum: one thread owns a whole slice. */
#define MN_LINEAR_CHANNEL_BLOCK 64

// inp (N, IC), weight (IC, OC), bias (OC) or NULL -> out (N, OC)
void mn_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                       int N, int IC, int OC, int threads) {
    float beta = 0.0f;
    if (bias != NULL) {
        // preload the bias so that one sgemm with beta = 1 adds the product onto it
        #pragma omp parallel for schedule(static) num_threads(threads) if ((size_t)N * OC >= MN_PAR_MIN_ELEMS)
        for (int n = 0; n < N; n++) {
            float *y = out + (size_t)n * OC;
            for (int o = 0; o < OC; o++) {
                y[o] = bias[o];
            }
        }
        beta = 1.0f;
    }
    // out (N, OC) = inp (N, IC) @ weight (IC, OC) [+ out]
    mn_sgemm(0, 0, N, OC, IC, 1.0f, inp, IC, weight, OC, beta, out, OC, threads);
}

// dout (N, OC) -> dinp (N, IC) += (if not NULL), dweight (IC, OC) +=, dbias (OC) += (if not NULL)
void mn_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, int N, int IC, int OC, int threads) {
    if (dinp != NULL) {
        // dinp (N, IC) += dout (N, OC) @ weight^T (OC, IC)
        mn_sgemm(0, 1, N, IC, OC, 1.0f, dout, OC, weight, OC, 1.0f, dinp, IC, threads);
    }
    // dweight (IC, OC) += inp^T (IC, N) @ dout (N, OC)
    mn_sgemm(1, 0, IC, OC, N, 1.0f, inp, IC, dout, OC, 1.0f, dweight, OC, threads);
    if (dbias != NULL) {
        // column sums; threads split the channels so every sum runs in n order
        int n_blocks = (OC + MN_LINEAR_CHANNEL_BLOCK - 1) / MN_LINEAR_CHANNEL_BLOCK;
        #pragma omp parallel for schedule(static) num_threads(threads) if ((size_t)N * OC >= MN_PAR_MIN_ELEMS)
        for (int blk = 0; blk < n_blocks; blk++) {
            int o0 = blk * MN_LINEAR_CHANNEL_BLOCK;
            int o1 = o0 + MN_LINEAR_CHANNEL_BLOCK < OC ? o0 + MN_LINEAR_CHANNEL_BLOCK : OC;
            // the running sums live in a local block (registers), not in dbias: dbias may alias
            // nothing here, but the compiler cannot know, and reloaded it for every row
            float acc[MN_LINEAR_CHANNEL_BLOCK];
            for (int o = o0; o < o1; o++)
                acc[o - o0] = dbias[o];
            for (int n = 0; n < N; n++) {
                const float *dy = dout + (size_t)n * OC + o0;
                for (int o = 0; o < o1 - o0; o++) {
                    acc[o] += dy[o];
                }
            }
            for (int o = o0; o < o1; o++)
                dbias[o] = acc[o - o0];
        }
    }
}
