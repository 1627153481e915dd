#include "text/dialogue.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/atomic_file.h"
#include "core/error.h"
#include "text/json_doc.h"
#include "text/text_util.h"

void mn_dialogue_free(mn_dialogue *d) {
    if (!d)
        return;
    free(d->id);
    for (int i = 0; i < d->n_turns; i++) {
        free(d->turns[i].speaker);
        free(d->turns[i].text);
        free(d->turns[i].date);
    }
    free(d->turns);
    for (int i = 0; i < d->n_probes; i++) {
        mn_probe *p = &d->probes[i];
        free(p->speaker);
        free(p->question);
        free(p->answer);
        for (int j = 0; j < p->n_choices; j++)
            free(p->choices[j]);
        free(p->choices);
        free(p->evidence);
    }
    free(d->probes);
    memset(d, 0, sizeof *d);
}

void mn_dialogue_list_free(mn_dialogue_list *list) {
    if (!list)
        return;
    for (int64_t i = 0; i < list->count; i++)
        mn_dialogue_free(&list->items[i]);
    free(list->items);
    memset(list, 0, sizeof *list);
}

mn_status mn_dialogue_list_push(mn_dialogue_list *list, mn_dialogue *d) {
    if (!list || !d)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_dialogue_list_push: NULL argument");
    if (list->count == list->capacity) {
        int64_t cap = list->capacity ? list->capacity * 2 : 64;
        mn_dialogue *items = realloc(list->items, (size_t)cap * sizeof *items);
        if (!items)
            return mn_fail(MN_ERR_NOMEM, "cannot grow a dialogue list to %lld",
                           (long long)cap);
        list->items = items;
        list->capacity = cap;
    }
    list->items[list->count++] = *d;
    memset(d, 0, sizeof *d);
    return MN_OK;
}

/* ------------------------------------------------------------------ reading */

/* Why a line is bad, filled by the validators. */
typedef struct {
    char text[256];
    int nomem;
} why_t;

static int bad(why_t *why, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(why_t *why, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why->text, sizeof why->text, fmt, ap);
    va_end(ap);
    return -1;
}

static int dup_json_string(json_t *s, char **out, why_t *why) {
    if (mn_strndup(json_string_value(s), json_string_length(s), out) != MN_OK) {
        why->nomem = 1;
        return bad(why, "out of memory");
    }
    return 0;
}

/* An int field in [lo, hi]; absent leaves *out alone and returns 0. */
static int get_int(json_t *obj, const char *key, const char *where, long long lo, long long hi,
                   int *out, why_t *why) {
    json_t *v = json_object_get(obj, key);
    if (!v)
        return 0;
    if (!json_is_integer(v))
        return bad(why, "%s.%s: not an integer", where, key);
    long long x = json_integer_value(v);
    if (x < lo || x > hi)
        return bad(why, "%s.%s: %lld is outside %lld..%lld", where, key, x, lo, hi);
    *out = (int)x;
    return 0;
}

static int parse_turn(json_t *t, int i, mn_turn *turn, why_t *why) {
    char where[32];
    snprintf(where, sizeof where, "turns[%d]", i);
    if (!json_is_object(t))
        return bad(why, "%s: not an object", where);
    json_t *speaker = json_object_get(t, "speaker");
    if (!json_is_string(speaker) || json_string_length(speaker) == 0)
        return bad(why, "%s.speaker: missing or not a non-empty string", where);
    json_t *text = json_object_get(t, "text");
    if (!json_is_string(text))
        return bad(why, "%s.text: missing or not a string", where);
    json_t *date = json_object_get(t, "date");
    if (date && !json_is_string(date))
        return bad(why, "%s.date: not a string", where);
    /* sessions count from 1: 0 would mean absent and could not round-trip */
    if (get_int(t, "session", where, 1, INT_MAX, &turn->session, why))
        return -1;
    if (dup_json_string(speaker, &turn->speaker, why) || dup_json_string(text, &turn->text, why))
        return -1;
    if (date && dup_json_string(date, &turn->date, why))
        return -1;
    return 0;
}

static int parse_probe(json_t *p, int i, int n_turns, mn_probe *probe, why_t *why) {
    char where[32];
    snprintf(where, sizeof where, "probes[%d]", i);
    if (!json_is_object(p))
        return bad(why, "%s: not an object", where);
    json_t *after = json_object_get(p, "after");
    if (!after)
        return bad(why, "%s.after: missing", where);
    if (get_int(p, "after", where, 1, n_turns, &probe->after, why))
        return -1;
    json_t *question = json_object_get(p, "question");
    if (!json_is_string(question))
        return bad(why, "%s.question: missing or not a string", where);
    json_t *answer = json_object_get(p, "answer");
    if (!json_is_string(answer))
        return bad(why, "%s.answer: missing or not a string", where);
    json_t *speaker = json_object_get(p, "speaker");
    if (speaker && !json_is_string(speaker))
        return bad(why, "%s.speaker: not a string", where);
    if (get_int(p, "category", where, 0, INT_MAX, &probe->category, why))
        return -1;
    json_t *choices = json_object_get(p, "choices");
    if (choices) {
        if (!json_is_array(choices))
            return bad(why, "%s.choices: not an array", where);
        size_t n = json_array_size(choices);
        int has_answer = 0;
        for (size_t j = 0; j < n; j++) {
            json_t *c = json_array_get(choices, j);
            if (!json_is_string(c))
                return bad(why, "%s.choices[%zu]: not a string", where, j);
            if (json_equal(c, answer))
                has_answer = 1;
        }
        if (!has_answer)
            return bad(why, "%s.choices: does not contain the answer", where);
        probe->choices = calloc(n, sizeof *probe->choices);
        if (!probe->choices) {
            why->nomem = 1;
            return bad(why, "out of memory");
        }
        for (size_t j = 0; j < n; j++) {
            if (dup_json_string(json_array_get(choices, j), &probe->choices[j], why))
                return -1;
            probe->n_choices++;
        }
    }
    json_t *evidence = json_object_get(p, "evidence");
    if (evidence) {
        if (!json_is_array(evidence))
            return bad(why, "%s.evidence: not an array", where);
        size_t n = json_array_size(evidence);
        if (n) {
            probe->evidence = malloc(n * sizeof *probe->evidence);
            if (!probe->evidence) {
                why->nomem = 1;
                return bad(why, "out of memory");
            }
        }
        for (size_t j = 0; j < n; j++) {
            json_t *e = json_array_get(evidence, j);
            if (!json_is_integer(e))
                return bad(why, "%s.evidence[%zu]: not an integer", where, j);
            long long x = json_integer_value(e);
            if (x < 0 || x >= n_turns)
                return bad(why, "%s.evidence[%zu]: turn %lld is outside 0..%d", where, j, x,
                           n_turns - 1);
            probe->evidence[probe->n_evidence++] = (int)x;
        }
    }
    if (dup_json_string(question, &probe->question, why) ||
        dup_json_string(answer, &probe->answer, why))
        return -1;
    if (speaker && dup_json_string(speaker, &probe->speaker, why))
        return -1;
    return 0;
}

static int parse_dialogue(json_t *root, int64_t line, mn_dialogue *d, why_t *why) {
    if (!json_is_object(root))
        return bad(why, "not a JSON object");
    json_t *id = json_object_get(root, "id");
    if (id && !json_is_string(id))
        return bad(why, "id: not a string");
    json_t *turns = json_object_get(root, "turns");
    if (!json_is_array(turns))
        return bad(why, "turns: missing or not an array");
    size_t n_turns = json_array_size(turns);
    if (n_turns == 0)
        return bad(why, "turns: empty (at least one turn is required)");
    if (n_turns > INT_MAX / 2)
        return bad(why, "turns: too many");
    json_t *probes = json_object_get(root, "probes");
    if (probes && !json_is_array(probes))
        return bad(why, "probes: not an array");
    if (id) {
        if (dup_json_string(id, &d->id, why))
            return -1;
    } else {
        /* the id is optional in the format; name the dialogue by its line */
        char buf[32];
        snprintf(buf, sizeof buf, "line-%lld", (long long)line);
        if (mn_strdup(buf, &d->id) != MN_OK) {
            why->nomem = 1;
            return bad(why, "out of memory");
        }
    }
    d->turns = calloc(n_turns, sizeof *d->turns);
    if (!d->turns) {
        why->nomem = 1;
        return bad(why, "out of memory");
    }
    for (size_t i = 0; i < n_turns; i++) {
        d->n_turns++;  /* counted first so that a half-filled turn is freed */
        if (parse_turn(json_array_get(turns, i), (int)i, &d->turns[i], why))
            return -1;
    }
    size_t n_probes = probes ? json_array_size(probes) : 0;
    if (n_probes > INT_MAX / 2)
        return bad(why, "probes: too many");
    if (n_probes) {
        d->probes = calloc(n_probes, sizeof *d->probes);
        if (!d->probes) {
            why->nomem = 1;
            return bad(why, "out of memory");
        }
        for (size_t i = 0; i < n_probes; i++) {
            d->n_probes++;
            if (parse_probe(json_array_get(probes, i), (int)i, d->n_turns, &d->probes[i], why))
                return -1;
        }
    }
    return 0;
}

/* One line of canonical JSONL: a dialogue, or a bad record. */
static mn_status read_line(const mn_json_doc *doc, const char *key, size_t line, json_t *root) {
    (void)key;
    mn_dialogue d = {0};
    why_t why = {{0}, 0};
    if (parse_dialogue(root, (int64_t)line, &d, &why)) {
        mn_dialogue_free(&d);
        if (why.nomem)
            return mn_fail(MN_ERR_NOMEM, "%s:%zu: out of memory", doc->name, line);
        return mn_bad_record(doc->options, &doc->stats->read, doc->name, (int64_t)line, "%s", why.text);
    }
    mn_status st = mn_dialogue_list_push(doc->out, &d);
    if (st != MN_OK)
        mn_dialogue_free(&d);
    return st;
}

static const mn_json_format jsonl = {MN_JSON_LINES, "canonical JSONL", read_line};

/* Both JSONL entry points: from memory (path NULL) or from the file at path. They take
 * strictness and the log rather than reader options, and count into mn_read_stats. */
static mn_status jsonl_read(const char *path, const char *name, const char *buf, size_t len, int strict,
                            FILE *log, mn_dialogue_list *out, mn_read_stats *stats) {
    mn_reader_options options = mn_reader_options_default();
    options.strict = strict;
    options.log = log;
    mn_reader_stats all = {0};
    if (stats)
        all.read = *stats;
    mn_status st = path ? mn_json_doc_read_file(&jsonl, path, &options, out, &all)
                        : mn_json_doc_read(&jsonl, name, buf, len, &options, out, &all);
    if (stats)
        *stats = all.read;
    return st;
}

mn_status mn_jsonl_read_buffer(const char *name, const char *buf, size_t len, int strict,
                               FILE *log, mn_dialogue_list *out, mn_read_stats *stats) {
    if (!name || (!buf && len) || !out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_jsonl_read_buffer: NULL argument");
    return jsonl_read(NULL, name, buf, len, strict, log, out, stats);
}

mn_status mn_jsonl_read(const char *path, int strict, FILE *log, mn_dialogue_list *out,
                        mn_read_stats *stats) {
    if (!path || !out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_jsonl_read: NULL argument");
    return jsonl_read(path, path, NULL, 0, strict, log, out, stats);
}

/* ------------------------------------------------------------------ writing */

/* Adds a string; json_string refuses invalid UTF-8, which we report as such. */
static int set_str(json_t *obj, const char *key, const char *s) {
    json_t *v = json_string(s);
    return !v || json_object_set_new(obj, key, v);
}

static int set_int(json_t *obj, const char *key, long long x) {
    json_t *v = json_integer(x);
    return !v || json_object_set_new(obj, key, v);
}

static mn_status dialogue_to_json(const mn_dialogue *d, json_t **out) {
    const char *id = d->id ? d->id : "?";
    *out = NULL;
    if (!d->id)
        return mn_fail(MN_ERR_INVALID_ARG, "dialogue without an id");
    if (d->n_turns < 1 || !d->turns)
        return mn_fail(MN_ERR_INVALID_ARG, "dialogue %s: no turns", id);
    json_t *root = json_object();
    json_t *turns = json_array();
    int fail = !root || !turns || set_str(root, "id", d->id);
    if (!fail)
        fail = json_object_set_new(root, "turns", turns);
    else
        json_decref(turns);
    for (int i = 0; !fail && i < d->n_turns; i++) {
        const mn_turn *t = &d->turns[i];
        if (!t->speaker || !t->speaker[0] || !t->text || t->session < 0) {
            json_decref(root);
            return mn_fail(MN_ERR_INVALID_ARG,
                           "dialogue %s: turn %d lacks a speaker or text, or has a negative "
                           "session", id, i);
        }
        json_t *o = json_object();
        fail = !o || json_array_append_new(turns, o) || set_str(o, "speaker", t->speaker) ||
               set_str(o, "text", t->text) || (t->session && set_int(o, "session", t->session)) ||
               (t->date && set_str(o, "date", t->date));
        if (fail) {
            json_decref(root);
            return mn_fail(MN_ERR_INVALID_ARG,
                           "dialogue %s: turn %d cannot be encoded (invalid UTF-8?)", id, i);
        }
    }
    if (!fail && d->n_probes > 0) {
        json_t *probes = json_array();
        fail = !probes || json_object_set_new(root, "probes", probes);
        for (int i = 0; !fail && i < d->n_probes; i++) {
            const mn_probe *p = &d->probes[i];
            if (!p->question || !p->answer || p->after < 1 || p->after > d->n_turns) {
                json_decref(root);
                return mn_fail(MN_ERR_INVALID_ARG,
                               "dialogue %s: probe %d lacks a question or answer, or its after "
                               "(%d) is outside 1..%d", id, i, p->after, d->n_turns);
            }
            /* what the reader would refuse is not written: the round trip stays exact */
            int has_answer = p->n_choices == 0, bad_evidence = p->category < 0;
            for (int j = 0; j < p->n_choices; j++)
                has_answer |= p->choices[j] && !strcmp(p->choices[j], p->answer);
            for (int j = 0; j < p->n_evidence; j++)
                bad_evidence |= p->evidence[j] < 0 || p->evidence[j] >= d->n_turns;
            if (!has_answer || bad_evidence) {
                json_decref(root);
                return mn_fail(MN_ERR_INVALID_ARG,
                               "dialogue %s: probe %d: choices lack the answer, or evidence is "
                               "outside 0..%d, or the category is negative", id, i,
                               d->n_turns - 1);
            }
            json_t *o = json_object();
            fail = !o || json_array_append_new(probes, o) || set_int(o, "after", p->after) ||
                   (p->speaker && set_str(o, "speaker", p->speaker)) ||
                   set_str(o, "question", p->question) || set_str(o, "answer", p->answer);
            if (!fail && p->n_choices > 0) {
                json_t *a = json_array();
                fail = !a || json_object_set_new(o, "choices", a);
                for (int j = 0; !fail && j < p->n_choices; j++)
                    fail = !p->choices[j] || json_array_append_new(a, json_string(p->choices[j]));
            }
            if (!fail && p->n_evidence > 0) {
                json_t *a = json_array();
                fail = !a || json_object_set_new(o, "evidence", a);
                for (int j = 0; !fail && j < p->n_evidence; j++)
                    fail = json_array_append_new(a, json_integer(p->evidence[j]));
            }
            if (!fail && p->category)
                fail = set_int(o, "category", p->category);
            if (fail) {
                json_decref(root);
                return mn_fail(MN_ERR_INVALID_ARG,
                               "dialogue %s: probe %d cannot be encoded (invalid UTF-8?)", id, i);
            }
        }
    }
    if (fail) {
        json_decref(root);
        return mn_fail(MN_ERR_NOMEM, "dialogue %s: cannot build its JSON", id);
    }
    *out = root;
    return MN_OK;
}

mn_status mn_jsonl_write_dialogue(FILE *f, const mn_dialogue *d) {
    if (!f || !d)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_jsonl_write_dialogue: NULL argument");
    json_t *root;
    MN_TRY(dialogue_to_json(d, &root));
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!text)
        return mn_fail(MN_ERR_NOMEM, "dialogue %s: cannot encode its JSON", d->id);
    int failed = fputs(text, f) == EOF || fputc('\n', f) == EOF;
    free(text);
    if (failed)
        return mn_fail(MN_ERR_IO, "dialogue %s: write failed: %s", d->id, strerror(errno));
    return MN_OK;
}

mn_status mn_jsonl_write_file(const char *path, const mn_dialogue_list *list) {
    if (!path || !list)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_jsonl_write_file: NULL argument");
    mn_atomic_file af;
    MN_TRY(mn_atomic_begin(path, &af));
    FILE *f = fopen(af.tmp, "w");
    if (!f) {
        mn_status st = mn_fail(MN_ERR_IO, "%s: cannot create %s: %s", path, af.tmp, strerror(errno));
        mn_atomic_abort(&af);
        return st;
    }
    mn_status st = MN_OK;
    for (int64_t i = 0; st == MN_OK && i < list->count; i++)
        st = mn_jsonl_write_dialogue(f, &list->items[i]);
    if (st == MN_OK && fflush(f) != 0)
        st = mn_fail(MN_ERR_IO, "%s: write failed: %s", af.tmp, strerror(errno));
    if (fclose(f) != 0 && st == MN_OK)
        st = mn_fail(MN_ERR_IO, "%s: close failed: %s", af.tmp, strerror(errno));
    if (st != MN_OK) {
        mn_atomic_abort(&af);
        return st;
    }
    return mn_atomic_commit(&af);
}

mn_dialogue_counts mn_dialogue_list_count(const mn_dialogue_list *list) {
    mn_dialogue_counts c = {.dialogues = list->count};
    for (int64_t i = 0; i < list->count; i++) {
        const mn_dialogue *d = &list->items[i];
        c.turns += d->n_turns;
        c.probes += d->n_probes;
        for (int j = 0; j < d->n_probes; j++) {
            c.probes_with_choices += d->probes[j].n_choices > 0;
            c.probes_with_evidence += d->probes[j].n_evidence > 0;
        }
    }
    return c;
}

mn_status mn_read_check_yield(const char *input, const mn_read_stats *stats, int64_t usable, int accept_bad) {
    int64_t read = stats ? stats->lines_read : 0, bad = stats ? stats->bad_records : 0;
    if (usable == 0 && bad > 0)
        return mn_fail(MN_ERR_FORMAT, "%s: nothing usable: %lld bad record%s, no good one", input, (long long)bad,
                       bad == 1 ? "" : "s");
    if (usable == 0)
        return mn_fail(MN_ERR_FORMAT, "%s: no dialogue in it (empty, or every dialogue was dropped)", input);
    if (!accept_bad && bad * 2 > read)
        return mn_fail(MN_ERR_FORMAT,
                       "%s: %lld of %lld records are bad (more than half); --skip-bad uses the good ones",
                       input, (long long)bad, (long long)read);
    return MN_OK;
}
