/* mnemo import-gpt2: a Hugging Face GPT-2 (safetensors + vocab.json + merges.txt) as the decoder
 * of a new mnemo checkpoint, with a freshly initialised compressor and memory, ready for
 * `mnemo train --base base.h5 --freeze-decoder`. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_util.h"
#include "commands.h"
#include "io/gpt2_import.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: mnemo import-gpt2 --safetensors F --vocab vocab.json --merges merges.txt -o base.h5\n"
            "                         [--config config.json] [--heads H] [--slots k] [--max-turn-tokens N]\n"
            "                         [--comp-layers L] [--write-rule R] [--seed S]\n"
            "Loads a Hugging Face GPT-2 checkpoint of any size into mnemo's decoder (n_layer, n_embd,\n"
            "positions and vocabulary from the tensor shapes; n_head from --heads, else config.json,\n"
            "else n_embd / 64), initialises the compressor and memory fresh from the seed, and writes\n"
            "a checkpoint (with the GPT-2 tokenizer) for `mnemo train --base`. Every header entry,\n"
            "dtype (F32; F16 and BF16 converted), shape and data range is checked first.\n"
            "  --slots k              memory slots (default 16)\n"
            "  --max-turn-tokens N    longest turn (default 128); k + N <= GPT-2's positions\n"
            "  --comp-layers L        compressor blocks (default 2)\n"
            "  --write-rule R         the write into R: gate (default), slot or delta (docs/model.md)\n"
            "  --seed S               seed of the compressor and memory (default 1)\n");
}

int cmd_import_gpt2(int argc, char **argv) {
    const char *safetensors = NULL, *vocab = NULL, *merges = NULL, *output = NULL;
    mn_gpt2_import_options o = mn_gpt2_import_defaults();
    static const struct option options[] = {
        {"safetensors", required_argument, 0, 'f'}, {"vocab", required_argument, 0, 'v'},
        {"merges", required_argument, 0, 'm'},      {"output", required_argument, 0, 'o'},
        {"config", required_argument, 0, 'c'},      {"heads", required_argument, 0, 'H'},
        {"slots", required_argument, 0, 'k'},       {"max-turn-tokens", required_argument, 0, 'N'},
        {"comp-layers", required_argument, 0, 'L'}, {"seed", required_argument, 0, 's'},
        {"write-rule", required_argument, 0, 'w'},
        {"help", no_argument, 0, 'h'},              {0, 0, 0, 0}};
    int opt;
    int64_t seed;
    optind = 1;
    while ((opt = getopt_long(argc, argv, ":o:", options, NULL)) != -1) {
        switch (opt) {
        case 'f': safetensors = optarg; break;
        case 'v': vocab = optarg; break;
        case 'm': merges = optarg; break;
        case 'o': output = optarg; break;
        case 'c': o.config_json = optarg; break;
        case 'H': if (!cli_int("import-gpt2", "--heads", optarg, 1, 4096, &o.n_heads)) return 2; break;
        case 'k': if (!cli_int("import-gpt2", "--slots", optarg, 1, 4096, &o.n_slots)) return 2; break;
        case 'N': if (!cli_int("import-gpt2", "--max-turn-tokens", optarg, 2, 1 << 20, &o.max_turn_tokens)) return 2; break;
        case 'L': if (!cli_int("import-gpt2", "--comp-layers", optarg, 1, 256, &o.n_comp_layers)) return 2; break;
        case 's': if (!cli_int64("import-gpt2", "--seed", optarg, 0, INT64_MAX, &seed)) return 2; o.seed = (uint64_t)seed; break;
        case 'w':
            if (mn_write_rule_parse(optarg, &o.write_rule) != MN_OK) {
                fprintf(stderr, "mnemo import-gpt2: --write-rule wants gate, slot or delta, got '%s'\n", optarg);
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: return cli_option_error("import-gpt2", opt, argv, usage);
        }
    }
    if (optind < argc || !safetensors || !vocab || !merges || !output) {
        fprintf(stderr, "mnemo import-gpt2: needs --safetensors, --vocab, --merges and -o%s%s\n",
                optind < argc ? "; unexpected argument " : "", optind < argc ? argv[optind] : "");
        usage(stderr);
        return 2;
    }
    mn_model *model = NULL;
    mn_gpt2_info info;
    int rc = 1;
    if (mn_gpt2_import_files(safetensors, vocab, merges, &o, output, &model, &info) != MN_OK) {
        fprintf(stderr, "mnemo import-gpt2: %s\n", mn_last_error());
        goto done;
    }
    const mn_config *c = mn_model_config(model);
    printf("imported GPT-2 from %s (%s, %s names%s): %d layers, n_embd %d, %d heads (from %s), %d positions, "
           "vocab %d (tokenizer %d)\n",
           safetensors, info.dtype, info.prefix[0] ? "\"transformer.\"" : "unprefixed",
           info.has_lm_head ? ", tied lm_head" : "", info.n_layer, info.n_embd, info.n_head, info.heads_from,
           info.n_positions, info.vocab_size, info.tokenizer_vocab_size);
    printf("wrote %s: decoder from GPT-2 (first %d of %d positions), compressor %d layers and memory (k %d) "
           "initialised with seed %" PRIu64 ", %zu parameters, model fingerprint %016" PRIx64 "\n",
           output, c->n_slots + c->max_turn_tokens, info.n_positions, c->n_comp_layers, c->n_slots, o.seed,
           mn_model_num_params(model), mn_model_fingerprint(model));
    rc = 0;
done:
    mn_model_free(model);
    return rc;
}
