/* libFuzzer target: the byte-level BPE tokenizer.
 * First byte picks the mode:
 *   0: encode/decode round trip of the rest on a tokenizer trained at start-up
 *   1: GPT-2 vocab.json + merges.txt loading from the rest (split at the first NUL byte);
 *      whatever loads must round-trip the input bytes
 *   2: training on the rest (split at newlines) with a small vocabulary, then round trip
 * Pre-tokens must tile the input; decode(encode(x)) must equal x; nothing may crash.
 * Build: scripts/fuzz (the tokenizer's files in src/text and src/core, with jansson, libutf8proc, hdf5). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer.h"

static void round_trip(mn_tokenizer *tok, const char *data, size_t size) {
    size_t pos = 0;
    while (pos < size) {
        size_t end = mn_pretokenize_next(data, size, pos);
        if (end <= pos || end > size)
            abort();
        pos = end;
    }
    mn_ids ids = {0};
    if (mn_tokenizer_encode(tok, data, size, &ids) != MN_OK)
        abort();
    char *out = NULL;
    size_t n = 0;
    if (mn_tokenizer_decode(tok, ids.ids, ids.count, &out, &n) != MN_OK)
        abort();
    if (n != size || (size && memcmp(out, data, size) != 0))
        abort();
    free(out);
    mn_ids_free(&ids);
}

static mn_tokenizer *trained;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0)
        return 0;
    const char *rest = (const char *)data + 1;
    size_t len = size - 1;
    if (!trained) {
        static const char *const texts[] = {
            "Hi! I just moved to Lisbon. Oh nice, how do you like it?",
            "I'm sure they'll love it; we've said it's the best in 2019.",
            "Café crème 東京 😀 \xd9\x85\xd8\xb1\xd8\xad\xd8\xa8\xd8\xa7   spaces\n\n",
        };
        if (mn_tokenizer_train_texts(texts, NULL, 3, 400, &trained) != MN_OK)
            abort();
    }
    switch (data[0] % 3) {
    case 0:
        round_trip(trained, rest, len);
        break;
    case 1: {
        const char *nul = memchr(rest, '\0', len);
        size_t vl = nul ? (size_t)(nul - rest) : len;
        const char *merges = nul ? nul + 1 : "";
        size_t ml = nul ? len - vl - 1 : 0;
        mn_tokenizer *tok = NULL;
        if (mn_tokenizer_load_gpt2_buffers(rest, vl, merges, ml, "fuzz.json", "fuzz.txt", &tok) ==
            MN_OK) {
            round_trip(tok, rest, len);
            mn_tokenizer_free(tok);
        }
        break;
    }
    default: {
        if (len > 4096)
            break; /* training cost grows with the text; keep runs fast */
        mn_bpe_counts *counts;
        if (mn_bpe_counts_create(&counts) != MN_OK)
            abort();
        size_t pos = 0;
        while (pos < len) {
            const char *nl = memchr(rest + pos, '\n', len - pos);
            size_t end = nl ? (size_t)(nl - rest) + 1 : len;
            if (mn_bpe_counts_add(counts, rest + pos, end - pos) != MN_OK)
                abort();
            pos = end;
        }
        mn_tokenizer *tok = NULL;
        if (mn_tokenizer_train(counts, 262 + (len % 200), &tok) != MN_OK)
            abort();
        mn_bpe_counts_free(counts);
        round_trip(tok, rest, len);
        mn_tokenizer_free(tok);
        break;
    }
    }
    return 0;
}
