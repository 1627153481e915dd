/* BPE training (tokenizer.h): the corpus is pre-tokenized once into a frequency table of
 * distinct pre-tokens (mn_bpe_counts), then merges are learned incrementally on it, and the
 * mnemo-bpe vocabulary is laid out from them. */
#include "text/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "text/tokenizer_internal.h"

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
        size_t cap = grown_capacity(c->keys_cap, c->keys_len + n, 1);
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
/* Incremental BPE on the distinct pre-tokens ("words"): every word of 2+ bytes is a linked
 * list of symbols in one array of positions; each pair keeps its count and the positions
 * where it was seen (some merged away since, checked when used), and a max-heap of (count,
 * left, right) whose stale entries are re-pushed with their current count when popped
 * (counts of old pairs only ever fall). A merge visits only the positions of its pair, never
 * a whole word again, so a 1 MB word costs what 1 MB of short words does: each position is
 * recorded once, a merge records at most two, and each record is visited at most once. */
typedef struct {
    int64_t count;
    int32_t a, b;
} heap_entry;

typedef struct {
    /* the words: symbol, neighbours (-1 at a word's ends) and word of each position; a
     * merge writes its result at the left position and unlinks the right one (symbol -1) */
    int32_t *sym, *next, *prev, *word;
    int64_t *wfreq;
    int64_t n_words, n_syms;
    int64_t steps; /* mn_bpe_train_stats.steps */
    /* pairs */
    int32_t *pa, *pb;
    int64_t *pcount;
    int32_t **plist; /* positions of the pair's left symbol */
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
    free(t->sym);
    free(t->next);
    free(t->prev);
    free(t->word);
    free(t->wfreq);
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

/* Adds delta to the count of pair (a, b); a pair seen anew (delta > 0) records its position. */
static mn_status pair_add(trainer *t, int32_t a, int32_t b, int64_t delta, int32_t pos,
                          int32_t *index) {
    int32_t p;
    MN_TRY(pair_get(t, a, b, &p));
    t->pcount[p] += delta;
    if (delta > 0) {
        if (t->plen[p] == t->pcap[p]) {
            if (t->pcap[p] > INT32_MAX / 2)
                return mn_fail(MN_ERR_NOMEM, "tokenizer training: a pair occurs too often");
            int32_t cap = t->pcap[p] ? t->pcap[p] * 2 : 4;
            GROW(t->plist[p], cap);
            t->pcap[p] = cap;
        }
        t->plist[p][t->plen[p]++] = pos;
        t->steps++;
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

/* Applies merge (a, b) -> x of the given rank at every position still holding the pair. */
static mn_status apply_merge(trainer *t, int32_t pidx, int32_t x, int32_t rank) {
    int32_t a = t->pa[pidx], b = t->pb[pidx];
    int32_t *at = t->plist[pidx];
    int32_t n_at = t->plen[pidx];
    t->plist[pidx] = NULL; /* new pairs all involve x, so this list never grows meanwhile */
    t->plen[pidx] = t->pcap[pidx] = 0;
    /* Left to right, as a scan of each word merges ("aaa" becomes (aa)a, not a(aa)): the list
     * is in position order, since a pair gains positions only at the start or in the merge
     * that made its newer symbol, which records them in the order it visits its own. */
    t->steps += n_at;
    t->n_touched = 0;
    mn_status st = MN_OK;
    for (int32_t k = 0; k < n_at && st == MN_OK; k++) {
        int32_t i = at[k];
        if (t->sym[i] != a)
            continue; /* merged away since it was recorded */
        int32_t j = t->next[i];
        if (j < 0 || t->sym[j] != b)
            continue;
        int64_t f = t->wfreq[t->word[i]];
        int32_t l = t->prev[i], r = t->next[j], q;
        t->pcount[pidx] -= f;
        if (l >= 0) {
            st = pair_add(t, t->sym[l], a, -f, -1, NULL);
            if (st == MN_OK)
                st = pair_add(t, t->sym[l], x, f, l, &q);
            if (st == MN_OK)
                st = touch(t, q, rank);
        }
        if (st == MN_OK && r >= 0) {
            st = pair_add(t, b, t->sym[r], -f, -1, NULL);
            if (st == MN_OK)
                st = pair_add(t, x, t->sym[r], f, i, &q);
            if (st == MN_OK)
                st = touch(t, q, rank);
        }
        if (st == MN_OK) {
            t->sym[i] = x;
            t->sym[j] = -1;
            t->next[i] = r;
            if (r >= 0)
                t->prev[r] = i;
        }
    }
    free(at);
    MN_TRY(st);
    t->pcount[pidx] = 0;
    for (int64_t k = 0; k < t->n_touched; k++) {
        int32_t p = t->touched[k];
        if (t->pcount[p] > 0)
            MN_TRY(theap_push(t, (heap_entry){t->pcount[p], t->pa[p], t->pb[p]}));
    }
    return MN_OK;
}

/* mnemo-bpe layout from its merges: bytes, specials, then merge results. */
static mn_status build_trained(const int32_t *left, const int32_t *right, int32_t n_merges,
                               mn_tokenizer **out) {
    mn_tokenizer *tok = mn_tok_alloc("mnemo-bpe");
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
        total += (int64_t)strlen(mn_special_text(i));
    int64_t *lens = tok->tok_off; /* temporarily lengths at [id + 1] */
    for (int b = 0; b < 256; b++)
        lens[b + 1] = 1;
    for (int i = 0; i < MN_TOK_N_SPECIAL; i++)
        lens[MN_TOK_SPECIAL_BASE + i + 1] = (int64_t)strlen(mn_special_text(i));
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
        memcpy(tok->tok_bytes + tok->tok_off[MN_TOK_SPECIAL_BASE + i], mn_special_text(i),
               strlen(mn_special_text(i)));
    }
    for (int32_t r = 0; r < n_merges; r++) {
        int32_t id = MN_TOK_MERGE_BASE + r;
        uint8_t *dst = tok->tok_bytes + tok->tok_off[id];
        size_t la = tok_len(tok, left[r]);
        memcpy(dst, tok->tok_bytes + tok->tok_off[left[r]], la);
        memcpy(dst + la, tok->tok_bytes + tok->tok_off[right[r]], tok_len(tok, right[r]));
    }
    mn_status st = mn_tok_finalize(tok, "trained tokenizer");
    if (st != MN_OK) {
        mn_tokenizer_free(tok);
        return st;
    }
    *out = tok;
    return MN_OK;
}

static mn_status train_run(trainer *t, const mn_bpe_counts *c, int32_t max_merges,
                           int32_t **left_out, int32_t **right_out, int32_t *n_out) {
    /* words: distinct pre-tokens of 2+ bytes, in insertion-independent (slot) order */
    int64_t n_words = 0, n_syms = 0;
    for (size_t i = 0; i < c->cap; i++)
        if (c->slots[i].key_len >= 2) {
            n_words++;
            n_syms += c->slots[i].key_len;
        }
    if (n_words >= INT32_MAX || n_syms >= INT32_MAX)
        return mn_fail(MN_ERR_NOMEM, "tokenizer training: %lld distinct pre-tokens of %lld bytes: too many",
                       (long long)n_words, (long long)n_syms);
    size_t ns = (size_t)(n_syms ? n_syms : 1);
    t->sym = malloc(ns * sizeof *t->sym);
    t->next = malloc(ns * sizeof *t->next);
    t->prev = malloc(ns * sizeof *t->prev);
    t->word = malloc(ns * sizeof *t->word);
    t->wfreq = malloc((size_t)(n_words ? n_words : 1) * sizeof *t->wfreq);
    if (!t->sym || !t->next || !t->prev || !t->word || !t->wfreq)
        return mn_fail(MN_ERR_NOMEM, "tokenizer training: out of memory for %lld words",
                       (long long)n_words);
    t->n_syms = n_syms;
    MN_TRY(map_grow(t));
    int32_t at = 0;
    for (size_t i = 0; i < c->cap; i++) {
        const count_slot *s = &c->slots[i];
        if (s->key_len < 2)
            continue;
        int32_t w = (int32_t)t->n_words++, len = (int32_t)s->key_len;
        t->wfreq[w] = s->count;
        for (int32_t j = 0; j < len; j++) {
            t->sym[at + j] = MN_TOK_BYTE_BASE + c->keys[s->key_off + (uint32_t)j];
            t->prev[at + j] = j > 0 ? at + j - 1 : -1;
            t->next[at + j] = j + 1 < len ? at + j + 1 : -1;
            t->word[at + j] = w;
        }
        for (int32_t j = 0; j + 1 < len; j++)
            MN_TRY(pair_add(t, t->sym[at + j], t->sym[at + j + 1], s->count, at + j, NULL));
        at += len;
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

mn_status mn_tokenizer_train_with_stats(const mn_bpe_counts *counts, int vocab_size, mn_tokenizer **out,
                                        mn_bpe_train_stats *stats) {
    if (!counts || !out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_tokenizer_train: NULL argument");
    if (vocab_size < MN_TOK_MERGE_BASE || vocab_size > MN_TOK_MAX_VOCAB)
        return mn_fail(MN_ERR_INVALID_ARG, "tokenizer training: vocab size %d outside %d..%d",
                       vocab_size, MN_TOK_MERGE_BASE, MN_TOK_MAX_VOCAB);
    trainer t = {0};
    int32_t *left = NULL, *right = NULL, n = 0;
    mn_status st = train_run(&t, counts, vocab_size - MN_TOK_MERGE_BASE, &left, &right, &n);
    if (stats)
        *stats = (mn_bpe_train_stats){.symbols = t.n_syms, .steps = t.steps};
    trainer_free(&t);
    if (st == MN_OK)
        st = build_trained(left, right, n, out);
    free(left);
    free(right);
    return st;
}

mn_status mn_tokenizer_train(const mn_bpe_counts *counts, int vocab_size, mn_tokenizer **out) {
    return mn_tokenizer_train_with_stats(counts, vocab_size, out, NULL);
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
