/* mnemo bench-update: session updates through the compressor, on the chosen device.
 *   latency:    one mn_update of one turn (default 128 tokens), host state in and out;
 *   throughput: mn_update_batch over many sessions (default 10^4) of one turn each.
 * Both include the copies of R between host and device, as a caller of the API pays them. */
#include <getopt.h>
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

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void usage(FILE *out) {
    fprintf(out, "usage: mnemo bench-update [--device cpu|cuda|auto] [--matmul fp32|tf32|bf16] [--width C]\n"
                 "                          [--heads H] [--comp-layers L] [--slots k] [--vocab V]\n"
                 "                          [--turn-tokens n] [--sessions N] [--reps R]\n"
                 "Latency of one mn_update and throughput of mn_update_batch. Defaults: C 768, H 12,\n"
                 "12 compressor layers, 32 slots, V 50257, 128-token turns, 10000 sessions, 50 reps.\n");
}

int cmd_bench_update(int argc, char **argv) {
    mn_config cfg = {.vocab_size = 50257, .d_model = 768, .n_heads = 12, .n_layers = 1, .n_comp_layers = 12,
                     .n_slots = 32, .max_turn_tokens = 128, .gate_bias_init = -2.0f};
    const char *device_name = "auto";
    mn_matmul matmul = MN_MATMUL_FP32;
    int n_tokens = 128, sessions = 10000, reps = 50;
    static const struct option options[] = {
        {"device", required_argument, 0, 'd'},   {"matmul", required_argument, 0, 'm'},
        {"width", required_argument, 0, 'C'},    {"heads", required_argument, 0, 'H'},
        {"comp-layers", required_argument, 0, 'l'}, {"slots", required_argument, 0, 'k'},
        {"vocab", required_argument, 0, 'V'},    {"turn-tokens", required_argument, 0, 'n'},
        {"sessions", required_argument, 0, 'N'}, {"reps", required_argument, 0, 'r'},
        {"help", no_argument, 0, 'h'},           {0, 0, 0, 0}};
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
        case 'C': cfg.d_model = atoi(optarg); break;
        case 'H': cfg.n_heads = atoi(optarg); break;
        case 'l': cfg.n_comp_layers = atoi(optarg); break;
        case 'k': cfg.n_slots = atoi(optarg); break;
        case 'V': cfg.vocab_size = atoi(optarg); break;
        case 'n': n_tokens = atoi(optarg); break;
        case 'N': sessions = atoi(optarg); break;
        case 'r': reps = atoi(optarg); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (n_tokens < 1 || sessions < 1 || reps < 1) {
        usage(stderr);
        return 2;
    }
    cfg.max_turn_tokens = n_tokens;
    mn_device device;
    char notice[512];
    if (mn_device_resolve(device_name, &device, notice, sizeof notice) != MN_OK) {
        fprintf(stderr, "mnemo bench-update: %s\n", mn_last_error());
        return 2;
    }
    if (notice[0])
        fprintf(stderr, "%s\n", notice);
    mn_model *m = NULL;
    if (mn_model_create(&cfg, &m) != MN_OK || mn_model_init(m, 7) != MN_OK || mn_model_set_device(m, device) != MN_OK ||
        mn_model_set_matmul(m, matmul) != MN_OK) {
        fprintf(stderr, "mnemo bench-update: %s\n", mn_last_error());
        mn_model_free(m);
        return 1;
    }
    const size_t st = mn_state_floats(m);
    int32_t *tokens = malloc((size_t)sessions * n_tokens * sizeof(int32_t));
    int64_t *offsets = malloc(((size_t)sessions + 1) * sizeof(int64_t));
    float *r = malloc((size_t)sessions * st * sizeof(float));
    double *times = malloc((size_t)reps * sizeof(double));
    int status = 0;
    if (!tokens || !offsets || !r || !times) {
        fprintf(stderr, "mnemo bench-update: out of memory for %d sessions\n", sessions);
        status = 1;
        goto done;
    }
    uint32_t x = 99;
    for (size_t i = 0; i < (size_t)sessions * n_tokens; i++) {
        x = x * 1664525u + 1013904223u;
        tokens[i] = (int32_t)((x >> 8) % (uint32_t)cfg.vocab_size);
    }
    for (int i = 0; i <= sessions; i++)
        offsets[i] = (int64_t)i * n_tokens;
    for (int i = 0; i < sessions; i++)
        mn_initial_state(m, r + (size_t)i * st);
    printf("config: C %d, H %d, %d compressor layers, %d slots, V %d; turns of %d tokens; device %s, matmul %s\n",
           cfg.d_model, cfg.n_heads, cfg.n_comp_layers, cfg.n_slots, cfg.vocab_size, n_tokens,
           device == MN_DEVICE_CUDA ? "cuda" : "cpu",
           matmul == MN_MATMUL_BF16 ? "bf16" : matmul == MN_MATMUL_TF32 ? "tf32" : "fp32");

    /* latency of one update (after warm-up: workspace allocated, kernels loaded) */
    for (int i = 0; i < 3; i++)
        if (mn_update(m, tokens, n_tokens, r, r) != MN_OK)
            goto fail;
    for (int i = 0; i < reps; i++) {
        double t0 = now_seconds();
        if (mn_update(m, tokens, n_tokens, r, r) != MN_OK)
            goto fail;
        times[i] = now_seconds() - t0;
    }
    qsort(times, (size_t)reps, sizeof *times, by_value);
    printf("one-turn update latency:  median %.3f ms, p90 %.3f ms, min %.3f ms (%d reps)\n", 1e3 * times[reps / 2],
           1e3 * times[(int)(0.9 * (reps - 1))], 1e3 * times[0], reps);

    /* throughput of the batched update (one warm-up call on a small batch sizes nothing: the
     * workspace grows to the chunk size on the first full call, so time the second) */
    if (mn_update_batch(m, sessions, tokens, offsets, r, r) != MN_OK)
        goto fail;
    double t0 = now_seconds();
    if (mn_update_batch(m, sessions, tokens, offsets, r, r) != MN_OK)
        goto fail;
    double dt = now_seconds() - t0;
    printf("batched session updates:  %d sessions in %.3f s = %.0f sessions/s (%.0f tokens/s)\n", sessions, dt,
           sessions / dt, (double)sessions * n_tokens / dt);
    goto done;
fail:
    fprintf(stderr, "mnemo bench-update: %s\n", mn_last_error());
    status = 1;
done:
    free(tokens), free(offsets), free(r), free(times);
    mn_model_free(m);
    return status;
}
