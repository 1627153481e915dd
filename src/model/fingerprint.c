/* The fingerprint of what gives a session vector R its meaning: the compressor that writes it,
 * R_0 and the gate (memory.*), the embeddings the compressor reads (wte), and the config
 * fields that shape them. Session stores record it with every state and refuse to hand a
 * state to a model with another fingerprint. */
#include <string.h>

#include "mnemo.h"
#include "core/hash.h"

static int is_compressor_side(const char *name) {
    return !strcmp(name, "wte") || !strncmp(name, "compressor.", 11) || !strncmp(name, "memory.", 7);
}

uint64_t mn_model_fingerprint(const mn_model *model) {
    if (!model)
        return 0;
    const mn_config *c = mn_model_config(model);
    /* fixed-width fields, so that the hash does not depend on struct padding */
    int64_t fields[6] = {c->vocab_size, c->d_model, c->n_heads, c->n_comp_layers, c->n_slots, c->max_turn_tokens};
    mn_xxh64_state h;
    mn_xxh64_init(&h, 0x6d6e656d6f667072ull); /* "mnemofpr" */
    mn_xxh64_update(&h, fields, sizeof fields);
    const float *params = mn_model_params((mn_model *)model);
    for (int i = 0; i < mn_model_num_tensors(model); i++) {
        mn_tensor_info t;
        if (mn_model_tensor(model, i, &t) != MN_OK || !is_compressor_side(t.name))
            continue;
        mn_xxh64_update(&h, t.name, strlen(t.name) + 1);
        mn_xxh64_update(&h, params + t.offset, t.size * sizeof(float));
    }
    return mn_xxh64_digest(&h);
}
