/* Composed frames: a grammar of relations rendered into fact and question frames
 * (frame_grammar.h). */
#include "text/frame_grammar.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

static const char *const role_fields[MN_GRAMMAR_ROLES] = {"facts", "questions", "self_questions"};
static const char *const list_fields[MN_GRAMMAR_LISTS] = {
    "holds", "there", "moves", "kinds", "places", "haves", "dos", "tails", "prefixes"};
/* the placeholder of each list ({hold} is filled from "holds"); prefixes have none */
static const char *const list_holders[MN_GRAMMAR_LISTS] = {
    "hold", "there", "move", "kind", "place", "have", "do", "tail", NULL};

/* Pronouns, articles, auxiliaries, prepositions and the pieces of contractions as
 * mn_text_norm splits them ("there's" -> "there s"): words a composed frame may share with a
 * held-out phrasing, since no construction is made of them alone. */
static const char *const function_words[] = {
    "i", "m", "ve", "d", "ll", "re", "s", "t", "me", "my", "mine", "you", "your", "yours",
    "we", "our", "it", "its", "they", "them", "their", "a", "an", "the", "this", "that",
    "these", "those", "there", "here", "is", "are", "was", "were", "be", "been", "being", "am",
    "has", "have", "had", "having", "do", "does", "did", "done", "in", "on", "at", "by", "for",
    "with", "of", "to", "from", "into", "onto", "under", "over", "behind", "near", "next",
    "inside", "outside", "beside", "up", "down", "out", "off", "as", "and", "or", "but", "so",
    "if", "then", "than", "what", "which", "who", "whom", "where", "when", "why", "how", "not",
    "no", "yes", "just", "now", "still", "all", "any", "some", "one"};

int mn_grammar_function_word(const char *w, size_t n) {
    for (size_t i = 0; i < sizeof function_words / sizeof *function_words; i++)
        if (strlen(function_words[i]) == n && !strncmp(function_words[i], w, n))
            return 1;
    return 0;
}

void mn_frame_grammar_free(mn_frame_grammar *g) {
    if (!g)
        return;
    for (int r = 0; r < MN_GRAMMAR_ROLES; r++)
        mn_free_strings(g->patterns[r], g->n_patterns[r]);
    for (int v = 0; g->verbs && v < g->n_verbs; v++) {
        free(g->verbs[v].base);
        free(g->verbs[v].past);
        free(g->verbs[v].ing);
        mn_free_strings(g->verbs[v].preps, g->verbs[v].n_preps);
    }
    free(g->verbs);
    for (int l = 0; l < MN_GRAMMAR_LISTS; l++)
        mn_free_strings(g->lists[l], g->n_lists[l]);
    mn_strset_free(&g->heldout_phrasings);
    mn_strset_free(&g->heldout_runs);
    free(g);
}

/* s with each {placeholder} replaced by a space, mn_text_norm'd: the words it says itself. */
static char *literal_words(const char *s) {
    char *copy = strdup(s);
    if (!copy)
        return NULL;
    for (char *p = copy; (p = strchr(p, '{'));) {
        char *end = strchr(p, '}');
        if (!end)
            break;
        memset(p, ' ', (size_t)(end - p) + 1);
        p = end + 1;
    }
    char *norm = mn_text_norm(copy);
    free(copy);
    return norm;
}

/* The first word of s's own words that banned_words holds: copied into word (cap bytes), or
 * 0 when none. -1 when out of memory. */
static int banned_word(const char *s, const mn_strset *banned_words, char *word, size_t cap) {
    char *norm = literal_words(s);
    if (!norm)
        return -1;
    int found = 0;
    for (char *p = norm; *p && !found;) {
        size_t n = strcspn(p, " ");
        if (n < cap) {
            memcpy(word, p, n);
            word[n] = '\0';
            found = !mn_grammar_function_word(p, n) && mn_strset_has(banned_words, word);
        }
        p += n;
        p += strspn(p, " ");
    }
    free(norm);
    return found;
}

static mn_status check_words(const char *s, const char *file, const char *field, size_t i,
                             const mn_strset *banned_words) {
    char word[128];
    int b = banned_word(s, banned_words, word, sizeof word);
    if (b < 0)
        return mn_fail(MN_ERR_NOMEM, "%s: out of memory", file);
    if (b)
        return mn_fail(MN_ERR_FORMAT,
                       "%s: 'open_frames.composed.%s[%zu]' (\"%s\") has the word \"%s\" of a "
                       "valid or test phrasing, value or held-out key; composed frames use none",
                       file, field, i, s, word);
    return MN_OK;
}

/* The strings of obj[field]: a non-empty array; "" only where allow_empty. Word lists
 * (banned_words given) hold no brace and no banned word; patterns are checked by the caller. */
static mn_status read_strings(json_t *obj, const char *field, const char *file, int allow_empty,
                              const mn_strset *banned_words, char ***out, int *n_out) {
    json_t *arr = json_object_get(obj, field);
    if (!json_is_array(arr) || json_array_size(arr) == 0 || json_array_size(arr) > 100000)
        return mn_fail(MN_ERR_FORMAT,
                       "%s: 'open_frames.composed.%s' must be a non-empty array of strings",
                       file, field);
    size_t n = json_array_size(arr);
    if (!(*out = calloc(n, sizeof **out)))
        return mn_fail(MN_ERR_NOMEM, "%s: out of memory", file);
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(arr, i));
        if (!s)
            return mn_fail(MN_ERR_FORMAT, "%s: 'open_frames.composed.%s[%zu]' is not a string",
                           file, field, i);
        if (!*s && !allow_empty)
            return mn_fail(MN_ERR_FORMAT, "%s: 'open_frames.composed.%s[%zu]' is empty", file,
                           field, i);
        if (banned_words && strpbrk(s, "{}"))
            return mn_fail(MN_ERR_FORMAT,
                           "%s: 'open_frames.composed.%s[%zu]' (\"%s\") may not hold a brace",
                           file, field, i, s);
        if (banned_words)
            MN_TRY(check_words(s, file, field, i, banned_words));
        MN_TRY(mn_strdup(s, &(*out)[i]));
        *n_out = (int)i + 1;
    }
    return MN_OK;
}

/* Splits s at sep into at most max parts (copies); *n = parts found. */
static mn_status split_copy(const char *s, char sep, char **parts, int max, int *n) {
    *n = 0;
    for (const char *p = s;; p++) {
        const char *end = strchr(p, sep);
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (*n == max)
            return MN_ERR_FORMAT;
        MN_TRY(mn_strndup(p, len, &parts[(*n)++]));
        if (!end)
            return MN_OK;
        p = end;
    }
}

/* Frees the strings of a list held in an array of the caller's (not the array). */
static void free_parts(char **parts, int n) {
    for (int k = 0; k < n; k++)
        free(parts[k]);
}

static mn_status read_verb(const char *s, const char *file, size_t i, mn_grammar_verb *v) {
    char *parts[5] = {0};
    int n = 0;
    mn_status st = split_copy(s, '|', parts, 5, &n);
    if (st == MN_ERR_NOMEM) {
        free_parts(parts, n);
        return mn_fail(MN_ERR_NOMEM, "%s: out of memory", file);
    }
    int empty = 0;
    for (int k = 0; k < n; k++)
        empty |= !*parts[k];
    if (st != MN_OK || n != 4 || empty) {
        free_parts(parts, n);
        return mn_fail(MN_ERR_FORMAT,
                       "%s: 'open_frames.composed.verbs[%zu]' (\"%s\") must be "
                       "\"base|past|ing|prep,prep,...\" with no part empty",
                       file, i, s);
    }
    v->base = parts[0];
    v->past = parts[1];
    v->ing = parts[2];
    char *preps[16] = {0};
    int np = 0;
    st = split_copy(parts[3], ',', preps, 16, &np);
    free(parts[3]);
    for (int k = 0; k < np; k++)
        empty |= !*preps[k];
    v->preps = malloc((size_t)(np ? np : 1) * sizeof *v->preps);
    if (st == MN_ERR_NOMEM || !v->preps) {
        free_parts(preps, np);
        return mn_fail(MN_ERR_NOMEM, "%s: out of memory", file);
    }
    memcpy(v->preps, preps, (size_t)np * sizeof *preps);
    v->n_preps = np;
    if (st != MN_OK || empty)
        return mn_fail(MN_ERR_FORMAT,
                       "%s: 'open_frames.composed.verbs[%zu]' (\"%s\") has an empty or a 17th "
                       "preposition",
                       file, i, s);
    return MN_OK;
}

/* The placeholder at p ("{name}"): its name's length in *n; 0 when p is no placeholder. */
static int placeholder(const char *p, size_t *n) {
    if (*p != '{')
        return 0;
    const char *end = strchr(p + 1, '}');
    if (!end)
        return 0;
    *n = (size_t)(end - p - 1);
    return 1;
}

static int name_is(const char *name, size_t n, const char *want) {
    return strlen(want) == n && !strncmp(name, want, n);
}

static int known_placeholder(const char *name, size_t n) {
    static const char *const verb_parts[] = {"key", "value", "base", "past", "ing", "prep",
                                             "Prep"};
    for (size_t i = 0; i < sizeof verb_parts / sizeof *verb_parts; i++)
        if (name_is(name, n, verb_parts[i]))
            return 1;
    for (int l = 0; l < MN_GRAMMAR_LISTS; l++)
        if (list_holders[l] && name_is(name, n, list_holders[l]))
            return 1;
    return 0;
}

static mn_status check_pattern(const char *s, mn_grammar_role role, const char *file, size_t i) {
    const char *field = role_fields[role];
    int has_key = 0, has_value = 0;
    for (const char *p = s; *p; p++) {
        size_t n = 0;
        if (*p == '}' || (*p == '{' && !placeholder(p, &n)))
            return mn_fail(MN_ERR_FORMAT,
                           "%s: 'open_frames.composed.%s[%zu]' (\"%s\") has an unmatched brace",
                           file, field, i, s);
        if (*p != '{')
            continue;
        if (!known_placeholder(p + 1, n))
            return mn_fail(MN_ERR_FORMAT,
                           "%s: 'open_frames.composed.%s[%zu]' (\"%s\") has the unknown "
                           "placeholder {%.*s}",
                           file, field, i, s, (int)n, p + 1);
        has_key |= name_is(p + 1, n, "key");
        has_value |= name_is(p + 1, n, "value");
        p += n + 1;
    }
    const char *why = !has_key                             ? "has no {key}"
                      : role == MN_GRAMMAR_FACT && !has_value ? "has no {value}"
                      : role != MN_GRAMMAR_FACT && has_value  ? "gives the answer away with {value}"
                                                              : NULL;
    if (why)
        return mn_fail(MN_ERR_FORMAT, "%s: 'open_frames.composed.%s[%zu]' (\"%s\") %s", file,
                       field, i, s, why);
    return MN_OK;
}

/* Calls visit(ctx, run) on each run of four consecutive words of norm (mn_text_norm'd) that
 * holds "key" or "value", until visit returns nonzero; returns that, or 0. */
static int each_run(const char *norm, int (*visit)(void *ctx, const char *run), void *ctx) {
    const char *start[128];
    int n = 0;
    for (const char *p = norm; *p && n < 128; p += strspn(p, " ")) {
        start[n++] = p;
        p += strcspn(p, " ");
    }
    for (int w = 0; w + 4 <= n; w++) {
        const char *end = start[w + 3] + strcspn(start[w + 3], " ");
        char run[256];
        size_t len = (size_t)(end - start[w]);
        if (len >= sizeof run)
            continue;
        memcpy(run, start[w], len);
        run[len] = '\0';
        if (!strstr(run, "key") && !strstr(run, "value"))
            continue;
        int r = visit(ctx, run);
        if (r)
            return r;
    }
    return 0;
}

static int add_run(void *ctx, const char *run) {
    int added = 0;
    return mn_strset_add(ctx, run, &added) == MN_OK ? 0 : -1;
}

static int has_run(void *ctx, const char *run) { return mn_strset_has(ctx, run); }

static mn_status read_grammar(json_t *obj, const char *file, const mn_strset *banned_words,
                              mn_frame_grammar *g) {
    if (!json_is_object(obj))
        return mn_fail(MN_ERR_FORMAT, "%s: 'open_frames.composed' must be an object", file);
    for (int r = 0; r < MN_GRAMMAR_ROLES; r++) {
        MN_TRY(read_strings(obj, role_fields[r], file, 0, NULL, &g->patterns[r],
                            &g->n_patterns[r]));
        for (int i = 0; i < g->n_patterns[r]; i++) {
            MN_TRY(check_pattern(g->patterns[r][i], (mn_grammar_role)r, file, (size_t)i));
            MN_TRY(check_words(g->patterns[r][i], file, role_fields[r], (size_t)i, banned_words));
        }
    }
    for (int l = 0; l < MN_GRAMMAR_LISTS; l++)
        MN_TRY(read_strings(obj, list_fields[l], file,
                            l == MN_GRAMMAR_TAILS || l == MN_GRAMMAR_PREFIXES, banned_words,
                            &g->lists[l], &g->n_lists[l]));
    char **verbs = NULL;
    int n_verbs = 0;
    mn_status st = read_strings(obj, "verbs", file, 0, banned_words, &verbs, &n_verbs);
    if (st == MN_OK && !(g->verbs = calloc((size_t)n_verbs, sizeof *g->verbs)))
        st = mn_fail(MN_ERR_NOMEM, "%s: out of memory", file);
    for (int v = 0; st == MN_OK && v < n_verbs; v++) {
        g->n_verbs = v + 1;
        st = read_verb(verbs[v], file, (size_t)v, &g->verbs[v]);
    }
    mn_free_strings(verbs, n_verbs);
    return st;
}

mn_status mn_frame_grammar_read(json_t *obj, const char *file, mn_strset *heldout_phrasings,
                                const mn_strset *banned_words, mn_frame_grammar **out) {
    *out = NULL;
    mn_frame_grammar *g = calloc(1, sizeof *g);
    if (!g)
        return mn_fail(MN_ERR_NOMEM, "%s: out of memory", file);
    g->heldout_phrasings = *heldout_phrasings; /* moved in, not copied */
    memset(heldout_phrasings, 0, sizeof *heldout_phrasings);
    mn_status st = read_grammar(obj, file, banned_words, g);
    for (size_t i = 0; st == MN_OK && i < g->heldout_phrasings.cap; i++)
        if (g->heldout_phrasings.slots[i] &&
            each_run(g->heldout_phrasings.slots[i], add_run, &g->heldout_runs))
            st = mn_fail(MN_ERR_NOMEM, "%s: out of memory", file);
    if (st != MN_OK) {
        mn_frame_grammar_free(g);
        return st;
    }
    *out = g;
    return MN_OK;
}

static const char *pick(char **list, int n, mn_rng *rng) {
    return list[mn_rng_below(rng, (uint64_t)n)];
}

/* Appends s to buf (cap bytes, *len used); 0 when it does not fit. */
static int put(char *buf, size_t cap, size_t *len, const char *s, size_t n) {
    if (*len + n + 1 > cap)
        return 0;
    memcpy(buf + *len, s, n);
    *len += n;
    buf[*len] = '\0';
    return 1;
}

/* One rendering of a random pattern of `role` into buf; 0 when it does not fit. */
static int render(const mn_frame_grammar *g, mn_grammar_role role, mn_rng *rng, char *buf,
                  size_t cap) {
    const char *pattern = pick(g->patterns[role], g->n_patterns[role], rng);
    const mn_grammar_verb *v = &g->verbs[mn_rng_below(rng, (uint64_t)g->n_verbs)];
    const char *prep = v->preps[mn_rng_below(rng, (uint64_t)v->n_preps)];
    char body[512];
    size_t len = 0;
    body[0] = '\0';
    for (const char *p = pattern; *p;) {
        size_t n = 0;
        if (!placeholder(p, &n)) {
            if (!put(body, sizeof body, &len, p, 1))
                return 0;
            p++;
            continue;
        }
        const char *name = p + 1, *fill = NULL;
        int capital = 0;
        if (name_is(name, n, "key") || name_is(name, n, "value")) {
            if (!put(body, sizeof body, &len, p, n + 2))
                return 0;
            p += n + 2;
            continue;
        }
        if (name_is(name, n, "base"))
            fill = v->base;
        else if (name_is(name, n, "past"))
            fill = v->past;
        else if (name_is(name, n, "ing"))
            fill = v->ing;
        else if (name_is(name, n, "prep") || (capital = name_is(name, n, "Prep")))
            fill = prep;
        for (int l = 0; !fill && l < MN_GRAMMAR_LISTS; l++)
            if (list_holders[l] && name_is(name, n, list_holders[l]))
                fill = pick(g->lists[l], g->n_lists[l], rng);
        size_t at = len;
        if (!fill || !put(body, sizeof body, &len, fill, strlen(fill)))
            return 0;
        if (capital)
            body[at] = (char)toupper((unsigned char)body[at]);
        p += n + 2;
    }
    const char *prefix = role == MN_GRAMMAR_FACT
                             ? pick(g->lists[MN_GRAMMAR_PREFIXES], g->n_lists[MN_GRAMMAR_PREFIXES],
                                    rng)
                             : "";
    /* after a prefix the body's first letter is lower case, but for "I" and a placeholder */
    if (*prefix && body[0] != '{' && !(body[0] == 'I' && (body[1] == ' ' || body[1] == '\'')))
        body[0] = (char)tolower((unsigned char)body[0]);
    size_t out = 0;
    buf[0] = '\0';
    if (!put(buf, cap, &out, prefix, strlen(prefix)))
        return 0;
    /* one space between words, none before a mark (an empty tail leaves "{key} ." otherwise) */
    for (const char *p = body; *p; p++) {
        if (*p == ' ' && (out == 0 || buf[out - 1] == ' ' || p[1] == ' ' ||
                          (p[1] && strchr(".,;:?!", p[1]))))
            continue;
        if (!put(buf, cap, &out, p, 1))
            return 0;
    }
    if (islower((unsigned char)buf[0]))
        buf[0] = (char)toupper((unsigned char)buf[0]);
    return 1;
}

/* 1 if frame (mn_text_norm'd) is a held-out phrasing or shares a run of four words holding
 * "key" or "value" with one. */
static int near_heldout(const mn_frame_grammar *g, const char *norm) {
    return mn_strset_has(&g->heldout_phrasings, norm) ||
           each_run(norm, has_run, (void *)&g->heldout_runs);
}

mn_status mn_frame_grammar_compose(const mn_frame_grammar *g, mn_grammar_role role, mn_rng *rng,
                                   char **out) {
    *out = NULL;
    if (!g || role < 0 || role >= MN_GRAMMAR_ROLES)
        return mn_fail(MN_ERR_INVALID_ARG, "composed frames: no grammar or an unknown role");
    for (int tries = 0; tries < 32; tries++) {
        char buf[640];
        if (!render(g, role, rng, buf, sizeof buf))
            continue;
        char *norm = mn_text_norm(buf);
        if (!norm)
            return mn_fail(MN_ERR_NOMEM, "composed frames: out of memory");
        int near = near_heldout(g, norm);
        free(norm);
        if (!near)
            return mn_strdup(buf, out);
    }
    return MN_OK;
}
