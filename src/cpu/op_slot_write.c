/* Slot write rules (ops.h, docs/model.md "Write rules"): the per-slot gate (n_addr = 0) and the
 * key-addressed delta rule (n_addr = k). Per episode the products are k x k x C, too small for
 * sgemm: plain loops, one episode per thread. The two products over all B*k rows (the address
 * and strength logits, and their weight gradient) go through mn_sgemm. */
#include "cpu/ops.h"
#include "cpu/team.h"
#include "cpu/vec.h"

#include <math.h>

static float sigmoidf(float x) { return 1.0f / (1.0f + mn_expf(-x)); }

/* row (n) <- softmax(row), in place */
static void softmax_row(float *row, int n) {
    float mx = row[0];
    for (int i = 1; i < n; i++)
        mx = row[i] > mx ? row[i] : mx;
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        row[i] = mn_expf(row[i] - mx);
        sum += row[i];
    }
    float inv = 1.0f / sum;
    for (int i = 0; i < n; i++)
        row[i] *= inv;
}

// thread t of nt's episodes of the forward: logits to [Adr | beta] in pre, E, r_out
static void slot_write_part(float *r_out, float *pre, float *E, const float *r_prev, const float *u,
                            const float *write_diag, int B, int k, int C, int n_addr, int t, int nt) {
    const int A = n_addr, P = n_addr + 1;
    size_t e0, e1;
    mn_share((size_t)B, 1, t, nt, &e0, &e1);
    for (size_t e = e0; e < e1; e++) {
        float *pe = pre + (size_t)e * k * P;
        const float *R = r_prev + (size_t)e * k * C, *U = u + (size_t)e * k * C;
        float *Ee = E + (size_t)e * k * C, *Ro = r_out + (size_t)e * k * C;
        for (int w = 0; w < k; w++) {
            float *row = pe + (size_t)w * P;
            if (A) {
                row[w] += write_diag[w];
                softmax_row(row, A);
            }
            row[A] = sigmoidf(row[A]);
        }
        // E = U - Adr R (reads every row of R before any row of r_out is written: r_out may alias)
        for (int w = 0; w < k; w++) {
            float *Ew = Ee + (size_t)w * C;
            const float *Uw = U + (size_t)w * C;
            if (!A) {
                const float *Rw = R + (size_t)w * C;
                for (int c = 0; c < C; c++)
                    Ew[c] = Uw[c] - Rw[c];
                continue;
            }
            for (int c = 0; c < C; c++)
                Ew[c] = Uw[c];
            for (int j = 0; j < k; j++) {
                const float a = pe[(size_t)w * P + j];
                const float *Rj = R + (size_t)j * C;
                for (int c = 0; c < C; c++)
                    Ew[c] -= a * Rj[c];
            }
        }
        // r_out = R + Adr^T (beta E): row j gathers every write addressed to it
        for (int j = 0; j < k; j++) {
            float *Roj = Ro + (size_t)j * C;
            const float *Rj = R + (size_t)j * C;
            if (Roj != Rj)
                for (int c = 0; c < C; c++)
                    Roj[c] = Rj[c];
            if (!A) {
                const float s = pe[(size_t)j * P];
                const float *Ej = Ee + (size_t)j * C;
                for (int c = 0; c < C; c++)
                    Roj[c] += s * Ej[c];
                continue;
            }
            for (int w = 0; w < k; w++) {
                const float s = pe[(size_t)w * P + j] * pe[(size_t)w * P + A];
                const float *Ew = Ee + (size_t)w * C;
                for (int c = 0; c < C; c++)
                    Roj[c] += s * Ew[c];
            }
        }
    }
}

// thread t of nt's episodes of the backward: dpre, dE, and dr_prev, du +=
static void slot_write_backward_part(float *dr_prev, float *du, float *dpre, float *dE, const float *dr_out,
                                     const float *r_prev, const float *pre, const float *E, int B, int k, int C,
                                     int n_addr, int t, int nt) {
    const int A = n_addr, P = n_addr + 1;
    size_t e0, e1;
    mn_share((size_t)B, 1, t, nt, &e0, &e1);
    for (size_t e = e0; e < e1; e++) {
        const float *pe = pre + (size_t)e * k * P;
        const float *R = r_prev + (size_t)e * k * C, *Ee = E + (size_t)e * k * C;
        const float *dRo = dr_out + (size_t)e * k * C;
        float *dEe = dE + (size_t)e * k * C, *dpe = dpre + (size_t)e * k * P;
        float *dRp = dr_prev + (size_t)e * k * C, *dU = du + (size_t)e * k * C;
        // dG = Adr dRo (G = beta E);  dE = beta dG;  dbeta = <E_w, dG_w>
        for (int w = 0; w < k; w++) {
            float *dEw = dEe + (size_t)w * C;
            const float *Ew = Ee + (size_t)w * C;
            if (!A) {
                const float *dRw = dRo + (size_t)w * C;
                for (int c = 0; c < C; c++)
                    dEw[c] = dRw[c];
            } else {
                for (int c = 0; c < C; c++)
                    dEw[c] = 0.0f;
                for (int j = 0; j < k; j++) {
                    const float a = pe[(size_t)w * P + j];
                    const float *dRj = dRo + (size_t)j * C;
                    for (int c = 0; c < C; c++)
                        dEw[c] += a * dRj[c];
                }
            }
            const float beta = pe[(size_t)w * P + A];
            float dbeta = 0.0f;
            for (int c = 0; c < C; c++) {
                dbeta += Ew[c] * dEw[c];
                dEw[c] *= beta;
            }
            dpe[(size_t)w * P + A] = dbeta * beta * (1.0f - beta);
        }
        // dR_prev += dRo - Adr^T dE (the identity path, and P = Adr R)
        for (int j = 0; j < k; j++) {
            float *dRj = dRp + (size_t)j * C;
            const float *dRoj = dRo + (size_t)j * C;
            for (int c = 0; c < C; c++)
                dRj[c] += dRoj[c];
            if (!A) {
                const float *dEj = dEe + (size_t)j * C;
                for (int c = 0; c < C; c++)
                    dRj[c] -= dEj[c];
                continue;
            }
            for (int w = 0; w < k; w++) {
                const float a = pe[(size_t)w * P + j];
                const float *dEw = dEe + (size_t)w * C;
                for (int c = 0; c < C; c++)
                    dRj[c] -= a * dEw[c];
            }
        }
        // dAdr[w, j] = beta_w <E_w, dRo_j> - <dE_w, R_j>, then through the row softmax
        if (A) {
            for (int w = 0; w < k; w++) {
                float *dl = dpe + (size_t)w * P;
                const float *aw = pe + (size_t)w * P;
                const float beta = aw[A];
                const float *Ew = Ee + (size_t)w * C, *dEw = dEe + (size_t)w * C;
                float dot = 0.0f;
                for (int j = 0; j < k; j++) {
                    const float *dRoj = dRo + (size_t)j * C, *Rj = R + (size_t)j * C;
                    float g = 0.0f, h = 0.0f;
                    for (int c = 0; c < C; c++) {
                        g += Ew[c] * dRoj[c];
                        h += dEw[c] * Rj[c];
                    }
                    dl[j] = beta * g - h;
                    dot += aw[j] * dl[j];
                }
                for (int j = 0; j < k; j++)
                    dl[j] = aw[j] * (dl[j] - dot);
            }
        }
        // E = U - P: dU += dE
        for (size_t i = 0; i < (size_t)k * C; i++)
            dU[i] += dEe[i];
    }
}

// r_prev (B*k, C), u (B*k, C), write_w (C, A+1), write_b (A+1), write_diag (A) -> r_out (B*k, C), aux
void mn_slot_write_forward(float *r_out, float *aux, const float *r_prev, const float *u, const float *write_w,
                           const float *write_b, const float *write_diag, int B, int k, int C, int n_addr,
                           int threads) {
    const int P = n_addr + 1;
    const size_t M = (size_t)B * k;
    float *pre = aux;                // (M, P): logits, then [Adr | beta]
    float *E = aux + M * (size_t)P;  // (M, C)
    for (size_t m = 0; m < M; m++)
        for (int p = 0; p < P; p++)
            pre[m * P + p] = write_b[p];
    mn_sgemm(0, 0, (int)M, P, C, 1.0f, u, C, write_w, P, 1.0f, pre, P, threads);
    MN_RUN_TEAM(mn_team(threads, (double)M * C, MN_PAR_MIN_ELEMS), slot_write_part, r_out, pre, E, r_prev, u,
                write_diag, B, k, C, n_addr);
}

// dr_out (B*k, C) -> dr_prev +=, du +=, dwrite_w (C, A+1) +=, dwrite_b (A+1) +=, dwrite_diag (A) +=
void mn_slot_write_backward(float *dr_prev, float *du, float *dwrite_w, float *dwrite_b, float *dwrite_diag,
                            const float *dr_out, const float *r_prev, const float *u, const float *aux,
                            const float *write_w, float *scratch, int B, int k, int C, int n_addr, int threads) {
    const int A = n_addr, P = n_addr + 1;
    const size_t M = (size_t)B * k;
    const float *pre = aux, *E = aux + M * (size_t)P;
    float *dpre = scratch;                // (M, P): gradient of the logits
    float *dE = scratch + M * (size_t)P;  // (M, C): gradient of E
    MN_RUN_TEAM(mn_team(threads, (double)M * C, MN_PAR_MIN_ELEMS), slot_write_backward_part, dr_prev, du, dpre, dE,
                dr_out, r_prev, pre, E, B, k, C, n_addr);
    // the logits' parameters: bias and diagonal sums in row order, then the two products
    for (size_t m = 0; m < M; m++) {
        const float *dl = dpre + m * P;
        for (int p = 0; p < P; p++)
            dwrite_b[p] += dl[p];
        if (A)
            dwrite_diag[m % (size_t)k] += dl[m % (size_t)k];
    }
    mn_sgemm(1, 0, C, P, (int)M, 1.0f, u, C, dpre, P, 1.0f, dwrite_w, P, threads);  // dW += u^T dpre
    mn_sgemm(0, 1, (int)M, C, P, 1.0f, dpre, P, write_w, P, 1.0f, du, C, threads);  // du += dpre W^T
}
