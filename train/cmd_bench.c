/* mnemo bench: training throughput of the model on synthetic batches, next to OpenBLAS sgemm
 * measured in the same run (src/model/bench.h). The ratio of effective GFLOP/s to sgemm
 * GFLOP/s is the share of peak matrix speed the whole step reaches: the rest is time outside
 * matrix products. */
#include <cblas.h>
#include <getopt.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_util.h"
#include "commands.h"
#include "model/bench.h"

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
    mn_bench_train_options o = {.config = mn_config_demo(), .matmul = MN_MATMUL_FP32, .batch = 8, .turns = 8,
                                .bptt = 8, .turn_tokens = 64, .steps = 5};
    mn_config *cfg = &o.config;
    int threads = 0;
    const char *device_name = "cpu";
    static const struct option options[] = {
        {"batch", required_argument, 0, 'B'},   {"turns", required_argument, 0, 'T'},
        {"bptt", required_argument, 0, 'K'},    {"turn-tokens", required_argument, 0, 'L'},
        {"steps", required_argument, 0, 's'},   {"threads", required_argument, 0, 'j'},
        {"width", required_argument, 0, 'C'},   {"layers", required_argument, 0, 'l'},
        {"slots", required_argument, 0, 'k'},   {"vocab", required_argument, 0, 'V'},
        {"device", required_argument, 0, 'd'},  {"matmul", required_argument, 0, 'm'},
        {"preset", required_argument, 0, 'p'},  {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int opt, ok = 1;
    optind = 1;
    while ((opt = getopt_long(argc, argv, ":", options, NULL)) != -1) {
        switch (opt) {
        case 'B': ok = cli_int("bench", "--batch", optarg, 1, 1 << 20, &o.batch); break;
        case 'T': ok = cli_int("bench", "--turns", optarg, 1, 1 << 20, &o.turns); break;
        case 'K': ok = cli_int("bench", "--bptt", optarg, 1, 1 << 20, &o.bptt); break;
        case 'L': ok = cli_int("bench", "--turn-tokens", optarg, 2, 1 << 20, &o.turn_tokens); break;
        case 's': ok = cli_int("bench", "--steps", optarg, 1, 1 << 20, &o.steps); break;
        case 'j': ok = cli_int("bench", "--threads", optarg, 1, 4096, &threads); break;
        case 'C': ok = cli_int("bench", "--width", optarg, 1, 1 << 16, &cfg->d_model); break;
        case 'l': ok = cli_int("bench", "--layers", optarg, 1, 1024, &cfg->n_layers); break;
        case 'k': ok = cli_int("bench", "--slots", optarg, 1, 1 << 16, &cfg->n_slots); break;
        case 'V': ok = cli_int("bench", "--vocab", optarg, 2, 1 << 24, &cfg->vocab_size); break;
        case 'd': device_name = optarg; break;
        case 'm': ok = cli_matmul("bench", optarg, &o.matmul); break;
        case 'p': /* a preset replaces the config; put size overrides after it */
            if (!strcmp(optarg, "gpt2-small"))
                *cfg = gpt2_small();
            else if (!strcmp(optarg, "demo"))
                *cfg = mn_config_demo();
            else {
                fprintf(stderr, "mnemo bench: --preset wants demo or gpt2-small, got '%s'\n", optarg);
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: return cli_option_error("bench", opt, argv, usage);
        }
        if (!ok)
            return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "mnemo bench: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (o.turn_tokens > cfg->max_turn_tokens) {
        fprintf(stderr, "mnemo bench: need batch, turns, bptt, steps >= 1 and 2 <= turn-tokens <= %d\n",
                cfg->max_turn_tokens);
        return 2;
    }
    if (threads > 0) {
        omp_set_num_threads(threads);
        // products are split over the OpenMP team (src/cpu/op_gemm.c); a second pool of
        // OpenBLAS threads spinning next to it made steps up to 4x slower (docs/perf.md)
        openblas_set_num_threads(1);
    }
    if (!cli_device("bench", device_name, &o.device))
        return 2;
    o.backend = cli_standin();
    mn_bench_train_result r;
    if (mn_bench_train(&o, &r) != MN_OK) {
        fprintf(stderr, "mnemo bench: %s\n", mn_last_error());
        return 1;
    }
    printf("config: V %d, C %d, H %d, decoder %d + compressor %d layers, %d slots; batch %d x %d turns x %d tokens, bptt %d, %d threads\n",
           cfg->vocab_size, cfg->d_model, cfg->n_heads, cfg->n_layers, cfg->n_comp_layers, cfg->n_slots, o.batch,
           o.turns, o.turn_tokens, o.bptt, omp_get_max_threads());
    printf("device: %s, matmul %s\n", o.device == MN_DEVICE_CUDA ? "cuda" : "cpu", cli_matmul_name(o.matmul));
    printf("step (forward+backward+adamw): %.3f s, loss %.4f\n", r.step_s, (double)r.loss);
    printf("tokens/s:                 %.0f\n", r.tokens_per_s);
    printf("effective GFLOP/s:        %.2f\n", r.gflops);
    printf("sgemm GFLOP/s (%dx%dx%d): %.2f\n", r.sgemm_m, r.sgemm_k, r.sgemm_n, r.sgemm_gflops);
    printf("effective / sgemm:        %.2f\n", r.gflops / r.sgemm_gflops);
    mn_bench_print_check(stdout, &r.check);
    mn_device_info info;
    if (o.device == MN_DEVICE_CUDA && mn_cuda_device_info(0, &info) == MN_OK) {
        /* the sgemm line above is the host CPU's; on a GPU the reference is the device's peak */
        double peak = o.matmul == MN_MATMUL_BF16   ? info.peak_bf16_tflops
                      : o.matmul == MN_MATMUL_TF32 ? info.peak_tf32_tflops
                                                   : info.peak_fp32_tflops;
        printf("device:                   %s (%s)\n", info.name, info.peak_source);
        printf("MFU vs %s peak:         %.1f%% of %.1f TFLOP/s\n", cli_matmul_name(o.matmul),
               100.0 * r.gflops / 1e3 / peak, peak);
        printf("MFU vs bf16 dense peak:   %.1f%% of %.1f TFLOP/s\n", 100.0 * r.gflops / 1e3 / info.peak_bf16_tflops,
               info.peak_bf16_tflops);
    }
    return 0;
}
