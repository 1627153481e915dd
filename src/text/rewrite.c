/* Rewrites of template phrasings and sentences placed in real turns (rewrite.h). */
#include "text/rewrite.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int mn_holds_words(const char *text, const char *phrase) {
    size_t n = strlen(phrase);
    for (const char *p = text; n && (p = strcasestr(p, phrase)); p++)
        if ((p == text || !isalnum((unsigned char)p[-1])) && !isalnum((unsigned char)p[n]))
            return 1;
    return 0;
}

static const char *pick(mn_rng *rng, const char *const *list, size_t n) {
    return list[mn_rng_below(rng, (uint64_t)n)];
}
#define PICK(rng, list) pick(rng, list, sizeof list / sizeof list[0])

/* s with its first letter lower-cased when it follows a marker ("Oh, my ..."), unless the
 * first word is "I" (or "I'm", "I've", ...) or a placeholder: names stay capitalised. */
static void lower_first(char *s) {
    if (!isupper((unsigned char)s[0]))
        return;
    if (s[0] == 'I' && (s[1] == ' ' || s[1] == '\'' || s[1] == ',' || s[1] == '\0'))
        return;
    s[0] = (char)tolower((unsigned char)s[0]);
}

static int is_end_mark(char c) { return c == '.' || c == '!' || c == '?'; }

/* "<a><b>" in a new string, b's first letter lower-cased when lower is set. */
static char *join2(const char *a, const char *b, int lower) {
    size_t na = strlen(a), nb = strlen(b);
    char *out = malloc(na + nb + 1);
    if (!out)
        return NULL;
    memcpy(out, a, na);
    memcpy(out + na, b, nb + 1);
    if (lower)
        lower_first(out + na);
    return out;
}

/* frame with `tag` inserted before its final run of end marks (appended when it has none). */
static char *with_tag(const char *frame, const char *tag) {
    size_t n = strlen(frame), end = n;
    while (end > 0 && is_end_mark(frame[end - 1]))
        end--;
    size_t nt = strlen(tag);
    char *out = malloc(n + nt + 1);
    if (!out)
        return NULL;
    memcpy(out, frame, end);
    memcpy(out + end, tag, nt);
    memcpy(out + end + nt, frame + end, n - end + 1);
    return out;
}

/* Contractions and expansions, tried at word boundaries, case aside (a capital first letter
 * is kept). dir: 0 both ways, 1 long -> short only, -1 short -> long only ("I've a dog" is not
 * how most people say "I have a dog"; "'s" is only expanded where it cannot be possessive). */
static const struct {
    const char *full, *short_form;
    int dir;
} contractions[] = {
    {"what is", "what's", 0},   {"that is", "that's", 0},     {"it is", "it's", 0},
    {"where is", "where's", 0}, {"who is", "who's", 0},       {"here is", "here's", 0},
    {"I am", "I'm", 0},         {"do not", "don't", 0},       {"did not", "didn't", 0},
    {"is not", "isn't", 0},     {"you are", "you're", 0},     {"I would", "I'd", 0},
    {"I will", "I'll", 0},      {"cannot", "can't", 0},       {"I have", "I've", -1},
    {"{key} is", "{key}'s", 1}, {"let me", "lemme", 1},
};

/* Where `word` occurs in s at word boundaries (case aside), or NULL. */
static const char *find_word(const char *s, const char *word) {
    size_t n = strlen(word);
    for (const char *p = s; (p = strcasestr(p, word)); p++) {
        int left = p == s || !(isalnum((unsigned char)p[-1]) || p[-1] == '\'');
        int right = !(isalnum((unsigned char)p[n]) || p[n] == '\'');
        if (left && right)
            return p;
    }
    return NULL;
}

/* One contraction or expansion that applies to frame, drawn uniformly; NULL when none does
 * (*none = 1) or out of memory. */
static char *contract_or_expand(const char *frame, mn_rng *rng, int *none) {
    enum { N = sizeof contractions / sizeof contractions[0] };
    const char *at[2 * N];
    int which[2 * N], n = 0;
    for (int i = 0; i < N; i++) {
        const char *p;
        /* only before a word: "what it is." and "what my {key} is!" do not contract */
        if (contractions[i].dir >= 0 && (p = find_word(frame, contractions[i].full)) &&
            p[strlen(contractions[i].full)] == ' ' &&
            (isalnum((unsigned char)p[strlen(contractions[i].full) + 1]) ||
             p[strlen(contractions[i].full) + 1] == '{'))
            at[n] = p, which[n++] = 2 * i;
        if (contractions[i].dir <= 0 && (p = find_word(frame, contractions[i].short_form)))
            at[n] = p, which[n++] = 2 * i + 1;
    }
    *none = n == 0;
    if (n == 0)
        return NULL;
    int k = (int)mn_rng_below(rng, (uint64_t)n);
    int i = which[k] / 2, expand = which[k] % 2;
    const char *from = expand ? contractions[i].short_form : contractions[i].full;
    const char *to = expand ? contractions[i].full : contractions[i].short_form;
    size_t nf = strlen(from), nt = strlen(to), n_frame = strlen(frame), off = (size_t)(at[k] - frame);
    char *out = malloc(n_frame - nf + nt + 1);
    if (!out)
        return NULL;
    memcpy(out, frame, off);
    memcpy(out + off, to, nt);
    if (isupper((unsigned char)frame[off]))
        out[off] = (char)toupper((unsigned char)out[off]);
    memcpy(out + off + nt, frame + off + nf, n_frame - off - nf + 1);
    return out;
}

/* Lower case outside placeholders ("I" too: "i forgot my {key}" is how people type). */
static void lower_all(char *s) {
    for (char *p = s; *p; p++) {
        if (*p == '{') {
            char *close = strchr(p, '}');
            if (close) {
                p = close;
                continue;
            }
        }
        *p = (char)tolower((unsigned char)*p);
    }
}

/* Casing and punctuation: lower case, no final mark, or "!" for a fact's final "." */
static void recase(char *s, mn_frame_role role, mn_rng *rng) {
    size_t n = strlen(s);
    int op = (int)mn_rng_below(rng, 3);
    if (op == 0 || n == 0 || !is_end_mark(s[n - 1])) {
        lower_all(s);
    } else if (op == 1 || role == MN_FRAME_QUESTION || s[n - 1] != '.') {
        while (n > 0 && is_end_mark(s[n - 1]))
            s[--n] = '\0';
    } else {
        s[n - 1] = '!';
    }
}

/* A wh-question "What is/was/'s <rest>?" as an indirect one: "what <rest> is/was". */
static char *indirect_question(const char *q, const char *lead) {
    static const char *const wh[] = {"What", "Where", "When", "Which", "Who"};
    static const char *const verbs[][2] = {{" is ", "is"}, {" was ", "was"}, {"'s ", "is"}};
    for (size_t w = 0; w < sizeof wh / sizeof wh[0]; w++) {
        size_t nw = strlen(wh[w]);
        if (strncasecmp(q, wh[w], nw))
            continue;
        for (size_t v = 0; v < 3; v++) {
            size_t nv = strlen(verbs[v][0]);
            if (strncmp(q + nw, verbs[v][0], nv))
                continue;
            const char *rest = q + nw + nv;
            size_t nr = strlen(rest);
            if (nr < 2 || rest[nr - 1] != '?' || strpbrk(rest, ",.:;!") ||
                memchr(rest, '?', nr - 1))
                return NULL;
            size_t cap = strlen(lead) + nw + nr + 8;
            char *out = malloc(cap);
            if (!out)
                return NULL;
            /* "Do you remember what your {key} was?" */
            char *p = out;
            p += sprintf(p, "%s", lead);
            for (size_t i = 0; i < nw; i++)
                *p++ = (char)tolower((unsigned char)wh[w][i]);
            *p++ = ' ';
            memcpy(p, rest, nr - 1);
            p += nr - 1;
            sprintf(p, " %s?", verbs[v][1]);
            return out;
        }
    }
    return NULL;
}

static const char *const fact_markers[] = {
    "Oh, ", "So ", "Actually, ", "Fun fact: ", "Just so you know, ", "Well, ", "Okay, so ",
    "Also, ", "Ah, ", "Side note: "};
static const char *const question_markers[] = {"Oh, ", "So, ", "Hey, ", "Okay, ", "Um, ",
                                               "Also, ", "Actually, "};
static const char *const fact_tags[] = {", just so you know", ", if that matters", " lol",
                                        ", by the way", ", for the record", " haha",
                                        ", in case you wondered"};
static const char *const question_tags[] = {", by the way", " lol", ", if you remember",
                                            ", do you know"};
/* before a direct question, which keeps its capital after "?" and "." */
static const char *const question_wrappers[] = {
    "Quick question: ", "Question for you: ", "Can you help me out? ", "Do you remember? ",
    "Let me check something. ", "Can you tell me? ", "Test for you: "};
/* before an indirect question: "Do you remember what your {key} was?" */
static const char *const indirect_leads[] = {"Do you remember ", "Do you recall ",
                                             "Do you know ", "Can you tell me ",
                                             "Could you remind me "};

/* Replaces *s by next (taking it over) unless next is NULL (out of memory). */
static mn_status take(char **s, char *next) {
    if (!next)
        return mn_fail(MN_ERR_NOMEM, "rewrite: out of memory");
    free(*s);
    *s = next;
    return MN_OK;
}

mn_status mn_frame_vary(const char *frame, mn_frame_role role, mn_rng *rng, char **out) {
    *out = NULL;
    char *s = strdup(frame);
    if (!s)
        return mn_fail(MN_ERR_NOMEM, "rewrite: out of memory");
    const int question = role == MN_FRAME_QUESTION;
    int wrapped = 0;
    mn_status st = MN_OK;
    if (mn_rng_uniform(rng) < 0.5f) {
        int none = 0;
        char *c = contract_or_expand(s, rng, &none);
        if (!none)
            st = take(&s, c);
    }
    if (st == MN_OK && question && mn_rng_uniform(rng) < 0.6f) {
        char *ind = indirect_question(s, PICK(rng, indirect_leads));
        if (ind) {
            st = take(&s, ind);
        } else {
            const char *w = PICK(rng, question_wrappers);
            size_t nw = strlen(w);
            st = take(&s, join2(w, s, w[nw - 2] == ':' || w[nw - 2] == ','));
        }
        wrapped = 1;
    }
    if (st == MN_OK && !wrapped && mn_rng_uniform(rng) < 0.4f) {
        const char *m = question ? PICK(rng, question_markers) : PICK(rng, fact_markers);
        /* not twice the same marker ("Oh, oh, ...") */
        size_t nm = strcspn(m, ",: ");
        if (strncasecmp(s, m, nm) || isalpha((unsigned char)s[nm]))
            st = take(&s, join2(m, s, 1));
    }
    if (st == MN_OK && mn_rng_uniform(rng) < 0.3f)
        st = take(&s, with_tag(s, question ? PICK(rng, question_tags) : PICK(rng, fact_tags)));
    if (st == MN_OK && (mn_rng_uniform(rng) < 0.4f || !strcmp(s, frame))) {
        char *before = strdup(s);
        if (!before)
            st = mn_fail(MN_ERR_NOMEM, "rewrite: out of memory");
        for (int tries = 0; st == MN_OK && tries < 4 && !strcmp(s, before); tries++)
            recase(s, role, rng);
        free(before);
        if (st == MN_OK && !strcmp(s, frame))
            st = take(&s, join2(question ? "Hey, " : "Oh, ", s, 1));
    }
    if (st != MN_OK) {
        free(s);
        return st;
    }
    *out = s;
    return MN_OK;
}

/* ------------------------------------------------------------------ sentences in real turns */

static const char *const first_joiners[] = {"", "", "Oh, ", "First, ", "Before I forget, ",
                                            "Okay, so "};
static const char *const later_joiners[] = {"", "", "By the way, ", "Oh, and ", "Also, ",
                                            "Anyway, ", "Unrelated, but ", "Speaking of which, ",
                                            "On another note, "};
static const char *const question_joiners[] = {"", "", "Anyway, ", "By the way, ", "Oh, ",
                                               "So, ", "Changing the subject, "};

/* Ends of the sentences of `text` (after a run of end marks followed by a space, and at the
 * end): at most max_ends of them, written to ends[]. */
static int sentence_ends(const char *text, size_t *ends, int max_ends) {
    int n = 0;
    size_t len = strlen(text);
    for (size_t i = 0; i < len && n < max_ends; i++)
        if (is_end_mark(text[i]) && !is_end_mark(text[i + 1]) && (text[i + 1] == ' ' || text[i + 1] == '\0'))
            ends[n++] = i + 1;
    if (n < max_ends && (n == 0 || ends[n - 1] < len))
        ends[n++] = len;
    return n;
}

/* Appends s[0..n) to buf at *k, with ". " when the text before has no end mark, trimmed. */
static void put_piece(char *buf, size_t *k, const char *s, size_t n) {
    while (n > 0 && isspace((unsigned char)*s))
        s++, n--;
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        n--;
    if (n == 0)
        return;
    if (*k > 0) {
        if (!is_end_mark(buf[*k - 1]))
            buf[(*k)++] = '.';
        buf[(*k)++] = ' ';
    }
    memcpy(buf + *k, s, n);
    *k += n;
    buf[*k] = '\0';
}

/* Whether s opens with a discourse marker of its own ("Oh, ", "So ", "Actually, "). */
static int opens_with_marker(const char *s) {
    static const char *const words[] = {"oh",   "so",   "well",   "also", "actually", "ah",
                                        "okay", "side", "fun",    "just", "anyway",   "by",
                                        "um",   "hey",  "honestly", "random", "quick", "heads"};
    size_t n = strcspn(s, " ,:");
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (n == strlen(words[i]) && !strncasecmp(s, words[i], n))
            return 1;
    return 0;
}

mn_status mn_embed_sentence(const char *real, const char *sentence, mn_frame_role role,
                            size_t max_chars, mn_rng *rng, char **out) {
    *out = NULL;
    enum { MAX_SENTENCES = 64 };
    size_t ends[MAX_SENTENCES];
    while (isspace((unsigned char)*real))
        real++;
    if (!*real)
        return MN_OK;
    int n = sentence_ends(real, ends, MAX_SENTENCES);
    const int question = role == MN_FRAME_QUESTION;
    size_t ns = strlen(sentence), nj_max = 24; /* the longest joiner, and some */
    /* the real sentences that fit: a prefix of them, at least one */
    int keep = 0;
    while (keep < n && ends[keep] + ns + nj_max + 4 <= max_chars)
        keep++;
    if (keep == 0)
        return MN_OK;
    /* the sentence goes after the first `at` real sentences */
    int at = question ? keep : (int)mn_rng_below(rng, (uint64_t)keep + 1);
    /* no joiner before a sentence that opens with its own marker ("Oh, and oh, ...") */
    const char *joiner = opens_with_marker(sentence) ? ""
                         : question                  ? PICK(rng, question_joiners)
                         : at == 0                   ? PICK(rng, first_joiners)
                                                     : PICK(rng, later_joiners);
    size_t cap = ends[keep - 1] + ns + strlen(joiner) + 8;
    char *buf = malloc(cap), *said = join2(joiner, sentence, *joiner != '\0');
    if (!buf || !said) {
        free(buf);
        free(said);
        return mn_fail(MN_ERR_NOMEM, "rewrite: out of memory");
    }
    size_t k = 0;
    buf[0] = '\0';
    put_piece(buf, &k, real, at > 0 ? ends[at - 1] : 0);
    put_piece(buf, &k, said, strlen(said));
    size_t from = at > 0 ? ends[at - 1] : 0;
    if (at < keep)
        put_piece(buf, &k, real + from, ends[keep - 1] - from);
    free(said);
    *out = buf;
    return MN_OK;
}
