/* libFuzzer target: a training config (`mnemo train --config FILE`, and the copy stored in
 * every checkpoint) overlaid on the defaults, and the same bytes as the value of one command
 * line option (--FIELD VALUE). Whatever is accepted must survive the round trip through
 * mn_train_config_to_json exactly (the checkpoint stores that text and --resume reads it).
 * Seeds: the defaults (fuzz_seeds) and train/recipes/. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mnemo_train.h"

/* c -> JSON -> defaults + JSON -> JSON must give the same text. */
static void round_trip(const mn_train_config *c) {
    char *json = mn_train_config_to_json(c, 0);
    if (!json)
        abort();
    mn_train_config back;
    mn_train_config_defaults(&back);
    if (mn_train_config_load_string(&back, json, "round trip") != MN_OK) {
        fprintf(stderr, "fuzz: an accepted config does not load back: %s\n%s\n", mn_last_error(), json);
        abort();
    }
    char *again = mn_train_config_to_json(&back, 0);
    if (!again || strcmp(json, again)) {
        fprintf(stderr, "fuzz: an accepted config changes on the way back:\n%s\n%s\n", json, again);
        abort();
    }
    free(json);
    free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    mn_train_config c;
    mn_train_config_defaults(&c);
    if (mn_train_config_load_string(&c, text, "fuzz.json") == MN_OK) {
        mn_train_config_validate(&c);
        round_trip(&c);
    }
    /* the same text as one option's value */
    mn_train_config_defaults(&c);
    int field = (int)(size % (size_t)mn_train_config_n_fields());
    if (mn_train_config_set_field(&c, field, text) == MN_OK) {
        char shown[4096];
        if (mn_train_config_field_text(&c, field, shown, sizeof shown) != MN_OK)
            abort();
        round_trip(&c);
    }
    free(text);
    return 0;
}
