/* Encoding and decoding (tokenizer.h): each pre-token is merged by rank, short ones by a
 * linear scan and long ones with a heap, and a per-handle cache maps frequent pre-tokens to
 * their ids. Also the id arrays (mn_ids) that encoding fills. */
#include "text/tokenizer.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "text/tokenizer_internal.h"

void mn_ids_free(mn_ids *ids) {
    free(ids->ids);
    ids->ids = NULL;
    ids->count = ids->capacity = 0;
}

static mn_status ids_reserve(mn_ids *ids, int64_t extra) {
    if (ids->count + extra <= ids->capacity)
        return MN_OK;
    int64_t cap = (int64_t)grown_capacity((size_t)ids->capacity, (size_t)(ids->count + extra), 256);
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

/* realloc that keeps the old block, and clears *ok, when it fails (nothing leaks). */
static void *resize(void *p, size_t bytes, int *ok) {
    void *q = realloc(p, bytes);
    if (!q) {
        *ok = 0;
        return p;
    }
    return q;
}

static mn_status scratch_reserve(mn_tokenizer *tok, size_t n) {
    if (n <= tok->scratch_cap)
        return MN_OK;
    size_t cap = grown_capacity(tok->scratch_cap, n, 256);
    int ok = 1;
    tok->sym = resize(tok->sym, cap * sizeof(int32_t), &ok);
    tok->rank = resize(tok->rank, cap * sizeof(int32_t), &ok);
    tok->prev = resize(tok->prev, cap * sizeof(int32_t), &ok);
    tok->next = resize(tok->next, cap * sizeof(int32_t), &ok);
    tok->heap = resize(tok->heap, 3 * cap * sizeof(uint64_t), &ok); /* n - 1 + 2 per merge */
    if (!ok)
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
        uint32_t cap = (uint32_t)grown_capacity(tok->cache_ids_cap, tok->cache_ids_len + m, 65536);
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
