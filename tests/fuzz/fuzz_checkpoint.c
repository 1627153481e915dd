/* libFuzzer target: a training checkpoint (HDF5) read by every reader `mnemo inspect`, `chat`,
 * `eval` and `train --resume` use: the metadata, the model config, the tokenizer, the
 * data-parallel cursors, the stored training config, and a full load (parameters, moments,
 * loop state) into a model of the stored config when that is small. Whatever loads must be
 * what the readers promise: finite parameters, a state inside the config's bounds. No reader
 * may crash, leak an HDF5 object or print HDF5 diagnostics. Seeds: fuzz_seeds. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "fuzz_files.h"
#include "io/checkpoint.h"
#include "mnemo_train.h"

/* Parameters of a config, roughly: what a fuzz run may allocate for one. */
static double params_of(const mn_config *c) {
    double C = c->d_model;
    return ((double)c->vocab_size + c->n_slots + c->max_turn_tokens) * C +
           ((double)c->n_layers + c->n_comp_layers) * (13 * C * C + 16 * C);
}

static void load_all(const char *path) {
    mn_config cfg;
    if (mn_checkpoint_read_config(path, &cfg) != MN_OK)
        return;
    fuzz_check_h5_closed("mn_checkpoint_read_config");
    if (mn_config_validate(&cfg) != MN_OK)
        abort(); /* read_config hands out only valid configs */
    if (params_of(&cfg) > 2e5) /* the seeds hold ~4e3 */
        return;
    mn_model *model = NULL;
    mn_trainer *trainer = NULL;
    if (mn_model_create(&cfg, &model) != MN_OK || mn_trainer_create(model, 1, 1, &trainer) != MN_OK)
        abort();
    mn_train_state state;
    if (mn_checkpoint_load(path, model, trainer, &state, NULL) == MN_OK ||
        mn_checkpoint_load(path, model, NULL, NULL, NULL) == MN_OK) {
        const float *p = mn_model_params(model);
        for (size_t i = 0; i < mn_model_num_params(model); i++)
            if (!isfinite(p[i])) {
                fprintf(stderr, "fuzz: a checkpoint with a non-finite parameter (%zu) was loaded\n", i);
                abort();
            }
    }
    fuzz_check_h5_closed("mn_checkpoint_load");
    mn_trainer_free(trainer);
    mn_model_free(model);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_begin();
    const char *path = fuzz_file("ckpt.h5", data, size);

    mn_checkpoint_info info;
    if (mn_checkpoint_read_info(path, &info) == MN_OK) {
        if (mn_config_validate(&info.config) != MN_OK)
            abort();
        mn_checkpoint_info_free(&info);
    }
    fuzz_check_h5_closed("mn_checkpoint_read_info");

    mn_tokenizer *tok = NULL;
    if (mn_checkpoint_load_tokenizer(path, &tok) == MN_OK && tok) {
        mn_ids ids = {0};
        if (mn_tokenizer_encode(tok, "Hello, world", 12, &ids) != MN_OK)
            abort();
        mn_ids_free(&ids);
        mn_tokenizer_free(tok);
    }
    fuzz_check_h5_closed("mn_checkpoint_load_tokenizer");

    mn_checkpoint_dist dist;
    int found = 0;
    if (mn_checkpoint_read_dist(path, &dist, &found) == MN_OK && found)
        mn_checkpoint_dist_free(&dist);
    fuzz_check_h5_closed("mn_checkpoint_read_dist");

    mn_train_config tc;
    mn_train_config_defaults(&tc);
    mn_train_config_load_checkpoint(&tc, path);
    fuzz_check_h5_closed("mn_train_config_load_checkpoint");

    load_all(path);
    return 0;
}
