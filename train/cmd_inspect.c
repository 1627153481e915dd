/* mnemo inspect: a readable summary of a checkpoint (docs/checkpoint.md), after verifying all
 * that `mnemo train --resume` would load: metadata and training config, parameters, optimizer
 * state, training state, /train/dist and tokenizer. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "io/checkpoint.h"
#include "mnemo_train.h"
#include "text/tokenizer.h"

static void usage(FILE *out) {
    fprintf(out, "usage: mnemo inspect [--config-only] CHECKPOINT.h5\n"
                 "Prints format version, build id, creation time, run id, model and training config, step,\n"
                 "tokens seen, every tensor with its shape and L2 norm, the optimizer state and the\n"
                 "tokenizer, after verifying everything a resume loads (checksums, finite values, the\n"
                 "data-parallel layout, the training config). Exit 1 if any of it fails, naming it.\n"
                 "  --config-only   print only the stored training config (JSON), once its checksum passes\n");
}

/* What failed, for the last line: "parameters, tokenizer". */
typedef struct {
    char what[256];
    int n;
} failures;

static void failed(failures *f, const char *part) {
    fprintf(stderr, "mnemo inspect: %s\n", mn_last_error());
    size_t len = strlen(f->what);
    snprintf(f->what + len, sizeof f->what - len, "%s%s", f->n++ ? ", " : "", part);
}

static void print_dist(const mn_checkpoint_dist *dl) {
    printf("ranks        %" PRId64 " (ZeRO stage %" PRId64 ", %" PRId64 " micro-batch(es) a rank);", dl->world_size,
           dl->zero_stage, dl->grad_accum);
    for (int64_t k = 0; k < dl->world_size && k < 8; k++) {
        const uint64_t *c = dl->rank_cursors + k * MN_DIST_CURSOR_FIELDS;
        printf(" rank %" PRId64 ": episodes %" PRIu64 "..%" PRIu64 " of each batch%s", k, c[2], c[2] + c[3] - 1,
               k + 1 < dl->world_size ? "," : "");
    }
    printf("%s\n", dl->world_size > 8 ? " ..." : "");
}

static void print_tensors(mn_model *model) {
    printf("parameters   %zu floats in %d tensors\n", mn_model_num_params(model), mn_model_num_tensors(model));
    printf("  %-40s %-14s %12s\n", "tensor", "shape", "L2 norm");
    const float *p = mn_model_params(model);
    for (int i = 0; i < mn_model_num_tensors(model); i++) {
        mn_tensor_info t;
        mn_model_tensor(model, i, &t);
        char shape[32];
        if (t.ndim == 2)
            snprintf(shape, sizeof shape, "(%d, %d)", t.shape[0], t.shape[1]);
        else
            snprintf(shape, sizeof shape, "(%d)", t.shape[0]);
        printf("  %-40s %-14s %12.5g\n", t.name, shape, mn_l2_norm(p + t.offset, t.size));
    }
}

int cmd_inspect(int argc, char **argv) {
    const char *path = NULL;
    int config_only = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--config-only"))
            config_only = 1;
        else if (argv[i][0] == '-' || path) {
            fprintf(stderr, "mnemo inspect: unexpected argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        } else
            path = argv[i];
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    mn_checkpoint_info info;
    if (mn_checkpoint_read_info(path, &info) != MN_OK) {
        fprintf(stderr, "mnemo inspect: %s\n", mn_last_error());
        return 1;
    }
    if (config_only) {
        printf("%s\n", info.train_config);
        mn_checkpoint_info_free(&info);
        return 0;
    }
    const mn_config *c = &info.config;
    failures bad = {"", 0};
    printf("checkpoint   %s\n", path);
    printf("format       version %" PRId64 ", written by build %s at %s\n", info.format_version, info.build_id,
           info.created);
    printf("run          %s\n", info.run_id[0] ? info.run_id : "(none recorded)");
    printf("model        V %d, C %d, %d heads, decoder %d + compressor %d layers, %d slots, %d tokens a turn, "
           "gate bias init %g, write rule %s\n",
           c->vocab_size, c->d_model, c->n_heads, c->n_layers, c->n_comp_layers, c->n_slots, c->max_turn_tokens,
           (double)c->gate_bias_init, mn_write_rule_name(c->write_rule));
    mn_train_state state;
    if (info.has_train)
        printf("training     step %" PRIu64 ", %" PRIu64 " tokens seen, curriculum stage %" PRId64
               ", data cursor epoch %" PRIu64 " position %" PRIu64 ", %" PRId64 " skipped steps (%" PRId64
               " in a row)\n",
               info.train.step, info.train.tokens_seen, info.train.curriculum_stage, info.train.data_epoch,
               info.train.data_position, info.train.nan_skipped, info.train.nan_streak);
    else
        printf("training     (no training state: parameters only)\n");
    if (info.has_train) {
        mn_checkpoint_dist dl;
        int has_dist = 0;
        if (mn_checkpoint_read_dist(path, &dl, &has_dist) != MN_OK)
            failed(&bad, "data-parallel layout (/train/dist)");
        else if (has_dist)
            print_dist(&dl);
        mn_checkpoint_dist_free(&dl);
    }
    printf("train config %s\n", info.train_config);
    if (info.has_train) { /* what a resume continues with; a parameters-only file has none to check */
        mn_train_config tc;
        mn_train_config_defaults(&tc);
        if (mn_train_config_load_checkpoint(&tc, path) != MN_OK || mn_train_config_validate(&tc) != MN_OK)
            failed(&bad, "training config");
    }

    mn_model *model = NULL;
    mn_trainer *trainer = NULL;
    if (mn_model_create(c, &model) != MN_OK ||
        (info.has_optimizer && mn_trainer_create(model, 1, 1, &trainer) != MN_OK)) {
        fprintf(stderr, "mnemo inspect: %s\n", mn_last_error());
        mn_model_free(model);
        mn_checkpoint_info_free(&info);
        return 1;
    }
    if (mn_checkpoint_load(path, model, trainer, info.has_train ? &state : NULL, NULL) != MN_OK) {
        failed(&bad, info.has_optimizer ? "parameters, optimizer state or training state" : "parameters");
    } else {
        print_tensors(model);
        if (trainer)
            printf("optimizer    AdamW step %" PRIu64 ", moments m and v for every tensor (|m| %.5g, |v| %.5g)\n",
                   info.adam_step, mn_l2_norm(mn_trainer_adam_m(trainer), mn_model_num_params(model)),
                   mn_l2_norm(mn_trainer_adam_v(trainer), mn_model_num_params(model)));
        else
            printf("optimizer    (none)\n");
    }
    mn_tokenizer *tok = NULL;
    if (!info.has_tokenizer)
        printf("tokenizer    (none)\n");
    else if (mn_checkpoint_load_tokenizer(path, &tok) != MN_OK)
        failed(&bad, "tokenizer");
    else
        printf("tokenizer    %s, %d tokens, %d merges, hash %016" PRIx64 "\n", mn_tokenizer_kind(tok),
               mn_tokenizer_vocab_size(tok), mn_tokenizer_n_merges(tok), mn_tokenizer_hash(tok));
    mn_tokenizer_free(tok);
    if (!bad.n)
        printf("verified     %s; every tensor present, shaped and finite%s%s\n",
               info.format_version >= 2 ? "format 2: the metadata digest and every tensor's Fletcher32 checksum pass"
                                        : "format 1: every tensor's Fletcher32 checksum passes (format 1 keeps the "
                                          "build id, creation time and training config without a checksum)",
               info.has_train ? "; training state, data-parallel layout and training config valid" : "",
               info.has_tokenizer ? "; tokenizer hash matches" : "");
    else
        fprintf(stderr, "mnemo inspect: %s: NOT verified: %s failed (above)\n", path, bad.what);
    mn_trainer_free(trainer);
    mn_model_free(model);
    mn_checkpoint_info_free(&info);
    return bad.n ? 1 : 0;
}
