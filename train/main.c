/* mnemo: one binary, subcommands with long options only.
 * main() owns the process-wide settings (the library never changes them): OpenBLAS runs on one
 * thread, so that the library's products split over its handles' OpenMP teams without a
 * second pool of BLAS threads competing for the cores (src/cpu/op_gemm.c, docs/perf.md). */
#include <cblas.h>
#include <hdf5.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"

static const mn_command commands[] = {
    {"bench", "micro-benchmark: training tokens/s and GFLOP/s against sgemm", cmd_bench},
    {"bench-ops", "time every backend op against the roofline (--device cpu|cuda)", cmd_bench_ops},
    {"bench-update", "session-update latency and batched updates per second", cmd_bench_update},
    {"train", "train the memory model (config file + options, checkpoints, resume)", cmd_train},
    {"inspect", "summarise and verify a checkpoint", cmd_inspect},
    {"prepare", "convert a corpus into canonical dialogue JSONL", cmd_prepare},
    {"episodes", "chain dialogues into long episodes with recall probes", cmd_episodes},
    {"tokenizer", "train, inspect and run the byte-level BPE tokenizer", cmd_tokenizer},
    {"shard", "render dialogue JSONL into a checksummed token shard", cmd_shard},
    {"chat", "talk to a checkpoint; the session memory R is kept in a session store", cmd_chat},
    {"import-gpt2", "a Hugging Face GPT-2 (safetensors) as the decoder of a new checkpoint", cmd_import_gpt2},
    {"export-hf", "the decoder of a checkpoint as a Hugging Face GPT-2 folder (from_pretrained)", cmd_export_hf},
    {"sessions", "list, show, delete, compact or benchmark a session store", cmd_sessions},
    {"eval", "recall and LM evaluation of a checkpoint on dialogue JSONL with probes", cmd_eval},

};
static const int n_commands = (int)(sizeof commands / sizeof commands[0]);

static void usage(FILE *out) {
    fprintf(out, "usage: mnemo <command> [--help] [options]\n\ncommands:\n");
    for (int i = 0; i < n_commands; i++)
        fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv) {
    openblas_set_num_threads(1);
    /* every command reports failures itself, naming the file and reason; HDF5's own printing,
     * which also runs at exit, loops after some corrupt format 1 checkpoints ("infinite loop
     * closing library") */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (int i = 0; i < n_commands; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "mnemo: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
