/* mnemo bench: training throughput of the CPU model on synthetic batches, next to OpenBLAS
 * sgemm measured in the same run. The ratio of effective GFLOP/s to sgemm GFLOP/s is the share
 * of peak matrix speed the whole step reaches: the rest is time outside matrix products. */
#include <cblas.h>
#include <getopt.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands.h"
#include "mnemo.h"

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Matrix-product FLOPs of one forward pass of a stack over S positions (of which n_valid are
 * real) for one episode: 24 C^2 per position per layer, attention 4 C per (query, key) pair. */
static double stack_flops(const mn_config *c, int layers, int S, double pairs) {
    double C = c->d_model;
    return layers * (24.0 * C * C * S + 4.0 * C * pairs);
}

/* sgemm GFLOP/s on the model's most common product shape (B*S, C) @ (C, 4C). */
static double sgemm_gflops(int M, int K, int N, int reps) {
    float *a = malloc((size_t)M * K * sizeof(float)), *b = malloc((size_t)K * N * sizeof(float));
    float *c = malloc((size_t)M * N * sizeof(float));
    for (size_t i = 0; i < (size_t)M * K; i++)
        a[i] = (float)(i % 13) * 0.01f;
    for (size_t i = 0; i < (size_t)K * N; i++)
        b[i] = (float)(i % 7) * 0.01f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, a, K, b, N, 0.0f, c, N);
    double t0 = now_seconds();
    for (int r = 0; r < reps; r++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, a, K, b, N, 0.0f, c, N);
    double dt = now_seconds() - t0;
    free(a), free(b), free(c);
    return 2.0 * M * K * N * reps / dt / 1e9;
}

static void usage(FILE *out) {
    fprintf(out,
            "usage: mnemo bench [--batch B] [--turns T] [--bptt K] [--turn-tokens L] [--steps N] [--threads N]\n"
            "                   [--width C] [--layers L] [--slots k] [--vocab V]\n"
            "                   [--device cpu|cuda|auto] [--matmul fp32|tf32|bf16] [--preset demo|gpt2-small]\n"
            "Times forward+backward+AdamW on random tokens with the demo config (or the overrides)\n"
            "and OpenBLAS sgemm in the same run. Prints tokens/s, effective GFLOP/s, sgemm GFLOP/s;\n"
            "on a GPU also the model FLOPs utilisation (MFU) against the device's peak.\n"
            "gpt2-small: V 50257, C 768, 12 heads, 12 decoder + 12 compressor layers, 32 slots.\n");
}

/* GPT-2 small's shape for both stacks, 32 memory slots, 128-token turns. */
static mn_config gpt2_small(void) {
    mn_config c = {.vocab_size = 50257, .d_model = 768, .n_heads = 12, .n_layers = 12, .n_comp_layers = 12,
                   .n_slots = 32, .max_turn_tokens = 128, .gate_bias_init = -2.0f};
    return c;
}

int cmd_bench(int argc, char **argv) {
    mn_config cfg = mn_config_demo();
    int B = 8, T = 8, bptt = 8, L = 64, steps = 5, threads = 0;
    const char *device_name = "cpu";
    mn_matmul matmul = MN_MATMUL_FP32;
    static const struct option options[] = {
        {"batch", required_argument, 0, 'B'},   {"turns", required_argument, 0, 'T'},
        {"bptt", required_argument, 0, 'K'},    {"turn-tokens", required_argument, 0, 'L'},
        {"steps", required_argument, 0, 's'},   {"threads", required_argument, 0, 'j'},
        {"width", required_argument, 0, 'C'},   {"layers", required_argument, 0, 'l'},
        {"slots", required_argument, 0, 'k'},   {"vocab", required_argument, 0, 'V'},
        {"device", required_argument, 0, 'd'},  {"matmul", required_argument, 0, 'm'},
        {"preset", required_argument, 0, 'p'},  {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'B': B = atoi(optarg); break;
        case 'T': T = atoi(optarg); break;
        case 'K': bptt = atoi(optarg); break;
        case 'L': L = atoi(optarg); break;
        case 's': steps = atoi(optarg); break;
        case 'j': threads = atoi(optarg); break;
        case 'C': cfg.d_model = atoi(optarg); break;
        case 'l': cfg.n_layers = atoi(optarg); break;
        case 'k': cfg.n_slots = atoi(optarg); break;
        case 'V': cfg.vocab_size = atoi(optarg); break;
        case 'd': device_name = optarg; break;
        case 'm':
            if (!strcmp(optarg, "fp32")) matmul = MN_MATMUL_FP32;
            else if (!strcmp(optarg, "tf32")) matmul = MN_MATMUL_TF32;
            else if (!strcmp(optarg, "bf16")) matmul = MN_MATMUL_BF16;
            else { usage(stderr); return 2; }
            break;
        case 'p': /* a preset replaces the config; put size overrides after it */
            if (!strcmp(optarg, "gpt2-small")) cfg = gpt2_small();
            else if (!strcmp(optarg, "demo")) cfg = mn_config_demo();
            else { usage(stderr); return 2; }
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (B < 1 || T < 1 || bptt < 1 || steps < 1 || L < 2 || L > cfg.max_turn_tokens) {
        fprintf(stderr, "mnemo bench: need batch, turns, bptt, steps >= 1 and 2 <= turn-tokens <= %d\n",
                cfg.max_turn_tokens);
        return 2;
    }
    if (threads > 0) {
        omp_set_num_threads(threads);
        // products are split over the OpenMP team (src/cpu/op_gemm.c); a second pool of
        // OpenBLAS threads spinning next to it made steps up to 4x slower (docs/perf.md)
        openblas_set_num_threads(1);
    }
    mn_device device;
    char notice[512];
    if (mn_device_resolve(device_name, &device, notice, sizeof notice) != MN_OK) {
        fprintf(stderr, "mnemo bench: %s\n", mn_last_error());
        return 2;
    }
    if (notice[0])
        fprintf(stderr, "%s\n", notice);
    mn_model *model = NULL;
    mn_trainer *trainer = NULL;
    if (mn_model_create(&cfg, &model) != MN_OK || mn_model_init(model, 1) != MN_OK ||
        mn_trainer_create_on(model, device, B, bptt, &trainer) != MN_OK ||
        mn_trainer_set_matmul(trainer, matmul) != MN_OK) {
        fprintf(stderr, "mnemo bench: %s\n", mn_last_error());
        mn_model_free(model);
        return 1;
    }
    size_t n = (size_t)T * B * L;
    int32_t *tokens = malloc(n * sizeof(int32_t)), *lengths = malloc((size_t)T * B * sizeof(int32_t));
    uint32_t x = 12345;
    for (size_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        tokens[i] = (int32_t)((x >> 8) % (uint32_t)cfg.vocab_size);
    }
    for (int i = 0; i < T * B; i++)
        lengths[i] = L; /* full turns: every position does real work */
    mn_batch batch = {B, T, L, tokens, lengths, NULL};
    mn_adamw_config adamw = {3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};

    float loss;
    int status = 0;
    if (mn_forward_backward(trainer, &batch, &loss, NULL) != MN_OK) { /* warm-up */
        fprintf(stderr, "mnemo bench: %s\n", mn_last_error());
        status = 1;
        goto done;
    }
    double t0 = now_seconds();
    for (int s = 0; s < steps; s++)
        if (mn_forward_backward(trainer, &batch, &loss, NULL) != MN_OK ||
            mn_adamw_step(trainer, &adamw, NULL) != MN_OK) {
            fprintf(stderr, "mnemo bench: %s\n", mn_last_error());
            status = 1;
            goto done;
        }
    double dt = (now_seconds() - t0) / steps;

    int S = cfg.n_slots + L;
    double causal_pairs = S * (S + 1) / 2.0, full_pairs = (double)S * S;
    double fwd = stack_flops(&cfg, cfg.n_layers, S, causal_pairs) + stack_flops(&cfg, cfg.n_comp_layers, S, full_pairs) +
                 2.0 * L * cfg.d_model * cfg.vocab_size + 4.0 * cfg.n_slots * cfg.d_model * cfg.d_model;
    double flops = 3.0 * fwd * B * T; /* backward costs twice the forward */
    double gflops = flops / dt / 1e9;
    double sgemm = sgemm_gflops(B * S, cfg.d_model, 4 * cfg.d_model, 10);
    printf("config: V %d, C %d, H %d, decoder %d + compressor %d layers, %d slots; batch %d x %d turns x %d tokens, bptt %d, %d threads\n",
           cfg.vocab_size, cfg.d_model, cfg.n_heads, cfg.n_layers, cfg.n_comp_layers, cfg.n_slots, B, T, L, bptt,
           omp_get_max_threads());
    printf("device: %s, matmul %s\n", device == MN_DEVICE_CUDA ? "cuda" : "cpu",
           matmul == MN_MATMUL_BF16 ? "bf16" : matmul == MN_MATMUL_TF32 ? "tf32" : "fp32");
    printf("step (forward+backward+adamw): %.3f s, loss %.4f\n", dt, (double)loss);
    printf("tokens/s:                 %.0f\n", (double)n / dt);
    printf("effective GFLOP/s:        %.2f\n", gflops);
    printf("sgemm GFLOP/s (%dx%dx%d): %.2f\n", B * S, cfg.d_model, 4 * cfg.d_model, sgemm);
    printf("effective / sgemm:        %.2f\n", gflops / sgemm);
    mn_device_info info;
    if (device == MN_DEVICE_CUDA && mn_cuda_device_info(0, &info) == MN_OK) {
        /* the sgemm line above is the host CPU's; on a GPU the reference is the device's peak */
        double peak = matmul == MN_MATMUL_BF16 ? info.peak_bf16_tflops
                      : matmul == MN_MATMUL_TF32 ? info.peak_tf32_tflops : info.peak_fp32_tflops;
        static const char *names[] = {"fp32", "tf32", "bf16"};
        printf("device:                   %s (%s)\n", info.name, info.peak_source);
        printf("MFU vs %s peak:         %.1f%% of %.1f TFLOP/s\n", names[matmul], 100.0 * gflops / 1e3 / peak, peak);
        printf("MFU vs bf16 dense peak:   %.1f%% of %.1f TFLOP/s\n", 100.0 * gflops / 1e3 / info.peak_bf16_tflops,
               info.peak_bf16_tflops);
    }
done:
    free(tokens), free(lengths);
    mn_trainer_free(trainer);
    mn_model_free(model);
    return status;
}
