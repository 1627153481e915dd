/* The tokenizer handle (tokenizer.h, docs/tokens.md): allocating and freeing it, the checks
 * every way of building one ends with (training, GPT-2 files, HDF5), its content hash and
 * the queries. The other pieces are listed in tokenizer_internal.h. */
#include "text/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/hash.h"
#include "text/tokenizer_internal.h"

static const char *const special_texts[MN_TOK_N_SPECIAL] = {
    "<|pad|>", "<|turn|>", "<|speaker_a|>", "<|speaker_b|>", "<|eot|>", "<|session|>",
};

const char *mn_special_text(mn_special which) {
    return (which >= 0 && which < MN_TOK_N_SPECIAL) ? special_texts[which] : "";
}

mn_tokenizer *mn_tok_alloc(const char *kind) {
    mn_tokenizer *tok = calloc(1, sizeof *tok);
    if (tok) {
        snprintf(tok->kind, sizeof tok->kind, "%s", kind);
        for (int i = 0; i < MN_TOK_N_SPECIAL; i++)
            tok->special[i] = -1;
    }
    return tok;
}

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

int32_t mn_tokenizer_special_id(const mn_tokenizer *tok, const char *text) {
    for (int i = 0; tok && text && i < MN_TOK_N_SPECIAL; i++)
        if (!strcmp(text, special_texts[i]))
            return tok->special[i];
    return -1;
}

const uint8_t *mn_tokenizer_token_bytes(const mn_tokenizer *tok, int32_t id, size_t *len) {
    if (id < 0 || id >= tok->n_vocab)
        return NULL;
    *len = (size_t)(tok->tok_off[id + 1] - tok->tok_off[id]);
    return tok->tok_bytes + tok->tok_off[id];
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

mn_status mn_tok_finalize(mn_tokenizer *tok, const char *name) {
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
    uint64_t cap = grown_capacity(0, 2 * (size_t)tok->n_merges + 16, 16);
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
