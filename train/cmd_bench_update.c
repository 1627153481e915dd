/* mnemo bench-update: session updates through the compressor, on the chosen device
 * (src/model/bench.h).
 *   latency:    one mn_update of one turn (default 128 tokens), host state in and out;
 *   throughput: mn_update_batch over many sessions (default 10^4) of one turn each.
 * Both include the copies of R between host and device, as a caller of the API pays them. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_util.h"
#include "commands.h"
#include "model/bench.h"

static void usage(FILE *out) {
    fprintf(out, "usage: mnemo bench-update [--device cpu|cuda|auto] [--matmul fp32|tf32|bf16] [--width C]\n"
                 "                          [--heads H] [--comp-layers L] [--slots k] [--vocab V]\n"
                 "                          [--turn-tokens n] [--sessions N] [--reps R]\n"
                 "Latency of one mn_update and throughput of mn_update_batch. Defaults: C 768, H 12,\n"
                 "12 compressor layers, 32 slots, V 50257, 128-token turns, 10000 sessions, 50 reps.\n");
}

int cmd_bench_update(int argc, char **argv) {
    mn_bench_update_options o = {
        .config = {.vocab_size = 50257, .d_model = 768, .n_heads = 12, .n_layers = 1, .n_comp_layers = 12,
                   .n_slots = 32, .max_turn_tokens = 128, .gate_bias_init = -2.0f},
        .matmul = MN_MATMUL_FP32, .sessions = 10000, .reps = 50};
    mn_config *cfg = &o.config;
    const char *device_name = "auto";
    static const struct option options[] = {
        {"device", required_argument, 0, 'd'},   {"matmul", required_argument, 0, 'm'},
        {"width", required_argument, 0, 'C'},    {"heads", required_argument, 0, 'H'},
        {"comp-layers", required_argument, 0, 'l'}, {"slots", required_argument, 0, 'k'},
        {"vocab", required_argument, 0, 'V'},    {"turn-tokens", required_argument, 0, 'n'},
        {"sessions", required_argument, 0, 'N'}, {"reps", required_argument, 0, 'r'},
        {"help", no_argument, 0, 'h'},           {0, 0, 0, 0}};
    int opt, ok = 1;
    optind = 1;
    while ((opt = getopt_long(argc, argv, ":", options, NULL)) != -1) {
        switch (opt) {
        case 'd': device_name = optarg; break;
        case 'm': ok = cli_matmul("bench-update", optarg, &o.matmul); break;
        case 'C': ok = cli_int("bench-update", "--width", optarg, 1, 1 << 16, &cfg->d_model); break;
        case 'H': ok = cli_int("bench-update", "--heads", optarg, 1, 1 << 16, &cfg->n_heads); break;
        case 'l': ok = cli_int("bench-update", "--comp-layers", optarg, 1, 1024, &cfg->n_comp_layers); break;
        case 'k': ok = cli_int("bench-update", "--slots", optarg, 1, 1 << 16, &cfg->n_slots); break;
        case 'V': ok = cli_int("bench-update", "--vocab", optarg, 2, 1 << 24, &cfg->vocab_size); break;
        case 'n': ok = cli_int("bench-update", "--turn-tokens", optarg, 1, 1 << 20, &cfg->max_turn_tokens); break;
        case 'N': ok = cli_int("bench-update", "--sessions", optarg, 1, 1 << 24, &o.sessions); break;
        case 'r': ok = cli_int("bench-update", "--reps", optarg, 1, 1 << 20, &o.reps); break;
        case 'h': usage(stdout); return 0;
        default: return cli_option_error("bench-update", opt, argv, usage);
        }
        if (!ok)
            return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "mnemo bench-update: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!cli_device("bench-update", device_name, &o.device))
        return 2;
    o.backend = cli_standin();
    printf("config: C %d, H %d, %d compressor layers, %d slots, V %d; turns of %d tokens; device %s, matmul %s\n",
           cfg->d_model, cfg->n_heads, cfg->n_comp_layers, cfg->n_slots, cfg->vocab_size, cfg->max_turn_tokens,
           o.device == MN_DEVICE_CUDA ? "cuda" : "cpu", cli_matmul_name(o.matmul));
    fflush(stdout);
    mn_bench_update_result r;
    if (mn_bench_update(&o, &r) != MN_OK) {
        fprintf(stderr, "mnemo bench-update: %s\n", mn_last_error());
        return 1;
    }
    printf("one-turn update latency:  median %.3f ms, p90 %.3f ms, min %.3f ms (%d reps)\n", 1e3 * r.median_s,
           1e3 * r.p90_s, 1e3 * r.min_s, o.reps);
    printf("batched session updates:  %d sessions in %.3f s = %.0f sessions/s (%.0f tokens/s)\n", o.sessions,
           r.batch_s, o.sessions / r.batch_s, (double)o.sessions * cfg->max_turn_tokens / r.batch_s);
    mn_bench_print_check(stdout, &r.check);
    return 0;
}
