/* libFuzzer target: MSC persona sentences (msc_personas_all.json, `mnemo episodes
 * --personas`) loaded for each split. What loads must be what the loader promises: the
 * persona table inside the sentence list, every sentence valid UTF-8. Seed: fuzz_seeds. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "fuzz_files.h"
#include "text/probes.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_begin();
    const char *path = fuzz_file("personas.json", data, size);
    static const mn_split splits[] = {MN_SPLIT_TRAIN, MN_SPLIT_VALID, MN_SPLIT_TEST};
    for (int s = 0; s < 3; s++) {
        mn_persona_bank bank;
        if (mn_persona_bank_load(path, splits[s], &bank) != MN_OK)
            continue;
        for (int i = 0; i < bank.n_sentences; i++)
            fuzz_check_str(bank.sentences[i], 0);
        for (int p = 0; p < bank.n_personas; p++) {
            if (bank.persona_start[p] >= bank.persona_start[p + 1])
                abort(); /* each persona keeps at least one sentence */
            for (int i = bank.persona_start[p]; i < bank.persona_start[p + 1]; i++)
                if (bank.persona_sentences[i] < 0 || bank.persona_sentences[i] >= bank.n_sentences)
                    abort();
        }
        mn_persona_bank_free(&bank);
    }
    return 0;
}
