/* Answer normalisation for exact match and LoCoMo's token F1 (src/eval/eval.h). */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "eval/eval.h"

/* Python's string.punctuation: the ASCII punctuation the official scorers delete. */
static int is_ascii_punct(unsigned char c) { return c < 128 && ispunct(c); }
static int is_ascii_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/* lower-case, punctuation out, the listed words out, single spaces. Word boundaries are
 * whitespace after punctuation removal; a non-ASCII byte counts as part of a word. */
static char *normalize(const char *s, const char *const *drop, int n_drop) {
    size_t n = strlen(s);
    char *clean = malloc(n + 1), *out = malloc(n + 1);
    if (!clean || !out) {
        free(clean), free(out);
        return NULL;
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_ascii_punct(c))
            continue;
        clean[m++] = (char)(c < 128 ? tolower(c) : c);
    }
    clean[m] = '\0';
    size_t o = 0, i = 0;
    while (i < m) {
        while (i < m && is_ascii_space((unsigned char)clean[i]))
            i++;
        size_t start = i;
        while (i < m && !is_ascii_space((unsigned char)clean[i]))
            i++;
        size_t len = i - start;
        if (!len)
            break;
        int dropped = 0;
        for (int d = 0; d < n_drop && !dropped; d++)
            dropped = strlen(drop[d]) == len && !memcmp(clean + start, drop[d], len);
        if (dropped)
            continue;
        if (o)
            out[o++] = ' ';
        memcpy(out + o, clean + start, len);
        o += len;
    }
    out[o] = '\0';
    free(clean);
    return out;
}

char *mn_eval_normalize_em(const char *s) {
    static const char *const articles[] = {"a", "an", "the"};
    return normalize(s ? s : "", articles, 3);
}

char *mn_eval_normalize_locomo(const char *s) {
    /* LoCoMo also drops "and"; its comma removal is subsumed by punctuation removal */
    static const char *const words[] = {"a", "an", "the", "and"};
    return normalize(s ? s : "", words, 4);
}

int mn_eval_exact_match(const char *prediction, const char *gold) {
    char *p = mn_eval_normalize_em(prediction), *g = mn_eval_normalize_em(gold);
    int same = p && g && !strcmp(p, g);
    free(p), free(g);
    return same;
}

/* Splits a normalised string (single spaces) into words in place. */
static int split_words(char *s, char **words, int cap) {
    int n = 0;
    char *save = NULL;
    for (char *t = strtok_r(s, " ", &save); t && n < cap; t = strtok_r(NULL, " ", &save))
        words[n++] = t;
    return n;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

double mn_eval_token_f1(const char *prediction, const char *gold) {
    char *p = mn_eval_normalize_locomo(prediction), *g = mn_eval_normalize_locomo(gold);
    double f1 = 0.0;
    if (p && g) {
        size_t cap_p = strlen(p) / 2 + 1, cap_g = strlen(g) / 2 + 1;
        char **pw = malloc(cap_p * sizeof *pw), **gw = malloc(cap_g * sizeof *gw);
        if (pw && gw) {
            int np = split_words(p, pw, (int)cap_p), ng = split_words(g, gw, (int)cap_g);
            /* multiset intersection of two sorted lists */
            qsort(pw, (size_t)np, sizeof *pw, cmp_str);
            qsort(gw, (size_t)ng, sizeof *gw, cmp_str);
            int same = 0;
            for (int i = 0, j = 0; i < np && j < ng;) {
                int c = strcmp(pw[i], gw[j]);
                if (c == 0)
                    same++, i++, j++;
                else if (c < 0)
                    i++;
                else
                    j++;
            }
            if (same > 0) {
                double precision = (double)same / np, recall = (double)same / ng;
                f1 = 2.0 * precision * recall / (precision + recall);
            }
        }
        free(pw), free(gw);
    }
    free(p), free(g);
    return f1;
}

/* Copies s[0..len) without surrounding whitespace (Python's str.strip()). */
static char *strip_copy(const char *s, size_t len) {
    while (len && is_ascii_space((unsigned char)*s))
        s++, len--;
    while (len && is_ascii_space((unsigned char)s[len - 1]))
        len--;
    char *out = malloc(len + 1);
    if (out) {
        memcpy(out, s, len);
        out[len] = '\0';
    }
    return out;
}

static int contains_ci(const char *hay, const char *needle) {
    size_t n = strlen(needle);
    for (const char *h = hay; *h; h++) {
        size_t i = 0;
        while (i < n && h[i] && tolower((unsigned char)h[i]) == needle[i])
            i++;
        if (i == n)
            return 1;
    }
    return 0;
}

double mn_eval_locomo_score(const char *prediction, const char *gold, int category) {
    prediction = prediction ? prediction : "";
    gold = gold ? gold : "";
    if (category == 5)
        return contains_ci(prediction, "no information available") || contains_ci(prediction, "not mentioned");
    if (category == 3) {
        const char *semi = strchr(gold, ';');
        char *first = strip_copy(gold, semi ? (size_t)(semi - gold) : strlen(gold));
        double f = first ? mn_eval_token_f1(prediction, first) : 0.0;
        free(first);
        return f;
    }
    if (category != 1)
        return mn_eval_token_f1(prediction, gold);
    /* multi-hop: the mean over the gold's comma-separated parts of the best-matching part
     * of the prediction */
    double sum = 0.0;
    int n_gold = 0;
    for (const char *g = gold;; n_gold++) {
        const char *gend = strchr(g, ',');
        size_t glen = gend ? (size_t)(gend - g) : strlen(g);
        char *gpart = strip_copy(g, glen);
        double best = 0.0;
        for (const char *p = prediction; gpart;) {
            const char *pend = strchr(p, ',');
            size_t plen = pend ? (size_t)(pend - p) : strlen(p);
            char *ppart = strip_copy(p, plen);
            if (ppart) {
                double f = mn_eval_token_f1(ppart, gpart);
                if (f > best)
                    best = f;
            }
            free(ppart);
            if (!pend)
                break;
            p = pend + 1;
        }
        free(gpart);
        sum += best;
        if (!gend) {
            n_gold++;
            break;
        }
        g = gend + 1;
    }
    return sum / n_gold;
}
