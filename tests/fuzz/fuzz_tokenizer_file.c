/* libFuzzer target: a standalone tokenizer file (HDF5, `mnemo tokenizer --train` writes them;
 * the same group sits in every checkpoint). Whatever loads must be a working tokenizer:
 * decode(encode(x)) == x for the input's own bytes and a fixed text, and a vocabulary inside
 * the documented bounds. No crash, no leaked HDF5 object, no HDF5 diagnostics printed.
 * Seeds: fuzz_seeds (a trained mnemo-bpe tokenizer and a GPT-2 one). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_files.h"
#include "text/tokenizer.h"

static void round_trip(mn_tokenizer *tok, const char *text, size_t len) {
    mn_ids ids = {0};
    if (mn_tokenizer_encode(tok, text, len, &ids) != MN_OK)
        abort();
    for (int64_t i = 0; i < ids.count; i++)
        if (ids.ids[i] < 0 || ids.ids[i] >= mn_tokenizer_vocab_size(tok))
            abort();
    char *out = NULL;
    size_t n = 0;
    if (mn_tokenizer_decode(tok, ids.ids, ids.count, &out, &n) != MN_OK || n != len || memcmp(out, text, len)) {
        fprintf(stderr, "fuzz: a loaded tokenizer does not round-trip its text\n");
        abort();
    }
    free(out);
    mn_ids_free(&ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_begin();
    const char *path = fuzz_file("tok.h5", data, size);
    mn_tokenizer *tok = NULL;
    if (mn_tokenizer_load_file(path, &tok) == MN_OK) {
        int v = mn_tokenizer_vocab_size(tok);
        if (v < 1 || v > MN_TOK_MAX_VOCAB)
            abort();
        static const char text[] = "Hi! I just moved to Lisbon. Café crème 東京 😀\n\n  spaces";
        round_trip(tok, text, sizeof text - 1);
        round_trip(tok, (const char *)data, size < 4096 ? size : 4096);
        mn_tokenizer_free(tok);
    }
    fuzz_check_h5_closed("mn_tokenizer_load_file");
    return 0;
}
