/* Byte-level BPE: GPT-2 pre-tokenizer, training on a pre-token frequency table, cached
 * rank-based encoding, GPT-2 file loading and HDF5 persistence (docs/tokens.md). */
#include "text/tokenizer.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utf8proc.h>

#include "core/atomic_file.h"
#include "core/error.h"

/* ================================================================ XXH64 */
#define XP1 0x9E3779B185EBCA87ull
#define XP2 0xC2B2AE3D27D4EB4Full
#define XP3 0x165667B19E3779F9ull
#define XP4 0x85EBCA77C2B2AE63ull
#define XP5 0x27D4EB2F165667C5ull

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static inline uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t xround(uint64_t acc, uint64_t in) {
    acc += in * XP2;
    return rotl64(acc, 31) * XP1;
}
static inline uint64_t xmerge(uint64_t h, uint64_t v) {
    h ^= xround(0, v);
    return h * XP1 + XP4;
}

void mn_xxh64_init(mn_xxh64_state *s, uint64_t seed) {
    memset(s, 0, sizeof *s);
    s->seed = seed;
    s->v[0] = seed + XP1 + XP2;
    s->v[1] = seed + XP2;
    s->v[2] = seed;
    s->v[3] = seed - XP1;
}

static void xxh_stripe(uint64_t v[4], const uint8_t *p) {
    v[0] = xround(v[0], rd64(p));
    v[1] = xround(v[1], rd64(p + 8));
    v[2] = xround(v[2], rd64(p + 16));
    v[3] = xround(v[3], rd64(p + 24));
}

void mn_xxh64_update(mn_xxh64_state *s, const void *data, size_t len) {
    const uint8_t *p = data;
    s->total += len;
    if (s->buf_len + len < 32) {
        if (len)
            memcpy(s->buf + s->buf_len, p, len);
        s->buf_len += len;
        return;
    }
    if (s->buf_len) {
        size_t fill = 32 - s->buf_len;
        memcpy(s->buf + s->buf_len, p, fill);
        xxh_stripe(s->v, s->buf);
        p += fill;
        len -= fill;
        s->buf_len = 0;
    }
    while (len >= 32) {
        xxh_stripe(s->v, p);
        p += 32;
        len -= 32;
    }
    if (len)
        memcpy(s->buf, p, len);
    s->buf_len = len;
}

uint64_t mn_xxh64_digest(const mn_xxh64_state *s) {
    uint64_t h;
    if (s->total >= 32) {
        h = rotl64(s->v[0], 1) + rotl64(s->v[1], 7) + rotl64(s->v[2], 12) + rotl64(s->v[3], 18);
        for (int i = 0; i < 4; i++)
            h = xmerge(h, s->v[i]);
    } else {
        h = s->seed + XP5;
    }
    h += s->total;
    const uint8_t *p = s->buf;
    size_t n = s->buf_len;
    while (n >= 8) {
        h ^= xround(0, rd64(p));
        h = rotl64(h, 27) * XP1 + XP4;
        p += 8;
        n -= 8;
    }
    if (n >= 4) {
        h ^= (uint64_t)rd32(p) * XP1;
        h = rotl64(h, 23) * XP2 + XP3;
        p += 4;
        n -= 4;
    }
    while (n--) {
        h ^= (*p++) * XP5;
        h = rotl64(h, 11) * XP1;
    }
    h ^= h >> 33;
    h *= XP2;
    h ^= h >> 29;
    h *= XP3;
    h ^= h >> 32;
    return h;
}

uint64_t mn_xxh64(const void *data, size_t len, uint64_t seed) {
    mn_xxh64_state s;
    mn_xxh64_init(&s, seed);
    mn_xxh64_update(&s, data, len);
    return mn_xxh64_digest(&s);
}

/* ================================================================ small helpers */
static const char *const special_texts[MN_TOK_N_SPECIAL] = {
    "<|pad|>", "<|turn|>", "<|speaker_a|>", "<|speaker_b|>", "<|eot|>", "<|session|>",
};

const char *mn_special_text(mn_special which) {
    return (which >= 0 && which < MN_TOK_N_SPECIAL) ? special_texts[which] : "";
}

void mn_ids_free(mn_ids *ids) {
    free(ids->ids);
    ids->ids = NULL;
    ids->count = ids->capacity = 0;
}

static mn_status ids_reserve(mn_ids *ids, int64_t extra) {
    if (ids->count + extra <= ids->capacity)
        return MN_OK;
    int64_t cap = ids->capacity ? ids->capacity : 256;
    while (cap < ids->count + extra)
        cap *= 2;
    int32_t *p = realloc(ids->ids, (size_t)cap * sizeof *p);
    if (!p)
        return mn_fail(MN_ERR_NOMEM, "tokenizer: out of memory for %lld ids", (long long)cap);
    ids->ids = p;
    ids->capacity = cap;
    return MN_OK;
}

mn_status mn_ids_push(mn_ids *ids, int32_t id) {
    MN_TRY(ids_reserve(ids, 1));
    ids->ids[ids->count++] = id;
    return MN_OK;
}

/* Fast hash of a short byte string (cache and counting tables). */
static uint64_t bytes_hash(const uint8_t *p, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ ((uint64_t)n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        h = (h ^ rd64(p)) * 0x9E3779B97F4A7C15ull;
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

static inline uint64_t pair_key(int32_t a, int32_t b) {
    return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
}
static inline uint64_t key_hash(uint64_t k) {
    k ^= k >> 31;
    k *= 0x9E3779B97F4A7C15ull;
    k ^= k >> 29;
    return k;
}

/* ================================================================ pre-tokenizer */
enum { C_OTHER = 0, C_LETTER, C_NUMBER, C_SPACE };

/* Class of each ASCII byte: 1 letter, 2 digit, 3 White_Space, 0 other. A constant, so that
 * tokenizers on different threads share it without synchronisation. */
static const uint8_t ascii_class[128] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 3, 3, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0,
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0,
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0,
};

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

/* Unicode White_Space (what \s means to the regex engines of tiktoken and HF). */
static inline int is_white_space(int32_t cp) {
    if (cp < 0x85)
        return (cp >= 9 && cp <= 13) || cp == 32;
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

static inline int cp_class(int32_t cp) {
    if (cp < 0)
        return C_OTHER;
    if (cp < 128)
        return ascii_class[cp];
    if (is_white_space(cp))
        return C_SPACE;
    switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
        return C_LETTER;
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
        return C_NUMBER;
    default:
        return C_OTHER;
    }
}

/* Class and length of the character at s[pos]. */
static inline int char_at(const uint8_t *s, size_t n, size_t pos, size_t *clen) {
    uint8_t b = s[pos];
    if (b < 0x80) {
        *clen = 1;
        return ascii_class[b];
    }
    int32_t cp;
    *clen = utf8_next(s + pos, n - pos, &cp);
    return cp_class(cp);
}

/* End of the run of characters of class cls starting at pos. */
static inline size_t run_end(const uint8_t *s, size_t n, size_t pos, int cls) {
    while (pos < n) {
        uint8_t b = s[pos];
        if (b < 0x80) {
            if (ascii_class[b] != cls)
                break;
            pos++;
        } else {
            size_t l;
            if (char_at(s, n, pos, &l) != cls)
                break;
            pos += l;
        }
    }
    return pos;
}

size_t mn_pretokenize_next(const char *text, size_t len, size_t pos) {
    const uint8_t *s = (const uint8_t *)text;
    if (pos >= len)
        return len;
    /* 's|'t|'re|'ve|'m|'ll|'d (ASCII, case-sensitive), tried first */
    if (s[pos] == '\'' && pos + 1 < len) {
        uint8_t c = s[pos + 1];
        if (c == 's' || c == 't' || c == 'm' || c == 'd')
            return pos + 2;
        if (pos + 2 < len) {
            uint8_t d = s[pos + 2];
            if ((c == 'r' && d == 'e') || (c == 'v' && d == 'e') || (c == 'l' && d == 'l'))
                return pos + 3;
        }
    }
    size_t l0;
    int c0 = char_at(s, len, pos, &l0);
    /* " ?X+" for X in letters, numbers, other: an optional single U+0020 first */
    if (s[pos] == ' ' && pos + 1 < len) {
        size_t l1;
        int c1 = char_at(s, len, pos + 1, &l1);
        if (c1 != C_SPACE)
            return run_end(s, len, pos + 1 + l1, c1);
    }
    if (c0 != C_SPACE)
        return run_end(s, len, pos + l0, c0);
    /* \s+(?!\S) then \s+: a whitespace run followed by text gives back its last character
     * (which then leads the next pre-token), unless the run is a single character. */
    size_t last = pos, p = pos;
    while (p < len) {
        size_t l;
        if (char_at(s, len, p, &l) != C_SPACE)
            break;
        last = p;
        p += l;
    }
    if (p == len || last == pos)
        return p;
    return last;
}

/* ================================================================ the tokenizer */
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

void mn_tokenizer_free(mn_tokenizer *tok) {
    if (!tok)
        return;
    free(tok->tok_off);
    free(tok->tok_bytes);
    free(tok->merge_left);
    free(tok->merge_right);
    free(tok->merge_result);
    free(tok->pair_keys);
    free(tok->pair_rank);
    free(tok->cache);
    free(tok->cache_keys);
    free(tok->cache_ids);
    free(tok->sym);
    free(tok->rank);
    free(tok->prev);
    free(tok->next);
    free(tok->heap);
    free(tok);
}

const char *mn_tokenizer_kind(const mn_tokenizer *tok) { return tok->kind; }
int mn_tokenizer_vocab_size(const mn_tokenizer *tok) { return tok->n_vocab; }
int mn_tokenizer_n_merges(const mn_tokenizer *tok) { return tok->n_merges; }
uint64_t mn_tokenizer_hash(const mn_tokenizer *tok) { return tok->hash; }

int32_t mn_tokenizer_special(const mn_tokenizer *tok, mn_special which) {
    if (which < 0 || which >= MN_TOK_N_SPECIAL)
        return -1;
    return tok->special[which];
}

const uint8_t *mn_tokenizer_token_bytes(const mn_tokenizer *tok, int32_t id, size_t *len) {
    if (id < 0 || id >= tok->n_vocab)
        return NULL;
    *len = (size_t)(tok->tok_off[id + 1] - tok->tok_off[id]);
    return tok->tok_bytes + tok->tok_off[id];
}

static inline int32_t pair_lookup(const mn_tokenizer *tok, int32_t a, int32_t b) {
    uint64_t k = pair_key(a, b);
    for (uint64_t i = key_hash(k) & tok->pair_mask;; i = (i + 1) & tok->pair_mask) {
        uint64_t s = tok->pair_keys[i];
        if (s == k)
            return tok->pair_rank[i];
        if (s == UINT64_MAX)
            return INT32_MAX;
    }
}

static uint64_t compute_hash(const mn_tokenizer *tok) {
    mn_xxh64_state s;
    mn_xxh64_init(&s, 0x6d6e656d6f746f6bull); /* "mnemotok" */
    mn_xxh64_update(&s, tok->kind, strlen(tok->kind) + 1);
    int32_t header[2] = {tok->n_vocab, tok->n_merges};
    mn_xxh64_update(&s, header, sizeof header);
    mn_xxh64_update(&s, tok->tok_off, sizeof(int64_t) * (size_t)(tok->n_vocab + 1));
    mn_xxh64_update(&s, tok->tok_bytes, (size_t)tok->tok_off[tok->n_vocab]);
    mn_xxh64_update(&s, tok->merge_left, sizeof(int32_t) * (size_t)tok->n_merges);
    mn_xxh64_update(&s, tok->merge_right, sizeof(int32_t) * (size_t)tok->n_merges);
    mn_xxh64_update(&s, tok->merge_result, sizeof(int32_t) * (size_t)tok->n_merges);
    mn_xxh64_update(&s, tok->special, sizeof tok->special);
    return mn_xxh64_digest(&s);
}

static int is_special_id(const mn_tokenizer *tok, int32_t id) {
    for (int i = 0; i < MN_TOK_N_SPECIAL; i++)
        if (tok->special[i] == id)
            return 1;
    return 0;
}

static size_t tok_len(const mn_tokenizer *tok, int32_t id) {
    return (size_t)(tok->tok_off[id + 1] - tok->tok_off[id]);
}

/* Checks every invariant of the fields filled so far and builds the lookup tables.
 * `name` prefixes messages. */
static mn_status tok_finalize(mn_tokenizer *tok, const char *name) {
    if (tok->n_vocab < 256 || tok->n_vocab > MN_TOK_MAX_VOCAB)
        return mn_fail(MN_ERR_FORMAT, "%s: vocabulary size %d outside 256..%d", name,
                       tok->n_vocab, MN_TOK_MAX_VOCAB);
    if (tok->n_merges < 0 || tok->n_merges > tok->n_vocab)
        return mn_fail(MN_ERR_FORMAT, "%s: %d merges for %d tokens", name, tok->n_merges,
                       tok->n_vocab);
    if (tok->tok_off[0] != 0)
        return mn_fail(MN_ERR_FORMAT, "%s: token offsets do not start at 0", name);
    for (int32_t i = 0; i < tok->n_vocab; i++)
        if (tok->tok_off[i + 1] < tok->tok_off[i])
            return mn_fail(MN_ERR_FORMAT, "%s: token offsets decrease at token %d", name, i);
    for (int i = 0; i < MN_TOK_N_SPECIAL; i++) {
        int32_t id = tok->special[i];
        if (id == -1)
            continue;
        if (id < 0 || id >= tok->n_vocab)
            return mn_fail(MN_ERR_FORMAT, "%s: special token %s has id %d outside 0..%d", name,
                           special_texts[i], id, tok->n_vocab - 1);
        for (int j = 0; j < i; j++)
            if (tok->special[j] == id)
                return mn_fail(MN_ERR_FORMAT, "%s: special tokens %s and %s share id %d", name,
                               special_texts[j], special_texts[i], id);
        size_t l = tok_len(tok, id);
        if (l != strlen(special_texts[i]) ||
            memcmp(tok->tok_bytes + tok->tok_off[id], special_texts[i], l) != 0)
            return mn_fail(MN_ERR_FORMAT, "%s: token %d is not the text of %s", name, id,
                           special_texts[i]);
    }
    if (!strcmp(tok->kind, "mnemo-bpe"))
        for (int i = 0; i < MN_TOK_N_SPECIAL; i++)
            if (tok->special[i] != MN_TOK_SPECIAL_BASE + i)
                return mn_fail(MN_ERR_FORMAT, "%s: mnemo-bpe special %s must have id %d", name,
                               special_texts[i], MN_TOK_SPECIAL_BASE + i);
    /* byte tokens: the lowest non-special id holding exactly that byte */
    for (int b = 0; b < 256; b++)
        tok->byte_id[b] = -1;
    for (int32_t id = tok->n_vocab - 1; id >= 0; id--)
        if (tok_len(tok, id) == 1 && !is_special_id(tok, id))
            tok->byte_id[tok->tok_bytes[tok->tok_off[id]]] = id;
    for (int b = 0; b < 256; b++)
        if (tok->byte_id[b] < 0)
            return mn_fail(MN_ERR_FORMAT, "%s: no token for byte 0x%02x", name, b);
    /* merges: in range, not special, result == left + right, each pair once */
    uint64_t cap = 16;
    while (cap < 2 * (uint64_t)tok->n_merges + 16)
        cap *= 2;
    tok->pair_keys = malloc(cap * sizeof *tok->pair_keys);
    tok->pair_rank = malloc(cap * sizeof *tok->pair_rank);
    if (!tok->pair_keys || !tok->pair_rank)
        return mn_fail(MN_ERR_NOMEM, "%s: out of memory for the merge table", name);
    memset(tok->pair_keys, 0xff, cap * sizeof *tok->pair_keys);
    tok->pair_mask = cap - 1;
    for (int32_t r = 0; r < tok->n_merges; r++) {
        int32_t a = tok->merge_left[r], b = tok->merge_right[r], c = tok->merge_result[r];
        if (a < 0 || a >= tok->n_vocab || b < 0 || b >= tok->n_vocab || c < 0 ||
            c >= tok->n_vocab)
            return mn_fail(MN_ERR_FORMAT, "%s: merge %d (%d %d -> %d) has an id outside 0..%d",
                           name, r, a, b, c, tok->n_vocab - 1);
        if (is_special_id(tok, a) || is_special_id(tok, b) || is_special_id(tok, c))
            return mn_fail(MN_ERR_FORMAT, "%s: merge %d involves a special token", name, r);
        size_t la = tok_len(tok, a), lb = tok_len(tok, b), lc = tok_len(tok, c);
        if (la == 0 || lb == 0 || lc != la + lb ||
            memcmp(tok->tok_bytes + tok->tok_off[c], tok->tok_bytes + tok->tok_off[a], la) ||
            memcmp(tok->tok_bytes + tok->tok_off[c] + la, tok->tok_bytes + tok->tok_off[b], lb))
            return mn_fail(MN_ERR_FORMAT, "%s: merge %d: token %d is not token %d + token %d",
                           name, r, c, a, b);
        uint64_t k = pair_key(a, b);
        uint64_t i = key_hash(k) & tok->pair_mask;
        while (tok->pair_keys[i] != UINT64_MAX) {
            if (tok->pair_keys[i] == k)
                return mn_fail(MN_ERR_FORMAT, "%s: merge %d repeats the pair (%d, %d)", name, r,
                               a, b);
            i = (i + 1) & tok->pair_mask;
        }
        tok->pair_keys[i] = k;
        tok->pair_rank[i] = r;
    }
    tok->cache = calloc(CACHE_SLOTS, sizeof *tok->cache);
    tok->cache_keys = malloc(CACHE_KEY_BYTES);
    if (!tok->cache || !tok->cache_keys)
        return mn_fail(MN_ERR_NOMEM, "%s: out of memory for the encode cache", name);
    tok->hash = compute_hash(tok);
    return MN_OK;
}

/* ================================================================ encode */
static mn_status scratch_reserve(mn_tokenizer *tok, size_t n) {
    if (n <= tok->scratch_cap)
        return MN_OK;
    size_t cap = tok->scratch_cap ? tok->scratch_cap : 256;
    while (cap < n)
        cap *= 2;
    int32_t *sym = realloc(tok->sym, cap * sizeof(int32_t));
    if (sym)
        tok->sym = sym;
    int32_t *rank = realloc(tok->rank, cap * sizeof(int32_t));
    if (rank)
        tok->rank = rank;
    int32_t *prev = realloc(tok->prev, cap * sizeof(int32_t));
    if (prev)
        tok->prev = prev;
    int32_t *next = realloc(tok->next, cap * sizeof(int32_t));
    if (next)
        tok->next = next;
    uint64_t *heap = realloc(tok->heap, 3 * cap * sizeof(uint64_t)); /* n - 1 + 2 per merge */
    if (heap)
        tok->heap = heap;
    if (!sym || !rank || !prev || !next || !heap)
        return mn_fail(MN_ERR_NOMEM, "tokenizer: out of memory for a %zu-byte pre-token", n);
    tok->scratch_cap = cap;
    return MN_OK;
}

/* Short pre-tokens: repeatedly merge the lowest-rank adjacent pair (leftmost on ties). */
static size_t bpe_linear(mn_tokenizer *tok, const uint8_t *p, size_t n) {
    int32_t *sym = tok->sym, *rank = tok->rank;
    for (size_t i = 0; i < n; i++)
        sym[i] = tok->byte_id[p[i]];
    size_t m = n;
    for (size_t i = 0; i + 1 < m; i++)
        rank[i] = pair_lookup(tok, sym[i], sym[i + 1]);
    while (m > 1) {
        int32_t best = INT32_MAX;
        size_t at = 0;
        for (size_t i = 0; i + 1 < m; i++)
            if (rank[i] < best) {
                best = rank[i];
                at = i;
            }
        if (best == INT32_MAX)
            break;
        sym[at] = tok->merge_result[best];
        memmove(sym + at + 1, sym + at + 2, (m - at - 2) * sizeof *sym);
        if (at + 2 < m)
            memmove(rank + at + 1, rank + at + 2, (m - at - 2 - 1) * sizeof *rank);
        m--;
        if (at > 0)
            rank[at - 1] = pair_lookup(tok, sym[at - 1], sym[at]);
        if (at + 1 < m)
            rank[at] = pair_lookup(tok, sym[at], sym[at + 1]);
    }
    return m;
}

static void heap_push(uint64_t *heap, size_t *n, uint64_t v) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (heap[parent] <= v)
            break;
        heap[i] = heap[parent];
        i = parent;
    }
    heap[i] = v;
}

static uint64_t heap_pop(uint64_t *heap, size_t *n) {
    uint64_t top = heap[0], v = heap[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && heap[c + 1] < heap[c])
            c++;
        if (heap[c] >= v)
            break;
        heap[i] = heap[c];
        i = c;
    }
    if (*n)
        heap[i] = v;
    return top;
}

/* Long pre-tokens: same merge order, O(n log n) with a heap of (rank, position) over a
 * linked list; stale heap entries are skipped when popped. */
static size_t bpe_heap(mn_tokenizer *tok, const uint8_t *p, size_t n) {
    int32_t *sym = tok->sym, *prev = tok->prev, *next = tok->next;
    uint64_t *heap = tok->heap;
    size_t hn = 0;
    for (size_t i = 0; i < n; i++) {
        sym[i] = tok->byte_id[p[i]];
        prev[i] = (int32_t)i - 1;
        next[i] = (i + 1 < n) ? (int32_t)i + 1 : -1;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        int32_t r = pair_lookup(tok, sym[i], sym[i + 1]);
        if (r != INT32_MAX)
            heap_push(heap, &hn, ((uint64_t)r << 32) | i);
    }
    while (hn) {
        uint64_t e = heap_pop(heap, &hn);
        int32_t r = (int32_t)(e >> 32), i = (int32_t)(e & 0xffffffffu);
        if (sym[i] < 0 || next[i] < 0)
            continue;
        int32_t j = next[i];
        if (pair_lookup(tok, sym[i], sym[j]) != r)
            continue;
        sym[i] = tok->merge_result[r];
        sym[j] = -1;
        next[i] = next[j];
        if (next[j] >= 0)
            prev[next[j]] = i;
        if (prev[i] >= 0) {
            int32_t q = pair_lookup(tok, sym[prev[i]], sym[i]);
            if (q != INT32_MAX)
                heap_push(heap, &hn, ((uint64_t)q << 32) | (uint32_t)prev[i]);
        }
        if (next[i] >= 0) {
            int32_t q = pair_lookup(tok, sym[i], sym[next[i]]);
            if (q != INT32_MAX)
                heap_push(heap, &hn, ((uint64_t)q << 32) | (uint32_t)i);
        }
    }
    size_t m = 0;
    for (int32_t i = 0; i >= 0; i = next[i])
        sym[m++] = sym[i];
    return m;
}

static void cache_clear(mn_tokenizer *tok) {
    memset(tok->cache, 0, CACHE_SLOTS * sizeof *tok->cache);
    tok->cache_count = 0;
    tok->cache_keys_len = 0;
    tok->cache_ids_len = 0;
}

static mn_status cache_insert(mn_tokenizer *tok, uint64_t h, uint32_t slot, const uint8_t *p,
                              size_t n, const int32_t *ids, size_t m) {
    if (tok->cache_count >= CACHE_SLOTS / 2 || tok->cache_keys_len + n > CACHE_KEY_BYTES ||
        tok->cache_ids_len + m > (CACHE_KEY_BYTES / 4)) {
        cache_clear(tok);
        slot = (uint32_t)(h & (CACHE_SLOTS - 1));
    }
    if (tok->cache_ids_len + m > tok->cache_ids_cap) {
        uint32_t cap = tok->cache_ids_cap ? tok->cache_ids_cap * 2 : 65536;
        while (cap < tok->cache_ids_len + m)
            cap *= 2;
        int32_t *q = realloc(tok->cache_ids, cap * sizeof *q);
        if (!q)
            return mn_fail(MN_ERR_NOMEM, "tokenizer: out of memory for the encode cache");
        tok->cache_ids = q;
        tok->cache_ids_cap = cap;
    }
    cache_slot *s = &tok->cache[slot];
    s->h = h;
    s->key_off = tok->cache_keys_len;
    s->key_len = (uint32_t)n;
    s->ids_off = tok->cache_ids_len;
    s->ids_len = (uint32_t)m;
    memcpy(tok->cache_keys + tok->cache_keys_len, p, n);
    memcpy(tok->cache_ids + tok->cache_ids_len, ids, m * sizeof *ids);
    tok->cache_keys_len += (uint32_t)n;
    tok->cache_ids_len += (uint32_t)m;
    tok->cache_count++;
    return MN_OK;
}

static mn_status encode_piece(mn_tokenizer *tok, const uint8_t *p, size_t n, mn_ids *out) {
    if (n == 1) {
        if (out->count == out->capacity)
            MN_TRY(ids_reserve(out, 1));
        out->ids[out->count++] = tok->byte_id[p[0]];
        return MN_OK;
    }
    uint64_t h = 0;
    uint32_t slot = 0;
    if (n <= CACHE_MAX_PIECE) {
        h = bytes_hash(p, n);
        for (slot = (uint32_t)(h & (CACHE_SLOTS - 1));; slot = (slot + 1) & (CACHE_SLOTS - 1)) {
            cache_slot *s = &tok->cache[slot];
            if (s->key_len == 0)
                break;
            if (s->h == h && s->key_len == n && !memcmp(tok->cache_keys + s->key_off, p, n)) {
                MN_TRY(ids_reserve(out, s->ids_len));
                memcpy(out->ids + out->count, tok->cache_ids + s->ids_off,
                       s->ids_len * sizeof(int32_t));
                out->count += s->ids_len;
                return MN_OK;
            }
        }
    }
    MN_TRY(scratch_reserve(tok, n));
    size_t m = (n <= 64) ? bpe_linear(tok, p, n) : bpe_heap(tok, p, n);
    MN_TRY(ids_reserve(out, (int64_t)m));
    memcpy(out->ids + out->count, tok->sym, m * sizeof(int32_t));
    out->count += (int64_t)m;
    if (n <= CACHE_MAX_PIECE)
        MN_TRY(cache_insert(tok, h, slot, p, n, tok->sym, m));
    return MN_OK;
}

mn_status mn_tokenizer_encode(mn_tokenizer *tok, const char *text, size_t len, mn_ids *out) {
    if (!tok || !out || (!text && len))
        return mn_fail(MN_ERR_INVALID_ARG, "mn_tokenizer_encode: NULL argument");
    size_t pos = 0;
    while (pos < len) {
        size_t end = mn_pretokenize_next(text, len, pos);
        MN_TRY(encode_piece(tok, (const uint8_t *)text + pos, end - pos, out));
        pos = end;
    }
    return MN_OK;
}

mn_status mn_tokenizer_decode(const mn_tokenizer *tok, const int32_t *ids, int64_t n,
                              char **out, size_t *out_len) {
    if (!tok || !out || (!ids && n))
        return mn_fail(MN_ERR_INVALID_ARG, "mn_tokenizer_decode: NULL argument");
    size_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= tok->n_vocab)
            return mn_fail(MN_ERR_INVALID_ARG, "decode: id %d at position %lld is outside 0..%d",
                           ids[i], (long long)i, tok->n_vocab - 1);
        size_t l = tok_len(tok, ids[i]);
        if (l == 0)
            return mn_fail(MN_ERR_INVALID_ARG, "decode: id %d at position %lld names no token",
                           ids[i], (long long)i);
        total += l;
    }
    char *buf = malloc(total + 1);
    if (!buf)
        return mn_fail(MN_ERR_NOMEM, "decode: out of memory for %zu bytes", total);
    size_t at = 0;
    for (int64_t i = 0; i < n; i++) {
        size_t l = tok_len(tok, ids[i]);
        memcpy(buf + at, tok->tok_bytes + tok->tok_off[ids[i]], l);
        at += l;
    }
    buf[at] = '\0';
    *out = buf;
    if (out_len)
        *out_len = at;
    return MN_OK;
}

/* ================================================================ pre-token counts */
typedef struct {
    uint64_t h;
    uint32_t key_off, key_len; /* key_len 0 = empty slot */
    int64_t count;
} count_slot;

struct mn_bpe_counts {
    count_slot *slots;
    size_t cap, used;
    uint8_t *keys;
    size_t keys_len, keys_cap;
    int64_t total;
};

mn_status mn_bpe_counts_create(mn_bpe_counts **out) {
    mn_bpe_counts *c = calloc(1, sizeof *c);
    if (c) {
        c->cap = 1 << 16;
        c->slots = calloc(c->cap, sizeof *c->slots);
        c->keys_cap = 1 << 20;
        c->keys = malloc(c->keys_cap);
    }
    if (!c || !c->slots || !c->keys) {
        mn_bpe_counts_free(c);
        return mn_fail(MN_ERR_NOMEM, "tokenizer training: out of memory");
    }
    *out = c;
    return MN_OK;
}

void mn_bpe_counts_free(mn_bpe_counts *c) {
    if (!c)
        return;
    free(c->slots);
    free(c->keys);
    free(c);
}

int64_t mn_bpe_counts_distinct(const mn_bpe_counts *c) { return (int64_t)c->used; }
int64_t mn_bpe_counts_total(const mn_bpe_counts *c) { return c->total; }

static mn_status counts_grow(mn_bpe_counts *c) {
    size_t cap = c->cap * 2;
    count_slot *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return mn_fail(MN_ERR_NOMEM, "tokenizer training: out of memory for %zu pre-tokens", cap);
    for (size_t i = 0; i < c->cap; i++) {
        if (!c->slots[i].key_len)
            continue;
        size_t j = c->slots[i].h & (cap - 1);
        while (slots[j].key_len)
            j = (j + 1) & (cap - 1);
        slots[j] = c->slots[i];
    }
    free(c->slots);
    c->slots = slots;
    c->cap = cap;
    return MN_OK;
}

static mn_status counts_add_piece(mn_bpe_counts *c, const uint8_t *p, size_t n) {
    if (n > UINT32_MAX)
        return mn_fail(MN_ERR_INVALID_ARG, "tokenizer training: pre-token of %zu bytes", n);
    uint64_t h = bytes_hash(p, n);
    size_t i = h & (c->cap - 1);
    for (;; i = (i + 1) & (c->cap - 1)) {
        count_slot *s = &c->slots[i];
        if (!s->key_len)
            break;
        if (s->h == h && s->key_len == n && !memcmp(c->keys + s->key_off, p, n)) {
            s->count++;
            return MN_OK;
        }
    }
    if (c->keys_len + n > c->keys_cap || c->keys_len + n > UINT32_MAX) {
        size_t cap = c->keys_cap;
        while (cap < c->keys_len + n)
            cap *= 2;
        uint8_t *k = (c->keys_len + n > UINT32_MAX) ? NULL : realloc(c->keys, cap);
        if (!k)
            return mn_fail(MN_ERR_NOMEM, "tokenizer training: out of memory for pre-tokens");
        c->keys = k;
        c->keys_cap = cap;
    }
    memcpy(c->keys + c->keys_len, p, n);
    c->slots[i] = (count_slot){h, (uint32_t)c->keys_len, (uint32_t)n, 1};
    c->keys_len += n;
    c->used++;
    if (c->used * 2 > c->cap)
        MN_TRY(counts_grow(c));
    return MN_OK;
}

mn_status mn_bpe_counts_add(mn_bpe_counts *c, const char *text, size_t len) {
    if (!c || (!text && len))
        return mn_fail(MN_ERR_INVALID_ARG, "mn_bpe_counts_add: NULL argument");
    size_t pos = 0;
    while (pos < len) {
        size_t end = mn_pretokenize_next(text, len, pos);
        MN_TRY(counts_add_piece(c, (const uint8_t *)text + pos, end - pos));
        c->total++;
        pos = end;
    }
    return MN_OK;
}

mn_status mn_bpe_counts_add_dialogues(mn_bpe_counts *c, const mn_dialogue_list *list) {
    for (int64_t i = 0; i < list->count; i++) {
        const mn_dialogue *d = &list->items[i];
        for (int t = 0; t < d->n_turns; t++)
            if (d->turns[t].text)
                MN_TRY(mn_bpe_counts_add(c, d->turns[t].text, strlen(d->turns[t].text)));
        for (int p = 0; p < d->n_probes; p++) {
            if (d->probes[p].question)
                MN_TRY(mn_bpe_counts_add(c, d->probes[p].question, strlen(d->probes[p].question)));
            if (d->probes[p].answer)
                MN_TRY(mn_bpe_counts_add(c, d->probes[p].answer, strlen(d->probes[p].answer)));
        }
    }
    return MN_OK;
}

/* ================================================================ training */
/* Incremental BPE: words (distinct pre-tokens) as symbol arrays, pair counts with the list of
 * words holding each pair, and a max-heap of (count, left, right) whose stale entries are
 * re-pushed with their current count when popped (counts of old pairs only ever fall). */
typedef struct {
    int64_t count;
    int32_t a, b;
} heap_entry;

typedef struct {
    /* words */
    int32_t *syms;
    int64_t *woff;
    int32_t *wlen;
    int64_t *wfreq;
    int32_t *wstamp;
    int64_t n_words;
    /* pairs */
    int32_t *pa, *pb;
    int64_t *pcount;
    int32_t **plist;
    int32_t *plen, *pcap;
    int32_t *pstamp;
    int64_t n_pairs, pairs_cap;
    uint64_t *map_keys;
    int32_t *map_idx;
    uint64_t map_cap;
    /* heap */
    heap_entry *heap;
    int64_t heap_n, heap_cap;
    /* pairs of the current merge whose count rose */
    int32_t *touched;
    int64_t n_touched, touched_cap;
} trainer;

static void trainer_free(trainer *t) {
    free(t->syms);
    free(t->woff);
    free(t->wlen);
    free(t->wfreq);
    free(t->wstamp);
    for (int64_t i = 0; i < t->n_pairs; i++)
        free(t->plist[i]);
    free(t->pa);
    free(t->pb);
    free(t->pcount);
    free(t->plist);
    free(t->plen);
    free(t->pcap);
    free(t->pstamp);
    free(t->map_keys);
    free(t->map_idx);
    free(t->heap);
    free(t->touched);
}

#define GROW(ptr, cap_needed)                                                  \
    do {                                                                       \
        void *grow_p_ = realloc((ptr), (size_t)(cap_needed) * sizeof *(ptr));  \
        if (!grow_p_)                                                          \
            return mn_fail(MN_ERR_NOMEM, "tokenizer training: out of memory"); \
        (ptr) = grow_p_;                                                       \
    } while (0)

static mn_status map_grow(trainer *t) {
    uint64_t cap = t->map_cap ? t->map_cap * 2 : (1u << 16);
    uint64_t *keys = malloc(cap * sizeof *keys);
    int32_t *idx = malloc(cap * sizeof *idx);
    if (!keys || !idx) {
        free(keys);
        free(idx);
        return mn_fail(MN_ERR_NOMEM, "tokenizer training: out of memory for pairs");
    }
    memset(keys, 0xff, cap * sizeof *keys);
    for (int64_t p = 0; p < t->n_pairs; p++) {
        uint64_t k = pair_key(t->pa[p], t->pb[p]);
        uint64_t i = key_hash(k) & (cap - 1);
        while (keys[i] != UINT64_MAX)
            i = (i + 1) & (cap - 1);
        keys[i] = k;
        idx[i] = (int32_t)p;
    }
    free(t->map_keys);
    free(t->map_idx);
    t->map_keys = keys;
    t->map_idx = idx;
    t->map_cap = cap;
    return MN_OK;
}

/* Index of pair (a, b), created with count 0 if new. */
static mn_status pair_get(trainer *t, int32_t a, int32_t b, int32_t *out) {
    uint64_t k = pair_key(a, b);
    uint64_t i = key_hash(k) & (t->map_cap - 1);
    for (; t->map_keys[i] != UINT64_MAX; i = (i + 1) & (t->map_cap - 1))
        if (t->map_keys[i] == k) {
            *out = t->map_idx[i];
            return MN_OK;
        }
    if (t->n_pairs >= INT32_MAX - 1)
        return mn_fail(MN_ERR_NOMEM, "tokenizer training: too many distinct pairs");
    if (t->n_pairs == t->pairs_cap) {
        int64_t cap = t->pairs_cap ? t->pairs_cap * 2 : 65536;
        GROW(t->pa, cap);
        GROW(t->pb, cap);
        GROW(t->pcount, cap);
        GROW(t->plist, cap);
        GROW(t->plen, cap);
        GROW(t->pcap, cap);
        GROW(t->pstamp, cap);
        t->pairs_cap = cap;
    }
    int32_t p = (int32_t)t->n_pairs++;
    t->pa[p] = a;
    t->pb[p] = b;
    t->pcount[p] = 0;
    t->plist[p] = NULL;
    t->plen[p] = t->pcap[p] = 0;
    t->pstamp[p] = -1;
    t->map_keys[i] = k;
    t->map_idx[i] = p;
    if ((uint64_t)t->n_pairs * 2 > t->map_cap)
        MN_TRY(map_grow(t));
    *out = p;
    return MN_OK;
}

static mn_status pair_add(trainer *t, int32_t a, int32_t b, int64_t delta, int32_t word,
                          int32_t *index) {
    int32_t p;
    MN_TRY(pair_get(t, a, b, &p));
    t->pcount[p] += delta;
    if (delta > 0 && (t->plen[p] == 0 || t->plist[p][t->plen[p] - 1] != word)) {
        if (t->plen[p] == t->pcap[p]) {
            int32_t cap = t->pcap[p] ? t->pcap[p] * 2 : 4;
            GROW(t->plist[p], cap);
            t->pcap[p] = cap;
        }
        t->plist[p][t->plen[p]++] = word;
    }
    if (index)
        *index = p;
    return MN_OK;
}

static inline int heap_before(const heap_entry *x, const heap_entry *y) {
    if (x->count != y->count)
        return x->count > y->count;
    if (x->a != y->a)
        return x->a < y->a;
    return x->b < y->b;
}

static mn_status theap_push(trainer *t, heap_entry e) {
    if (t->heap_n == t->heap_cap) {
        int64_t cap = t->heap_cap ? t->heap_cap * 2 : 65536;
        GROW(t->heap, cap);
        t->heap_cap = cap;
    }
    int64_t i = t->heap_n++;
    while (i > 0) {
        int64_t parent = (i - 1) / 2;
        if (!heap_before(&e, &t->heap[parent]))
            break;
        t->heap[i] = t->heap[parent];
        i = parent;
    }
    t->heap[i] = e;
    return MN_OK;
}

static heap_entry theap_pop(trainer *t) {
    heap_entry top = t->heap[0], v = t->heap[--t->heap_n];
    int64_t i = 0, n = t->heap_n;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && heap_before(&t->heap[c + 1], &t->heap[c]))
            c++;
        if (!heap_before(&t->heap[c], &v))
            break;
        t->heap[i] = t->heap[c];
        i = c;
    }
    if (n)
        t->heap[i] = v;
    return top;
}

static mn_status touch(trainer *t, int32_t p, int32_t stamp) {
    if (t->pstamp[p] == stamp)
        return MN_OK;
    t->pstamp[p] = stamp;
    if (t->n_touched == t->touched_cap) {
        int64_t cap = t->touched_cap ? t->touched_cap * 2 : 1024;
        GROW(t->touched, cap);
        t->touched_cap = cap;
    }
    t->touched[t->n_touched++] = p;
    return MN_OK;
}

/* Applies merge (a, b) -> x of the given rank to every word holding the pair. */
static mn_status apply_merge(trainer *t, int32_t pidx, int32_t x, int32_t rank) {
    int32_t a = t->pa[pidx], b = t->pb[pidx];
    int32_t *words = t->plist[pidx];
    int32_t n_words = t->plen[pidx];
    t->plist[pidx] = NULL; /* new pairs all involve x, so this list never grows meanwhile */
    t->plen[pidx] = t->pcap[pidx] = 0;
    t->n_touched = 0;
    mn_status st = MN_OK;
    for (int32_t k = 0; k < n_words && st == MN_OK; k++) {
        int32_t w = words[k];
        if (t->wstamp[w] == rank)
            continue;
        t->wstamp[w] = rank;
        int32_t *s = t->syms + t->woff[w];
        int32_t len = t->wlen[w];
        int64_t f = t->wfreq[w];
        for (int32_t i = 0; i + 1 < len && st == MN_OK; i++) {
            if (s[i] != a || s[i + 1] != b)
                continue;
            int32_t q;
            t->pcount[pidx] -= f;
            if (i > 0) {
                st = pair_add(t, s[i - 1], a, -f, w, NULL);
                if (st == MN_OK)
                    st = pair_add(t, s[i - 1], x, f, w, &q);
                if (st == MN_OK)
                    st = touch(t, q, rank);
            }
            if (st == MN_OK && i + 2 < len) {
                st = pair_add(t, b, s[i + 2], -f, w, NULL);
                if (st == MN_OK)
                    st = pair_add(t, x, s[i + 2], f, w, &q);
                if (st == MN_OK)
                    st = touch(t, q, rank);
            }
            s[i] = x;
            memmove(s + i + 1, s + i + 2, (size_t)(len - i - 2) * sizeof *s);
            len--;
        }
        t->wlen[w] = len;
    }
    free(words);
    MN_TRY(st);
    t->pcount[pidx] = 0;
    for (int64_t k = 0; k < t->n_touched; k++) {
        int32_t p = t->touched[k];
        if (t->pcount[p] > 0)
            MN_TRY(theap_push(t, (heap_entry){t->pcount[p], t->pa[p], t->pb[p]}));
    }
    return MN_OK;
}

static mn_status build_trained(const int32_t *left, const int32_t *right, int32_t n_merges,
                               mn_tokenizer **out);

static mn_status train_run(trainer *t, const mn_bpe_counts *c, int32_t max_merges,
                           int32_t **left_out, int32_t **right_out, int32_t *n_out) {
    /* words: distinct pre-tokens of 2+ bytes, in insertion-independent (slot) order */
    int64_t n_words = 0, n_syms = 0;
    for (size_t i = 0; i < c->cap; i++)
        if (c->slots[i].key_len >= 2) {
            n_words++;
            n_syms += c->slots[i].key_len;
        }
    if (n_words >= INT32_MAX)
        return mn_fail(MN_ERR_NOMEM, "tokenizer training: too many distinct pre-tokens");
    t->syms = malloc((size_t)(n_syms ? n_syms : 1) * sizeof *t->syms);
    t->woff = malloc((size_t)(n_words ? n_words : 1) * sizeof *t->woff);
    t->wlen = malloc((size_t)(n_words ? n_words : 1) * sizeof *t->wlen);
    t->wfreq = malloc((size_t)(n_words ? n_words : 1) * sizeof *t->wfreq);
    t->wstamp = malloc((size_t)(n_words ? n_words : 1) * sizeof *t->wstamp);
    if (!t->syms || !t->woff || !t->wlen || !t->wfreq || !t->wstamp)
        return mn_fail(MN_ERR_NOMEM, "tokenizer training: out of memory for %lld words",
                       (long long)n_words);
    MN_TRY(map_grow(t));
    int64_t at = 0;
    for (size_t i = 0; i < c->cap; i++) {
        const count_slot *s = &c->slots[i];
        if (s->key_len < 2)
            continue;
        int32_t w = (int32_t)t->n_words++;
        t->woff[w] = at;
        t->wlen[w] = (int32_t)s->key_len;
        t->wfreq[w] = s->count;
        t->wstamp[w] = -1;
        for (uint32_t j = 0; j < s->key_len; j++)
            t->syms[at + j] = MN_TOK_BYTE_BASE + c->keys[s->key_off + j];
        for (uint32_t j = 0; j + 1 < s->key_len; j++)
            MN_TRY(pair_add(t, t->syms[at + j], t->syms[at + j + 1], s->count, w, NULL));
        at += s->key_len;
    }
    for (int64_t p = 0; p < t->n_pairs; p++)
        if (t->pcount[p] > 0)
            MN_TRY(theap_push(t, (heap_entry){t->pcount[p], t->pa[p], t->pb[p]}));

    int32_t *left = malloc((size_t)(max_merges ? max_merges : 1) * sizeof *left);
    int32_t *right = malloc((size_t)(max_merges ? max_merges : 1) * sizeof *right);
    if (!left || !right) {
        free(left);
        free(right);
        return mn_fail(MN_ERR_NOMEM, "tokenizer training: out of memory");
    }
    int32_t n = 0;
    mn_status st = MN_OK;
    while (n < max_merges && t->heap_n > 0 && st == MN_OK) {
        heap_entry e = theap_pop(t);
        int32_t p;
        st = pair_get(t, e.a, e.b, &p);
        if (st != MN_OK)
            break;
        if (t->pcount[p] != e.count) {
            if (t->pcount[p] > 0)
                st = theap_push(t, (heap_entry){t->pcount[p], e.a, e.b});
            continue;
        }
        if (e.count <= 0)
            break;
        left[n] = e.a;
        right[n] = e.b;
        st = apply_merge(t, p, MN_TOK_MERGE_BASE + n, n);
        n++;
    }
    if (st != MN_OK) {
        free(left);
        free(right);
        return st;
    }
    *left_out = left;
    *right_out = right;
    *n_out = n;
    return MN_OK;
}

mn_status mn_tokenizer_train(const mn_bpe_counts *counts, int vocab_size, mn_tokenizer **out) {
    if (!counts || !out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_tokenizer_train: NULL argument");
    if (vocab_size < MN_TOK_MERGE_BASE || vocab_size > MN_TOK_MAX_VOCAB)
        return mn_fail(MN_ERR_INVALID_ARG, "tokenizer training: vocab size %d outside %d..%d",
                       vocab_size, MN_TOK_MERGE_BASE, MN_TOK_MAX_VOCAB);
    trainer t = {0};
    int32_t *left = NULL, *right = NULL, n = 0;
    mn_status st = train_run(&t, counts, vocab_size - MN_TOK_MERGE_BASE, &left, &right, &n);
    trainer_free(&t);
    if (st == MN_OK)
        st = build_trained(left, right, n, out);
    free(left);
    free(right);
    return st;
}

mn_status mn_tokenizer_train_texts(const char *const *texts, const size_t *lens, int64_t n,
                                   int vocab_size, mn_tokenizer **out) {
    mn_bpe_counts *c;
    MN_TRY(mn_bpe_counts_create(&c));
    mn_status st = MN_OK;
    for (int64_t i = 0; i < n && st == MN_OK; i++)
        st = mn_bpe_counts_add(c, texts[i], lens ? lens[i] : strlen(texts[i]));
    if (st == MN_OK)
        st = mn_tokenizer_train(c, vocab_size, out);
    mn_bpe_counts_free(c);
    return st;
}

static mn_tokenizer *tok_alloc(const char *kind) {
    mn_tokenizer *tok = calloc(1, sizeof *tok);
    if (tok) {
        snprintf(tok->kind, sizeof tok->kind, "%s", kind);
        for (int i = 0; i < MN_TOK_N_SPECIAL; i++)
            tok->special[i] = -1;
    }
    return tok;
}

/* mnemo-bpe layout from its merges: bytes, specials, then merge results. */
static mn_status build_trained(const int32_t *left, const int32_t *right, int32_t n_merges,
                               mn_tokenizer **out) {
    mn_tokenizer *tok = tok_alloc("mnemo-bpe");
    if (!tok)
        return mn_fail(MN_ERR_NOMEM, "tokenizer: out of memory");
    int32_t nv = MN_TOK_MERGE_BASE + n_merges;
    tok->n_vocab = nv;
    tok->n_merges = n_merges;
    tok->tok_off = malloc((size_t)(nv + 1) * sizeof *tok->tok_off);
    tok->merge_left = malloc((size_t)(n_merges + 1) * sizeof(int32_t));
    tok->merge_right = malloc((size_t)(n_merges + 1) * sizeof(int32_t));
    tok->merge_result = malloc((size_t)(n_merges + 1) * sizeof(int32_t));
    if (!tok->tok_off || !tok->merge_left || !tok->merge_right || !tok->merge_result) {
        mn_tokenizer_free(tok);
        return mn_fail(MN_ERR_NOMEM, "tokenizer: out of memory");
    }
    /* lengths first, then bytes */
    int64_t total = 256;
    for (int i = 0; i < MN_TOK_N_SPECIAL; i++)
        total += (int64_t)strlen(special_texts[i]);
    int64_t *lens = tok->tok_off; /* temporarily lengths at [id + 1] */
    for (int b = 0; b < 256; b++)
        lens[b + 1] = 1;
    for (int i = 0; i < MN_TOK_N_SPECIAL; i++)
        lens[MN_TOK_SPECIAL_BASE + i + 1] = (int64_t)strlen(special_texts[i]);
    for (int32_t r = 0; r < n_merges; r++) {
        int32_t id = MN_TOK_MERGE_BASE + r;
        lens[id + 1] = lens[left[r] + 1] + lens[right[r] + 1];
        total += lens[id + 1];
        tok->merge_left[r] = left[r];
        tok->merge_right[r] = right[r];
        tok->merge_result[r] = id;
    }
    tok->tok_off[0] = 0;
    for (int32_t id = 0; id < nv; id++)
        tok->tok_off[id + 1] += tok->tok_off[id];
    tok->tok_bytes = malloc((size_t)total + 1);
    if (!tok->tok_bytes) {
        mn_tokenizer_free(tok);
        return mn_fail(MN_ERR_NOMEM, "tokenizer: out of memory");
    }
    for (int b = 0; b < 256; b++)
        tok->tok_bytes[b] = (uint8_t)b;
    for (int i = 0; i < MN_TOK_N_SPECIAL; i++) {
        tok->special[i] = MN_TOK_SPECIAL_BASE + i;
        memcpy(tok->tok_bytes + tok->tok_off[MN_TOK_SPECIAL_BASE + i], special_texts[i],
               strlen(special_texts[i]));
    }
    for (int32_t r = 0; r < n_merges; r++) {
        int32_t id = MN_TOK_MERGE_BASE + r;
        uint8_t *dst = tok->tok_bytes + tok->tok_off[id];
        size_t la = tok_len(tok, left[r]);
        memcpy(dst, tok->tok_bytes + tok->tok_off[left[r]], la);
        memcpy(dst + la, tok->tok_bytes + tok->tok_off[right[r]], tok_len(tok, right[r]));
    }
    mn_status st = tok_finalize(tok, "trained tokenizer");
    if (st != MN_OK) {
        mn_tokenizer_free(tok);
        return st;
    }
    *out = tok;
    return MN_OK;
}

/* ================================================================ GPT-2 files */
/* GPT-2's byte <-> printable-unicode mapping (bytes_to_unicode in openai/gpt-2 encoder.py). */
static void gpt2_byte_map(int32_t byte_to_cp[256], int16_t cp_to_byte[512]) {
    int n = 0;
    for (int cp = 0; cp < 512; cp++)
        cp_to_byte[cp] = -1;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        byte_to_cp[b] = printable ? b : 256 + n++;
        cp_to_byte[byte_to_cp[b]] = (int16_t)b;
    }
}

/* Token string (UTF-8 of byte-mapped code points) -> raw bytes; returns length or -1. */
static long gpt2_unmap(const int16_t cp_to_byte[512], const char *s, size_t n, uint8_t *dst) {
    size_t i = 0;
    long m = 0;
    while (i < n) {
        int32_t cp;
        size_t l = utf8_next((const uint8_t *)s + i, n - i, &cp);
        if (cp < 0 || cp >= 512 || cp_to_byte[cp] < 0)
            return -1;
        dst[m++] = (uint8_t)cp_to_byte[cp];
        i += l;
    }
    return m;
}

mn_status mn_tokenizer_load_gpt2_buffers(const char *vocab_json, size_t vocab_len,
                                         const char *merges_txt, size_t merges_len,
                                         const char *vname, const char *mname,
                                         mn_tokenizer **out) {
    if (!vocab_json || !merges_txt || !out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_tokenizer_load_gpt2: NULL argument");
    json_error_t jerr;
    json_t *vocab = json_loadb(vocab_json, vocab_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!vocab)
        return mn_fail(MN_ERR_FORMAT, "%s:%d: invalid JSON: %s", vname, jerr.line, jerr.text);
    mn_status st = MN_OK;
    mn_tokenizer *tok = NULL;
    uint8_t *tmp = NULL;
    int64_t *lens = NULL;
    int32_t byte_to_cp[256];
    int16_t cp_to_byte[512];
    gpt2_byte_map(byte_to_cp, cp_to_byte);
    if (!json_is_object(vocab) || json_object_size(vocab) == 0) {
        st = mn_fail(MN_ERR_FORMAT, "%s: expected a non-empty object of token -> id", vname);
        goto done;
    }
    /* pass 1: ids and total bytes */
    int64_t max_id = -1, total = 0;
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 ||
            json_integer_value(val) >= MN_TOK_MAX_VOCAB) {
            st = mn_fail(MN_ERR_FORMAT, "%s: token \"%.40s\" has an id that is not an integer "
                         "in 0..%d", vname, key, MN_TOK_MAX_VOCAB - 1);
            goto done;
        }
        if (json_integer_value(val) > max_id)
            max_id = json_integer_value(val);
        total += (int64_t)strlen(key);
    }
    tok = tok_alloc("gpt2");
    lens = calloc((size_t)max_id + 2, sizeof *lens);
    tmp = malloc((size_t)total + 1);
    if (!tok || !lens || !tmp) {
        st = mn_fail(MN_ERR_NOMEM, "%s: out of memory", vname);
        goto done;
    }
    tok->n_vocab = (int32_t)max_id + 1;
    /* pass 2: lengths per id (raw bytes are never longer than the mapped string) */
    json_object_foreach(vocab, key, val) {
        int64_t id = json_integer_value(val);
        long l = gpt2_unmap(cp_to_byte, key, strlen(key), tmp);
        if (l <= 0) {
            st = mn_fail(MN_ERR_FORMAT, "%s: token \"%.40s\" is not byte-level text", vname, key);
            goto done;
        }
        if (lens[id + 1]) {
            st = mn_fail(MN_ERR_FORMAT, "%s: id %lld is given to two tokens", vname,
                         (long long)id);
            goto done;
        }
        lens[id + 1] = l;
    }
    tok->tok_off = lens;
    lens = NULL;
    for (int32_t id = 0; id < tok->n_vocab; id++)
        tok->tok_off[id + 1] += tok->tok_off[id];
    tok->tok_bytes = malloc((size_t)tok->tok_off[tok->n_vocab] + 1);
    if (!tok->tok_bytes) {
        st = mn_fail(MN_ERR_NOMEM, "%s: out of memory", vname);
        goto done;
    }
    json_object_foreach(vocab, key, val) {
        int64_t id = json_integer_value(val);
        gpt2_unmap(cp_to_byte, key, strlen(key), tok->tok_bytes + tok->tok_off[id]);
    }
    /* merges.txt: optional "#version" line, then "left right" lines in rank order */
    int64_t n_lines = 1;
    for (size_t i = 0; i < merges_len; i++)
        n_lines += merges_txt[i] == '\n';
    tok->merge_left = malloc((size_t)n_lines * sizeof(int32_t));
    tok->merge_right = malloc((size_t)n_lines * sizeof(int32_t));
    tok->merge_result = malloc((size_t)n_lines * sizeof(int32_t));
    char *joined = malloc(merges_len + 1);
    if (!tok->merge_left || !tok->merge_right || !tok->merge_result || !joined) {
        free(joined);
        st = mn_fail(MN_ERR_NOMEM, "%s: out of memory", mname);
        goto done;
    }
    size_t pos = 0;
    long line_no = 0;
    while (pos < merges_len && st == MN_OK) {
        const char *line = merges_txt + pos;
        const char *nl = memchr(line, '\n', merges_len - pos);
        size_t ll = nl ? (size_t)(nl - line) : merges_len - pos;
        pos += ll + (nl ? 1 : 0);
        line_no++;
        if (ll && line[ll - 1] == '\r')
            ll--;
        if (ll == 0 || (line_no == 1 && ll >= 8 && !memcmp(line, "#version", 8)))
            continue;
        const char *sp = memchr(line, ' ', ll);
        if (!sp || sp == line || sp == line + ll - 1 || memchr(sp + 1, ' ', ll - (size_t)(sp - line) - 1) ||
            memchr(line, '\0', ll)) {
            st = mn_fail(MN_ERR_FORMAT, "%s:%ld: expected \"left right\"", mname, line_no);
            break;
        }
        size_t la = (size_t)(sp - line), lb = ll - la - 1;
        int32_t ids[3];
        for (int part = 0; part < 3 && st == MN_OK; part++) {
            if (part == 0)
                memcpy(joined, line, la), joined[la] = '\0';
            else if (part == 1)
                memcpy(joined, sp + 1, lb), joined[lb] = '\0';
            else
                memcpy(joined, line, la), memcpy(joined + la, sp + 1, lb), joined[la + lb] = '\0';
            json_t *v = json_object_get(vocab, joined);
            if (!v)
                st = mn_fail(MN_ERR_FORMAT, "%s:%ld: \"%.60s\" is not in %s", mname, line_no,
                             joined, vname);
            else
                ids[part] = (int32_t)json_integer_value(v);
        }
        if (st != MN_OK)
            break;
        tok->merge_left[tok->n_merges] = ids[0];
        tok->merge_right[tok->n_merges] = ids[1];
        tok->merge_result[tok->n_merges] = ids[2];
        tok->n_merges++;
    }
    free(joined);
    if (st == MN_OK) {
        char name[512];
        snprintf(name, sizeof name, "%s + %s", vname, mname);
        st = tok_finalize(tok, name);
    }
done:
    json_decref(vocab);
    free(tmp);
    free(lens);
    if (st != MN_OK) {
        mn_tokenizer_free(tok);
        return st;
    }
    *out = tok;
    return MN_OK;
}

static mn_status read_whole(const char *path, char **buf, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return mn_fail(MN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    while (b) {
        size_t got = fread(b + n, 1, cap - n, f);
        n += got;
        if (n < cap)
            break;
        char *nb = realloc(b, cap * 2);
        if (!nb) {
            free(b);
            b = NULL;
            break;
        }
        b = nb;
        cap *= 2;
    }
    int err = ferror(f);
    fclose(f);
    if (!b)
        return mn_fail(MN_ERR_NOMEM, "%s: out of memory", path);
    if (err) {
        free(b);
        return mn_fail(MN_ERR_IO, "%s: read error", path);
    }
    *buf = b;
    *len = n;
    return MN_OK;
}

mn_status mn_tokenizer_load_gpt2(const char *vocab_path, const char *merges_path,
                                 mn_tokenizer **out) {
    if (!vocab_path || !merges_path || !out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_tokenizer_load_gpt2: NULL argument");
    char *v = NULL, *m = NULL;
    size_t vl = 0, ml = 0;
    MN_TRY(read_whole(vocab_path, &v, &vl));
    mn_status st = read_whole(merges_path, &m, &ml);
    if (st == MN_OK)
        st = mn_tokenizer_load_gpt2_buffers(v, vl, m, ml, vocab_path, merges_path, out);
    free(v);
    free(m);
    return st;
}

/* ================================================================ HDF5 */
#define TOK_H5_VERSION 1

static mn_status h5_write(hid_t g, const char *name, hid_t type, int rank, const hsize_t *dims,
                          const void *data) {
    hid_t space = H5Screate_simple(rank, dims, NULL);
    hid_t d = space < 0 ? -1 : H5Dcreate2(g, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t w = -1;
    hsize_t n = 1;
    for (int i = 0; i < rank; i++)
        n *= dims[i];
    if (d >= 0)
        w = n ? H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) : 0;
    if (d >= 0)
        H5Dclose(d);
    if (space >= 0)
        H5Sclose(space);
    if (w < 0)
        return mn_fail(MN_ERR_IO, "tokenizer/%s: cannot write dataset", name);
    return MN_OK;
}

static mn_status h5_attr(hid_t g, const char *name, hid_t type, const void *data) {
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(g, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t w = a >= 0 ? H5Awrite(a, type, data) : -1;
    if (a >= 0)
        H5Aclose(a);
    H5Sclose(space);
    if (w < 0)
        return mn_fail(MN_ERR_IO, "tokenizer: cannot write attribute %s", name);
    return MN_OK;
}

mn_status mn_tokenizer_save_h5(const mn_tokenizer *tok, hid_t loc) {
    if (!tok)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_tokenizer_save_h5: NULL tokenizer");
    hid_t g;
    H5E_BEGIN_TRY { g = H5Gcreate2(loc, "tokenizer", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT); }
    H5E_END_TRY;
    if (g < 0)
        return mn_fail(MN_ERR_IO, "cannot create group tokenizer (does it exist already?)");
    mn_status st = MN_OK;
    int32_t *merges = malloc(2 * (size_t)(tok->n_merges + 1) * sizeof *merges);
    if (!merges) {
        H5Gclose(g);
        return mn_fail(MN_ERR_NOMEM, "tokenizer: out of memory");
    }
    for (int32_t r = 0; r < tok->n_merges; r++) {
        merges[2 * r] = tok->merge_left[r];
        merges[2 * r + 1] = tok->merge_right[r];
    }
    H5E_BEGIN_TRY {
        hsize_t nv1 = (hsize_t)tok->n_vocab + 1, nb = (hsize_t)tok->tok_off[tok->n_vocab];
        hsize_t md[2] = {(hsize_t)tok->n_merges, 2}, mr = (hsize_t)tok->n_merges,
                ns = MN_TOK_N_SPECIAL;
        st = h5_write(g, "vocab_offsets", H5T_NATIVE_INT64, 1, &nv1, tok->tok_off);
        if (st == MN_OK)
            st = h5_write(g, "vocab_bytes", H5T_NATIVE_UINT8, 1, &nb, tok->tok_bytes);
        if (st == MN_OK)
            st = h5_write(g, "merges", H5T_NATIVE_INT32, 2, md, merges);
        if (st == MN_OK)
            st = h5_write(g, "merge_ids", H5T_NATIVE_INT32, 1, &mr, tok->merge_result);
        if (st == MN_OK)
            st = h5_write(g, "special_ids", H5T_NATIVE_INT32, 1, &ns, tok->special);
        if (st == MN_OK) {
            hid_t str = H5Tcopy(H5T_C_S1);
            H5Tset_size(str, strlen(tok->kind) + 1);
            st = h5_attr(g, "kind", str, tok->kind);
            H5Tclose(str);
        }
        int32_t version = TOK_H5_VERSION;
        if (st == MN_OK)
            st = h5_attr(g, "version", H5T_NATIVE_INT32, &version);
        if (st == MN_OK)
            st = h5_attr(g, "vocab_size", H5T_NATIVE_INT32, &tok->n_vocab);
        if (st == MN_OK)
            st = h5_attr(g, "hash", H5T_NATIVE_UINT64, &tok->hash);
    }
    H5E_END_TRY;
    free(merges);
    H5Gclose(g);
    return st;
}

/* Reads a 1-D or 2-D dataset of known element type; *n = element count. */
static mn_status h5_read(hid_t g, const char *file, const char *name, hid_t type, int rank,
                         hsize_t *dims, size_t elem, void **data) {
    *data = NULL;
    mn_status st = MN_OK;
    H5E_BEGIN_TRY {
        hid_t d = H5Dopen2(g, name, H5P_DEFAULT);
        hid_t space = d >= 0 ? H5Dget_space(d) : -1;
        int r = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
        if (d < 0 || space < 0)
            st = mn_fail(MN_ERR_FORMAT, "%s: tokenizer/%s is missing", file, name);
        else if (r != rank)
            st = mn_fail(MN_ERR_FORMAT, "%s: tokenizer/%s has %d dimensions, expected %d", file,
                         name, r, rank);
        else {
            H5Sget_simple_extent_dims(space, dims, NULL);
            hsize_t n = 1;
            for (int i = 0; i < rank; i++)
                n *= dims[i];
            if (n > ((hsize_t)1 << 34) / elem)
                st = mn_fail(MN_ERR_FORMAT, "%s: tokenizer/%s is implausibly large", file, name);
            else {
                *data = malloc((size_t)n * elem + elem);
                if (!*data)
                    st = mn_fail(MN_ERR_NOMEM, "%s: out of memory for tokenizer/%s", file, name);
                else if (n && H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, *data) < 0)
                    st = mn_fail(MN_ERR_FORMAT, "%s: cannot read tokenizer/%s", file, name);
            }
        }
        if (space >= 0)
            H5Sclose(space);
        if (d >= 0)
            H5Dclose(d);
    }
    H5E_END_TRY;
    if (st != MN_OK) {
        free(*data);
        *data = NULL;
    }
    return st;
}

static mn_status h5_read_attr(hid_t g, const char *file, const char *name, hid_t type,
                              void *data) {
    herr_t r = -1;
    H5E_BEGIN_TRY {
        hid_t a = H5Aopen(g, name, H5P_DEFAULT);
        if (a >= 0) {
            r = H5Aread(a, type, data);
            H5Aclose(a);
        }
    }
    H5E_END_TRY;
    if (r < 0)
        return mn_fail(MN_ERR_FORMAT, "%s: tokenizer attribute %s is missing or unreadable", file,
                       name);
    return MN_OK;
}

mn_status mn_tokenizer_load_h5(hid_t loc, const char *file, mn_tokenizer **out) {
    if (!out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_tokenizer_load_h5: NULL argument");
    if (!file)
        file = "(hdf5)";
    hid_t g;
    H5E_BEGIN_TRY { g = H5Gopen2(loc, "tokenizer", H5P_DEFAULT); }
    H5E_END_TRY;
    if (g < 0)
        return mn_fail(MN_ERR_FORMAT, "%s: no tokenizer group", file);
    mn_tokenizer *tok = tok_alloc("");
    int32_t *merges = NULL, *special = NULL;
    mn_status st = tok ? MN_OK : mn_fail(MN_ERR_NOMEM, "%s: out of memory", file);
    char kind[16] = {0};
    int32_t version = 0, vocab_size = 0;
    uint64_t stored_hash = 0;
    if (st == MN_OK) {
        hid_t str = H5Tcopy(H5T_C_S1);
        H5Tset_size(str, sizeof kind);
        st = h5_read_attr(g, file, "kind", str, kind);
        H5Tclose(str);
        kind[sizeof kind - 1] = '\0';
    }
    if (st == MN_OK)
        st = h5_read_attr(g, file, "version", H5T_NATIVE_INT32, &version);
    if (st == MN_OK && version != TOK_H5_VERSION)
        st = mn_fail(MN_ERR_FORMAT, "%s: tokenizer version %d, this build reads %d", file,
                     version, TOK_H5_VERSION);
    if (st == MN_OK && strcmp(kind, "mnemo-bpe") && strcmp(kind, "gpt2"))
        st = mn_fail(MN_ERR_FORMAT, "%s: unknown tokenizer kind \"%s\"", file, kind);
    if (st == MN_OK)
        st = h5_read_attr(g, file, "vocab_size", H5T_NATIVE_INT32, &vocab_size);
    if (st == MN_OK)
        st = h5_read_attr(g, file, "hash", H5T_NATIVE_UINT64, &stored_hash);
    hsize_t d1[2], d2[2];
    if (st == MN_OK) {
        snprintf(tok->kind, sizeof tok->kind, "%s", kind);
        st = h5_read(g, file, "vocab_offsets", H5T_NATIVE_INT64, 1, d1, sizeof(int64_t),
                     (void **)&tok->tok_off);
    }
    if (st == MN_OK && (vocab_size < 256 || vocab_size > MN_TOK_MAX_VOCAB ||
                        d1[0] != (hsize_t)vocab_size + 1))
        st = mn_fail(MN_ERR_FORMAT, "%s: tokenizer/vocab_offsets has %llu entries for vocab size %d",
                     file, (unsigned long long)d1[0], vocab_size);
    if (st == MN_OK) {
        tok->n_vocab = vocab_size;
        st = h5_read(g, file, "vocab_bytes", H5T_NATIVE_UINT8, 1, d2, 1, (void **)&tok->tok_bytes);
    }
    if (st == MN_OK && (tok->tok_off[vocab_size] < 0 || d2[0] != (hsize_t)tok->tok_off[vocab_size]))
        st = mn_fail(MN_ERR_FORMAT, "%s: tokenizer/vocab_bytes has %llu bytes, offsets say %lld",
                     file, (unsigned long long)d2[0], (long long)tok->tok_off[vocab_size]);
    if (st == MN_OK)
        st = h5_read(g, file, "merges", H5T_NATIVE_INT32, 2, d1, sizeof(int32_t), (void **)&merges);
    if (st == MN_OK && (d1[1] != 2 || d1[0] > (hsize_t)vocab_size))
        st = mn_fail(MN_ERR_FORMAT, "%s: tokenizer/merges must be (M, 2) with M <= %d", file,
                     vocab_size);
    if (st == MN_OK) {
        tok->n_merges = (int32_t)d1[0];
        st = h5_read(g, file, "merge_ids", H5T_NATIVE_INT32, 1, d2, sizeof(int32_t),
                     (void **)&tok->merge_result);
    }
    if (st == MN_OK && d2[0] != (hsize_t)tok->n_merges)
        st = mn_fail(MN_ERR_FORMAT, "%s: tokenizer/merge_ids has %llu entries for %d merges", file,
                     (unsigned long long)d2[0], tok->n_merges);
    if (st == MN_OK)
        st = h5_read(g, file, "special_ids", H5T_NATIVE_INT32, 1, d2, sizeof(int32_t),
                     (void **)&special);
    if (st == MN_OK && d2[0] != MN_TOK_N_SPECIAL)
        st = mn_fail(MN_ERR_FORMAT, "%s: tokenizer/special_ids has %llu entries, expected %d",
                     file, (unsigned long long)d2[0], MN_TOK_N_SPECIAL);
    if (st == MN_OK) {
        memcpy(tok->special, special, sizeof tok->special);
        tok->merge_left = malloc((size_t)(tok->n_merges + 1) * sizeof(int32_t));
        tok->merge_right = malloc((size_t)(tok->n_merges + 1) * sizeof(int32_t));
        if (!tok->merge_left || !tok->merge_right)
            st = mn_fail(MN_ERR_NOMEM, "%s: out of memory", file);
    }
    if (st == MN_OK) {
        for (int32_t r = 0; r < tok->n_merges; r++) {
            tok->merge_left[r] = merges[2 * r];
            tok->merge_right[r] = merges[2 * r + 1];
        }
        char name[600];
        snprintf(name, sizeof name, "%s: tokenizer", file);
        st = tok_finalize(tok, name);
    }
    if (st == MN_OK && tok->hash != stored_hash)
        st = mn_fail(MN_ERR_FORMAT, "%s: tokenizer content hash %016llx differs from the stored "
                     "%016llx (corrupt)", file, (unsigned long long)tok->hash,
                     (unsigned long long)stored_hash);
    free(merges);
    free(special);
    H5Gclose(g);
    if (st != MN_OK) {
        mn_tokenizer_free(tok);
        return st;
    }
    *out = tok;
    return MN_OK;
}

mn_status mn_tokenizer_save_file(const mn_tokenizer *tok, const char *path) {
    if (!tok || !path)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_tokenizer_save_file: NULL argument");
    mn_atomic_file af;
    MN_TRY(mn_atomic_begin(path, &af));
    hid_t f;
    H5E_BEGIN_TRY { f = H5Fcreate(af.tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT); }
    H5E_END_TRY;
    if (f < 0) {
        mn_atomic_abort(&af);
        return mn_fail(MN_ERR_IO, "%s: cannot create", path);
    }
    mn_status st = mn_tokenizer_save_h5(tok, f);
    if (st != MN_OK)
        mn_fail_context(st, "%s", path);
    herr_t c;
    H5E_BEGIN_TRY { c = H5Fclose(f); }
    H5E_END_TRY;
    if (st == MN_OK && c < 0)
        st = mn_fail(MN_ERR_IO, "%s: cannot close", path);
    if (st != MN_OK) {
        mn_atomic_abort(&af);
        return st;
    }
    return mn_atomic_commit(&af);
}

mn_status mn_tokenizer_load_file(const char *path, mn_tokenizer **out) {
    if (!path || !out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_tokenizer_load_file: NULL argument");
    if (access(path, R_OK) != 0)
        return mn_fail(MN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    hid_t f;
    H5E_BEGIN_TRY { f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT); }
    H5E_END_TRY;
    if (f < 0)
        return mn_fail(MN_ERR_FORMAT, "%s: not an HDF5 file", path);
    mn_status st = mn_tokenizer_load_h5(f, path, out);
    H5E_BEGIN_TRY { H5Fclose(f); }
    H5E_END_TRY;
    return st;
}
