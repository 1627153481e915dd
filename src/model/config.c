#include <math.h>
#include <string.h>

#include "core/error.h"

mn_config mn_config_demo(void) {
    mn_config c = {
        .vocab_size = 4096,
        .d_model = 256,
        .n_heads = 4,
        .n_layers = 4,
        .n_comp_layers = 2,
        .n_slots = 16,
        .max_turn_tokens = 128,
        .gate_bias_init = -2.0f,
    };
    return c;
}

/* Generous upper bounds that keep every size computation inside int64 and int32 indices. */
#define MN_MAX_VOCAB (1 << 22)
#define MN_MAX_WIDTH (1 << 15)
#define MN_MAX_LAYERS 256
#define MN_MAX_SLOTS 4096
#define MN_MAX_TURN (1 << 16)

static mn_status check_range(const char *field, int value, int lo, int hi) {
    if (value < lo || value > hi)
        return mn_fail(MN_ERR_CONFIG, "config: %s = %d is out of range [%d, %d]", field, value, lo, hi);
    return MN_OK;
}

mn_status mn_config_validate(const mn_config *c) {
    if (!c)
        return mn_fail(MN_ERR_INVALID_ARG, "config: NULL");
    MN_TRY(check_range("vocab_size", c->vocab_size, 2, MN_MAX_VOCAB));
    MN_TRY(check_range("d_model", c->d_model, 1, MN_MAX_WIDTH));
    MN_TRY(check_range("n_heads", c->n_heads, 1, c->d_model));
    if (c->d_model % c->n_heads)
        return mn_fail(MN_ERR_CONFIG, "config: n_heads = %d does not divide d_model = %d", c->n_heads,
                       c->d_model);
    MN_TRY(check_range("n_layers", c->n_layers, 1, MN_MAX_LAYERS));
    MN_TRY(check_range("n_comp_layers", c->n_comp_layers, 1, MN_MAX_LAYERS));
    MN_TRY(check_range("n_slots", c->n_slots, 1, MN_MAX_SLOTS));
    MN_TRY(check_range("max_turn_tokens", c->max_turn_tokens, 1, MN_MAX_TURN));
    if (!isfinite(c->gate_bias_init))
        return mn_fail(MN_ERR_CONFIG, "config: gate_bias_init must be finite");
    if (!mn_write_rule_name(c->write_rule))
        return mn_fail(MN_ERR_CONFIG, "config: write_rule = %d is not a write rule (0 gate, 1 slot, 2 delta)",
                       c->write_rule);
    /* attention probabilities of one (head, position) pair must index in int */
    long long S = (long long)c->n_slots + c->max_turn_tokens;
    if (S * S > (1LL << 30))
        return mn_fail(MN_ERR_CONFIG, "config: n_slots + max_turn_tokens = %lld is too long (attention of %lld^2)",
                       S, S);
    return MN_OK;
}

static const char *const write_rule_names[] = {"gate", "slot", "delta"};

const char *mn_write_rule_name(int rule) {
    int n = (int)(sizeof write_rule_names / sizeof write_rule_names[0]);
    return rule >= 0 && rule < n ? write_rule_names[rule] : NULL;
}

mn_status mn_write_rule_parse(const char *name, int *rule) {
    for (int r = 0; name && mn_write_rule_name(r); r++)
        if (!strcmp(name, mn_write_rule_name(r))) {
            *rule = r;
            return MN_OK;
        }
    return mn_fail(MN_ERR_CONFIG, "config: write_rule \"%s\" is not one of gate, slot, delta", name ? name : "(null)");
}
