#include "text/probes.h"
#include "text/json_doc.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/rng.h"
#include "text/rewrite.h"
#include "text/text_util.h"

/* ------------------------------------------------------------------ small helpers */

static const char *const split_names[3] = {"train", "valid", "test"};

mn_status mn_probe_split_parse(const char *name, mn_split *out) {
    for (int i = 0; i < 3; i++)
        if (name && !strcmp(name, split_names[i])) {
            *out = (mn_split)(MN_SPLIT_TRAIN + i);
            return MN_OK;
        }
    return mn_fail(MN_ERR_INVALID_ARG, "split must be train, valid or test (got '%s')",
                   name ? name : "(null)");
}

const char *mn_probe_split_name(mn_split split) {
    int i = (int)split - (int)MN_SPLIT_TRAIN;
    return i >= 0 && i < 3 ? split_names[i] : "all";
}

static int split_index(mn_split split) { return (int)split - (int)MN_SPLIT_TRAIN; }

/* What both loaders (templates, personas) check first: arguments present, *out zeroed (size
 * bytes), and a split that names one of the three; *want = its index. */
static mn_status load_start(const char *what, const char *path, void *out, size_t size,
                            mn_split split, int *want) {
    *want = split_index(split);
    if (!path || !out)
        return mn_fail(MN_ERR_INVALID_ARG, "%s: NULL argument", what);
    memset(out, 0, size);
    if (*want < 0 || *want > 2)
        return mn_fail(MN_ERR_INVALID_ARG, "%s: the split must be train, valid or test", what);
    return MN_OK;
}

static uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static char *lower_copy(const char *s) {
    char *out = strdup(s);
    if (out)
        for (char *p = out; *p; p++)
            *p = (char)tolower((unsigned char)*p);
    return out;
}

static int str_ieq(const char *a, const char *b) {
    for (; *a && *b; a++, b++)
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b))
            return 0;
    return *a == *b;
}

/* Grows *p (of *cap items of `size` bytes) to hold at least `need`. */
static mn_status grow(void **p, int *cap, int need, size_t size) {
    if (need <= *cap)
        return MN_OK;
    int c = *cap ? *cap : 256;
    while (c < need)
        c *= 2;
    void *q = realloc(*p, (size_t)c * size);
    if (!q)
        return mn_fail(MN_ERR_NOMEM, "probes: out of memory");
    *p = q;
    *cap = c;
    return MN_OK;
}

/* Replaces {key} and {value} in a template already validated to hold no other placeholder. */
static char *fill_template(const char *tmpl, const char *key, const char *value) {
    size_t klen = key ? strlen(key) : 0, vlen = value ? strlen(value) : 0;
    size_t cap = strlen(tmpl) + 1;
    for (const char *p = tmpl; (p = strchr(p, '{')); p++)
        cap += klen + vlen;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    size_t n = 0;
    for (const char *p = tmpl; *p;) {
        if (!strncmp(p, "{key}", 5)) {
            memcpy(out + n, key ? key : "", klen);
            n += klen;
            p += 5;
        } else if (!strncmp(p, "{value}", 7)) {
            memcpy(out + n, value ? value : "", vlen);
            n += vlen;
            p += 7;
        } else {
            out[n++] = *p++;
        }
    }
    out[n] = '\0';
    return out;
}

/* ------------------------------------------------------------------ templates */

static void category_free(mn_fact_category *cat) {
    free(cat->name);
    mn_free_strings(cat->keys, cat->n_keys);
    mn_free_strings(cat->facts, cat->n_facts);
    mn_free_strings(cat->updates, cat->n_updates);
    mn_free_strings(cat->questions, cat->n_questions);
    mn_free_strings(cat->self_questions, cat->n_self_questions);
    mn_free_strings(cat->values, cat->n_values);
    memset(cat, 0, sizeof *cat);
}

static void open_frames_free(mn_open_frames *of) {
    if (!of)
        return;
    free(of->file);
    mn_free_strings(of->facts, of->n_facts);
    mn_free_strings(of->updates, of->n_updates);
    mn_free_strings(of->questions, of->n_questions);
    mn_free_strings(of->self_questions, of->n_self_questions);
    mn_free_strings(of->nouns, of->n_nouns);
    mn_free_strings(of->modifiers, of->n_modifiers);
    mn_free_strings(of->owners, of->n_owners);
    for (int k = 0; k < MN_OPEN_KINDS; k++)
        mn_free_strings(of->kind_words[k], of->n_kind_words[k]);
    mn_free_strings(of->things, of->n_things);
    mn_free_strings(of->qualities, of->n_qualities);
    mn_frame_grammar_free(of->grammar);
    free(of);
}

void mn_probe_templates_free(mn_probe_templates *t) {
    if (!t)
        return;
    for (int c = 0; c < t->n_categories; c++)
        category_free(&t->categories[c]);
    free(t->categories);
    open_frames_free(t->open_frames);
    mn_free_strings(t->persona_questions, t->n_persona_questions);
    mn_free_strings(t->persona_self_questions, t->n_persona_self_questions);
    mn_strset_free(&t->heldout_phrasings);
    memset(t, 0, sizeof *t);
}

enum { ROLE_STATEMENT, ROLE_QUESTION, ROLE_PLAIN, ROLE_WORD };

/* Why a string cannot serve in its role, or NULL when it can. Placeholders may come in any
 * order ("{value} is where I keep my {key}."). */
static const char *template_problem(const char *s, int role) {
    if (!*s)
        return "is empty";
    int has_key = 0, has_value = 0;
    for (const char *p = s; *p; p++) {
        if (*p == '}')
            return "has a '}' outside a placeholder";
        if (*p != '{')
            continue;
        if (!strncmp(p, "{key}", 5)) {
            has_key = 1;
            p += 4;
        } else if (!strncmp(p, "{value}", 7)) {
            has_value = 1;
            p += 6;
        } else {
            return "has an unknown placeholder (only {key} and {value} exist)";
        }
    }
    switch (role) {
    case ROLE_STATEMENT:
        /* {key} too: with two facts of one category, the key tells them apart */
        if (!has_value)
            return "has no {value}";
        return has_key ? NULL : "has no {key}";
    case ROLE_QUESTION:
        if (has_value)
            return "gives the answer away with {value}";
        return has_key ? NULL : "has no {key}";
    default:
        return has_key || has_value ? "may not hold a placeholder" : NULL;
    }
}

/* The keys of one family as loaded, for the held-out key rule. */
typedef struct {
    char *file;
    char *name;
    int held_out;
    char **keys;
    int n_keys;
} family_keys;

/* What the loader has seen in all files so far: strings per split, so that no phrasing (group
 * 0, compared by mn_text_norm: case, punctuation and spacing aside) or value (group 1, lower-cased)
 * appears in two splits anywhere in the template files; every family's keys, so that a
 * held-out family's key appears in no other family; the valid and test values, for the open
 * frames' word rule; and the open frames file, read after all the others. */
typedef struct {
    mn_strset seen[2][3];
    family_keys *families;
    int n_families;
    char **heldout_values;
    int n_heldout_values, cap_heldout_values;
    json_t *frames_root;
    char *frames_file;
} load_guard;

static void load_guard_free(load_guard *g) {
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            mn_strset_free(&g->seen[i][j]);
    for (int f = 0; f < g->n_families; f++) {
        free(g->families[f].file);
        free(g->families[f].name);
        mn_free_strings(g->families[f].keys, g->families[f].n_keys);
    }
    free(g->families);
    mn_free_strings(g->heldout_values, g->n_heldout_values);
    json_decref(g->frames_root);
    free(g->frames_file);
}

/* The rule of keys within and across families: neither holds the other ("birthday" in
 * "mother's birthday"), case aside. */
static int keys_overlap(const char *a, const char *b) {
    return strcasestr(a, b) || strcasestr(b, a);
}

/* Records a family's keys, refusing any overlap (equal, or one inside the other) between a
 * held-out family's key and a key of another family: a test family's key never occurs in
 * training, not even as part of a longer key. */
static mn_status guard_family_keys(load_guard *g, const char *file, const mn_fact_category *cat) {
    for (int f = 0; f < g->n_families; f++) {
        const family_keys *o = &g->families[f];
        if (!cat->held_out && !o->held_out)
            continue;
        for (int k = 0; k < cat->n_keys; k++)
            for (int j = 0; j < o->n_keys; j++)
                if (keys_overlap(cat->keys[k], o->keys[j]))
                    return mn_fail(MN_ERR_FORMAT,
                                   "%s: key \"%s\" of family '%s' overlaps key \"%s\" of family "
                                   "'%s' in %s; a held-out family's keys appear in no other "
                                   "family",
                                   file, cat->keys[k], cat->name, o->keys[j], o->name, o->file);
    }
    family_keys *grown = realloc(g->families, (size_t)(g->n_families + 1) * sizeof *grown);
    if (!grown)
        return mn_fail(MN_ERR_NOMEM, "%s: out of memory", file);
    g->families = grown;
    family_keys *fk = &g->families[g->n_families];
    memset(fk, 0, sizeof *fk);
    fk->held_out = cat->held_out;
    fk->file = strdup(file);
    fk->name = strdup(cat->name);
    fk->keys = calloc((size_t)cat->n_keys, sizeof *fk->keys);
    int ok = fk->file && fk->name && fk->keys;
    for (int k = 0; ok && k < cat->n_keys; k++)
        ok = (fk->keys[k] = strdup(cat->keys[k])) != NULL;
    fk->n_keys = fk->keys ? cat->n_keys : 0;
    g->n_families++; /* freed with the guard, complete or not */
    return ok ? MN_OK : mn_fail(MN_ERR_NOMEM, "%s: out of memory", file);
}

static mn_status note_heldout_value(load_guard *g, const char *value, const char *file) {
    if (grow((void **)&g->heldout_values, &g->cap_heldout_values, g->n_heldout_values + 1,
             sizeof *g->heldout_values) != MN_OK ||
        !(g->heldout_values[g->n_heldout_values] = strdup(value)))
        return mn_fail(MN_ERR_NOMEM, "%s: out of memory", file);
    g->n_heldout_values++;
    return MN_OK;
}

/* How a split field is read. */
typedef struct {
    const char *field;
    int role;        /* ROLE_* of each string */
    int group;       /* 0 phrasings, 1 values: strings of one group never repeat across splits */
    int only;        /* -1: the field lists all three splits; 0..2: only this one (a held-out
                      * family, or the open frames: train), the others must be absent */
    int optional;    /* 1: the field may be absent altogether */
    int min_items;   /* per split */
} field_spec;

/* Reads field.<split> for the splits the spec names, checks every string, keeps the list of
 * split `want` (none when want is -1). An absent required field, a split missing or present
 * against the spec, or a list shorter than spec->min_items is an error. */
static mn_status read_split_field(json_t *root, const field_spec *spec, const char *file,
                                  load_guard *guard, int want, char ***out, int *n_out) {
    const char *field = spec->field;
    json_t *obj = json_object_get(root, field);
    if (!obj && spec->optional)
        return MN_OK;
    if (!json_is_object(obj)) {
        if (spec->only >= 0)
            return mn_fail(MN_ERR_FORMAT, "%s: '%s' must be an object {\"%s\": [...]}", file,
                           field, split_names[spec->only]);
        return mn_fail(MN_ERR_FORMAT,
                       "%s: '%s' must be an object {\"train\": [...], \"valid\": [...], "
                       "\"test\": [...]}",
                       file, field);
    }
    for (int s = 0; s < 3; s++) {
        json_t *arr = json_object_get(obj, split_names[s]);
        if (spec->only >= 0 && s != spec->only) {
            if (arr)
                return mn_fail(MN_ERR_FORMAT,
                               "%s: '%s.%s' is given, but the file serves the %s split only "
                               "(family_split, or open_frames: train)",
                               file, field, split_names[s], split_names[spec->only]);
            continue;
        }
        if (!json_is_array(arr) || json_array_size(arr) == 0)
            return mn_fail(MN_ERR_FORMAT, "%s: '%s.%s' must be a non-empty array of strings",
                           file, field, split_names[s]);
        size_t n = json_array_size(arr);
        if (n > INT_MAX / 2)
            return mn_fail(MN_ERR_FORMAT, "%s: '%s.%s' is too long", file, field,
                           split_names[s]);
        if (n < (size_t)spec->min_items)
            return mn_fail(MN_ERR_FORMAT,
                           "%s: '%s.%s' needs at least %d entries (an answer and a distractor)",
                           file, field, split_names[s], spec->min_items);
        mn_strset local = {0};
        char **list = NULL;
        if (s == want) {
            list = calloc(n, sizeof *list);
            if (!list)
                return mn_fail(MN_ERR_NOMEM, "%s: out of memory", file);
        }
        mn_status st = MN_OK;
        for (size_t i = 0; i < n && st == MN_OK; i++) {
            json_t *item = json_array_get(arr, i);
            if (!json_is_string(item)) {
                st = mn_fail(MN_ERR_FORMAT, "%s: '%s.%s[%zu]' is not a string", file, field,
                             split_names[s], i);
                break;
            }
            const char *text = json_string_value(item);
            const char *why = template_problem(text, spec->role);
            if (why) {
                st = mn_fail(MN_ERR_FORMAT, "%s: '%s.%s[%zu]' (\"%s\") %s", file, field,
                             split_names[s], i, text, why);
                break;
            }
            /* phrasings differing only in case, punctuation or spacing are one phrasing */
            char *low = spec->group == 0 ? mn_text_norm(text) : lower_copy(text);
            if (!low) {
                st = mn_fail(MN_ERR_NOMEM, "%s: out of memory", file);
                break;
            }
            int added = 0;
            st = mn_strset_add(&local, low, &added);
            if (st == MN_OK && !added)
                st = mn_fail(MN_ERR_FORMAT, "%s: '%s.%s' lists \"%s\" twice", file, field,
                             split_names[s], text);
            for (int o = 0; o < 3 && st == MN_OK; o++)
                if (o != s && mn_strset_has(&guard->seen[spec->group][o], low))
                    st = mn_fail(MN_ERR_FORMAT,
                                 "%s: '%s.%s' has \"%s\", which the %s split also uses; "
                                 "splits must be disjoint",
                                 file, field, split_names[s], text, split_names[o]);
            if (st == MN_OK)
                st = mn_strset_add(&guard->seen[spec->group][s], low, &added);
            if (st == MN_OK && spec->group == 1 && s != 0 && added)
                st = note_heldout_value(guard, text, file);
            free(low);
            if (st == MN_OK && list && !(list[i] = strdup(text)))
                st = mn_fail(MN_ERR_NOMEM, "%s: out of memory", file);
        }
        mn_strset_free(&local);
        if (st != MN_OK) {
            if (list)
                mn_free_strings(list, (int)n);
            return st;
        }
        if (list) {
            *out = list;
            *n_out = (int)n;
        }
    }
    return MN_OK;
}

static mn_status read_keys(json_t *root, const char *file, mn_fact_category *cat) {
    json_t *arr = json_object_get(root, "keys");
    if (!json_is_array(arr) || json_array_size(arr) == 0 || json_array_size(arr) > INT_MAX / 2)
        return mn_fail(MN_ERR_FORMAT, "%s: 'keys' must be a non-empty array of strings", file);
    size_t n = json_array_size(arr);
    cat->keys = calloc(n, sizeof *cat->keys);
    if (!cat->keys)
        return mn_fail(MN_ERR_NOMEM, "%s: out of memory", file);
    cat->n_keys = (int)n;
    for (size_t i = 0; i < n; i++) {
        json_t *item = json_array_get(arr, i);
        const char *why = json_is_string(item)
                              ? template_problem(json_string_value(item), ROLE_WORD)
                              : "is not a string";
        if (why)
            return mn_fail(MN_ERR_FORMAT, "%s: 'keys[%zu]' %s", file, i, why);
        /* no key inside another ("birthday" in "mother's birthday"), so that the key
         * found in a question or a fact turn names exactly one fact */
        for (size_t j = 0; j < i; j++)
            if (keys_overlap(cat->keys[j], json_string_value(item)))
                return mn_fail(MN_ERR_FORMAT, "%s: 'keys' \"%s\" and \"%s\" overlap", file,
                               cat->keys[j], json_string_value(item));
        if (!(cat->keys[i] = strdup(json_string_value(item))))
            return mn_fail(MN_ERR_NOMEM, "%s: out of memory", file);
    }
    return MN_OK;
}

/* Reads and checks one category file into `cat`, keeping the lists of split `want` when the
 * family serves it (*serves = 1), none otherwise. */
static mn_status read_category(json_t *root, const char *file, int want, load_guard *guard,
                               mn_fact_category *cat, int *serves) {
    int only = -1;
    json_t *fs = json_object_get(root, "family_split");
    if (fs) {
        mn_split split;
        if (!json_is_string(fs) || mn_probe_split_parse(json_string_value(fs), &split) != MN_OK ||
            split == MN_SPLIT_TRAIN)
            return mn_fail(MN_ERR_FORMAT,
                           "%s: 'family_split' must be \"valid\" or \"test\" (a family held out "
                           "of training)",
                           file);
        only = split_index(split);
    }
    *serves = only < 0 || only == want;
    cat->held_out = only >= 0;
    int keep = *serves ? want : -1;
    if (!(cat->name = strdup(json_string_value(json_object_get(root, "category")))))
        return mn_fail(MN_ERR_NOMEM, "%s: out of memory", file);
    MN_TRY(read_keys(root, file, cat));
    const field_spec fact = {"fact", ROLE_STATEMENT, 0, only, 0, 1},
                     update = {"update", ROLE_STATEMENT, 0, only, 0, 1},
                     question = {"question", ROLE_QUESTION, 0, only, 0, 1},
                     self_question = {"self_question", ROLE_QUESTION, 0, only, 1, 1},
                     values = {"values", ROLE_WORD, 1, only, 0, 2};
    MN_TRY(read_split_field(root, &fact, file, guard, keep, &cat->facts, &cat->n_facts));
    MN_TRY(read_split_field(root, &update, file, guard, keep, &cat->updates, &cat->n_updates));
    MN_TRY(read_split_field(root, &question, file, guard, keep, &cat->questions,
                            &cat->n_questions));
    MN_TRY(read_split_field(root, &self_question, file, guard, keep, &cat->self_questions,
                            &cat->n_self_questions));
    MN_TRY(read_split_field(root, &values, file, guard, keep, &cat->values, &cat->n_values));
    return guard_family_keys(guard, file, cat);
}

/* ------------------------------------------------------------------ open frames */

static const char *const kind_names[MN_OPEN_KINDS] = {"name", "number", "date", "phrase",
                                                      "time", "code", "thing", "span",
                                                      "words", "title"};

/* Length of word w[0..n) without a trailing "'s" or plural "s": "gloves" and "glove",
 * "daughter's" and "daughter" are one word for the open frames' rules. */
static size_t word_stem(const char *w, size_t n) {
    if (n > 2 && w[n - 2] == '\'' && tolower((unsigned char)w[n - 1]) == 's')
        return n - 2;
    if (n > 3 && tolower((unsigned char)w[n - 1]) == 's')
        return n - 1;
    return n;
}

/* The first word of `a` that is also a word of `b` (words split at spaces and hyphens, compared
 * case-insensitively by word_stem): its start and length, or 0 when they share none. */
static size_t shared_word(const char *a, const char *b, const char **at) {
    static const char seps[] = " -";
    for (const char *p = a; *p; p += strspn(p, seps)) {
        size_t n = strcspn(p, seps);
        size_t ns = word_stem(p, n);
        for (const char *q = b; *q; q += strspn(q, seps)) {
            size_t m = strcspn(q, seps);
            if (n && word_stem(q, m) == ns && !strncasecmp(p, q, ns)) {
                *at = p;
                return n;
            }
            q += m;
        }
        p += n;
    }
    return 0;
}

/* Reads one word list of the open frames (non-empty, unique ignoring case, no placeholder).
 * A word that makes keys may share no word with a held-out family's key; a word that makes
 * values none with a valid or test value. */
static mn_status read_word_list(json_t *obj, const char *name, const char *field,
                                const char *file, int of_keys, const load_guard *g, char ***out,
                                int *n_out) {
    json_t *arr = json_object_get(obj, name);
    if (!json_is_array(arr) || json_array_size(arr) == 0 || json_array_size(arr) > INT_MAX / 2)
        return mn_fail(MN_ERR_FORMAT, "%s: 'open_frames.%s' must be a non-empty array of strings",
                       file, field);
    size_t n = json_array_size(arr);
    if (!(*out = calloc(n, sizeof **out)))
        return mn_fail(MN_ERR_NOMEM, "%s: out of memory", file);
    for (size_t i = 0; i < n; i++) {
        json_t *item = json_array_get(arr, i);
        const char *w = json_string_value(item);
        const char *why = w ? template_problem(w, ROLE_WORD) : "is not a string";
        if (why)
            return mn_fail(MN_ERR_FORMAT, "%s: 'open_frames.%s[%zu]' %s", file, field, i, why);
        for (size_t j = 0; j < i; j++)
            if (str_ieq((*out)[j], w))
                return mn_fail(MN_ERR_FORMAT, "%s: 'open_frames.%s' lists \"%s\" twice", file,
                               field, w);
        const char *at = NULL;
        size_t len = 0;
        for (int f = 0; of_keys && f < g->n_families; f++)
            for (int k = 0; g->families[f].held_out && k < g->families[f].n_keys; k++)
                if ((len = shared_word(w, g->families[f].keys[k], &at)))
                    return mn_fail(MN_ERR_FORMAT,
                                   "%s: 'open_frames.%s' has \"%s\", whose word \"%.*s\" is in "
                                   "the key \"%s\" of the held-out family '%s' (%s); generated "
                                   "keys use no word of a held-out key",
                                   file, field, w, (int)len, at, g->families[f].keys[k],
                                   g->families[f].name, g->families[f].file);
        for (int v = 0; !of_keys && v < g->n_heldout_values; v++)
            if ((len = shared_word(w, g->heldout_values[v], &at)))
                return mn_fail(MN_ERR_FORMAT,
                               "%s: 'open_frames.%s' has \"%s\", whose word \"%.*s\" is in the "
                               "valid or test value \"%s\"; generated values use no word of a "
                               "held-out value",
                               file, field, w, (int)len, at, g->heldout_values[v]);
        if (!((*out)[i] = strdup(w)))
            return mn_fail(MN_ERR_NOMEM, "%s: out of memory", file);
        *n_out = (int)i + 1;
    }
    return MN_OK;
}

/* Adds the words of s (mn_text_norm'd, function words aside) to set. */
static mn_status add_content_words(mn_strset *set, const char *s, const char *file) {
    char *norm = mn_text_norm(s);
    if (!norm)
        return mn_fail(MN_ERR_NOMEM, "%s: out of memory", file);
    mn_status st = MN_OK;
    for (char *p = norm; *p && st == MN_OK; p += strspn(p, " ")) {
        size_t n = strcspn(p, " ");
        char end = p[n];
        p[n] = '\0';
        int added = 0;
        if (!mn_grammar_function_word(p, n) && strcmp(p, "key") && strcmp(p, "value"))
            st = mn_strset_add(set, p, &added);
        p[n] = end;
        p += n;
    }
    free(norm);
    return st == MN_OK ? MN_OK : mn_fail(MN_ERR_NOMEM, "%s: out of memory", file);
}

/* The composed frames' grammar ("composed", optional): no word of a valid or test phrasing
 * (function words aside), of a held-out family's key or of a valid or test value. */
static mn_status read_composed(json_t *obj, const char *file, const load_guard *g,
                               mn_open_frames *of) {
    mn_strset banned = {0}, phrasings = {0};
    mn_status st = MN_OK;
    int added = 0;
    for (int s = 1; s < 3 && st == MN_OK; s++)
        for (size_t i = 0; i < g->seen[0][s].cap && st == MN_OK; i++)
            if (g->seen[0][s].slots[i]) {
                st = add_content_words(&banned, g->seen[0][s].slots[i], file);
                if (st == MN_OK)
                    st = mn_strset_add(&phrasings, g->seen[0][s].slots[i], &added);
            }
    for (int v = 0; v < g->n_heldout_values && st == MN_OK; v++)
        st = add_content_words(&banned, g->heldout_values[v], file);
    for (int f = 0; f < g->n_families && st == MN_OK; f++)
        for (int k = 0; g->families[f].held_out && k < g->families[f].n_keys && st == MN_OK; k++)
            st = add_content_words(&banned, g->families[f].keys[k], file);
    if (st == MN_OK)
        st = mn_frame_grammar_read(obj, file, &phrasings, &banned, &of->grammar);
    mn_strset_free(&banned);
    mn_strset_free(&phrasings);
    return st;
}

static mn_status read_open_frames(json_t *root, const char *file, int want, load_guard *g,
                                  mn_open_frames *of) {
    json_t *obj = json_object_get(root, "open_frames");
    if (!json_is_object(obj))
        return mn_fail(MN_ERR_FORMAT, "%s: 'open_frames' must be an object", file);
    if (!(of->file = strdup(file)))
        return mn_fail(MN_ERR_NOMEM, "%s: out of memory", file);
    /* train phrasings under the cross-split rule of every template file: a frame equal to a
     * valid or test phrasing of any family (or persona question) is refused */
    int keep = want == 0 ? 0 : -1;
    const field_spec fact = {"fact", ROLE_STATEMENT, 0, 0, 0, 1},
                     update = {"update", ROLE_STATEMENT, 0, 0, 0, 1},
                     question = {"question", ROLE_QUESTION, 0, 0, 0, 1},
                     self_question = {"self_question", ROLE_QUESTION, 0, 0, 0, 1};
    MN_TRY(read_split_field(obj, &fact, file, g, keep, &of->facts, &of->n_facts));
    MN_TRY(read_split_field(obj, &update, file, g, keep, &of->updates, &of->n_updates));
    MN_TRY(read_split_field(obj, &question, file, g, keep, &of->questions, &of->n_questions));
    MN_TRY(read_split_field(obj, &self_question, file, g, keep, &of->self_questions,
                            &of->n_self_questions));
    MN_TRY(read_word_list(obj, "nouns", "nouns", file, 1, g, &of->nouns, &of->n_nouns));
    MN_TRY(read_word_list(obj, "modifiers", "modifiers", file, 1, g, &of->modifiers,
                          &of->n_modifiers));
    MN_TRY(read_word_list(obj, "owners", "owners", file, 1, g, &of->owners, &of->n_owners));
    MN_TRY(read_word_list(obj, "things", "things", file, 0, g, &of->things, &of->n_things));
    MN_TRY(read_word_list(obj, "qualities", "qualities", file, 0, g, &of->qualities,
                          &of->n_qualities));
    json_t *kinds = json_object_get(obj, "kind_words");
    if (!json_is_object(kinds))
        return mn_fail(MN_ERR_FORMAT, "%s: 'open_frames.kind_words' must be an object of lists",
                       file);
    for (int k = 0; k < MN_OPEN_KINDS; k++) {
        char field[64];
        snprintf(field, sizeof field, "kind_words.%s", kind_names[k]);
        MN_TRY(read_word_list(kinds, kind_names[k], field, file, 1, g, &of->kind_words[k],
                              &of->n_kind_words[k]));
    }
    json_t *composed = json_object_get(obj, "composed");
    return composed ? read_composed(composed, file, g, of) : MN_OK;
}

/* Checks the open frames file; keeps it in t for the train split. */
static mn_status load_open_frames(const char *file, json_t *root, int want, load_guard *g,
                                  mn_probe_templates *t) {
    mn_open_frames *of = calloc(1, sizeof *of);
    if (!of)
        return mn_fail(MN_ERR_NOMEM, "%s: out of memory", file);
    mn_status st = read_open_frames(root, file, want, g, of);
    if (st == MN_OK && want == 0)
        t->open_frames = of;
    else
        open_frames_free(of);
    return st;
}

static mn_status load_template_file(const char *file, int want, load_guard *guard,
                                    mn_probe_templates *t) {
    json_t *root = NULL;
    MN_TRY(mn_json_load_file(file, 0, &root));
    mn_status st = MN_OK;
    json_t *name = json_object_get(root, "category");
    if (!json_is_object(root)) {
        st = mn_fail(MN_ERR_FORMAT, "%s: the top level must be an object", file);
    } else if (json_object_get(root, "open_frames")) {
        /* read after every other file: its rules need all families and held-out values */
        if (guard->frames_root)
            st = mn_fail(MN_ERR_FORMAT, "%s: open_frames given in a second file (also in %s)",
                         file, guard->frames_file);
        else if (!(guard->frames_file = strdup(file)))
            st = mn_fail(MN_ERR_NOMEM, "%s: out of memory", file);
        else
            guard->frames_root = json_incref(root);
    } else if (json_object_get(root, "persona_questions")) {
        const field_spec other = {"persona_questions", ROLE_PLAIN, 0, -1, 0, 1},
                         self = {"persona_self_questions", ROLE_PLAIN, 0, -1, 1, 1};
        if (t->persona_questions)
            st = mn_fail(MN_ERR_FORMAT, "%s: persona_questions given in a second file", file);
        else
            st = read_split_field(root, &other, file, guard, want, &t->persona_questions,
                                  &t->n_persona_questions);
        if (st == MN_OK)
            st = read_split_field(root, &self, file, guard, want, &t->persona_self_questions,
                                  &t->n_persona_self_questions);
    } else if (json_is_string(name) && json_string_length(name) > 0) {
        for (int c = 0; c < guard->n_families && st == MN_OK; c++)
            if (!strcmp(guard->families[c].name, json_string_value(name)))
                st = mn_fail(MN_ERR_FORMAT, "%s: category '%s' is defined twice (also in %s)",
                             file, json_string_value(name), guard->families[c].file);
        mn_fact_category cat;
        memset(&cat, 0, sizeof cat);
        int serves = 0;
        if (st == MN_OK)
            st = read_category(root, file, want, guard, &cat, &serves);
        if (st == MN_OK && serves) {
            mn_fact_category *cats =
                realloc(t->categories, (size_t)(t->n_categories + 1) * sizeof *cats);
            if (!cats) {
                st = mn_fail(MN_ERR_NOMEM, "%s: out of memory", file);
            } else {
                t->categories = cats;
                cats[t->n_categories++] = cat;
                memset(&cat, 0, sizeof cat);
            }
        }
        category_free(&cat);
    } else {
        st = mn_fail(MN_ERR_FORMAT,
                     "%s: expected a non-empty string 'category' or a 'persona_questions' "
                     "object",
                     file);
    }
    json_decref(root);
    return st;
}

mn_status mn_probe_templates_load(const char *path, mn_split split, mn_probe_templates *out) {
    int want;
    MN_TRY(load_start("probe templates", path, out, sizeof *out, split, &want));
    out->split = split;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return mn_fail(MN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    char **files = NULL;
    int n_files = 0;
    if (S_ISDIR(sb.st_mode)) {
        MN_TRY(mn_list_files(path, ".json", &files, &n_files));
        if (n_files == 0)
            return mn_fail(MN_ERR_IO, "%s: no *.json template files", path);
    } else {
        files = malloc(sizeof *files);
        if (!files || !(files[0] = strdup(path))) {
            free(files);
            return mn_fail(MN_ERR_NOMEM, "probe templates: out of memory");
        }
        n_files = 1;
    }
    load_guard guard;
    memset(&guard, 0, sizeof guard);
    mn_status st = MN_OK;
    for (int i = 0; i < n_files && st == MN_OK; i++)
        st = load_template_file(files[i], want, &guard, out);
    if (st == MN_OK && guard.frames_root)
        st = load_open_frames(guard.frames_file, guard.frames_root, want, &guard, out);
    /* the train split keeps the valid and test phrasings, for rewrites to stay clear of */
    int added = 0;
    for (int s = 1; s < 3 && st == MN_OK && want == 0; s++)
        for (size_t i = 0; i < guard.seen[0][s].cap && st == MN_OK; i++)
            if (guard.seen[0][s].slots[i])
                st = mn_strset_add(&out->heldout_phrasings, guard.seen[0][s].slots[i], &added);
    if (st == MN_OK && out->n_categories == 0 && out->n_persona_questions == 0)
        st = mn_fail(MN_ERR_FORMAT, "%s: holds no category and no persona_questions for the %s "
                                    "split",
                     path, split_names[want]);
    load_guard_free(&guard);
    mn_free_strings(files, n_files);
    if (st != MN_OK)
        mn_probe_templates_free(out);
    return st;
}

mn_status mn_probe_templates_select(mn_probe_templates *t, mn_family_set which) {
    if (!t || which < MN_FAMILIES_ALL || which > MN_FAMILIES_HELD_OUT)
        return mn_fail(MN_ERR_INVALID_ARG, "probe templates: bad family selection");
    if (which == MN_FAMILIES_ALL)
        return MN_OK;
    int want_held = which == MN_FAMILIES_HELD_OUT, kept = 0;
    for (int c = 0; c < t->n_categories; c++)
        kept += t->categories[c].held_out == want_held;
    if (kept == 0)
        return mn_fail(MN_ERR_CONFIG, "probe templates: the %s split has no %s family",
                       mn_probe_split_name(t->split), want_held ? "held-out" : "shared");
    int n = 0;
    for (int c = 0; c < t->n_categories; c++) {
        if (t->categories[c].held_out == want_held)
            t->categories[n++] = t->categories[c];
        else
            category_free(&t->categories[c]);
    }
    t->n_categories = n;
    return MN_OK;
}

/* ------------------------------------------------------------------ personas */

void mn_persona_bank_free(mn_persona_bank *bank) {
    if (!bank)
        return;
    mn_free_strings(bank->sentences, bank->n_sentences);
    free(bank->persona_start);
    free(bank->persona_sentences);
    memset(bank, 0, sizeof *bank);
}

/* normalised sentence -> index in bank->sentences */
typedef struct {
    char **keys;
    int *values;
    size_t cap, count;
} index_map;

static void index_map_free(index_map *m) {
    for (size_t i = 0; i < m->cap; i++)
        free(m->keys[i]);
    free(m->keys);
    free(m->values);
    memset(m, 0, sizeof *m);
}

static size_t index_map_slot(char **keys, size_t cap, const char *k) {
    size_t i = (size_t)mn_hash_str(k, strlen(k)) & (cap - 1);
    while (keys[i] && strcmp(keys[i], k))
        i = (i + 1) & (cap - 1);
    return i;
}

static int index_map_get(const index_map *m, const char *k) {
    if (!m->cap)
        return -1;
    size_t i = index_map_slot(m->keys, m->cap, k);
    return m->keys[i] ? m->values[i] : -1;
}

/* Takes ownership of k. */
static mn_status index_map_put(index_map *m, char *k, int v) {
    if ((m->count + 1) * 2 > m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 1024;
        char **keys = calloc(cap, sizeof *keys);
        int *values = malloc(cap * sizeof *values);
        if (!keys || !values) {
            free(keys);
            free(values);
            free(k);
            return mn_fail(MN_ERR_NOMEM, "personas: out of memory");
        }
        for (size_t i = 0; i < m->cap; i++)
            if (m->keys[i]) {
                size_t j = index_map_slot(keys, cap, m->keys[i]);
                keys[j] = m->keys[i];
                values[j] = m->values[i];
            }
        free(m->keys);
        free(m->values);
        m->keys = keys;
        m->values = values;
        m->cap = cap;
    }
    size_t i = index_map_slot(m->keys, m->cap, k);
    m->keys[i] = k;
    m->values[i] = v;
    m->count++;
    return MN_OK;
}

static const char *const persona_sides[2] = {"Speaker 1", "Speaker 2"};

/* Calls visit(sentence, item, side) for every sentence of one split, checking the shape. */
typedef mn_status (*sentence_fn)(void *ctx, const char *sentence, size_t item, int side);

static mn_status visit_split(json_t *root, const char *path, int split, sentence_fn visit,
                             void *ctx) {
    json_t *items = json_object_get(root, split_names[split]);
    if (!json_is_array(items))
        return mn_fail(MN_ERR_FORMAT, "%s: '%s' must be an array of persona pairs", path,
                       split_names[split]);
    for (size_t i = 0; i < json_array_size(items); i++) {
        json_t *item = json_array_get(items, i);
        if (!json_is_object(item))
            return mn_fail(MN_ERR_FORMAT, "%s: %s[%zu] is not an object", path,
                           split_names[split], i);
        for (int side = 0; side < 2; side++) {
            json_t *list = json_object_get(item, persona_sides[side]);
            if (!list)
                continue;
            if (!json_is_array(list))
                return mn_fail(MN_ERR_FORMAT, "%s: %s[%zu].\"%s\" is not an array", path,
                               split_names[split], i, persona_sides[side]);
            for (size_t j = 0; j < json_array_size(list); j++) {
                json_t *s = json_array_get(list, j);
                if (!json_is_string(s))
                    return mn_fail(MN_ERR_FORMAT, "%s: %s[%zu].\"%s\"[%zu] is not a string",
                                   path, split_names[split], i, persona_sides[side], j);
                MN_TRY(visit(ctx, json_string_value(s), i, side));
            }
        }
    }
    return MN_OK;
}

static mn_status collect_other(void *ctx, const char *sentence, size_t item, int side) {
    char *norm = mn_text_norm(sentence);
    if (!norm)
        return mn_fail(MN_ERR_NOMEM, "personas: out of memory");
    int added;
    mn_status st = *norm ? mn_strset_add((mn_strset *)ctx, norm, &added) : MN_OK;
    free(norm);
    return st;
}

typedef struct {
    mn_persona_bank *bank;
    const mn_strset *other;
    index_map map;
    int sentences_cap, members_cap, personas_cap;
    size_t cur_item;
    int cur_side;
    int open; /* a persona has been started for (cur_item, cur_side) */
} bank_builder;

static mn_status collect_own(void *ctx, const char *sentence, size_t item, int side) {
    bank_builder *b = ctx;
    mn_persona_bank *bank = b->bank;
    char *norm = mn_text_norm(sentence);
    if (!norm)
        return mn_fail(MN_ERR_NOMEM, "personas: out of memory");
    if (!*norm || mn_strset_has(b->other, norm)) {
        bank->dropped_shared += *norm != '\0';
        free(norm);
        return MN_OK;
    }
    int idx = index_map_get(&b->map, norm);
    if (idx < 0) {
        MN_TRY(grow((void **)&bank->sentences, &b->sentences_cap, bank->n_sentences + 1,
                    sizeof *bank->sentences));
        /* keep the text as written, trimmed */
        const char *start = sentence;
        while (isspace((unsigned char)*start))
            start++;
        size_t len = strlen(start);
        while (len > 0 && isspace((unsigned char)start[len - 1]))
            len--;
        char *text = NULL;
        mn_status st = mn_strndup(start, len, &text);
        if (st != MN_OK) {
            free(norm);
            return st;
        }
        idx = bank->n_sentences;
        bank->sentences[bank->n_sentences++] = text;
        MN_TRY(index_map_put(&b->map, norm, idx));
    } else {
        free(norm);
    }
    if (!b->open || b->cur_item != item || b->cur_side != side) {
        /* a new persona starts; one left empty by dropped sentences is simply reused */
        int n_members = bank->n_personas ? bank->persona_start[bank->n_personas] : 0;
        if (!(bank->n_personas > 0 &&
              bank->persona_start[bank->n_personas - 1] == n_members)) {
            MN_TRY(grow((void **)&bank->persona_start, &b->personas_cap, bank->n_personas + 2,
                        sizeof *bank->persona_start));
            if (bank->n_personas == 0)
                bank->persona_start[0] = 0;
            bank->n_personas++;
            bank->persona_start[bank->n_personas] = n_members;
        }
        b->open = 1;
        b->cur_item = item;
        b->cur_side = side;
    }
    int first = bank->persona_start[bank->n_personas - 1];
    int end = bank->persona_start[bank->n_personas];
    for (int i = first; i < end; i++)
        if (bank->persona_sentences[i] == idx)
            return MN_OK; /* said twice by the same persona */
    MN_TRY(grow((void **)&bank->persona_sentences, &b->members_cap, end + 1,
                sizeof *bank->persona_sentences));
    bank->persona_sentences[end] = idx;
    bank->persona_start[bank->n_personas] = end + 1;
    return MN_OK;
}

mn_status mn_persona_bank_load(const char *path, mn_split split, mn_persona_bank *out) {
    int want;
    MN_TRY(load_start("personas", path, out, sizeof *out, split, &want));
    json_t *root = NULL;
    MN_TRY(mn_json_load_file(path, 0, &root));
    mn_status st = MN_OK;
    mn_strset other = {0};
    bank_builder b;
    memset(&b, 0, sizeof b);
    b.bank = out;
    b.other = &other;
    out->split = split;
    if (!json_is_object(root))
        st = mn_fail(MN_ERR_FORMAT, "%s: the top level must be an object of splits", path);
    for (int s = 0; s < 3 && st == MN_OK; s++)
        if (s != want)
            st = visit_split(root, path, s, collect_other, &other);
    if (st == MN_OK)
        st = visit_split(root, path, want, collect_own, &b);
    if (st == MN_OK && out->n_personas > 0 &&
        out->persona_start[out->n_personas - 1] == out->persona_start[out->n_personas])
        out->n_personas--; /* the last one lost all its sentences */
    if (st == MN_OK && out->n_sentences < 2)
        st = mn_fail(MN_ERR_FORMAT, "%s: the %s split has fewer than 2 usable sentences", path,
                     split_names[want]);
    index_map_free(&b.map);
    mn_strset_free(&other);
    json_decref(root);
    if (st != MN_OK)
        mn_persona_bank_free(out);
    return st;
}

/* ------------------------------------------------------------------ configuration */

static const mn_distance_range default_distances[] = {{1, 1},   {2, 2},   {4, 4},  {8, 8},
                                                      {16, 16}, {32, 32}, {64, 64}};

mn_probe_config mn_probe_config_default(void) {
    mn_probe_config c = {
        .distances = default_distances,
        .n_distances = (int)(sizeof default_distances / sizeof default_distances[0]),
        .probes_per_episode = 8,
        .n_distractors = 3,
        .interference = 0,
        .update_prob = 0.0,
        .sources = MN_FACTS_BOTH,
        .askers = MN_ASKERS_OTHER,
        .alive = 0,
        .alive_same_kind = 0,
        .embed_prob = 0.0,
        .variety_prob = 0.0,
        .noise_prob = 0.0,
        .seed = 1,
    };
    return c;
}

#define MN_MAX_DISTANCE (1 << 24)

mn_status mn_distances_parse(const char *spec, mn_distance_range **out, int *n) {
    if (!spec || !out || !n)
        return mn_fail(MN_ERR_INVALID_ARG, "distances: NULL argument");
    int count = 1;
    for (const char *p = spec; *p; p++)
        count += *p == ',';
    mn_distance_range *r = calloc((size_t)count, sizeof *r);
    if (!r)
        return mn_fail(MN_ERR_NOMEM, "distances: out of memory");
    const char *p = spec;
    for (int i = 0; i < count; i++) {
        long v[2];
        int parts = 0;
        for (;;) {
            char *end;
            errno = 0;
            long x = strtol(p, &end, 10);
            if (end == p || errno || x < 1 || x > MN_MAX_DISTANCE) {
                free(r);
                return mn_fail(MN_ERR_INVALID_ARG,
                               "distances '%s': expected integers 1..%d, as in 1,2,4 or 8-64",
                               spec, MN_MAX_DISTANCE);
            }
            v[parts++] = x;
            p = end;
            if (*p == '-' && parts == 1) {
                p++;
                continue;
            }
            break;
        }
        if (*p != (i + 1 < count ? ',' : '\0')) {
            free(r);
            return mn_fail(MN_ERR_INVALID_ARG, "distances '%s': unexpected '%c'", spec, *p);
        }
        p++;
        r[i].lo = (int)v[0];
        r[i].hi = (int)(parts == 2 ? v[1] : v[0]);
        if (r[i].hi < r[i].lo) {
            mn_status st = mn_fail(MN_ERR_INVALID_ARG, "distances '%s': range %d-%d is empty",
                                   spec, r[i].lo, r[i].hi);
            free(r);
            return st;
        }
    }
    *out = r;
    *n = count;
    return MN_OK;
}

static mn_status check_config(const mn_probe_config *c, const mn_probe_templates *templates,
                              const mn_persona_bank *personas) {
    if (!c->distances || c->n_distances < 1)
        return mn_fail(MN_ERR_CONFIG, "probes: at least one distance is needed");
    for (int i = 0; i < c->n_distances; i++)
        if (c->distances[i].lo < 1 || c->distances[i].hi < c->distances[i].lo ||
            c->distances[i].hi > MN_MAX_DISTANCE)
            return mn_fail(MN_ERR_CONFIG, "probes: distance range %d-%d is not within 1..%d",
                           c->distances[i].lo, c->distances[i].hi, MN_MAX_DISTANCE);
    if (c->probes_per_episode < 1)
        return mn_fail(MN_ERR_CONFIG, "probes: probes_per_episode must be >= 1 (got %d)",
                       c->probes_per_episode);
    if (c->n_distractors < 0 || c->interference < 0)
        return mn_fail(MN_ERR_CONFIG, "probes: distractors and interference must be >= 0");
    if (!(c->update_prob >= 0.0 && c->update_prob <= 1.0))
        return mn_fail(MN_ERR_CONFIG, "probes: update probability must be in [0, 1]");
    if (c->sources < MN_FACTS_PERSONAS || c->sources > MN_FACTS_BOTH)
        return mn_fail(MN_ERR_CONFIG, "probes: facts must be personas, templates or both");
    if ((c->sources & MN_FACTS_TEMPLATES) && (!templates || templates->n_categories == 0))
        return mn_fail(MN_ERR_CONFIG, "probes: template facts asked for but no category loaded");
    if (c->askers < MN_ASKERS_OTHER || c->askers > MN_ASKERS_BOTH)
        return mn_fail(MN_ERR_CONFIG, "probes: askers must be other, self or both");
    if (c->askers != MN_ASKERS_OTHER && (c->sources & MN_FACTS_TEMPLATES))
        for (int i = 0; i < templates->n_categories; i++)
            if (templates->categories[i].n_self_questions == 0)
                return mn_fail(MN_ERR_CONFIG,
                               "probes: the speaker asks for their own facts, but category "
                               "'%s' has no self_question for the %s split",
                               templates->categories[i].name,
                               mn_probe_split_name(templates->split));
    if (c->alive < 0 || c->alive == 1)
        return mn_fail(MN_ERR_CONFIG, "probes: facts alive together must be 0 (off) or >= 2");
    if (c->alive && c->sources != MN_FACTS_TEMPLATES)
        return mn_fail(MN_ERR_CONFIG, "probes: groups of facts alive together are template "
                                      "facts only");
    if (c->alive_same_kind && !c->alive)
        return mn_fail(MN_ERR_CONFIG, "probes: facts of one kind alive together need groups "
                                      "(alive >= 2)");
    if (c->alive_same_kind && c->interference)
        return mn_fail(MN_ERR_CONFIG, "probes: a group of one kind is its own interference; "
                                      "interference must be 0 with it");
    if (!(c->embed_prob >= 0.0 && c->embed_prob <= 1.0) ||
        !(c->variety_prob >= 0.0 && c->variety_prob <= 1.0) ||
        !(c->noise_prob >= 0.0 && c->noise_prob <= 1.0))
        return mn_fail(MN_ERR_CONFIG, "probes: embed, variety and noise probabilities must be in [0, 1]");
    if ((c->embed_prob > 0 || c->variety_prob > 0 || c->noise_prob > 0) &&
        (!(c->sources & MN_FACTS_TEMPLATES) || templates->split != MN_SPLIT_TRAIN))
        return mn_fail(MN_ERR_CONFIG,
                       "probes: embedded facts, varied phrasings and frame noise are for template "
                       "facts of the train split only (held-out episodes keep their phrasings)");
    if (c->sources & MN_FACTS_PERSONAS) {
        if (!personas || personas->n_sentences < 2 || personas->n_personas < 1)
            return mn_fail(MN_ERR_CONFIG, "probes: persona facts asked for but no personas loaded");
        if (!templates || templates->n_persona_questions == 0)
            return mn_fail(MN_ERR_CONFIG,
                           "probes: persona facts need persona_questions in the templates");
        if (templates->split != personas->split)
            return mn_fail(MN_ERR_CONFIG, "probes: templates are %s but personas are %s",
                           mn_probe_split_name(templates->split),
                           mn_probe_split_name(personas->split));
        if (c->askers != MN_ASKERS_OTHER && templates->n_persona_self_questions == 0)
            return mn_fail(MN_ERR_CONFIG, "probes: the speaker asks for their own persona facts, "
                                          "but the templates have no persona_self_questions");
    }
    return MN_OK;
}

/* ------------------------------------------------------------------ injection */

typedef struct {
    int pos;
    int speaker;
    char *text;
    int embed;        /* 1: said inside the next real turn of its speaker when there is one */
} planned_fact;

typedef struct {
    int persona;      /* 1: persona sentence, 0: template */
    int category;     /* template category */
    int answer;       /* value index, or sentence index for personas */
    int old_value;    /* replaced value (updates), -1 if none */
    int interf_first; /* interfering values: interf[interf_first .. +n_interf) */
    int n_interf;
    int d;
    int range;        /* which distance range it was drawn from */
    int self_ask;     /* 1: the fact's own speaker asks, in the first person */
} probe_plan;

typedef struct {
    const char *at;
    int len;
} word_ref;

typedef struct {
    const mn_probe_templates *t;
    const mn_persona_bank *pb;
    const mn_probe_config *cfg;
    const mn_dialogue *ep;   /* the episode as read: the words of frame noise */
    word_ref *pool;          /* its words, built at the first noised fact */
    int n_pool, pool_built;
    mn_rng rng;
    int L;
    unsigned char *occupied;
    planned_fact *facts;
    int n_facts, cap_facts;
    mn_probe *probes;
    int n_probes;
    unsigned char *q_embed; /* per probe: its question follows a real turn of the asker */
    int *interf;
    int n_interf, cap_interf;
    /* per category: key and value use in this episode, flattened with offsets */
    int *key_off, *val_off;
    unsigned char *key_used, *val_used;
    /* persona sentences said in (or reserved for) this episode, and personas assigned */
    int *persona_of_speaker; /* current persona of each speaker */
    int *assigned;
    int n_assigned, cap_assigned;
    unsigned char *sentence_used;
    const char *speakers[2];
    int n_speakers;
    int64_t varied; /* phrasings rewritten */
    int64_t noised; /* fact turns said with frame noise */
} injector;

static void injector_free(injector *in) {
    free(in->pool);
    free(in->occupied);
    for (int i = 0; i < in->n_facts; i++)
        free(in->facts[i].text);
    free(in->facts);
    free(in->interf);
    free(in->key_off);
    free(in->val_off);
    free(in->key_used);
    free(in->val_used);
    free(in->persona_of_speaker);
    free(in->assigned);
    free(in->sentence_used);
    free(in->q_embed);
    /* probes are handed over to the episode or freed by the caller */
}

/* A free index in [lo, hi] drawn uniformly, or -1. */
static int pick_free(injector *in, int lo, int hi) {
    if (lo < 0)
        lo = 0;
    if (hi > in->L - 1)
        hi = in->L - 1;
    int n = 0;
    for (int i = lo; i <= hi; i++)
        n += !in->occupied[i];
    if (n == 0)
        return -1;
    int k = (int)mn_rng_below(&in->rng, (uint64_t)n);
    for (int i = lo; i <= hi; i++)
        if (!in->occupied[i] && k-- == 0)
            return i;
    return -1;
}

/* An unused index in [0, n) drawn uniformly, or -1. */
static int pick_unused(mn_rng *rng, const unsigned char *used, int n) {
    int free_count = 0;
    for (int i = 0; i < n; i++)
        free_count += !used[i];
    if (free_count == 0)
        return -1;
    int k = (int)mn_rng_below(rng, (uint64_t)free_count);
    for (int i = 0; i < n; i++)
        if (!used[i] && k-- == 0)
            return i;
    return -1;
}

static int count_unused(const unsigned char *used, int n) {
    int c = 0;
    for (int i = 0; i < n; i++)
        c += !used[i];
    return c;
}

static mn_status add_fact(injector *in, int pos, int speaker, char *text) {
    if (!text)
        return mn_fail(MN_ERR_NOMEM, "probes: out of memory");
    if (grow((void **)&in->facts, &in->cap_facts, in->n_facts + 1, sizeof *in->facts) !=
        MN_OK) {
        free(text);
        return mn_fail(MN_ERR_NOMEM, "probes: out of memory");
    }
    in->facts[in->n_facts++] = (planned_fact){.pos = pos, .speaker = speaker, .text = text};
    in->occupied[pos] = 1;
    return MN_OK;
}

static const char *pick_str(mn_rng *rng, char **list, int n) {
    return list[mn_rng_below(rng, (uint64_t)n)];
}

/* The phrasing `frame` for one use, in *out (malloc'd): with chance variety_prob a rewrite
 * (mn_frame_vary), drawn again when it equals a valid or test phrasing (case, punctuation and
 * spacing aside, as the loader compares), and `frame` itself after four such draws. Draws
 * nothing when variety_prob is 0, so that output without the option is as before. */
static mn_status vary_phrasing(injector *in, const char *frame, mn_frame_role role, char **out) {
    *out = NULL;
    if (in->cfg->variety_prob > 0 && mn_rng_uniform(&in->rng) < in->cfg->variety_prob)
        for (int tries = 0; tries < 4 && !*out; tries++) {
            MN_TRY(mn_frame_vary(frame, role, &in->rng, out));
            char *norm = mn_text_norm(*out);
            if (!norm)
                return mn_fail(MN_ERR_NOMEM, "probes: out of memory");
            if (mn_strset_has(&in->t->heldout_phrasings, norm)) {
                free(*out);
                *out = NULL;
            }
            free(norm);
        }
    if (*out)
        in->varied++;
    else if (!(*out = strdup(frame)))
        return mn_fail(MN_ERR_NOMEM, "probes: out of memory");
    return MN_OK;
}

/* The words of the episode as read (split at white space; a word holding a brace is left out,
 * so that no fragment can add a placeholder), once per episode. */
static mn_status build_pool(injector *in) {
    in->pool_built = 1;
    int cap = 0;
    for (int t = 0; t < in->ep->n_turns; t++)
        for (const char *p = in->ep->turns[t].text; p && *p;) {
            while (*p && isspace((unsigned char)*p))
                p++;
            const char *w = p;
            while (*p && !isspace((unsigned char)*p))
                p++;
            int n = (int)(p - w);
            if (n == 0 || memchr(w, '{', (size_t)n) || memchr(w, '}', (size_t)n))
                continue;
            MN_TRY(grow((void **)&in->pool, &cap, in->n_pool + 1, sizeof *in->pool));
            in->pool[in->n_pool++] = (word_ref){w, n};
        }
    return MN_OK;
}

/* Appends " " and s[0..n) to the growing string *buf. */
static mn_status put_words(char **buf, size_t *len, size_t *cap, const char *s, size_t n) {
    if (*len + n + 2 > *cap) {
        size_t c = *cap ? *cap : 128;
        while (*len + n + 2 > c)
            c *= 2;
        char *b = realloc(*buf, c);
        if (!b)
            return mn_fail(MN_ERR_NOMEM, "probes: out of memory");
        *buf = b;
        *cap = c;
    }
    if (*len > 0)
        (*buf)[(*len)++] = ' ';
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';
    return MN_OK;
}

/* Appends lo..hi consecutive words of the episode's pool, from a random place. */
static mn_status put_fragment(injector *in, char **buf, size_t *len, size_t *cap, int lo, int hi) {
    int n = lo + (int)mn_rng_below(&in->rng, (uint64_t)(hi - lo) + 1);
    if (n > in->n_pool)
        n = in->n_pool;
    int from = (int)mn_rng_below(&in->rng, (uint64_t)(in->n_pool - n) + 1);
    for (int i = from; i < from + n; i++)
        MN_TRY(put_words(buf, len, cap, in->pool[i].at, (size_t)in->pool[i].len));
    return MN_OK;
}

/* Frame noise (noise_prob): `phrasing` with words of the episode around and between its words,
 * in *out (malloc'd; still a phrasing, filled after): a fragment of 2-8 words before it and one
 * after it (chance 0.6 each), 1-3 words after each of its words but the last (0.25), and each
 * word without a placeholder dropped (0.15) or swapped for 1-2 words (0.10). A word holding
 * {key} or {value} stays as it is, so the key and the value are said whole. The phrasing itself
 * when the episode has fewer than 8 words. What binding learnt on fixed frames misses (a new
 * construction around a key and value) is what this varies: docs/training.md. */
static mn_status noise_phrasing(injector *in, const char *phrasing, char **out) {
    *out = NULL;
    if (!in->pool_built)
        MN_TRY(build_pool(in));
    if (in->n_pool < 8)
        return mn_strdup(phrasing, out);
    size_t len = 0, cap = 0;
    char *buf = NULL;
    mn_status st = MN_OK;
    if (mn_rng_uniform(&in->rng) < 0.6)
        st = put_fragment(in, &buf, &len, &cap, 2, 8);
    for (const char *p = phrasing; st == MN_OK && *p;) {
        while (*p == ' ')
            p++;
        const char *w = p;
        while (*p && *p != ' ')
            p++;
        size_t n = (size_t)(p - w);
        if (n == 0)
            break;
        int slot = memchr(w, '{', n) != NULL; /* {key} or {value}, with its punctuation */
        double r = slot ? 1.0 : mn_rng_uniform(&in->rng);
        if (r >= 0.25)
            st = put_words(&buf, &len, &cap, w, n);
        else if (r >= 0.15)
            st = put_fragment(in, &buf, &len, &cap, 1, 2);
        while (*p == ' ')
            p++;
        if (st == MN_OK && *p && mn_rng_uniform(&in->rng) < 0.25)
            st = put_fragment(in, &buf, &len, &cap, 1, 3);
    }
    if (st == MN_OK && mn_rng_uniform(&in->rng) < 0.6)
        st = put_fragment(in, &buf, &len, &cap, 2, 8);
    if (st != MN_OK) {
        free(buf);
        return st;
    }
    *out = buf;
    return MN_OK;
}

/* A template fact turn at pos: `frame` (maybe rewritten, maybe with noise around it) filled with
 * key and value, to be said inside a real turn with chance embed_prob (decided in assemble,
 * where the turns are known). */
static mn_status add_template_fact(injector *in, int pos, int speaker, const char *frame,
                                   const char *key, const char *value) {
    char *phrasing;
    MN_TRY(vary_phrasing(in, frame, MN_FRAME_FACT, &phrasing));
    if (in->cfg->noise_prob > 0 && mn_rng_uniform(&in->rng) < in->cfg->noise_prob) {
        char *noisy;
        mn_status st = noise_phrasing(in, phrasing, &noisy);
        free(phrasing);
        MN_TRY(st);
        phrasing = noisy;
        in->noised++;
    }
    char *text = fill_template(phrasing, key, value);
    free(phrasing);
    int embed = in->cfg->embed_prob > 0 && mn_rng_uniform(&in->rng) < in->cfg->embed_prob;
    MN_TRY(add_fact(in, pos, speaker, text));
    in->facts[in->n_facts - 1].embed = embed;
    return MN_OK;
}

/* The question of a template probe: `frame` (maybe rewritten) filled with key, the frame as
 * it is when a rewrite would hold the answer as words. NULL when out of memory. */
static char *template_question(injector *in, const char *frame, const char *key,
                               const char *answer) {
    char *phrasing = NULL;
    if (vary_phrasing(in, frame, MN_FRAME_QUESTION, &phrasing) != MN_OK)
        return NULL;
    char *q = fill_template(phrasing, key, NULL);
    free(phrasing);
    if (q && mn_holds_words(q, answer)) {
        free(q);
        q = fill_template(frame, key, NULL);
    }
    return q;
}

/* A category that still has a free key and two free values (answer + old value) and is not
 * excluded (exclude may be NULL). */
static int category_available(const injector *in, int c, const unsigned char *exclude) {
    const mn_fact_category *cat = &in->t->categories[c];
    return (!exclude || !exclude[c]) &&
           count_unused(in->key_used + in->key_off[c], cat->n_keys) >= 1 &&
           count_unused(in->val_used + in->val_off[c], cat->n_values) >= 2;
}

/* The probe of the fact at turn f, asked pp->d turns later: question (taken over; NULL when
 * making it ran out of memory), a copy of answer, evidence f; counted in *made. Returns as
 * place_template below: 1, or -1 with *st set. */
static int add_probe(injector *in, const probe_plan *pp, int f, char *question, const char *answer,
                     int64_t *made, mn_status *st) {
    mn_probe *p = &in->probes[in->n_probes++];
    p->after = f + pp->d;
    p->question = question;
    p->answer = strdup(answer);
    p->evidence = malloc(sizeof *p->evidence);
    if (!p->question || !p->answer || !p->evidence) {
        *st = mn_fail(MN_ERR_NOMEM, "probes: out of memory");
        return -1;
    }
    p->evidence[0] = f;
    p->n_evidence = 1;
    (*made)++;
    return 1;
}

/* Places a template probe: its fact at a free index in [flo, fhi] (and old value, interfering
 * facts around it), of a category not in `exclude`. Returns 0 when nothing fits (the probe is
 * skipped), 1 when placed, or -1 on error; pp->category tells which category was used. */
static int place_template(injector *in, probe_plan *pp, int speaker, int flo, int fhi,
                          const unsigned char *exclude, mn_probe_stats *stats, mn_status *st) {
    const mn_probe_templates *t = in->t;
    int n_ok = 0;
    for (int c = 0; c < t->n_categories; c++)
        n_ok += category_available(in, c, exclude);
    if (n_ok == 0)
        return 0;
    int k = (int)mn_rng_below(&in->rng, (uint64_t)n_ok), c = 0;
    for (;; c++)
        if (category_available(in, c, exclude) && k-- == 0)
            break;
    const mn_fact_category *cat = &t->categories[c];
    unsigned char *keys = in->key_used + in->key_off[c];
    unsigned char *vals = in->val_used + in->val_off[c];

    int want_update = in->cfg->update_prob > 0 && mn_rng_uniform(&in->rng) < in->cfg->update_prob;
    int f = pick_free(in, want_update && flo < 1 ? 1 : flo, fhi);
    if (f < 0 && want_update) {
        want_update = 0;
        f = pick_free(in, flo, fhi);
    }
    if (f < 0)
        return 0;
    int f_old = -1;
    if (want_update) {
        f_old = pick_free(in, 0, f - 1);
        if (f_old < 0)
            want_update = 0;
    }
    int key = pick_unused(&in->rng, keys, cat->n_keys);
    keys[key] = 1;
    int value = pick_unused(&in->rng, vals, cat->n_values);
    vals[value] = 1;
    pp->persona = 0;
    pp->category = c;
    pp->answer = value;
    pp->old_value = -1;
    pp->interf_first = in->n_interf;
    pp->n_interf = 0;
    if (want_update) {
        pp->old_value = pick_unused(&in->rng, vals, cat->n_values);
        vals[pp->old_value] = 1;
        *st = add_template_fact(in, f_old, speaker, pick_str(&in->rng, cat->facts, cat->n_facts),
                                cat->keys[key], cat->values[pp->old_value]);
        if (*st != MN_OK)
            return -1;
        *st = add_template_fact(in, f, speaker, pick_str(&in->rng, cat->updates, cat->n_updates),
                                cat->keys[key], cat->values[value]);
        stats->update_probes++;
    } else {
        *st = add_template_fact(in, f, speaker, pick_str(&in->rng, cat->facts, cat->n_facts),
                                cat->keys[key], cat->values[value]);
    }
    if (*st != MN_OK)
        return -1;
    /* same category, other keys and values, same speaker, all before the question */
    for (int i = 0; i < in->cfg->interference; i++) {
        int ik = pick_unused(&in->rng, keys, cat->n_keys);
        if (ik < 0 || count_unused(vals, cat->n_values) < 1)
            break;
        int pos = pick_free(in, 0, f + pp->d - 1);
        if (pos < 0)
            break;
        int iv = pick_unused(&in->rng, vals, cat->n_values);
        keys[ik] = 1;
        vals[iv] = 1;
        *st = add_template_fact(in, pos, speaker, pick_str(&in->rng, cat->facts, cat->n_facts),
                                cat->keys[ik], cat->values[iv]);
        if (*st == MN_OK)
            *st = grow((void **)&in->interf, &in->cap_interf, in->n_interf + 1,
                       sizeof *in->interf);
        if (*st != MN_OK)
            return -1;
        in->interf[in->n_interf++] = iv;
        pp->n_interf++;
        stats->interference_facts++;
    }
    char **questions = pp->self_ask ? cat->self_questions : cat->questions;
    int n_questions = pp->self_ask ? cat->n_self_questions : cat->n_questions;
    char *question = template_question(in, pick_str(&in->rng, questions, n_questions),
                                       cat->keys[key], cat->values[value]);
    if (in->cfg->embed_prob > 0 && mn_rng_uniform(&in->rng) < in->cfg->embed_prob)
        in->q_embed[in->n_probes] = 1;
    return add_probe(in, pp, f, question, cat->values[value], &stats->template_probes, st);
}

static int persona_has(const mn_persona_bank *pb, int persona, int sentence) {
    for (int i = pb->persona_start[persona]; i < pb->persona_start[persona + 1]; i++)
        if (pb->persona_sentences[i] == sentence)
            return 1;
    return 0;
}

static mn_status assign_persona(injector *in, int speaker) {
    const mn_persona_bank *pb = in->pb;
    int p = -1;
    /* a persona not yet in the episode, when one is left */
    for (int tries = 0; tries < 64 && p < 0; tries++) {
        int cand = (int)mn_rng_below(&in->rng, (uint64_t)pb->n_personas);
        int taken = 0;
        for (int i = 0; i < in->n_assigned; i++)
            taken |= in->assigned[i] == cand;
        if (!taken)
            p = cand;
    }
    if (p < 0)
        p = (int)mn_rng_below(&in->rng, (uint64_t)pb->n_personas);
    MN_TRY(grow((void **)&in->assigned, &in->cap_assigned, in->n_assigned + 1,
                sizeof *in->assigned));
    in->assigned[in->n_assigned++] = p;
    in->persona_of_speaker[speaker] = p;
    return MN_OK;
}

/* An unsaid sentence of the speaker's persona; a speaker who has said all of it takes on a
 * further persona. -1 when every sentence of the bank is used. */
static int pick_persona_sentence(injector *in, int speaker, mn_status *st) {
    const mn_persona_bank *pb = in->pb;
    for (int attempt = 0; attempt < 8; attempt++) {
        int p = in->persona_of_speaker[speaker];
        int n = 0;
        for (int i = pb->persona_start[p]; i < pb->persona_start[p + 1]; i++)
            n += !in->sentence_used[pb->persona_sentences[i]];
        if (n > 0) {
            int k = (int)mn_rng_below(&in->rng, (uint64_t)n);
            for (int i = pb->persona_start[p]; i < pb->persona_start[p + 1]; i++)
                if (!in->sentence_used[pb->persona_sentences[i]] && k-- == 0)
                    return pb->persona_sentences[i];
        }
        if ((*st = assign_persona(in, speaker)) != MN_OK)
            return -1;
    }
    return -1;
}

static int place_persona(injector *in, probe_plan *pp, int speaker, mn_probe_stats *stats,
                         mn_status *st) {
    int f = pick_free(in, 0, in->L - pp->d);
    if (f < 0)
        return 0;
    int s = pick_persona_sentence(in, speaker, st);
    if (s < 0)
        return *st == MN_OK ? 0 : -1;
    in->sentence_used[s] = 1;
    pp->persona = 1;
    pp->answer = s;
    pp->old_value = -1;
    pp->n_interf = 0;
    *st = add_fact(in, f, speaker, strdup(in->pb->sentences[s]));
    if (*st != MN_OK)
        return -1;
    const mn_probe_templates *t = in->t;
    char *question = strdup(pp->self_ask ? pick_str(&in->rng, t->persona_self_questions,
                                                    t->n_persona_self_questions)
                                         : pick_str(&in->rng, t->persona_questions,
                                                    t->n_persona_questions));
    return add_probe(in, pp, f, question, in->pb->sentences[s], &stats->persona_probes, st);
}

static int choice_taken(char **choices, int n, const char *s) {
    for (int i = 0; i < n; i++)
        if (str_ieq(choices[i], s))
            return 1;
    return 0;
}

/* Answer plus up to k distractors of the same kind, in a random order. Runs after every fact
 * is placed, so that no persona distractor is a sentence said anywhere in the episode. */
static mn_status fill_choices(injector *in, const probe_plan *pp, mn_probe *p) {
    int k = in->cfg->n_distractors;
    char **ch = calloc((size_t)k + 1, sizeof *ch);
    if (!ch)
        return mn_fail(MN_ERR_NOMEM, "probes: out of memory");
    int n = 0;
    mn_status st = MN_OK;
    ch[n++] = p->answer; /* borrowed until the copy below */
    if (!pp->persona) {
        const mn_fact_category *cat = &in->t->categories[pp->category];
        /* the replaced value and the interfering values first: they are the hard ones */
        if (pp->old_value >= 0 && n <= k)
            ch[n++] = cat->values[pp->old_value];
        for (int i = 0; i < pp->n_interf && n <= k; i++)
            ch[n++] = cat->values[in->interf[pp->interf_first + i]];
        int avail = 0;
        for (int v = 0; v < cat->n_values; v++)
            avail += !choice_taken(ch, n, cat->values[v]);
        while (n <= k && avail > 0) {
            const char *v = cat->values[mn_rng_below(&in->rng, (uint64_t)cat->n_values)];
            if (!choice_taken(ch, n, v)) {
                ch[n++] = (char *)v;
                avail--;
            }
        }
    } else {
        const mn_persona_bank *pb = in->pb;
        /* bounded tries: a bank of hundreds of sentences has plenty of eligible ones */
        for (int tries = 0; n <= k && tries < 64 * (k + 1); tries++) {
            int s = (int)mn_rng_below(&in->rng, (uint64_t)pb->n_sentences);
            if (in->sentence_used[s])
                continue;
            int of_episode = 0;
            for (int i = 0; i < in->n_assigned && !of_episode; i++)
                of_episode = persona_has(pb, in->assigned[i], s);
            if (!of_episode && !choice_taken(ch, n, pb->sentences[s]))
                ch[n++] = pb->sentences[s];
        }
    }
    for (int i = n - 1; i > 0; i--) {
        int j = (int)mn_rng_below(&in->rng, (uint64_t)i + 1);
        char *tmp = ch[i];
        ch[i] = ch[j];
        ch[j] = tmp;
    }
    for (int i = 0; i < n; i++)
        if (!(ch[i] = strdup(ch[i])))
            st = mn_fail(MN_ERR_NOMEM, "probes: out of memory");
    p->choices = ch;
    p->n_choices = n;
    return st;
}

static int cmp_plan_by_distance(const void *a, const void *b) {
    const probe_plan *x = a, *y = b;
    if (x->d != y->d)
        return x->d > y->d ? -1 : 1; /* longest first: they are the hardest to fit */
    return x->range - y->range;
}

static int cmp_plan_shortest_first(const void *a, const void *b) {
    const probe_plan *x = a, *y = b;
    if (x->d != y->d)
        return x->d < y->d ? -1 : 1;
    return x->range - y->range;
}

/* Draws the fact speaker, the source and the asker of one probe and places it (a template
 * fact at a free index in [flo, fhi], of a category not in `exclude`). Returns as
 * place_template. */
static int place_probe(injector *in, probe_plan *pp, int flo, int fhi,
                       const unsigned char *exclude, mn_probe_stats *stats, mn_status *st) {
    const mn_probe_config *cfg = in->cfg;
    int speaker = (int)mn_rng_below(&in->rng, (uint64_t)in->n_speakers);
    int use_persona = cfg->sources == MN_FACTS_PERSONAS ||
                      (cfg->sources == MN_FACTS_BOTH && (mn_rng_next(&in->rng) >> 63));
    /* drawn only when both kinds are asked for, so that `other` output is as before */
    pp->self_ask = cfg->askers == MN_ASKERS_SELF ||
                   (cfg->askers == MN_ASKERS_BOTH && (mn_rng_next(&in->rng) >> 63));
    int before = in->n_probes;
    int placed = use_persona ? place_persona(in, pp, speaker, stats, st)
                             : place_template(in, pp, speaker, flo, fhi, exclude, stats, st);
    if (placed == 0 && cfg->sources == MN_FACTS_BOTH)
        placed = use_persona ? place_template(in, pp, speaker, flo, fhi, exclude, stats, st)
                             : place_persona(in, pp, speaker, stats, st);
    if (placed != 1)
        return placed;
    /* the other speaker asks (the format's example: B asks what A said), or the fact's own
     * speaker asks for it back and the other one answers (mnemo chat: the user tells and asks) */
    int asker = pp->self_ask || in->n_speakers < 2 ? speaker : 1 - speaker;
    if (!(in->probes[before].speaker = strdup(in->speakers[asker]))) {
        *st = mn_fail(MN_ERR_NOMEM, "probes: out of memory");
        return -1;
    }
    return 1;
}

/* Whether an episode probe keeps its turns once facts are inserted: its `after` turn and
 * every evidence turn are in range (of n_turns) and still there (old_to_new >= 0). */
static int probe_survives(const mn_probe *p, int n_turns, const int *old_to_new) {
    int ok = p->after >= 1 && p->after <= n_turns && old_to_new[p->after - 1] >= 0;
    for (int e = 0; e < p->n_evidence && ok; e++)
        ok = p->evidence[e] >= 0 && p->evidence[e] < n_turns && old_to_new[p->evidence[e]] >= 0;
    return ok;
}

/* Longest text (in bytes) of a turn holding an embedded fact or question: about 90 BPE tokens,
 * so that the turn stays within the shard's default max_turn_tokens (128) and is not split. */
#define MN_EMBED_MAX_CHARS 360

/* Whether the original turn o may take an embedded fact or question of `speaker`, said in
 * session `session`: same speaker, same session. */
static int may_embed_in(const mn_turn *o, const char *speaker, int session) {
    return o->session == session && !strcmp(o->speaker, speaker);
}

/* Whether original turn k may be taken into a fact or question and still leave enough
 * original turns to fill every slot from `from` on that no fact takes. */
static int spare_turn(const injector *in, const mn_dialogue *ep, planned_fact *const *at, int from,
                      int k) {
    int open_slots = 0;
    for (int j = from; j < in->L; j++)
        open_slots += !at[j];
    return ep->n_turns - k - 1 >= open_slots;
}

/* Before slot i (i == L: after the last turn): the first probe asking there whose question is
 * to follow a real turn of its asker (q_embed) takes the next original turn, when that turn is
 * the asker's and of the same session, and the question it makes does not hold the answer: its
 * text goes before the question, and the turn is not placed (consumed[k] = 1). */
static mn_status embed_question(injector *in, const mn_dialogue *ep, int i, const mn_turn *turns,
                                planned_fact *const *at, int *next_old, int *old_to_new,
                                unsigned char *consumed, const unsigned char *anchored,
                                int64_t *embedded) {
    int k = *next_old;
    if (i == 0 || k >= ep->n_turns || anchored[k])
        return MN_OK;
    for (int j = 0; j < in->n_probes; j++) {
        mn_probe *p = &in->probes[j];
        if (!in->q_embed[j] || p->after != i)
            continue;
        const mn_turn *o = &ep->turns[k];
        if (!may_embed_in(o, p->speaker, turns[i - 1].session))
            return MN_OK;
        if (!spare_turn(in, ep, at, i, k))
            return MN_OK;
        char *text = NULL;
        MN_TRY(mn_embed_sentence(o->text, p->question, MN_FRAME_QUESTION, MN_EMBED_MAX_CHARS, &in->rng,
                                 &text));
        if (text && mn_holds_words(text, p->answer)) {
            free(text); /* the real turn or the joiner gives the answer away */
            text = NULL;
        }
        if (text) {
            free(p->question);
            p->question = text;
            consumed[k] = 1;
            old_to_new[k] = -1;
            (*next_old)++;
            (*embedded)++;
        }
        return MN_OK;
    }
    return MN_OK;
}

/* Builds the episode's new turns and probes from the plan, then swaps them in. An embedded
 * fact (planned_fact.embed) takes the next original turn into its slot when that turn is its
 * speaker's, of the same session: the real text with the fact inside it; a consumed turn is
 * not placed again, so fewer original turns fall off the end. */
static mn_status assemble(injector *in, mn_dialogue *ep, mn_probe_stats *stats) {
    int L = in->L;
    mn_turn *turns = calloc((size_t)L, sizeof *turns);
    int *old_to_new = malloc((size_t)ep->n_turns * sizeof *old_to_new);
    planned_fact **at = calloc((size_t)L, sizeof *at);
    /* original turns taken into a fact or question turn, and those the episode's own probes
     * point at (never taken into a question, which would drop the probe) */
    unsigned char *consumed = calloc((size_t)ep->n_turns, 1), *anchored = calloc((size_t)ep->n_turns, 1);
    if (!turns || !old_to_new || !at || !consumed || !anchored) {
        free(turns);
        free(old_to_new);
        free(at);
        free(consumed);
        free(anchored);
        return mn_fail(MN_ERR_NOMEM, "probes: out of memory for %d turns", L);
    }
    for (int i = 0; i < in->n_facts; i++)
        at[in->facts[i].pos] = &in->facts[i];
    for (int i = 0; i < ep->n_probes; i++) {
        const mn_probe *p = &ep->probes[i];
        if (p->after >= 1 && p->after <= ep->n_turns)
            anchored[p->after - 1] = 1;
        for (int e = 0; e < p->n_evidence; e++)
            if (p->evidence[e] >= 0 && p->evidence[e] < ep->n_turns)
                anchored[p->evidence[e]] = 1;
    }
    mn_status st = MN_OK;
    int next_old = 0;
    int64_t embedded_facts = 0, embedded_questions = 0; /* counted in stats on success */
    for (int i = 0; i <= L && st == MN_OK; i++) {
        if (in->cfg->embed_prob > 0 && (i == L || !at[i]))
            st = embed_question(in, ep, i, turns, at, &next_old, old_to_new, consumed, anchored,
                                &embedded_questions);
        if (i == L || st != MN_OK)
            break;
        if (!at[i]) {
            old_to_new[next_old] = i;
            turns[i] = ep->turns[next_old++]; /* shallow: ownership moves on success */
            continue;
        }
        /* a fact belongs to the session it is said in: that of the turn before it */
        const mn_turn *ctx = i > 0 ? &turns[i - 1] : &ep->turns[0];
        const char *speaker = in->speakers[at[i]->speaker];
        char *text = NULL;
        if (at[i]->embed && next_old < ep->n_turns &&
            may_embed_in(&ep->turns[next_old], speaker, ctx->session) &&
            spare_turn(in, ep, at, i + 1, next_old)) {
            st = mn_embed_sentence(ep->turns[next_old].text, at[i]->text, MN_FRAME_FACT,
                                   MN_EMBED_MAX_CHARS, &in->rng, &text);
            if (text) {
                ctx = &ep->turns[next_old];
                consumed[next_old] = 1;
                old_to_new[next_old++] = i;
                embedded_facts++;
            }
        }
        turns[i].session = ctx->session;
        turns[i].speaker = strdup(speaker);
        turns[i].text = text ? text : strdup(at[i]->text);
        turns[i].date = ctx->date ? strdup(ctx->date) : NULL;
        if (st == MN_OK && (!turns[i].speaker || !turns[i].text || (ctx->date && !turns[i].date)))
            st = mn_fail(MN_ERR_NOMEM, "probes: out of memory");
    }
    for (int i = next_old; i < ep->n_turns; i++)
        old_to_new[i] = -1;
    /* the episode's own probes, re-indexed; those whose turns fell off are dropped */
    int n_keep = 0;
    for (int i = 0; i < ep->n_probes; i++)
        n_keep += probe_survives(&ep->probes[i], ep->n_turns, old_to_new);
    mn_probe *probes = calloc((size_t)(n_keep + in->n_probes) + 1, sizeof *probes);
    if (!probes)
        st = mn_fail(MN_ERR_NOMEM, "probes: out of memory");
    if (st != MN_OK) {
        for (int i = 0; i < L; i++)
            if (at[i]) {
                free(turns[i].speaker);
                free(turns[i].text);
                free(turns[i].date);
            }
        free(turns);
        free(old_to_new);
        free(at);
        free(consumed);
        free(anchored);
        free(probes);
        return st;
    }
    /* from here on nothing fails: ownership moves */
    int n = 0;
    for (int i = 0; i < ep->n_probes; i++) {
        mn_probe *p = &ep->probes[i];
        if (!probe_survives(p, ep->n_turns, old_to_new)) {
            mn_probe_free(p);
            continue;
        }
        p->after = old_to_new[p->after - 1] + 1;
        for (int e = 0; e < p->n_evidence; e++)
            p->evidence[e] = old_to_new[p->evidence[e]];
        probes[n++] = *p;
    }
    for (int i = 0; i < in->n_probes; i++)
        probes[n++] = in->probes[i];
    in->n_probes = 0;
    for (int i = 0; i < ep->n_turns; i++)
        if (i >= next_old || consumed[i]) {
            free(ep->turns[i].speaker);
            free(ep->turns[i].text);
            free(ep->turns[i].date);
        }
    stats->dropped_turns += ep->n_turns - next_old;
    stats->fact_turns += in->n_facts;
    stats->embedded_facts += embedded_facts;
    stats->embedded_questions += embedded_questions;
    free(ep->turns);
    free(ep->probes);
    ep->turns = turns;
    ep->n_turns = L;
    ep->probes = probes;
    ep->n_probes = n;
    free(old_to_new);
    free(at);
    free(consumed);
    free(anchored);
    return MN_OK;
}

/* A group of one kind (alive_same_kind): each probe's interfering values are the values of the
 * group's other facts, so that they come first among its distractors. */
static mn_status link_group_values(injector *in, probe_plan *plan, const int *plan_of_probe,
                                   int first, int end) {
    for (int p = first; p < end; p++) {
        probe_plan *pp = &plan[plan_of_probe[p]];
        pp->interf_first = in->n_interf;
        pp->n_interf = 0;
        for (int o = first; o < end; o++) {
            if (o == p)
                continue;
            mn_status st = grow((void **)&in->interf, &in->cap_interf, in->n_interf + 1,
                                sizeof *in->interf);
            if (st != MN_OK)
                return st;
            in->interf[in->n_interf++] = plan[plan_of_probe[o]].answer;
            pp->n_interf++;
        }
    }
    return MN_OK;
}

static mn_status inject_one(mn_dialogue *ep, int64_t index, const mn_probe_templates *t,
                            const mn_persona_bank *pb, const mn_probe_config *cfg,
                            mn_probe_stats *stats) {
    int ppe = cfg->probes_per_episode;
    stats->episodes++;
    if (ep->n_turns < 1) {
        stats->skipped_probes += ppe;
        return MN_OK;
    }
    injector in;
    memset(&in, 0, sizeof in);
    in.t = t;
    in.pb = (cfg->sources & MN_FACTS_PERSONAS) ? pb : NULL;
    in.cfg = cfg;
    in.ep = ep;
    in.L = ep->n_turns;
    mn_rng_seed(&in.rng, mix64(mix64(cfg->seed) + (uint64_t)index));
    for (int i = 0; i < ep->n_turns && in.n_speakers < 2; i++)
        if (in.n_speakers == 0 || strcmp(in.speakers[0], ep->turns[i].speaker))
            in.speakers[in.n_speakers++] = ep->turns[i].speaker;

    int n_cat = (cfg->sources & MN_FACTS_TEMPLATES) ? t->n_categories : 0;
    int total_keys = 0, total_vals = 0;
    in.key_off = calloc((size_t)n_cat + 1, sizeof *in.key_off);
    in.val_off = calloc((size_t)n_cat + 1, sizeof *in.val_off);
    for (int c = 0; c < n_cat && in.key_off && in.val_off; c++) {
        in.key_off[c] = total_keys;
        in.val_off[c] = total_vals;
        total_keys += t->categories[c].n_keys;
        total_vals += t->categories[c].n_values;
    }
    in.key_used = calloc((size_t)total_keys + 1, 1);
    in.val_used = calloc((size_t)total_vals + 1, 1);
    in.occupied = calloc((size_t)in.L, 1);
    in.persona_of_speaker = calloc(2, sizeof *in.persona_of_speaker);
    in.sentence_used = calloc(in.pb ? (size_t)in.pb->n_sentences : 1, 1);
    in.probes = calloc((size_t)ppe, sizeof *in.probes);
    in.q_embed = calloc((size_t)ppe, 1);
    probe_plan *plan = calloc((size_t)ppe, sizeof *plan);
    mn_status st = MN_OK;
    if (!in.key_off || !in.val_off || !in.key_used || !in.val_used || !in.occupied ||
        !in.persona_of_speaker || !in.sentence_used || !in.probes || !in.q_embed || !plan)
        st = mn_fail(MN_ERR_NOMEM, "probes: out of memory");
    for (int s = 0; s < in.n_speakers && st == MN_OK && in.pb; s++)
        st = assign_persona(&in, s);

    /* distances go round the ranges across the whole run, so each is asked equally often */
    for (int i = 0; i < ppe && st == MN_OK; i++) {
        int r = (int)(((uint64_t)index * (uint64_t)ppe + (uint64_t)i) % (uint64_t)cfg->n_distances);
        const mn_distance_range *dr = &cfg->distances[r];
        plan[i].range = r;
        plan[i].d = dr->lo + (int)mn_rng_below(&in.rng, (uint64_t)(dr->hi - dr->lo) + 1);
    }
    if (st == MN_OK && !cfg->alive)
        qsort(plan, (size_t)ppe, sizeof *plan, cmp_plan_by_distance);

    int *plan_of_probe = calloc((size_t)ppe, sizeof *plan_of_probe);
    if (!plan_of_probe && st == MN_OK)
        st = mn_fail(MN_ERR_NOMEM, "probes: out of memory");
    unsigned char *group_used = cfg->alive ? calloc((size_t)n_cat + 1, 1) : NULL;
    if (cfg->alive && !group_used && st == MN_OK)
        st = mn_fail(MN_ERR_NOMEM, "probes: out of memory");
    /* without groups, one group per probe with the whole episode as its window */
    int group = cfg->alive ? cfg->alive : 1;
    for (int g = 0; g < ppe && st == MN_OK; g += group) {
        int n = ppe - g < group ? ppe - g : group;
        int pivot = 0;
        if (cfg->alive) {
            /* the group's facts all lie before index pivot (at least n indices, one per fact),
             * its questions come after it; the shortest distance is placed first, as it has
             * the fewest places to go */
            qsort(plan + g, (size_t)n, sizeof *plan, cmp_plan_shortest_first);
            int lo = n < in.L ? n : in.L;
            pivot = lo + (int)mn_rng_below(&in.rng, (uint64_t)(in.L - lo) + 1);
            memset(group_used, 0, (size_t)n_cat + 1);
        }
        int group_first = in.n_probes;
        for (int i = g; i < g + n && st == MN_OK; i++) {
            probe_plan *pp = &plan[i];
            if (pp->d > in.L) {
                stats->skipped_probes++;
                continue;
            }
            int flo = 0, fhi = in.L - pp->d;
            if (cfg->alive) {
                flo = pivot - pp->d > 0 ? pivot - pp->d : 0;
                fhi = pivot - 1 < fhi ? pivot - 1 : fhi;
            }
            int before = in.n_probes;
            int placed = place_probe(&in, pp, flo, fhi, group_used, stats, &st);
            if (placed < 0)
                break;
            if (placed == 0) {
                stats->skipped_probes++;
                continue;
            }
            if (group_used) {
                /* a group of one kind keeps to the first fact's category; otherwise each
                 * category once */
                if (cfg->alive_same_kind)
                    memset(group_used, 1, (size_t)n_cat);
                group_used[pp->category] = (unsigned char)!cfg->alive_same_kind;
            }
            plan_of_probe[before] = i;
        }
        if (cfg->alive_same_kind && st == MN_OK)
            st = link_group_values(&in, plan, plan_of_probe, group_first, in.n_probes);
    }
    free(group_used);
    for (int i = 0; i < in.n_probes && st == MN_OK; i++)
        st = fill_choices(&in, &plan[plan_of_probe[i]], &in.probes[i]);
    if (st == MN_OK) {
        int made = in.n_probes;
        st = assemble(&in, ep, stats);
        if (st == MN_OK) {
            stats->probes += made;
            stats->varied_phrasings += in.varied;
            stats->noised_facts += in.noised;
        }
    }
    for (int i = 0; in.probes && i < in.n_probes; i++)
        mn_probe_free(&in.probes[i]);
    free(in.probes);
    free(plan);
    free(plan_of_probe);
    injector_free(&in);
    return st;
}

mn_status mn_probes_inject(mn_dialogue *episode, int64_t episode_index,
                           const mn_probe_templates *templates, const mn_persona_bank *personas,
                           const mn_probe_config *config, mn_probe_stats *stats) {
    if (!episode || !config || !stats)
        return mn_fail(MN_ERR_INVALID_ARG, "probes: NULL argument");
    MN_TRY(check_config(config, templates, personas));
    return inject_one(episode, episode_index, templates, personas, config, stats);
}

mn_status mn_probes_inject_all(mn_dialogue_list *episodes, const mn_probe_templates *templates,
                               const mn_persona_bank *personas, const mn_probe_config *config,
                               mn_probe_stats *stats) {
    if (!episodes || !config || !stats)
        return mn_fail(MN_ERR_INVALID_ARG, "probes: NULL argument");
    MN_TRY(check_config(config, templates, personas));
    for (int64_t i = 0; i < episodes->count; i++) {
        mn_status st = inject_one(&episodes->items[i], i, templates, personas, config, stats);
        if (st != MN_OK)
            return mn_fail_context(st, "episode %lld (%s)", (long long)i,
                                   episodes->items[i].id ? episodes->items[i].id : "?");
    }
    return MN_OK;
}

/* ------------------------------------------------------------------ synthetic episodes */

/* Neutral small talk that states nothing a probe asks about. */
static const char *const builtin_filler[] = {
    "How has your week been so far?",
    "Pretty busy, but I managed to get some rest on the weekend.",
    "That sounds nice. Did you do anything fun?",
    "Not much, I mostly read and went for a long walk.",
    "I love long walks when the weather is good.",
    "Same here, it clears my head after work.",
    "Have you watched anything good lately?",
    "I started a documentary series about the ocean.",
    "Oh, I have heard good things about that one.",
    "It is slow at times, but the footage is amazing.",
    "I should give it a try this weekend.",
    "Let me know what you think of it.",
    "Work has been a little hectic for me.",
    "I hope it calms down for you soon.",
    "Thanks, I think the worst part is over.",
    "Do you have any plans for the evening?",
    "Probably just cooking something simple and relaxing.",
    "That sounds like a good plan to me.",
    "I tried a new recipe yesterday and it went well.",
    "Nice, cooking can be really satisfying.",
    "I agree, especially when friends come over.",
    "It has been raining a lot here recently.",
    "We had a few sunny days, which was a nice surprise.",
    "I am looking forward to the summer.",
    "Me too, I want to spend more time outside.",
    "Did you sleep well last night?",
    "Not really, the neighbors were quite loud.",
    "That is annoying, I hope tonight is better.",
    "I have been trying to drink more water every day.",
    "Good idea, I always forget to do that.",
    "Have you been reading anything interesting?",
    "A mystery novel, I cannot put it down.",
    "I like a good mystery, no spoilers please.",
    "I promise I will not tell you the ending.",
    "Anyway, it is good to catch up with you.",
    "Yes, we should talk more often.",
};

#define MN_SYNTHETIC_SESSION_TURNS 12

mn_status mn_probes_synthetic(const mn_dialogue_list *pool, int n_episodes, int turns,
                              const mn_probe_templates *templates, const mn_probe_config *config,
                              mn_dialogue_list *out, mn_probe_stats *stats) {
    if (!config || !out || !stats || !templates)
        return mn_fail(MN_ERR_INVALID_ARG, "synthetic probes: NULL argument");
    if (n_episodes < 0 || turns < 1)
        return mn_fail(MN_ERR_CONFIG, "synthetic probes: need episodes >= 0 and turns >= 1");
    mn_probe_config cfg = *config;
    cfg.sources = MN_FACTS_TEMPLATES;
    MN_TRY(check_config(&cfg, templates, NULL));
    /* the filler texts: every non-empty turn of the pool, or the built-in lines */
    int64_t n_pool = 0;
    const char **texts = NULL;
    if (pool) {
        for (int64_t i = 0; i < pool->count; i++)
            n_pool += pool->items[i].n_turns;
        texts = malloc((size_t)(n_pool > 0 ? n_pool : 1) * sizeof *texts);
        if (!texts)
            return mn_fail(MN_ERR_NOMEM, "synthetic probes: out of memory");
        n_pool = 0;
        for (int64_t i = 0; i < pool->count; i++)
            for (int j = 0; j < pool->items[i].n_turns; j++)
                if (pool->items[i].turns[j].text && pool->items[i].turns[j].text[0])
                    texts[n_pool++] = pool->items[i].turns[j].text;
        if (n_pool == 0) {
            free(texts);
            return mn_fail(MN_ERR_INVALID_ARG, "synthetic probes: the pool has no text");
        }
    }
    const char *const *filler = pool ? texts : builtin_filler;
    if (!pool)
        n_pool = (int64_t)(sizeof builtin_filler / sizeof builtin_filler[0]);
    mn_status st = MN_OK;
    for (int e = 0; e < n_episodes && st == MN_OK; e++) {
        mn_rng rng;
        mn_rng_seed(&rng, mix64(mix64(cfg.seed ^ 0x5eed5eedull) + (uint64_t)e));
        mn_dialogue d;
        memset(&d, 0, sizeof d);
        char id[64];
        snprintf(id, sizeof id, "synthetic-%06d", e);
        d.id = strdup(id);
        d.turns = calloc((size_t)turns, sizeof *d.turns);
        if (!d.id || !d.turns)
            st = mn_fail(MN_ERR_NOMEM, "synthetic probes: out of memory");
        for (int i = 0; i < turns && st == MN_OK; i++) {
            mn_turn *t = &d.turns[d.n_turns++];
            t->speaker = strdup(i % 2 ? "B" : "A");
            t->text = strdup(filler[mn_rng_below(&rng, (uint64_t)n_pool)]);
            t->session = 1 + i / MN_SYNTHETIC_SESSION_TURNS;
            if (!t->speaker || !t->text)
                st = mn_fail(MN_ERR_NOMEM, "synthetic probes: out of memory");
        }
        if (st == MN_OK)
            st = inject_one(&d, e, templates, NULL, &cfg, stats);
        if (st == MN_OK)
            st = mn_dialogue_list_push(out, &d);
        mn_dialogue_free(&d);
    }
    free(texts);
    return st;
}

/* ------------------------------------------------------------------ open values */

static const char *const month_names[12] = {"January", "February", "March",     "April",
                                            "May",     "June",     "July",      "August",
                                            "September", "October", "November", "December"};
static const int month_days[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

/* A made-up word of `syll` consonant-vowel syllables, sometimes closed by a consonant. */
static void made_up_word(mn_rng *rng, int syll, int capital, char *buf, size_t cap) {
    static const char *const onsets[] = {"b", "d", "f", "g", "h", "k", "l", "m", "n", "p",
                                         "r", "s", "t", "v", "z", "br", "ch", "dr", "gr",
                                         "kr", "pl", "sh", "st", "th", "tr", "j", "w", ""};
    static const char *const vowels[] = {"a", "e", "i", "o", "u", "a", "e", "o", "ai", "ou", "y"};
    static const char *const codas[] = {"n", "r", "s", "l", "m", "x", "k", "t"};
    size_t n = 0;
    buf[0] = '\0';
    for (int s = 0; s < syll; s++) {
        const char *on = onsets[mn_rng_below(rng, sizeof onsets / sizeof *onsets)];
        const char *v = vowels[mn_rng_below(rng, sizeof vowels / sizeof *vowels)];
        n += (size_t)snprintf(buf + n, cap - n, "%s%s", on, v);
    }
    if (mn_rng_below(rng, 3) == 0)
        n += (size_t)snprintf(buf + n, cap - n, "%s", codas[mn_rng_below(rng, 8)]);
    if (capital)
        buf[0] = (char)toupper((unsigned char)buf[0]);
}

/* The value kind of a loaded category, by its name (--open-values). */
static mn_open_kind category_kind(const char *category) {
    if (!strcmp(category, "numbers"))
        return MN_OPEN_NUMBER;
    if (!strcmp(category, "dates"))
        return MN_OPEN_DATE;
    if (!strcmp(category, "preferences"))
        return MN_OPEN_PHRASE;
    return MN_OPEN_NAME;
}

/* One random value of a kind; MN_OPEN_THING needs the open frames' word lists. */
static void open_value(mn_open_kind kind, const mn_open_frames *of, mn_rng *rng, char *buf,
                       size_t cap) {
    switch (kind) {
    case MN_OPEN_NUMBER: {
        int digits = 1 + (int)mn_rng_below(rng, 4); /* 1..4 digits, each length as likely */
        uint64_t lo = digits == 1 ? 0 : 1, hi = 1;
        for (int d = 0; d < digits; d++)
            hi *= 10;
        for (int d = 1; d < digits; d++)
            lo *= 10;
        snprintf(buf, cap, "%llu", (unsigned long long)(lo + mn_rng_below(rng, hi - lo)));
        break;
    }
    case MN_OPEN_DATE: {
        int m = (int)mn_rng_below(rng, 12);
        int day = 1 + (int)mn_rng_below(rng, (uint64_t)month_days[m]);
        snprintf(buf, cap, "%s %d", month_names[m], day);
        break;
    }
    case MN_OPEN_PHRASE: {
        char a[64], b[64];
        made_up_word(rng, 1 + (int)mn_rng_below(rng, 2), 0, a, sizeof a);
        if (mn_rng_below(rng, 2)) {
            made_up_word(rng, 1 + (int)mn_rng_below(rng, 2), 0, b, sizeof b);
            snprintf(buf, cap, "%s %s", a, b);
        } else {
            snprintf(buf, cap, "%s", a);
        }
        break;
    }
    case MN_OPEN_TIME: {
        int h = 1 + (int)mn_rng_below(rng, 12), m = (int)mn_rng_below(rng, 60);
        snprintf(buf, cap, "%d:%02d", h, m);
        break;
    }
    case MN_OPEN_CODE: {
        char letters[3] = {(char)('A' + mn_rng_below(rng, 26)), 0, 0};
        if (mn_rng_below(rng, 2))
            letters[1] = (char)('A' + mn_rng_below(rng, 26));
        int digits = 2 + (int)mn_rng_below(rng, 3);
        uint64_t lo = 1;
        for (int d = 1; d < digits; d++)
            lo *= 10;
        snprintf(buf, cap, "%s-%llu", letters, (unsigned long long)(lo + mn_rng_below(rng, 9 * lo)));
        break;
    }
    case MN_OPEN_THING: {
        const char *thing = pick_str(rng, of->things, of->n_things);
        if (mn_rng_below(rng, 2))
            snprintf(buf, cap, "%s %s", pick_str(rng, of->qualities, of->n_qualities), thing);
        else
            snprintf(buf, cap, "%s", thing);
        break;
    }
    default:
        made_up_word(rng, 2 + (int)mn_rng_below(rng, 2), 1, buf, cap);
    }
}

/* How many distinct values a kind can take (an upper bound for the generator). */
static int open_value_space(mn_open_kind kind, const mn_open_frames *of) {
    switch (kind) {
    case MN_OPEN_NUMBER: return 10000;
    case MN_OPEN_DATE: return 366;
    case MN_OPEN_TIME: return 12 * 60;
    case MN_OPEN_THING: return of->n_things * (1 + of->n_qualities);
    default: return INT_MAX;
    }
}

/* What generated keys and values keep clear of: every family of the valid and test splits of
 * the templates at `path` (shared and held out), their keys and their values (lower-cased). */
typedef struct {
    index_map values;
    mn_probe_templates split[2];
} heldout_set;

static void heldout_free(heldout_set *h) {
    index_map_free(&h->values);
    mn_probe_templates_free(&h->split[0]);
    mn_probe_templates_free(&h->split[1]);
}

static mn_status heldout_load(const char *path, heldout_set *h) {
    memset(h, 0, sizeof *h);
    mn_status st = MN_OK;
    for (int s = 0; s < 2 && st == MN_OK; s++) {
        const mn_probe_templates *other = &h->split[s];
        st = mn_probe_templates_load(path, s == 0 ? MN_SPLIT_VALID : MN_SPLIT_TEST, &h->split[s]);
        for (int c = 0; st == MN_OK && c < other->n_categories; c++)
            for (int v = 0; v < other->categories[c].n_values && st == MN_OK; v++) {
                char *k = lower_copy(other->categories[c].values[v]);
                if (!k)
                    st = mn_fail(MN_ERR_NOMEM, "open values: out of memory");
                else if (index_map_get(&h->values, k) >= 0)
                    free(k);
                else
                    st = index_map_put(&h->values, k, 1);
            }
    }
    if (st != MN_OK)
        heldout_free(h);
    return st;
}

/* Calls visit(run) for every run of whole words of a lower-cased key (the key included);
 * stops at the first nonzero result and returns it (-1: out of memory). */
static int for_each_word_run(const char *key, int (*visit)(void *ctx, const char *run),
                             void *ctx) {
    const char *start[32];
    const char *end[32];
    int n = 0;
    for (const char *p = key; *p && n < 32;) {
        p += strspn(p, " ");
        if (!*p)
            break;
        start[n] = p;
        p += strcspn(p, " ");
        end[n++] = p;
    }
    char run[256];
    for (int i = 0; i < n; i++)
        for (int j = i; j < n; j++) {
            size_t len = (size_t)(end[j] - start[i]);
            if (len >= sizeof run)
                continue;
            memcpy(run, start[i], len);
            run[len] = '\0';
            int r = visit(ctx, run);
            if (r)
                return r;
        }
    return 0;
}

/* Common function words of 4+ letters (lower case): a span's last word must be a word of 4+
 * letters that is none of these, so that "that was" or "would have been" is no value. */
static const char *const function_words[] = {
    "about", "above", "after", "again", "against", "also", "although", "another", "anyone",
    "anything", "around", "because", "been", "before", "being", "below", "between", "both",
    "could", "does", "doing", "done", "down", "during", "each", "either", "else", "even",
    "ever", "every", "from", "have", "having", "here", "herself", "himself", "into", "itself",
    "just", "like", "many", "maybe", "more", "most", "much", "must", "myself", "never", "none",
    "okay", "once", "only", "other", "over", "really", "same", "should", "since", "some",
    "still", "such", "sure", "than", "that", "that's", "their", "them", "then", "there",
    "there's", "these", "they", "they're", "this", "those", "though", "through", "under",
    "until", "upon", "very", "well", "were", "what", "what's", "when", "where", "whether",
    "which", "while", "will", "with", "within", "without", "would", "yeah", "your", "you're",
    "yours", "yourself", "didn't", "doesn't", "don't", "isn't", "wasn't", "can't", "won't",
    "wouldn't", "couldn't", "shouldn't", "haven't", "hasn't", "aren't", "weren't"};

static int is_function_word(const char *w, size_t n) {
    char word[16];
    if (n >= sizeof word)
        return 0;
    memcpy(word, w, n);
    word[n] = '\0';
    for (size_t i = 0; i < sizeof function_words / sizeof *function_words; i++)
        if (str_ieq(function_words[i], word))
            return 1;
    return 0;
}

/* Whether w[0..n) is a span word: letters first and last, apostrophes inside, hyphens only
 * between two letters ("rock'n'roll", "re-reading"); *letters = how many letters. */
static int span_word(const char *w, size_t n, int *letters) {
    if (n == 0 || !isalpha((unsigned char)w[0]) || !isalpha((unsigned char)w[n - 1]))
        return 0;
    *letters = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)w[i];
        if (isalpha(c))
            (*letters)++;
        else if (c == '-' ? !isalpha((unsigned char)w[i - 1]) || !isalpha((unsigned char)w[i + 1])
                          : c != '\'')
            return 0;
    }
    return 1;
}

/* The text of a random turn of a random dialogue (a dialogue index, then a turn index, drawn
 * from rng); NULL when the drawn dialogue has no turn. */
static const char *random_turn_text(const mn_dialogue_list *dialogues, mn_rng *rng) {
    if (dialogues->count <= 0)
        return NULL;
    const mn_dialogue *d = &dialogues->items[mn_rng_below(rng, (uint64_t)dialogues->count)];
    if (d->n_turns <= 0)
        return NULL;
    return d->turns[mn_rng_below(rng, (uint64_t)d->n_turns)].text;
}

/* A span value: 1 to 3 consecutive words of a random turn of `dialogues`, joined by one space,
 * the punctuation around the span stripped (none may stand inside it, so the span is said as
 * it is in the turn). 0 when the drawn place holds no span: a word that is not a span word, or
 * a last word that is not a word of 4+ letters outside the function words, so that a value
 * ends on what it names ("rock bands", "in front"; not "want to" nor "computer with a"). */
static int span_value(const mn_dialogue_list *dialogues, mn_rng *rng, char *buf, size_t cap) {
    const char *text = random_turn_text(dialogues, rng);
    if (!text)
        return 0;
    int start[256], end[256], n = 0;
    for (int i = 0; text && text[i] && n < 256;) {
        while (text[i] && isspace((unsigned char)text[i]))
            i++;
        if (!text[i])
            break;
        start[n] = i;
        while (text[i] && !isspace((unsigned char)text[i]))
            i++;
        end[n++] = i;
    }
    int len = 1 + (int)mn_rng_below(rng, 3);
    if (n < len)
        return 0;
    int first = (int)mn_rng_below(rng, (uint64_t)(n - len + 1));
    size_t used = 0;
    int names = 0;
    for (int w = first; w < first + len; w++) {
        int b = start[w], e = end[w], letters;
        while (w == first && b < e && ispunct((unsigned char)text[b]))
            b++;
        while (w == first + len - 1 && e > b && ispunct((unsigned char)text[e - 1]))
            e--;
        if (!span_word(text + b, (size_t)(e - b), &letters) || used + (size_t)(e - b) + 2 > cap)
            return 0;
        names = letters >= 4 && !is_function_word(text + b, (size_t)(e - b));
        if (used)
            buf[used++] = ' ';
        memcpy(buf + used, text + b, (size_t)(e - b));
        used += (size_t)(e - b);
    }
    buf[used] = '\0';
    return names;
}

/* Stems (lower case, as word_stem) of every word of a valid or test value: no word family's
 * value has one of them, so no held-out value's word reaches training through them. */
static mn_status heldout_value_words(const index_map *values, mn_strset *out) {
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < values->cap; i++) {
        const char *v = values->keys[i];
        for (const char *p = v; p && *p; p += strspn(p, " -")) {
            size_t n = strcspn(p, " -");
            char stem[64];
            size_t ns = word_stem(p, n);
            if (ns && ns < sizeof stem) {
                memcpy(stem, p, ns);
                stem[ns] = '\0';
                int added;
                MN_TRY(mn_strset_add(out, stem, &added));
            }
            p += n;
        }
    }
    return MN_OK;
}

/* One word of a random turn of `dialogues` for a word family's value, lower case: letters and
 * inner hyphens only once the punctuation around it is stripped, 4+ letters, no common
 * function word, no stem of `heldout_words`. 0 when the drawn place holds no such word. */
static int corpus_word(const mn_dialogue_list *dialogues, const mn_strset *heldout_words,
                       mn_rng *rng, char *buf, size_t cap) {
    const char *text = random_turn_text(dialogues, rng);
    size_t len = text ? strlen(text) : 0;
    if (!len)
        return 0;
    size_t at = (size_t)mn_rng_below(rng, len); /* a word, as likely as its length */
    while (at > 0 && !isspace((unsigned char)text[at - 1]))
        at--;
    size_t end = at + strcspn(text + at, " \t\r\n");
    while (at < end && ispunct((unsigned char)text[at]))
        at++;
    while (end > at && ispunct((unsigned char)text[end - 1]))
        end--;
    size_t n = end - at;
    int letters;
    if (n + 1 > cap || n >= 32 || !span_word(text + at, n, &letters) || letters < 4 ||
        memchr(text + at, '\'', n) || is_function_word(text + at, n))
        return 0;
    for (size_t i = 0; i < n; i++)
        buf[i] = (char)tolower((unsigned char)text[at + i]);
    buf[n] = '\0';
    char stem[32];
    size_t ns = word_stem(buf, n);
    memcpy(stem, buf, ns);
    stem[ns] = '\0';
    return !mn_strset_has(heldout_words, stem);
}

/* A word family's value (MN_OPEN_WORDS or MN_OPEN_TITLE): 1 (a quarter), 2 (a half) or 3
 * distinct corpus words; title case, and a quarter of those after "The", for MN_OPEN_TITLE.
 * 0 when the draws found too few words. */
static int words_value(mn_open_kind kind, const mn_dialogue_list *dialogues,
                       const mn_strset *heldout_words, mn_rng *rng, char *buf, size_t cap) {
    int r = (int)mn_rng_below(rng, 4);
    int want = r == 0 ? 1 : r == 3 ? 3 : 2;
    char words[3][32];
    int got = 0;
    for (int tries = 0; got < want && tries < 64; tries++) {
        if (!corpus_word(dialogues, heldout_words, rng, words[got], sizeof words[got]))
            continue;
        int dup = 0;
        for (int w = 0; w < got; w++)
            dup |= !strcmp(words[w], words[got]);
        got += !dup;
    }
    if (got < want)
        return 0;
    size_t used = 0;
    buf[0] = '\0';
    if (kind == MN_OPEN_TITLE && mn_rng_below(rng, 4) == 0)
        used = (size_t)snprintf(buf, cap, "The");
    for (int w = 0; w < got; w++) {
        if (kind == MN_OPEN_TITLE)
            words[w][0] = (char)toupper((unsigned char)words[w][0]);
        used += (size_t)snprintf(buf + used, used < cap ? cap - used : 0, "%s%s", used ? " " : "",
                                 words[w]);
    }
    return used < cap;
}

static int run_heldout(void *ctx, const char *run) {
    return index_map_get((const index_map *)ctx, run) >= 0;
}

/* Up to `want` distinct values of a kind, none held out, by random draws (a small space is
 * exhausted after a bounded number of misses); spans and word values (MN_OPEN_SPAN, _WORDS,
 * _TITLE, from `dialogues`; word values also without a stem of `heldout_words`) hold no held-out
 * value as whole words either. *n_out counts what was made, also on error. */
static mn_status draw_values(mn_open_kind kind, const mn_open_frames *of,
                             const mn_dialogue_list *dialogues, const mn_strset *heldout_words,
                             int want, const index_map *heldout, mn_rng *rng, char ***out,
                             int *n_out) {
    *n_out = 0;
    if (!(*out = calloc((size_t)want, sizeof **out)))
        return mn_fail(MN_ERR_NOMEM, "open values: out of memory for %d values", want);
    index_map seen;
    memset(&seen, 0, sizeof seen);
    mn_status st = MN_OK;
    int64_t misses = 0, max_misses = 64 * (int64_t)want + 100000;
    while (*n_out < want && misses < max_misses && st == MN_OK) {
        char buf[128];
        if (kind == MN_OPEN_SPAN || kind == MN_OPEN_WORDS || kind == MN_OPEN_TITLE) {
            if (kind == MN_OPEN_SPAN ? !span_value(dialogues, rng, buf, sizeof buf)
                                     : !words_value(kind, dialogues, heldout_words, rng, buf,
                                                    sizeof buf)) {
                misses++;
                continue;
            }
        } else {
            open_value(kind, of, rng, buf, sizeof buf);
        }
        char *k = lower_copy(buf);
        if (!k) {
            st = mn_fail(MN_ERR_NOMEM, "open values: out of memory");
            break;
        }
        int held = kind >= MN_OPEN_SPAN ? for_each_word_run(k, run_heldout, (void *)heldout)
                                        : index_map_get(heldout, k) >= 0;
        if (held || index_map_get(&seen, k) >= 0) {
            free(k);
            misses++;
            continue;
        }
        st = index_map_put(&seen, k, *n_out);
        if (st == MN_OK && !((*out)[*n_out] = strdup(buf)))
            st = mn_fail(MN_ERR_NOMEM, "open values: out of memory");
        if (st == MN_OK)
            (*n_out)++;
    }
    index_map_free(&seen);
    return st;
}

mn_status mn_probe_templates_open_values(mn_probe_templates *t, const char *path, int n_values,
                                         uint64_t seed) {
    if (!t || !path)
        return mn_fail(MN_ERR_INVALID_ARG, "open values: NULL argument");
    if (t->split != MN_SPLIT_TRAIN)
        return mn_fail(MN_ERR_CONFIG, "open values: only for the train split (held-out splits "
                                      "keep their own value lists)");
    if (n_values < 2)
        return mn_fail(MN_ERR_CONFIG, "open values: want at least 2 values (got %d)", n_values);
    heldout_set h;
    MN_TRY(heldout_load(path, &h));
    mn_status st = MN_OK;
    char ***lists = calloc((size_t)t->n_categories + 1, sizeof *lists);
    int *counts = calloc((size_t)t->n_categories + 1, sizeof *counts);
    if (!lists || !counts)
        st = mn_fail(MN_ERR_NOMEM, "open values: out of memory");
    for (int c = 0; c < t->n_categories && st == MN_OK; c++) {
        const char *name = t->categories[c].name;
        mn_rng rng;
        mn_rng_seed(&rng, mix64(mix64(seed ^ 0x09e4a1u) + (uint64_t)c));
        mn_open_kind kind = category_kind(name);
        int space = open_value_space(kind, NULL);
        st = draw_values(kind, NULL, NULL, NULL, n_values < space ? n_values : space, &h.values,
                         &rng, &lists[c], &counts[c]);
        if (st == MN_OK && counts[c] < 2)
            st = mn_fail(MN_ERR_CONFIG, "open values: category '%s' got fewer than 2 values", name);
    }
    if (st == MN_OK) {
        for (int c = 0; c < t->n_categories; c++) {
            mn_fact_category *cat = &t->categories[c];
            mn_free_strings(cat->values, cat->n_values);
            cat->values = lists[c];
            cat->n_values = counts[c];
            lists[c] = NULL;
        }
    }
    for (int c = 0; lists && c < t->n_categories; c++)
        mn_free_strings(lists[c], counts[c]);
    free(lists);
    free(counts);
    heldout_free(&h);
    return st;
}

/* ------------------------------------------------------------------ open families */

/* Generated keys so far: `taken` holds each key, `parts` each run of whole words of each key
 * ("locker code" and "code" of "gym locker code"), lower-cased. */
typedef struct {
    mn_strset taken, parts;
} key_registry;

static int run_taken(void *ctx, const char *run) {
    return mn_strset_has(&((const key_registry *)ctx)->taken, run);
}

static int run_add(void *ctx, const char *run) {
    int added;
    return mn_strset_add(&((key_registry *)ctx)->parts, run, &added) == MN_OK ? 0 : -1;
}

/* A word key (`--word-keys`): words of random turns of `dialogues`, drawn as a word family's
 * value words are (corpus_word), where the fixed lists put a noun or a made-up word: "{word}
 * {kind word}" (35%), "{word} {word}" (35%), "{word} {word} {kind word}" (15%) or "{owner}'s
 * {word}" (15%). 0 when the draws found no word (the caller then makes a key of the lists). */
static int open_key_words(mn_rng *rng, const mn_open_frames *of, mn_open_kind kind,
                          const mn_dialogue_list *dialogues, const mn_strset *heldout_words,
                          char *buf, size_t cap) {
    const char *word = pick_str(rng, of->kind_words[kind], of->n_kind_words[kind]);
    const char *owner = pick_str(rng, of->owners, of->n_owners);
    char w1[32] = "", w2[32] = ""; /* both drawn whatever the shape: the draws of the runs
                                    * that chose the recipe's twelfth stage */
    int found1 = 0, found2 = 0;
    for (int t = 0; t < 64 && !found1; t++)
        found1 = corpus_word(dialogues, heldout_words, rng, w1, sizeof w1);
    for (int t = 0; t < 64 && !found2; t++)
        found2 = corpus_word(dialogues, heldout_words, rng, w2, sizeof w2);
    int shape = (int)mn_rng_below(rng, 100);
    if (!found1 || (!found2 && shape >= 35 && shape < 85))
        return 0;
    if (shape < 35)
        snprintf(buf, cap, "%s %s", w1, word);
    else if (shape < 70)
        snprintf(buf, cap, "%s %s", w1, w2);
    else if (shape < 85)
        snprintf(buf, cap, "%s %s %s", w1, w2, word);
    else
        snprintf(buf, cap, "%s's %s", owner, w1);
    return 1;
}

/* A key as generated: a made-up word alone or before a word of the kind ("zorbin", "kelvat
 * code"), a noun with the kind's word after it and maybe a modifier or an owner before it
 * ("locker code", "gym locker code", "cousin's kayak code"), an owner's made-up word
 * ("cousin's zorbin"), or a modifier and a noun ("beach umbrella"). */
static void open_key(mn_rng *rng, const mn_open_frames *of, mn_open_kind kind, char *buf,
                     size_t cap) {
    const char *word = pick_str(rng, of->kind_words[kind], of->n_kind_words[kind]);
    char made[64];
    made_up_word(rng, 2 + (int)mn_rng_below(rng, 2), 0, made, sizeof made);
    const char *noun = pick_str(rng, of->nouns, of->n_nouns);
    const char *modifier = pick_str(rng, of->modifiers, of->n_modifiers);
    const char *owner = pick_str(rng, of->owners, of->n_owners);
    int shape = (int)mn_rng_below(rng, 100);
    if (shape < 18)
        snprintf(buf, cap, "%s", made);
    else if (shape < 33)
        snprintf(buf, cap, "%s %s", made, word);
    else if (shape < 55)
        snprintf(buf, cap, "%s %s", noun, word);
    else if (shape < 72)
        snprintf(buf, cap, "%s %s %s", modifier, noun, word);
    else if (shape < 87)
        snprintf(buf, cap, "%s's %s %s", owner, noun, word);
    else if (shape < 95)
        snprintf(buf, cap, "%s's %s", owner, made);
    else
        snprintf(buf, cap, "%s %s", modifier, noun);
}

/* Whether `words` (a generated key, or a head that ends every key of a family) share no word
 * with a held-out family's key and overlap no key of the valid and test splits. A head is
 * checked before its keys so that a refused head is redrawn, not its keys. */
static int clear_of_heldout_keys(const char *words, const heldout_set *h) {
    for (int s = 0; s < 2; s++)
        for (int c = 0; c < h->split[s].n_categories; c++) {
            const mn_fact_category *o = &h->split[s].categories[c];
            for (int k = 0; k < o->n_keys; k++) {
                const char *at;
                if (keys_overlap(words, o->keys[k]) ||
                    (o->held_out && shared_word(words, o->keys[k], &at)))
                    return 0;
            }
        }
    return 1;
}

/* A family's head (shared_head): a word of its kind ("code") or a noun of the lists
 * ("ticket"), one in two; 0 when five draws found none allowed. */
static int open_head(mn_rng *rng, const mn_open_frames *of, mn_open_kind kind,
                     const heldout_set *h, char *buf, size_t cap) {
    for (int t = 0; t < 5; t++) {
        const char *head = mn_rng_below(rng, 2) ? pick_str(rng, of->nouns, of->n_nouns)
                                                : pick_str(rng, of->kind_words[kind],
                                                           of->n_kind_words[kind]);
        snprintf(buf, cap, "%s", head);
        if (clear_of_heldout_keys(buf, h))
            return 1;
    }
    return 0;
}

/* A key ending in the family's head: "{word} {head}" with a word of the dialogues (when
 * word_keys and one is found, three in five), "{modifier} {head}" or "{noun} {head}" of the
 * lists, or "{owner}'s {head}" (one in five): keys alike but for one word. */
static void open_head_key(mn_rng *rng, const mn_open_frames *of, const char *head,
                          const mn_dialogue_list *dialogues, const mn_strset *heldout_words,
                          int word_keys, char *buf, size_t cap) {
    int shape = (int)mn_rng_below(rng, 5);
    char word[32];
    if (shape == 0)
        snprintf(buf, cap, "%s's %s", pick_str(rng, of->owners, of->n_owners), head);
    else if (shape <= 3 && word_keys && corpus_word(dialogues, heldout_words, rng, word, sizeof word))
        snprintf(buf, cap, "%s %s", word, head);
    else if (mn_rng_below(rng, 2))
        snprintf(buf, cap, "%s %s", pick_str(rng, of->modifiers, of->n_modifiers), head);
    else
        snprintf(buf, cap, "%s %s", pick_str(rng, of->nouns, of->n_nouns), head);
}

/* Whether a generated key may join family `cat` (keys so far): not overlapping any key of the
 * valid and test splits (keys_overlap), sharing no word with a held-out family's key, equal to
 * or holding as whole words no generated key, not inside one either, and not overlapping a
 * key of its own family. `low` is the key lower-cased. */
static int open_key_allowed(const char *key, const char *low, const mn_fact_category *cat,
                            const heldout_set *h, const key_registry *reg) {
    if (!clear_of_heldout_keys(key, h))
        return 0;
    if (mn_strset_has(&reg->parts, low) || for_each_word_run(low, run_taken, (void *)reg))
        return 0;
    for (int k = 0; k < cat->n_keys; k++)
        if (keys_overlap(key, cat->keys[k]))
            return 0;
    return 1;
}

/* k = lo..hi (at most n) distinct strings of `src`, copied, in a random order. */
static mn_status pick_frames(mn_rng *rng, char **src, int n, int lo, int hi, char ***out,
                             int *n_out) {
    int k = lo + (int)mn_rng_below(rng, (uint64_t)(hi - lo) + 1);
    if (k > n)
        k = n;
    int *order = malloc((size_t)n * sizeof *order);
    *out = calloc((size_t)k, sizeof **out);
    mn_status st = order && *out ? MN_OK : mn_fail(MN_ERR_NOMEM, "open families: out of memory");
    for (int i = 0; st == MN_OK && i < n; i++)
        order[i] = i;
    for (int i = 0; st == MN_OK && i < k; i++) {
        int j = i + (int)mn_rng_below(rng, (uint64_t)(n - i));
        int tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
        if (!((*out)[i] = strdup(src[order[i]])))
            st = mn_fail(MN_ERR_NOMEM, "open families: out of memory");
        else
            *n_out = i + 1;
    }
    free(order);
    return st;
}

/* Drops the values that a key or a question of the family holds as words, so that no
 * question gives its answer away ("the" asked by "What was the {key} you mentioned?"). */
static void drop_values_in_questions(mn_fact_category *cat) {
    int kept = 0;
    for (int v = 0; v < cat->n_values; v++) {
        const char *value = cat->values[v];
        int given = 0;
        for (int k = 0; k < cat->n_keys && !given; k++)
            given = mn_holds_words(cat->keys[k], value);
        for (int q = 0; q < cat->n_questions && !given; q++)
            given = mn_holds_words(cat->questions[q], value);
        for (int q = 0; q < cat->n_self_questions && !given; q++)
            given = mn_holds_words(cat->self_questions[q], value);
        if (given)
            free(cat->values[v]);
        else
            cat->values[kept++] = cat->values[v];
    }
    cat->n_values = kept;
}

/* Replaces the family's fact, question and self-question frames (drawn from the lists) by
 * 3-6, 2-4 and 2-4 distinct frames composed from the grammar, each drawn from rng alone, so
 * that the family's keys and values are those it has without them. A role whose grammar finds
 * no frame clear of the held-out phrasings keeps the lists' frames. */
static mn_status compose_family_frames(mn_rng *rng, const mn_open_frames *of,
                                       mn_fact_category *cat) {
    char ***lists[MN_GRAMMAR_ROLES] = {&cat->facts, &cat->questions, &cat->self_questions};
    int *counts[MN_GRAMMAR_ROLES] = {&cat->n_facts, &cat->n_questions, &cat->n_self_questions};
    static const int lo[MN_GRAMMAR_ROLES] = {3, 2, 2}, hi[MN_GRAMMAR_ROLES] = {6, 4, 4};
    for (int r = 0; r < MN_GRAMMAR_ROLES; r++) {
        int want = lo[r] + (int)mn_rng_below(rng, (uint64_t)(hi[r] - lo[r]) + 1);
        char **made = calloc((size_t)want, sizeof *made);
        if (!made)
            return mn_fail(MN_ERR_NOMEM, "composed frames: out of memory");
        int n = 0;
        mn_status st = MN_OK;
        for (int tries = 0; n < want && tries < 8 * want && st == MN_OK; tries++) {
            char *frame = NULL;
            st = mn_frame_grammar_compose(of->grammar, (mn_grammar_role)r, rng, &frame);
            int dup = 0;
            for (int k = 0; frame && k < n && !dup; k++)
                dup = !strcmp(made[k], frame);
            if (frame && !dup)
                made[n++] = frame;
            else
                free(frame);
        }
        if (st != MN_OK || n == 0) {
            mn_free_strings(made, n);
            MN_TRY(st);
            continue;
        }
        mn_free_strings(*lists[r], *counts[r]);
        *lists[r] = made;
        *counts[r] = n;
    }
    return MN_OK;
}

/* Family `index`: its kind (`forced`, whose values come from `dialogues`, when it is below
 * MN_OPEN_KINDS; else drawn), keys (of dialogue words when word_keys; all ending in one head
 * word when shared_head and a head is found, *got_head then 1), frames (composed from the
 * grammar with composed_rng when that is given) and values. What is made is in cat on error
 * too. */
static mn_status make_open_family(mn_rng *rng, const mn_open_frames *of, const heldout_set *h,
                                  const mn_strset *heldout_words, key_registry *reg, int index,
                                  mn_open_kind forced, const mn_dialogue_list *dialogues,
                                  int word_keys, int shared_head, int *got_head,
                                  mn_rng *composed_rng, mn_fact_category *cat) {
    char name[32];
    snprintf(name, sizeof name, "open-%d", index + 1);
    mn_open_kind kind = forced < MN_OPEN_KINDS
                            ? forced
                            : (mn_open_kind)mn_rng_below(rng, MN_OPEN_DRAWN_KINDS);
    int want_keys = 5 + (int)mn_rng_below(rng, 4);
    cat->name = strdup(name);
    cat->keys = calloc((size_t)want_keys, sizeof *cat->keys);
    if (!cat->name || !cat->keys)
        return mn_fail(MN_ERR_NOMEM, "open families: out of memory");
    char head[64];
    *got_head = shared_head && open_head(rng, of, kind, h, head, sizeof head);
    /* a family with a head: only keys ending in it (too few found is an error below) */
    int max_tries = (*got_head ? 50 : 100) * want_keys;
    for (int tries = 0; cat->n_keys < want_keys && tries < max_tries; tries++) {
        char key[256];
        /* word keys for half the tries: a small corpus runs out of free words, and the
         * fixed lists then fill the family */
        if (*got_head)
            open_head_key(rng, of, head, dialogues, heldout_words, word_keys, key, sizeof key);
        else if (!word_keys || tries >= 50 * want_keys ||
                 !open_key_words(rng, of, kind, dialogues, heldout_words, key, sizeof key))
            open_key(rng, of, kind, key, sizeof key);
        char *low = lower_copy(key);
        if (!low)
            return mn_fail(MN_ERR_NOMEM, "open families: out of memory");
        int added = 0;
        mn_status st = MN_OK;
        if (open_key_allowed(key, low, cat, h, reg)) {
            st = mn_strset_add(&reg->taken, low, &added);
            if (st == MN_OK && for_each_word_run(low, run_add, reg))
                st = mn_fail(MN_ERR_NOMEM, "open families: out of memory");
            if (st == MN_OK && !(cat->keys[cat->n_keys] = strdup(key)))
                st = mn_fail(MN_ERR_NOMEM, "open families: out of memory");
            if (st == MN_OK)
                cat->n_keys++;
        }
        free(low);
        MN_TRY(st);
    }
    if (cat->n_keys < 2)
        return mn_fail(MN_ERR_CONFIG, "open families: family %s found only %d free keys in %s",
                       name, cat->n_keys, of->file);
    MN_TRY(pick_frames(rng, of->facts, of->n_facts, 3, 6, &cat->facts, &cat->n_facts));
    MN_TRY(pick_frames(rng, of->updates, of->n_updates, 1, 3, &cat->updates, &cat->n_updates));
    MN_TRY(pick_frames(rng, of->questions, of->n_questions, 2, 4, &cat->questions,
                       &cat->n_questions));
    MN_TRY(pick_frames(rng, of->self_questions, of->n_self_questions, 2, 4,
                       &cat->self_questions, &cat->n_self_questions));
    if (composed_rng)
        MN_TRY(compose_family_frames(composed_rng, of, cat));
    int space = open_value_space(kind, of);
    MN_TRY(draw_values(kind, of, dialogues, heldout_words,
                       MN_OPEN_FAMILY_VALUES < space ? MN_OPEN_FAMILY_VALUES : space, &h->values,
                       rng, &cat->values, &cat->n_values));
    drop_values_in_questions(cat);
    if (cat->n_values < 2)
        return mn_fail(MN_ERR_CONFIG, "open families: family %s (%s values) got fewer than 2 "
                                      "values", name, kind_names[kind]);
    return MN_OK;
}

mn_status mn_probe_templates_open_families(mn_probe_templates *t, const char *path,
                                           int n_families, uint64_t seed) {
    mn_open_spans none = {0};
    return mn_probe_templates_open_families_spans(t, path, n_families, seed, &none);
}

/* A share of the open families: in [0, 1], and, when it takes its material from the
 * dialogues, with dialogues when above 0. `what` names the option, `one` a family of it,
 * `taken` what it takes from the dialogues (NULL: nothing). */
static mn_status check_share(const char *what, const char *one, const char *taken, double share,
                             const mn_dialogue_list *dialogues) {
    if (!(share >= 0 && share <= 1))
        return mn_fail(MN_ERR_CONFIG, "%s: the chance of %s must be in [0, 1] (got %g)", what, one,
                       share);
    if (taken && share > 0 && !dialogues)
        return mn_fail(MN_ERR_CONFIG, "%s: no dialogues to take %s from (they come from the "
                                      "--jsonl dialogues)", what, taken);
    return MN_OK;
}

mn_status mn_probe_templates_open_families_spans(mn_probe_templates *t, const char *path,
                                                 int n_families, uint64_t seed,
                                                 mn_open_spans *spans) {
    if (!t || !path || !spans)
        return mn_fail(MN_ERR_INVALID_ARG, "open families: NULL argument");
    spans->families = 0;
    spans->values = 0;
    spans->words_families = 0;
    spans->words_values = 0;
    spans->keys_families = 0;
    spans->head_families = 0;
    spans->composed_families = 0;
    if (t->split != MN_SPLIT_TRAIN)
        return mn_fail(MN_ERR_CONFIG, "open families: only for the train split (held-out splits "
                                      "keep their own families)");
    if (!t->open_frames)
        return mn_fail(MN_ERR_CONFIG, "open families: %s has no open_frames file (as "
                                      "data/probes/open_frames.json)", path);
    if (n_families < 1 || n_families > INT_MAX / 2 - t->n_categories)
        return mn_fail(MN_ERR_CONFIG, "open families: want at least 1 family (got %d)",
                       n_families);
    MN_TRY(check_share("span families", "a span family", "spans", spans->prob, spans->dialogues));
    MN_TRY(check_share("word families", "a word family", "words", spans->words_prob,
                       spans->dialogues));
    MN_TRY(check_share("word keys", "a family with keys of dialogue words", "words",
                       spans->keys_prob, spans->dialogues));
    MN_TRY(check_share("shared heads", "a family whose keys share a head", NULL,
                       spans->heads_prob, spans->dialogues));
    MN_TRY(check_share("composed frames", "a family with composed frames", NULL,
                       spans->composed_prob, spans->dialogues));
    if (spans->composed_prob > 0 && !t->open_frames->grammar)
        return mn_fail(MN_ERR_CONFIG, "composed frames: %s has no grammar ('composed' in its "
                                      "open_frames file)", t->open_frames->file);
    heldout_set h;
    MN_TRY(heldout_load(path, &h));
    mn_strset heldout_words = {0}; /* only word families and word keys read it */
    mn_status words_st = spans->words_prob > 0 || spans->keys_prob > 0
                             ? heldout_value_words(&h.values, &heldout_words)
                             : MN_OK;
    if (words_st != MN_OK) {
        mn_strset_free(&heldout_words);
        heldout_free(&h);
        return words_st;
    }
    key_registry reg;
    memset(&reg, 0, sizeof reg);
    mn_fact_category *cats = realloc(t->categories,
                                     (size_t)(t->n_categories + n_families) * sizeof *cats);
    mn_status st = cats ? MN_OK : mn_fail(MN_ERR_NOMEM, "open families: out of memory");
    if (cats) {
        t->categories = cats;
        memset(cats + t->n_categories, 0, (size_t)n_families * sizeof *cats);
    }
    mn_rng rng, span_rng, words_rng, keys_rng, heads_rng, composed_rng; /* which families are
                                                           * spans or words, or have word keys,
                                                           * a head or composed frames: streams
                                                           * of their own, drawn only when asked
                                                           * for, so that a chance of 0 leaves
                                                           * every family as it was */
    mn_rng_seed(&rng, mix64(mix64(seed ^ 0x0be9fa3111e5ull)));
    mn_rng_seed(&span_rng, mix64(mix64(seed ^ 0x5ba2f0a111e5ull)));
    mn_rng_seed(&words_rng, mix64(mix64(seed ^ 0x3c0d5a9111e5ull)));
    mn_rng_seed(&keys_rng, mix64(mix64(seed ^ 0x77aa11e5ull)));
    mn_rng_seed(&heads_rng, mix64(mix64(seed ^ 0x4ead511e5ull)));
    mn_rng_seed(&composed_rng, mix64(mix64(seed ^ 0xc0f05ed11e5ull)));
    int made = 0, span_families = 0, words_families = 0, keys_families = 0, head_families = 0,
        composed_families = 0;
    int64_t span_values = 0, words_values = 0;
    for (; made < n_families && st == MN_OK; made++) {
        mn_fact_category *cat = &t->categories[t->n_categories + made];
        int span = spans->prob > 0 && mn_rng_uniform(&span_rng) < spans->prob;
        int words = !span && spans->words_prob > 0 &&
                    mn_rng_uniform(&words_rng) < spans->words_prob;
        mn_open_kind forced = span    ? MN_OPEN_SPAN
                              : words ? (mn_rng_below(&words_rng, 2) ? MN_OPEN_TITLE : MN_OPEN_WORDS)
                                      : MN_OPEN_KINDS;
        int word_keys = spans->keys_prob > 0 && mn_rng_uniform(&keys_rng) < spans->keys_prob;
        int shared_head = spans->heads_prob > 0 && mn_rng_uniform(&heads_rng) < spans->heads_prob;
        int composed = spans->composed_prob > 0 &&
                       mn_rng_uniform(&composed_rng) < spans->composed_prob;
        int got_head = 0;
        st = make_open_family(&rng, t->open_frames, &h, &heldout_words, &reg, made, forced,
                              spans->dialogues, word_keys, shared_head, &got_head,
                              composed ? &composed_rng : NULL, cat);
        composed_families += composed;
        keys_families += word_keys;
        head_families += got_head;
        span_families += span;
        span_values += span ? cat->n_values : 0;
        words_families += words;
        words_values += words ? cat->n_values : 0;
    }
    if (st == MN_OK) {
        t->n_categories += n_families;
        spans->families = span_families;
        spans->values = span_values;
        spans->words_families = words_families;
        spans->words_values = words_values;
        spans->keys_families = keys_families;
        spans->head_families = head_families;
        spans->composed_families = composed_families;
    } else
        for (int i = 0; cats && i < made; i++)
            category_free(&t->categories[t->n_categories + i]);
    mn_strset_free(&reg.taken);
    mn_strset_free(&reg.parts);
    heldout_free(&h);
    mn_strset_free(&heldout_words);
    return st;
}
