/* The GPT-2 byte-level vocabulary (tokenizer.h): loads Hugging Face vocab.json and
 * merges.txt, whose token names are bytes mapped to printable code points, into a "gpt2"
 * tokenizer with GPT-2's own ids. */
#include "text/tokenizer.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/atomic_file.h"
#include "core/error.h"
#include "text/text_util.h"
#include "text/tokenizer_internal.h"

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
    tok = mn_tok_alloc("gpt2");
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
        st = mn_tok_finalize(tok, name);
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

mn_status mn_tokenizer_load_gpt2(const char *vocab_path, const char *merges_path,
                                 mn_tokenizer **out) {
    if (!vocab_path || !merges_path || !out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_tokenizer_load_gpt2: NULL argument");
    char *v = NULL, *m = NULL;
    size_t vl = 0, ml = 0;
    MN_TRY(mn_file_read_all(vocab_path, &v, &vl));
    mn_status st = mn_file_read_all(merges_path, &m, &ml);
    if (st == MN_OK)
        st = mn_tokenizer_load_gpt2_buffers(v, vl, m, ml, vocab_path, merges_path, out);
    free(v);
    free(m);
    return st;
}

/* Raw bytes -> the byte-mapped token string (each byte one code point < 512: at most 2 UTF-8
 * bytes); dst holds 2 n + 1. */
static void gpt2_map(const int32_t byte_to_cp[256], const uint8_t *b, size_t n, char *dst) {
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t cp = byte_to_cp[b[i]];
        if (cp < 0x80) {
            dst[m++] = (char)cp;
        } else {
            dst[m++] = (char)(0xC0 | (cp >> 6));
            dst[m++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    dst[m] = '\0';
}

mn_status mn_tokenizer_save_gpt2(const mn_tokenizer *tok, const char *vocab_path, const char *merges_path) {
    if (!tok || !vocab_path || !merges_path)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_tokenizer_save_gpt2: NULL argument");
    if (strcmp(tok->kind, "gpt2"))
        return mn_fail(MN_ERR_INVALID_ARG,
                       "%s: the tokenizer is mnemo's own (%s); only a GPT-2 tokenizer (mnemo import-gpt2) is "
                       "written as vocab.json + merges.txt",
                       vocab_path, tok->kind);
    int32_t byte_to_cp[256];
    int16_t cp_to_byte[512];
    gpt2_byte_map(byte_to_cp, cp_to_byte);
    size_t longest = 0;
    for (int32_t id = 0; id < tok->n_vocab; id++)
        longest = tok_len(tok, id) > longest ? tok_len(tok, id) : longest;
    char *a = malloc(2 * longest + 1), *b = malloc(2 * longest + 1);
    json_t *vocab = json_object();
    mn_status st = a && b && vocab ? MN_OK : mn_fail(MN_ERR_NOMEM, "%s: out of memory", vocab_path);
    for (int32_t id = 0; id < tok->n_vocab && st == MN_OK; id++) {
        if (tok_len(tok, id) == 0) /* an id that names no token */
            continue;
        gpt2_map(byte_to_cp, tok->tok_bytes + tok->tok_off[id], tok_len(tok, id), a);
        if (json_object_set_new(vocab, a, json_integer(id)))
            st = mn_fail(MN_ERR_NOMEM, "%s: out of memory", vocab_path);
    }
    char *text = st == MN_OK ? json_dumps(vocab, JSON_PRESERVE_ORDER | JSON_COMPACT) : NULL;
    if (st == MN_OK)
        st = text ? mn_atomic_write_bytes(vocab_path, text, strlen(text))
                  : mn_fail(MN_ERR_NOMEM, "%s: out of memory", vocab_path);
    free(text);
    json_decref(vocab);
    /* merges.txt: one "left right" line per merge */
    size_t cap = 16 + (size_t)tok->n_merges * (4 * longest + 2), len = 0;
    char *merges = st == MN_OK ? malloc(cap) : NULL;
    if (st == MN_OK && !merges)
        st = mn_fail(MN_ERR_NOMEM, "%s: out of memory", merges_path);
    if (st == MN_OK) {
        len = (size_t)sprintf(merges, "#version: 0.2\n");
        for (int32_t r = 0; r < tok->n_merges; r++) {
            int32_t l = tok->merge_left[r], rt = tok->merge_right[r];
            gpt2_map(byte_to_cp, tok->tok_bytes + tok->tok_off[l], tok_len(tok, l), a);
            gpt2_map(byte_to_cp, tok->tok_bytes + tok->tok_off[rt], tok_len(tok, rt), b);
            len += (size_t)sprintf(merges + len, "%s %s\n", a, b);
        }
        st = mn_atomic_write_bytes(merges_path, merges, len);
    }
    free(merges);
    free(a);
    free(b);
    return st;
}
