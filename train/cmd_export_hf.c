/* mnemo export-hf: the decoder of a checkpoint (from `mnemo import-gpt2`, perhaps trained
 * further) written back as a Hugging Face GPT-2 folder (mn_export_hf, docs/gpt2.md). */
#include <getopt.h>
#include <stdio.h>

#include "cli_util.h"
#include "commands.h"
#include "mnemo.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: mnemo export-hf --checkpoint C -o DIR\n"
            "Writes the checkpoint's decoder and GPT-2 tokenizer as a folder that transformers'\n"
            "GPT2LMHeadModel.from_pretrained and AutoTokenizer.from_pretrained load: config.json,\n"
            "model.safetensors (F32, head tied), vocab.json, merges.txt, tokenizer_config.json.\n"
            "The compressor and memory are not part of GPT-2 and are left out; the session state R\n"
            "reaches the exported model as inputs_embeds (docs/python.md, mnemo.hf.prefix_embeds).\n");
}

int cmd_export_hf(int argc, char **argv) {
    static const struct option options[] = {{"checkpoint", required_argument, 0, 'c'},
                                            {"output", required_argument, 0, 'o'},
                                            {"help", no_argument, 0, 'h'},
                                            {0, 0, 0, 0}};
    const char *checkpoint = NULL, *output = NULL;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, ":o:", options, NULL)) != -1) {
        switch (opt) {
        case 'c': checkpoint = optarg; break;
        case 'o': output = optarg; break;
        case 'h': usage(stdout); return 0;
        default: return cli_option_error("export-hf", opt, argv, usage);
        }
    }
    if (optind < argc || !checkpoint || !output) {
        fprintf(stderr, "mnemo export-hf: needs --checkpoint and -o%s%s\n", optind < argc ? "; unexpected argument " : "",
                optind < argc ? argv[optind] : "");
        usage(stderr);
        return 2;
    }
    if (mn_export_hf(checkpoint, output) != MN_OK) {
        fprintf(stderr, "mnemo export-hf: %s\n", mn_last_error());
        return 1;
    }
    printf("wrote %s: config.json, model.safetensors, vocab.json, merges.txt, tokenizer_config.json\n", output);
    return 0;
}
