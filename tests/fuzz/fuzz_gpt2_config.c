/* libFuzzer target: a Hugging Face GPT-2 config.json next to the fixture's safetensors
 * (tests/fixtures/gpt2_tiny, or $MNEMO_FIXTURES/gpt2_tiny), read as `mnemo import-gpt2
 * --config` reads it: its fields must agree with the tensors and describe plain GPT-2. What
 * it accepts must say what the tensors say. Seed: the fixture's config.json. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "fuzz_files.h"
#include "io/gpt2_import.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char model[1024];
    static mn_gpt2_info shapes;
    if (!model[0]) {
        const char *fixtures = getenv("MNEMO_FIXTURES");
        snprintf(model, sizeof model, "%s/gpt2_tiny/model.safetensors", fixtures ? fixtures : "tests/fixtures");
        if (mn_gpt2_inspect(model, NULL, 4, &shapes) != MN_OK) { /* the shapes alone */
            fprintf(stderr, "fuzz_gpt2_config: %s\n", mn_last_error());
            abort();
        }
    }
    fuzz_begin();
    const char *config = fuzz_file("config.json", data, size);
    mn_gpt2_info info;
    if (mn_gpt2_inspect(model, config, 0, &info) == MN_OK &&
        (info.n_layer != shapes.n_layer || info.n_embd != shapes.n_embd || info.vocab_size != shapes.vocab_size ||
         info.n_head < 1 || info.n_embd % info.n_head))
        abort();
    return 0;
}
