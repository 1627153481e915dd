/* mnemo inspect: a readable summary of a checkpoint (docs/checkpoint.md), after loading and
 * verifying all of it. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "io/checkpoint.h"
#include "text/tokenizer.h"

static void usage(FILE *out) {
    fprintf(out, "usage: mnemo inspect [--config-only] CHECKPOINT.h5\n"
                 "Prints format version, build id, creation time, model and training config, step,\n"
                 "tokens seen, every tensor with its shape and L2 norm, the optimizer state and the\n"
                 "tokenizer; loading verifies every checksum. Exit 1 if the checkpoint is refused.\n"
                 "  --config-only   print only the stored training config (JSON)\n");
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
        printf("%s\n", info.train_config ? info.train_config : "{}");
        mn_checkpoint_info_free(&info);
        return 0;
    }
    const mn_config *c = &info.config;
    printf("checkpoint   %s\n", path);
    printf("format       version %" PRId64 ", written by build %s at %s\n", info.format_version, info.build_id,
           info.created);
    printf("model        V %d, C %d, %d heads, decoder %d + compressor %d layers, %d slots, %d tokens a turn, "
           "gate bias init %g\n",
           c->vocab_size, c->d_model, c->n_heads, c->n_layers, c->n_comp_layers, c->n_slots, c->max_turn_tokens,
           (double)c->gate_bias_init);
    if (info.has_train)
        printf("training     step %" PRIu64 ", %" PRIu64 " tokens seen, curriculum stage %" PRId64
               ", data cursor epoch %" PRIu64 " position %" PRIu64 ", %" PRId64 " skipped steps (%" PRId64
               " in a row)\n",
               info.train.step, info.train.tokens_seen, info.train.curriculum_stage, info.train.data_epoch,
               info.train.data_position, info.train.nan_skipped, info.train.nan_streak);
    else
        printf("training     (no training state: parameters only)\n");
    mn_checkpoint_dist dl;
    int has_dist = 0;
    if (info.has_train && mn_checkpoint_read_dist(path, &dl, &has_dist) == MN_OK && has_dist) {
        printf("ranks        %" PRId64 " (ZeRO stage %" PRId64 ", %" PRId64 " micro-batch(es) a rank);", dl.world_size,
               dl.zero_stage, dl.grad_accum);
        for (int64_t k = 0; k < dl.world_size && k < 8; k++)
            printf(" rank %" PRId64 ": episodes %" PRIu64 "..%" PRIu64 " of each batch%s", k,
                   dl.rank_cursors[k * MN_DIST_CURSOR_FIELDS + 2],
                   dl.rank_cursors[k * MN_DIST_CURSOR_FIELDS + 2] + dl.rank_cursors[k * MN_DIST_CURSOR_FIELDS + 3] - 1,
                   k + 1 < dl.world_size ? "," : "");
        printf("%s\n", dl.world_size > 8 ? " ..." : "");
        mn_checkpoint_dist_free(&dl);
    }
    printf("train config %s\n", info.train_config ? info.train_config : "{}");

    int rc = 0;
    mn_model *model = NULL;
    mn_trainer *trainer = NULL;
    if (mn_model_create(c, &model) != MN_OK || (info.has_optimizer && mn_trainer_create(model, 1, 1, &trainer) != MN_OK) ||
        mn_checkpoint_load(path, model, trainer, NULL, NULL) != MN_OK) {
        fprintf(stderr, "mnemo inspect: %s\n", mn_last_error());
        rc = 1;
        goto done;
    }
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
    if (trainer)
        printf("optimizer    AdamW step %" PRIu64 ", moments m and v for every tensor (|m| %.5g, |v| %.5g)\n",
               info.adam_step, mn_l2_norm(mn_trainer_adam_m(trainer), mn_model_num_params(model)),
               mn_l2_norm(mn_trainer_adam_v(trainer), mn_model_num_params(model)));
    else
        printf("optimizer    (none)\n");
    if (info.has_tokenizer) {
        mn_tokenizer *tok = NULL;
        if (mn_checkpoint_load_tokenizer(path, &tok) != MN_OK) {
            fprintf(stderr, "mnemo inspect: %s\n", mn_last_error());
            rc = 1;
            goto done;
        }
        printf("tokenizer    %s, %d tokens, %d merges, hash %016" PRIx64 "\n", mn_tokenizer_kind(tok),
               mn_tokenizer_vocab_size(tok), mn_tokenizer_n_merges(tok), mn_tokenizer_hash(tok));
        mn_tokenizer_free(tok);
    } else {
        printf("tokenizer    (none)\n");
    }
    printf("verified     every tensor present with its shape; all Fletcher32 checksums pass\n");
done:
    mn_trainer_free(trainer);
    mn_model_free(model);
    mn_checkpoint_info_free(&info);
    return rc;
}
