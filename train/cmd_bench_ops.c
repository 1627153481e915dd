/* mnemo bench-ops: each op of the backend table (forward and backward) at the shapes of one
 * training turn, timed on the chosen device, against the roofline: the time the op's minimum
 * memory traffic needs at peak bandwidth, or its FLOPs at peak throughput, whichever is longer.
 * "roofline %" = that bound / measured time. Peaks come from mn_cuda_device_info on a GPU;
 * on the CPU no peak is known and only the achieved rates are printed. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands.h"
#include "model/backend.h"
#include "mnemo.h"

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define MAX_BUFFERS 64

typedef struct {
    mn_exec ex;
    int failed;
    void *buffers[MAX_BUFFERS];
    int n_buffers;
} bench_state;

/* A backend buffer of n floats filled with small values (or ids in [0, modulo) if ints). */
static void *buffer(bench_state *b, size_t n, int ints, int modulo) {
    void *d = NULL;
    if (b->failed || b->n_buffers == MAX_BUFFERS || mn_exec_alloc(&b->ex, n * 4, &d) != MN_OK) {
        b->failed = 1;
        return NULL;
    }
    b->buffers[b->n_buffers++] = d;
    if (modulo < 0) /* zero-filled */
        return d;
    uint32_t *h = malloc(n * 4);
    if (!h) {
        b->failed = 1;
        return d;
    }
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        if (ints) {
            int32_t v = (int32_t)(x % (uint32_t)modulo);
            memcpy(&h[i], &v, 4);
        } else {
            float v = ((float)(x >> 8) / 16777216.0f - 0.5f) * 0.1f;
            memcpy(&h[i], &v, 4);
        }
    }
    MN_OP(&b->ex, upload, d, h, n * 4);
    free(h);
    return d;
}

typedef struct {
    double peak_gbs, peak_tflops; /* 0: unknown */
    int reps;
} roofline;

static void report(const roofline *rf, const char *name, double seconds, double bytes, double flops) {
    double gbs = bytes / seconds / 1e9, tflops = flops / seconds / 1e12;
    printf("%-28s %10.1f us %9.1f GB/s %9.2f TFLOP/s", name, seconds * 1e6, gbs, tflops);
    if (rf->peak_gbs > 0 && rf->peak_tflops > 0) {
        double bound = bytes / (rf->peak_gbs * 1e9);
        double compute = flops / (rf->peak_tflops * 1e12);
        printf("   roofline %5.1f%% (%s-bound)", 100.0 * (bound > compute ? bound : compute) / seconds,
               bound > compute ? "memory" : "compute");
    }
    printf("\n");
}

/* Times `call` (a statement using the backend) reps times after one warm-up; waits after. */
#define TIME_OP(name, bytes, flops, call)                                         \
    do {                                                                          \
        call;                                                                     \
        b.ex.be->synchronize(b.ex.ctx);                                           \
        double t0_ = now_seconds();                                               \
        for (int r_ = 0; r_ < rf.reps; r_++)                                      \
            call;                                                                 \
        if (b.ex.be->synchronize(b.ex.ctx) != MN_OK) {                            \
            fprintf(stderr, "mnemo bench-ops: %s: %s\n", name, mn_last_error()); \
            status = 1;                                                           \
            goto done;                                                            \
        }                                                                         \
        report(&rf, name, (now_seconds() - t0_) / rf.reps, (double)(bytes), (double)(flops)); \
    } while (0)

static void usage(FILE *out) {
    fprintf(out, "usage: mnemo bench-ops [--device cpu|cuda|auto] [--matmul fp32|tf32|bf16] [--batch B]\n"
                 "                       [--turn-tokens L] [--slots k] [--width C] [--heads H] [--vocab V] [--reps N]\n"
                 "Times every op of the backend at the shapes of one training turn (default: GPT-2 small,\n"
                 "batch 8, 32 slots + 128 tokens on a GPU; the demo config, batch 4, on the CPU).\n");
}

int cmd_bench_ops(int argc, char **argv) {
    const char *device_name = "auto";
    mn_matmul matmul = MN_MATMUL_FP32;
    int B = -1, L = -1, k = -1, C = -1, H = -1, V = -1, reps = 20;
    static const struct option options[] = {
        {"device", required_argument, 0, 'd'}, {"matmul", required_argument, 0, 'm'},
        {"batch", required_argument, 0, 'B'},  {"turn-tokens", required_argument, 0, 'L'},
        {"slots", required_argument, 0, 'k'},  {"width", required_argument, 0, 'C'},
        {"heads", required_argument, 0, 'H'},  {"vocab", required_argument, 0, 'V'},
        {"reps", required_argument, 0, 'r'},   {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'd': device_name = optarg; break;
        case 'm':
            if (!strcmp(optarg, "fp32")) matmul = MN_MATMUL_FP32;
            else if (!strcmp(optarg, "tf32")) matmul = MN_MATMUL_TF32;
            else if (!strcmp(optarg, "bf16")) matmul = MN_MATMUL_BF16;
            else { usage(stderr); return 2; }
            break;
        case 'B': B = atoi(optarg); break;
        case 'L': L = atoi(optarg); break;
        case 'k': k = atoi(optarg); break;
        case 'C': C = atoi(optarg); break;
        case 'H': H = atoi(optarg); break;
        case 'V': V = atoi(optarg); break;
        case 'r': reps = atoi(optarg); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    mn_device device;
    char notice[512];
    if (mn_device_resolve(device_name, &device, notice, sizeof notice) != MN_OK) {
        fprintf(stderr, "mnemo bench-ops: %s\n", mn_last_error());
        return 2;
    }
    if (notice[0])
        fprintf(stderr, "%s\n", notice);
    int gpu = device == MN_DEVICE_CUDA;
    if (B < 0) B = gpu ? 8 : 4;
    if (L < 0) L = gpu ? 128 : 64;
    if (k < 0) k = gpu ? 32 : 16;
    if (C < 0) C = gpu ? 768 : 256;
    if (H < 0) H = gpu ? 12 : 4;
    if (V < 0) V = gpu ? 50257 : 4096;
    if (B < 1 || L < 1 || k < 1 || C < 1 || H < 1 || C % H || V < 2 || reps < 1) {
        fprintf(stderr, "mnemo bench-ops: need positive sizes and heads dividing the width\n");
        return 2;
    }
    roofline rf = {0, 0, reps};
    mn_device_info info;
    if (gpu && mn_cuda_device_info(0, &info) == MN_OK) {
        rf.peak_gbs = info.peak_bandwidth_gbs;
        rf.peak_tflops = matmul == MN_MATMUL_BF16 ? info.peak_bf16_tflops
                         : matmul == MN_MATMUL_TF32 ? info.peak_tf32_tflops : info.peak_fp32_tflops;
        printf("device: %s, %d SMs, %.0f GB/s, %.1f TFLOP/s (%s products; %s)\n", info.name, info.multiprocessors,
               rf.peak_gbs, rf.peak_tflops, matmul == MN_MATMUL_BF16 ? "bf16" : matmul == MN_MATMUL_TF32 ? "tf32" : "fp32",
               info.peak_source);
    }
    bench_state b = {0};
    if (mn_exec_open(device, &b.ex) != MN_OK || b.ex.be->set_matmul(b.ex.ctx, matmul) != MN_OK) {
        fprintf(stderr, "mnemo bench-ops: %s\n", mn_last_error());
        mn_exec_close(&b.ex);
        return 1;
    }
    const int S = k + L, N = B * S, NT = B * L, M = B * k;
    const size_t NC = (size_t)N * C, F = 4; /* bytes per float */
    printf("shapes: batch %d, %d slots + %d tokens = %d positions (N = %d), C %d, H %d, V %d; %d reps\n", B, k, L, S,
           N, C, H, V, reps);
    int status = 0;
    float *x = buffer(&b, NC * 4, 0, 0), *y = buffer(&b, NC * 4, 0, 0), *dy = buffer(&b, NC * 4, 0, 0);
    float *w = buffer(&b, (size_t)C * 4 * C, 0, 0), *dw = buffer(&b, (size_t)C * 4 * C, 0, 0);
    float *bias = buffer(&b, 4 * (size_t)C, 0, 0), *dbias = buffer(&b, 4 * (size_t)C, 0, 0);
    float *mean = buffer(&b, N, 0, 0), *rstd = buffer(&b, N, 0, 0);
    float *att = buffer(&b, (size_t)B * H * S * S, 0, 0);
    float *wte = buffer(&b, (size_t)V * C, 0, 0), *dwte = buffer(&b, (size_t)V * C, 0, 0);
    float *logits = buffer(&b, (size_t)NT * V, 0, 0), *dlogits = buffer(&b, (size_t)NT * V, 0, 0);
    float *losses = buffer(&b, NT, 0, 0), *weights = buffer(&b, NT, 0, 0);
    int32_t *ids = buffer(&b, N, 1, V), *targets = buffer(&b, NT, 1, V);
    int32_t *valid = buffer(&b, B, 1, 1); /* filled below */
    float *gate_w = buffer(&b, 2 * (size_t)C * C, 0, 0), *dgate_w = buffer(&b, 2 * (size_t)C * C, 0, 0);
    float *r = buffer(&b, (size_t)M * C, 0, 0), *u = buffer(&b, (size_t)M * C, 0, 0), *z = buffer(&b, (size_t)M * C, 0, 0);
    float *dr = buffer(&b, (size_t)M * C, 0, 0), *du = buffer(&b, (size_t)M * C, 0, 0);
    float *adam_m = buffer(&b, (size_t)C * 4 * C, 0, 0), *adam_v = buffer(&b, (size_t)C * 4 * C, 0, -1);
    float *scratch = buffer(&b, (size_t)M * C, 0, 0);
    if (b.failed) {
        fprintf(stderr, "mnemo bench-ops: allocation failed: %s\n", mn_last_error());
        status = 1;
        goto done;
    }
    {
        int32_t *hv = malloc((size_t)B * sizeof(int32_t));
        for (int i = 0; i < B; i++)
            hv[i] = S; /* full turns: every position does work */
        MN_OP(&b.ex, upload, valid, hv, (size_t)B * sizeof(int32_t));
        free(hv);
    }
    TIME_OP("embedding fwd", 2.0 * NC * F, 0, MN_OP(&b.ex, embedding_forward, x, ids, wte, N, C));
    TIME_OP("embedding bwd", 3.0 * NC * F, NC, MN_OP(&b.ex, embedding_backward, dwte, dy, ids, N, C));
    TIME_OP("layernorm fwd", 2.0 * NC * F, 8.0 * NC, MN_OP(&b.ex, layernorm_forward, y, mean, rstd, x, bias, bias, N, C));
    TIME_OP("layernorm bwd", 4.0 * NC * F, 16.0 * NC,
            MN_OP(&b.ex, layernorm_backward, dy, dbias, dbias + C, y, x, bias, mean, rstd, N, C));
    TIME_OP("linear qkv fwd (C->3C)", (4.0 * NC + 3.0 * C * C) * F, 6.0 * NC * C,
            MN_OP(&b.ex, linear_forward, y, x, w, bias, N, C, 3 * C));
    TIME_OP("linear qkv bwd", (9.0 * NC + 6.0 * C * C) * F, 12.0 * NC * C,
            MN_OP(&b.ex, linear_backward, dy, dw, dbias, y, x, w, N, C, 3 * C));
    TIME_OP("linear fc fwd (C->4C)", (5.0 * NC + 4.0 * C * C) * F, 8.0 * NC * C,
            MN_OP(&b.ex, linear_forward, y, x, w, bias, N, C, 4 * C));
    TIME_OP("linear fc bwd", (11.0 * NC + 8.0 * C * C) * F, 16.0 * NC * C,
            MN_OP(&b.ex, linear_backward, dy, dw, dbias, y, x, w, N, C, 4 * C));
    TIME_OP("attention fwd", (4.0 * NC + (double)B * H * S * S) * F, 4.0 * B * (double)S * S * C,
            MN_OP(&b.ex, attention_forward, y, att, x, valid, B, S, C, H, 0));
    TIME_OP("attention bwd", (10.0 * NC + (double)B * H * S * S) * F, 8.0 * B * (double)S * S * C,
            MN_OP(&b.ex, attention_backward, dy, y, x, att, valid, B, S, C, H, 0));
    TIME_OP("gelu fwd", 8.0 * NC * F, 20.0 * NC, MN_OP(&b.ex, gelu_forward, y, x, 4 * NC));
    TIME_OP("gelu bwd", 16.0 * NC * F, 40.0 * NC, MN_OP(&b.ex, gelu_backward, dy, y, x, 4 * NC));
    TIME_OP("residual fwd", 3.0 * NC * F, NC, MN_OP(&b.ex, residual_forward, y, x, dy, NC));
    TIME_OP("residual bwd", 3.0 * NC * F, NC, MN_OP(&b.ex, residual_backward, dy, NULL, x, NC));
    TIME_OP("lm_head fwd", ((double)NT * C + (double)V * C + (double)NT * V) * F, 2.0 * NT * C * (double)V,
            MN_OP(&b.ex, lm_head_forward, logits, x, wte, NT, C, V));
    TIME_OP("lm_head bwd", (2.0 * NT * C + 3.0 * V * C + (double)NT * V) * F, 4.0 * NT * C * (double)V,
            MN_OP(&b.ex, lm_head_backward, dy, dwte, dlogits, x, wte, NT, C, V));
    TIME_OP("crossentropy fwd", (double)NT * V * F, 3.0 * NT * (double)V,
            MN_OP(&b.ex, crossentropy_forward, losses, logits, targets, weights, NT, V));
    TIME_OP("crossentropy bwd", 3.0 * NT * V * F, 5.0 * NT * (double)V,
            MN_OP(&b.ex, crossentropy_backward, dlogits, logits, targets, weights, 1e-3f, NT, V));
    TIME_OP("gated update fwd", (5.0 * M * C + 2.0 * C * C) * F, 4.0 * M * (double)C * C,
            MN_OP(&b.ex, gated_update_forward, z, y, r, u, gate_w, bias, M, C));
    TIME_OP("gated update bwd", (12.0 * M * C + 4.0 * C * C) * F, 8.0 * M * (double)C * C,
            MN_OP(&b.ex, gated_update_backward, dr, du, dgate_w, dbias, z, r, u, y, gate_w, scratch, M, C));
    {
        /* AdamW over the fc weight (4 C^2 parameters), one segment */
        mn_adamw_segment seg = {0, (size_t)(C * 4 * (size_t)C), 0.1f};
        double n = (double)seg.size;
        TIME_OP("adamw (4 C^2 params)", 7.0 * n * F, 12.0 * n,
                MN_OP(&b.ex, adamw_update, w, dw, adam_m, adam_v, &seg, 1, 1e-4f, 0.9f, 0.95f, 1e-8f, 1));
        TIME_OP("sum of squares (4 N C)", 4.0 * NC * F, 8.0 * NC, (void)MN_OP(&b.ex, sum_squares, x, 4 * NC));
    }
done:
    for (int i = 0; i < b.n_buffers; i++)
        mn_exec_release(&b.ex, b.buffers[i]);
    mn_exec_close(&b.ex);
    return status;
}
