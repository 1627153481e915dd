/* libFuzzer target: probe template files (data/probes/*.json, `mnemo episodes --templates`):
 * the input is cut at NUL bytes into up to four files of one folder, loaded for each split,
 * each family selection and open values tried, and what loads is used: synthetic episodes with injected
 * probes (askers drawn from the input), each checked as a well-formed dialogue. The loader
 * checks every file against the others, so more than one file reaches those checks.
 * Seeds: the files of data/probes, single and joined (scripts/fuzz). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "fuzz_files.h"
#include "text/probes.h"

static void use(const mn_probe_templates *t, int askers) {
    mn_probe_config cfg = mn_probe_config_default();
    cfg.askers = askers;
    cfg.probes_per_episode = 3;
    cfg.interference = 1;
    cfg.update_prob = 0.5;
    mn_dialogue_list out = {0};
    mn_probe_stats stats = {0};
    mn_probes_synthetic(NULL, 2, 40, t, &cfg, &out, &stats);
    fuzz_check_list(&out); /* also frees it */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *dir = fuzz_begin();
    size_t pos = 0;
    for (int i = 0; i < 4 && pos <= size; i++) {
        const uint8_t *nul = memchr(data + pos, 0, size - pos);
        size_t end = nul ? (size_t)(nul - data) : size;
        char name[32];
        snprintf(name, sizeof name, "t%d.json", i);
        fuzz_file(name, data + pos, end - pos);
        pos = end + 1;
    }
    static const mn_split splits[] = {MN_SPLIT_TRAIN, MN_SPLIT_VALID, MN_SPLIT_TEST};
    for (int s = 0; s < 3; s++) {
        mn_probe_templates t;
        if (mn_probe_templates_load(dir, splits[s], &t) != MN_OK)
            continue;
        use(&t, size % 3);
        for (int which = MN_FAMILIES_SHARED; which <= MN_FAMILIES_HELD_OUT; which++) {
            mn_probe_templates again;
            if (mn_probe_templates_load(dir, splits[s], &again) != MN_OK)
                abort(); /* the same files load the same way */
            if (mn_probe_templates_select(&again, (mn_family_set)which) == MN_OK)
                use(&again, MN_ASKERS_OTHER);
            mn_probe_templates_free(&again);
        }
        if (splits[s] == MN_SPLIT_TRAIN && mn_probe_templates_open_values(&t, dir, 12, size) == MN_OK)
            use(&t, MN_ASKERS_OTHER); /* generated values, checked against the other splits' */
        mn_probe_templates_free(&t);
    }
    return 0;
}
