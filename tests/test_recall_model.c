/* The shipped model still recalls (issue 15's regression test): data/models/recall-small.h5 on
 * two small committed probe files of the test split (tests/fixtures/recall/: the training
 * families' test phrasings and values, and the held-out families; built-in small-talk filler,
 * distances 1-8 turns, both askers; made by tests/fixtures/recall/make.sh) scores, with memory,
 * at least 10 points below what data/models/README.md reports and above no_memory. It fails
 * when the model file, or the code that reads, updates or scores the memory, breaks recall. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "mnemo.h"

/* Measured with the model card's command (data/models/README.md), multiple choice among 4. */
typedef struct {
    const char *file;
    double measured_memory; /* % */
} recall_case;

static const recall_case cases[] = {
    {"shared-families.jsonl", 75.5},
    {"held-out-families.jsonl", 66.5},
};

static const char *fixtures(void) {
    const char *f = getenv("MNEMO_FIXTURES");
    return f ? f : "tests/fixtures";
}

static double accuracy(json_t *report, const char *mode) {
    json_t *m = json_object_get(json_object_get(report, "recall"), mode);
    assert_non_null(m);
    return 100.0 * json_number_value(json_object_get(m, "mc_accuracy"));
}

static void test_shipped_model_recalls(void **state) {
    (void)state;
    char model[4096], data[4096], json[256];
    snprintf(model, sizeof model, "%s/../../data/models/recall-small.h5", fixtures());
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(data, sizeof data, "%s/recall/%s", fixtures(), cases[i].file);
        snprintf(json, sizeof json, "/tmp/mnemo_test_recall_model_%ld_%zu.json", (long)getpid(), i);
        mn_eval_config c = {.modes = "memory,no_memory", .threads = 1};
        if (mn_eval_checkpoint(model, data, &c, json) != MN_OK)
            fail_msg("%s on %s: %s", model, data, mn_last_error());
        json_t *report = json_load_file(json, 0, NULL);
        assert_non_null(report);
        double mem = accuracy(report, "memory"), none = accuracy(report, "no_memory");
        printf("%s: memory %.1f%%, no_memory %.1f%% (measured %.1f%%)\n", cases[i].file, mem, none,
               cases[i].measured_memory);
        if (mem < cases[i].measured_memory - 10.0)
            fail_msg("%s: memory %.1f%% is more than 10 points below the measured %.1f%%", cases[i].file, mem,
                     cases[i].measured_memory);
        if (mem <= none)
            fail_msg("%s: memory %.1f%% does not beat no_memory %.1f%%", cases[i].file, mem, none);
        json_decref(report);
        unlink(json);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shipped_model_recalls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
