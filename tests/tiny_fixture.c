/* The PyTorch oracle's fixture files (tiny_fixture.h). */
#include "tiny_fixture.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/h5util.h"

static const char *fixture_file = "tiny_model.h5";

const char *tiny_fixture_path(void) {
    static char path[4096];
    const char *dir = getenv("MNEMO_FIXTURES");
    snprintf(path, sizeof path, "%s/%s", dir ? dir : "tests/fixtures", fixture_file);
    return path;
}

static int use(const char *file) {
    fixture_file = file;
    return 0;
}
int tiny_fixture_use_slot(void **state) { return (void)state, use("tiny_model_slot.h5"); }
int tiny_fixture_use_delta(void **state) { return (void)state, use("tiny_model_delta.h5"); }
int tiny_fixture_use_gate(void **state) { return (void)state, use("tiny_model.h5"); }

static void ok(mn_status st) {
    if (st != MN_OK)
        fail_msg("%s", mn_last_error());
}

static int64_t attr_int(hid_t f, const char *name) {
    int64_t v = 0;
    ok(mn_h5_read_attr_int(f, tiny_fixture_path(), name, &v));
    return v;
}

void tiny_fixture_open(tiny_fixture *fx) {
    memset(fx, 0, sizeof *fx);
    const char *path = tiny_fixture_path();
    ok(mn_h5_open_read(path, &fx->file));
    hid_t f = fx->file;
    double gate = 0;
    ok(mn_h5_read_attr_float(f, path, "gate_bias_init", &gate));
    fx->config = (mn_config){
        .vocab_size = (int)attr_int(f, "vocab_size"),
        .d_model = (int)attr_int(f, "d_model"),
        .n_heads = (int)attr_int(f, "n_heads"),
        .n_layers = (int)attr_int(f, "n_layers"),
        .n_comp_layers = (int)attr_int(f, "n_comp_layers"),
        .n_slots = (int)attr_int(f, "n_slots"),
        .max_turn_tokens = (int)attr_int(f, "max_turn_tokens"),
        .gate_bias_init = (float)gate,
        .write_rule = MN_WRITE_GATE, /* the gate's file names no rule */
    };
    if (H5Aexists(f, "write_rule") > 0) {
        char *rule = NULL;
        ok(mn_h5_read_attr_string(f, path, "write_rule", &rule));
        ok(mn_write_rule_parse(rule, &fx->config.write_rule));
        free(rule);
    }
    fx->bptt = (int)attr_int(f, "bptt");
    fx->B = (int)attr_int(f, "B");
    fx->T = (int)attr_int(f, "T");
    fx->max_len = (int)attr_int(f, "max_len");
    size_t ntok = (size_t)fx->T * fx->B * fx->max_len;
    fx->tokens = malloc(ntok * sizeof(int32_t));
    fx->weights = malloc(ntok * sizeof(float));
    fx->lengths = malloc((size_t)fx->T * fx->B * sizeof(int32_t));
    ok(mn_h5_read_ints(f, path, "batch/tokens", fx->tokens, ntok));
    ok(mn_h5_read_ints(f, path, "batch/lengths", fx->lengths, (size_t)fx->T * fx->B));
    ok(mn_h5_read_floats(f, path, "batch/loss_weights", fx->weights, ntok));
}

void tiny_fixture_close(tiny_fixture *fx) {
    H5Fclose(fx->file);
    free(fx->tokens);
    free(fx->weights);
    free(fx->lengths);
}

mn_batch tiny_fixture_batch(const tiny_fixture *fx) {
    return (mn_batch){.B = fx->B, .T = fx->T, .max_len = fx->max_len, .tokens = fx->tokens,
                      .lengths = fx->lengths, .loss_weights = fx->weights};
}

float *tiny_fixture_tensors(const tiny_fixture *fx, mn_model *m, const char *group) {
    float *flat = calloc(mn_model_num_params(m), sizeof(float));
    for (int i = 0; i < mn_model_num_tensors(m); i++) {
        mn_tensor_info t;
        ok(mn_model_tensor(m, i, &t));
        char name[256];
        snprintf(name, sizeof name, "%s/%s", group, t.name);
        ok(mn_h5_read_floats(fx->file, tiny_fixture_path(), name, flat + t.offset, t.size));
    }
    return flat;
}

mn_model *tiny_fixture_model(const tiny_fixture *fx) {
    mn_model *m = NULL;
    ok(mn_model_create(&fx->config, &m));
    float *p = tiny_fixture_tensors(fx, m, "params");
    memcpy(mn_model_params(m), p, mn_model_num_params(m) * sizeof(float));
    free(p);
    return m;
}
