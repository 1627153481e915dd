/* What the tokenizer's files share and nothing else sees: the handle's layout and the small
 * inline helpers of the hot paths. The files: tokenizer.c (the handle: building, checking,
 * queries), pretokenize.c (GPT-2's pre-tokenizer), bpe_train.c (learning merges),
 * bpe_encode.c (encode, decode), gpt2_vocab.c (Hugging Face GPT-2 files), tokenizer_h5.c
 * (HDF5 persistence). Private to src/text. */
#ifndef MN_TOKENIZER_INTERNAL_H
#define MN_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "text/tokenizer.h"

/* ---- the handle */
typedef struct {
    uint64_t h;
    uint32_t key_off, key_len, ids_off, ids_len;
} cache_slot;

#define CACHE_SLOTS (1u << 16)
#define CACHE_MAX_PIECE 128
#define CACHE_KEY_BYTES (4u << 20)

struct mn_tokenizer {
    char kind[16];
    int32_t n_vocab;
    int64_t *tok_off;   /* (n_vocab + 1) */
    uint8_t *tok_bytes; /* token i is tok_bytes[tok_off[i] .. tok_off[i+1]); empty = no token */
    int32_t n_merges;
    int32_t *merge_left, *merge_right, *merge_result; /* (n_merges), rank order */
    int32_t special[MN_TOK_N_SPECIAL];
    int32_t byte_id[256];
    uint64_t *pair_keys; /* open addressing, UINT64_MAX = empty */
    int32_t *pair_rank;
    uint64_t pair_mask;
    uint64_t hash;
    /* encode cache: pre-token bytes -> ids */
    cache_slot *cache;
    uint32_t cache_count;
    uint8_t *cache_keys;
    uint32_t cache_keys_len;
    int32_t *cache_ids;
    uint32_t cache_ids_len, cache_ids_cap;
    /* scratch for merging one pre-token */
    int32_t *sym, *rank, *prev, *next;
    uint64_t *heap;
    size_t scratch_cap;
};

/* A handle of this kind with no tokens and every special id -1; NULL when out of memory. */
mn_tokenizer *mn_tok_alloc(const char *kind);
/* Checks every invariant of the fields filled so far (tokens, merges, specials) and builds
 * the lookup tables, the encode cache and the hash. `name` prefixes messages. */
mn_status mn_tok_finalize(mn_tokenizer *tok, const char *name);

static inline size_t tok_len(const mn_tokenizer *tok, int32_t id) {
    return (size_t)(tok->tok_off[id + 1] - tok->tok_off[id]);
}

/* The capacity a growing array moves to so that it holds `need`: its current one (or `first`
 * when it has none), doubled until it does. */
static inline size_t grown_capacity(size_t have, size_t need, size_t first) {
    size_t cap = have ? have : first;
    while (cap < need)
        cap *= 2;
    return cap;
}

/* ---- hashing for the merge table, the encode cache and the training tables */
static inline uint64_t pair_key(int32_t a, int32_t b) {
    return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
}
static inline uint64_t key_hash(uint64_t k) {
    k ^= k >> 31;
    k *= 0x9E3779B97F4A7C15ull;
    k ^= k >> 29;
    return k;
}

/* Fast hash of a short byte string (cache and counting tables). */
static inline uint64_t bytes_hash(const uint8_t *p, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ ((uint64_t)n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0x9E3779B97F4A7C15ull;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    if (n) {
        uint64_t k = 0;
        memcpy(&k, p, n);
        h = (h ^ k) * 0x9E3779B97F4A7C15ull;
    }
    h ^= h >> 32;
    h *= 0xd6e8feb86659fd93ull;
    h ^= h >> 32;
    return h;
}

/* ---- UTF-8 (the pre-tokenizer and GPT-2's byte-to-unicode names) */
/* Decodes one strict UTF-8 code point (shortest form, no surrogates, <= U+10FFFF).
 * Returns its length; an invalid byte gives *cp = -1 and length 1. */
static inline size_t utf8_next(const uint8_t *s, size_t n, int32_t *cp) {
    uint8_t b0 = s[0];
    if (b0 < 0x80) {
        *cp = b0;
        return 1;
    }
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF;
    int32_t v;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        need = 1;
        v = b0 & 0x1F;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        need = 2;
        v = b0 & 0x0F;
        if (b0 == 0xE0)
            lo = 0xA0;
        else if (b0 == 0xED)
            hi = 0x9F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        need = 3;
        v = b0 & 0x07;
        if (b0 == 0xF0)
            lo = 0x90;
        else if (b0 == 0xF4)
            hi = 0x8F;
    } else {
        *cp = -1;
        return 1;
    }
    if (n < need + 1) {
        *cp = -1;
        return 1;
    }
    for (size_t i = 1; i <= need; i++) {
        uint8_t b = s[i];
        uint8_t l = (i == 1) ? lo : 0x80, h = (i == 1) ? hi : 0xBF;
        if (b < l || b > h) {
            *cp = -1;
            return 1;
        }
        v = (v << 6) | (b & 0x3F);
    }
    *cp = v;
    return need + 1;
}

#endif
