/* libFuzzer target: a token shard (text/shard.h), opened as `mnemo train` opens it, then
 * every episode and turn walked and a few batches drawn by the loader. The input is tried as
 * it is and, when it is long enough, with its two checksums recomputed (header layout in
 * docs/tokens.md), so that the structure checks behind them are reached. Whatever opens must
 * hold only what the header promises: turns inside their episodes, tokens inside the
 * vocabulary, batches of valid ids. Seeds: fuzz_seeds. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"
#include "fuzz_files.h"
#include "text/shard.h"

enum { H_TOKHASH = 24, H_FILE_BYTES = 56, H_PAYLOAD_SUM = 88, H_HEADER_SUM = 96 };

static uint64_t get64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

static void walk(const mn_shard *s) {
    mn_shard_info info = mn_shard_get_info(s);
    int64_t turns_seen = 0;
    for (int64_t e = 0; e < info.n_episodes; e++) {
        int64_t first, count;
        if (mn_shard_episode(s, e, &first, &count) != MN_OK || first != turns_seen || count < 1)
            abort();
        turns_seen += count;
    }
    if (turns_seen != info.n_turns)
        abort();
    for (int64_t t = 0; t < info.n_turns; t++) {
        const int32_t *tokens;
        const uint8_t *flags;
        int32_t n;
        uint8_t turn_flags;
        if (mn_shard_turn(s, t, &tokens, &flags, &n, &turn_flags) != MN_OK || n < 1 || n > info.longest_turn)
            abort();
        for (int32_t i = 0; i < n; i++)
            if (tokens[i] < 0 || tokens[i] >= info.vocab_size)
                abort();
    }
    if (info.longest_turn > 4096)
        return;
    mn_loader_options lo = {.B = 2, .T = 1 + (int)(info.n_turns % 3), .max_len = info.longest_turn, .seed = 1,
                            .text_weight = 1, .answer_weight = 2};
    mn_loader *l = NULL;
    if (mn_loader_create(s, &lo, &l) != MN_OK)
        return; /* e.g. no episode as long as T */
    for (int b = 0; b < 3; b++) {
        mn_batch batch;
        if (mn_loader_next(l, &batch) != MN_OK)
            abort();
        for (int i = 0; i < batch.T * batch.B; i++) {
            if (batch.lengths[i] < 1 || batch.lengths[i] > batch.max_len)
                abort();
            for (int j = 0; j < batch.max_len; j++)
                if (batch.tokens[(size_t)i * batch.max_len + j] < 0 ||
                    batch.tokens[(size_t)i * batch.max_len + j] >= info.vocab_size)
                    abort();
        }
    }
    mn_loader_free(l);
}

static void open_and_walk(const char *path, uint64_t tokenizer_hash) {
    mn_shard *s = NULL;
    if (mn_shard_open(path, tokenizer_hash, &s) == MN_OK) {
        walk(s);
        mn_shard_close(s);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_begin();
    uint64_t hash = size >= MN_SHARD_HEADER_BYTES ? get64(data + H_TOKHASH) : 0;
    open_and_walk(fuzz_file("as-is.shard", data, size), hash);
    if (size < MN_SHARD_HEADER_BYTES)
        return 0;
    uint8_t *fixed = malloc(size);
    memcpy(fixed, data, size);
    uint64_t end = get64(fixed + H_FILE_BYTES);
    if (end < MN_SHARD_HEADER_BYTES || end > size)
        end = size;
    put64(fixed + H_PAYLOAD_SUM, mn_xxh64(fixed + MN_SHARD_HEADER_BYTES, end - MN_SHARD_HEADER_BYTES, 0));
    put64(fixed + H_HEADER_SUM, mn_xxh64(fixed, H_HEADER_SUM, 0));
    open_and_walk(fuzz_file("fixed.shard", fixed, size), hash);
    free(fixed);
    return 0;
}
