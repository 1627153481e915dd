/* mnemo bench-ops: each op of the backend table (forward and backward) at the shapes of one
 * training turn, timed on the chosen device (src/model/bench.h), against the roofline: the
 * time the op's minimum memory traffic needs at peak bandwidth, or its FLOPs at peak
 * throughput, whichever is longer. "roofline %" = that bound / measured time. Peaks come from
 * mn_cuda_device_info on a GPU; on the CPU no peak is known and only the achieved rates are
 * printed. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_util.h"
#include "commands.h"
#include "model/bench.h"

typedef struct {
    double peak_gbs, peak_tflops; /* 0: unknown */
} roofline;

static void report(void *ctx, const mn_bench_op *op) {
    const roofline *rf = ctx;
    double gbs = op->bytes / op->seconds / 1e9, tflops = op->flops / op->seconds / 1e12;
    printf("%-28s %10.1f us %9.1f GB/s %9.2f TFLOP/s", op->name, op->seconds * 1e6, gbs, tflops);
    if (rf->peak_gbs > 0 && rf->peak_tflops > 0) {
        double bound = op->bytes / (rf->peak_gbs * 1e9);
        double compute = op->flops / (rf->peak_tflops * 1e12);
        printf("   roofline %5.1f%% (%s-bound)", 100.0 * (bound > compute ? bound : compute) / op->seconds,
               bound > compute ? "memory" : "compute");
    }
    printf("\n");
    fflush(stdout);
}

static void usage(FILE *out) {
    fprintf(out, "usage: mnemo bench-ops [--device cpu|cuda|auto] [--matmul fp32|tf32|bf16] [--batch B]\n"
                 "                       [--turn-tokens L] [--slots k] [--width C] [--heads H] [--vocab V] [--reps N]\n"
                 "Times every op of the backend at the shapes of one training turn (default: GPT-2 small,\n"
                 "batch 8, 32 slots + 128 tokens on a GPU; the demo config, batch 4, on the CPU).\n");
}

int cmd_bench_ops(int argc, char **argv) {
    const char *device_name = "auto";
    mn_bench_ops_options o = {.matmul = MN_MATMUL_FP32, .batch = -1, .turn_tokens = -1, .slots = -1, .width = -1,
                              .heads = -1, .vocab = -1, .reps = 20};
    static const struct option options[] = {
        {"device", required_argument, 0, 'd'}, {"matmul", required_argument, 0, 'm'},
        {"batch", required_argument, 0, 'B'},  {"turn-tokens", required_argument, 0, 'L'},
        {"slots", required_argument, 0, 'k'},  {"width", required_argument, 0, 'C'},
        {"heads", required_argument, 0, 'H'},  {"vocab", required_argument, 0, 'V'},
        {"reps", required_argument, 0, 'r'},   {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int opt, ok = 1;
    optind = 1;
    while ((opt = getopt_long(argc, argv, ":", options, NULL)) != -1) {
        switch (opt) {
        case 'd': device_name = optarg; break;
        case 'm': ok = cli_matmul("bench-ops", optarg, &o.matmul); break;
        case 'B': ok = cli_int("bench-ops", "--batch", optarg, 1, 1 << 16, &o.batch); break;
        case 'L': ok = cli_int("bench-ops", "--turn-tokens", optarg, 1, 1 << 20, &o.turn_tokens); break;
        case 'k': ok = cli_int("bench-ops", "--slots", optarg, 1, 1 << 16, &o.slots); break;
        case 'C': ok = cli_int("bench-ops", "--width", optarg, 1, 1 << 16, &o.width); break;
        case 'H': ok = cli_int("bench-ops", "--heads", optarg, 1, 1 << 16, &o.heads); break;
        case 'V': ok = cli_int("bench-ops", "--vocab", optarg, 2, 1 << 24, &o.vocab); break;
        case 'r': ok = cli_int("bench-ops", "--reps", optarg, 1, 1 << 20, &o.reps); break;
        case 'h': usage(stdout); return 0;
        default: return cli_option_error("bench-ops", opt, argv, usage);
        }
        if (!ok)
            return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "mnemo bench-ops: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!cli_device("bench-ops", device_name, &o.device))
        return 2;
    o.backend = cli_standin();
    int gpu = o.device == MN_DEVICE_CUDA;
    if (o.batch < 0) o.batch = gpu ? 8 : 4;
    if (o.turn_tokens < 0) o.turn_tokens = gpu ? 128 : 64;
    if (o.slots < 0) o.slots = gpu ? 32 : 16;
    if (o.width < 0) o.width = gpu ? 768 : 256;
    if (o.heads < 0) o.heads = gpu ? 12 : 4;
    if (o.vocab < 0) o.vocab = gpu ? 50257 : 4096;
    if (o.width % o.heads) {
        fprintf(stderr, "mnemo bench-ops: need positive sizes and heads dividing the width\n");
        return 2;
    }
    roofline rf = {0, 0};
    mn_device_info info;
    if (gpu && mn_cuda_device_info(0, &info) == MN_OK) {
        rf.peak_gbs = info.peak_bandwidth_gbs;
        rf.peak_tflops = o.matmul == MN_MATMUL_BF16   ? info.peak_bf16_tflops
                         : o.matmul == MN_MATMUL_TF32 ? info.peak_tf32_tflops
                                                      : info.peak_fp32_tflops;
        printf("device: %s, %d SMs, %.0f GB/s, %.1f TFLOP/s (%s products; %s)\n", info.name, info.multiprocessors,
               rf.peak_gbs, rf.peak_tflops, cli_matmul_name(o.matmul), info.peak_source);
    }
    const int S = o.slots + o.turn_tokens;
    printf("shapes: batch %d, %d slots + %d tokens = %d positions (N = %d), C %d, H %d, V %d; %d reps\n", o.batch,
           o.slots, o.turn_tokens, S, o.batch * S, o.width, o.heads, o.vocab, o.reps);
    fflush(stdout);
    mn_bench_check check;
    if (mn_bench_ops(&o, report, &rf, &check) != MN_OK) {
        fprintf(stderr, "mnemo bench-ops: %s\n", mn_last_error());
        return 1;
    }
    mn_bench_print_check(stdout, &check);
    return 0;
}
