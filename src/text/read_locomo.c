/* LoCoMo (locomo10.json): very long multi-session conversations with QA about earlier
 * sessions (../shared/data/locomo/SOURCE.md). */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "core/rng.h"
#include "text/json_doc.h"
#include "text/readers.h"
#include "text/text_util.h"

typedef struct {
    int session, turn, index;  /* "D<session>:<turn>" -> first turn index it became */
} dia_ref;

typedef struct {
    dia_ref *items;
    int n, cap;
} dia_map;

typedef struct {
    int usable;
    int category;
    const char *question;
    char *answer;
    char *adversarial;   /* category 5's tempting wrong answer, or NULL */
    json_t *evidence;
} qa_item;

/* Lenient "D<session>:<turn>": the dataset also has "D:11:26" and "D30:05". */
static int parse_dia_id(const char *s, size_t len, int *session, int *turn) {
    size_t i = 0;
    if (i >= len || (s[i] != 'D' && s[i] != 'd'))
        return 0;
    i++;
    int values[2];
    for (int k = 0; k < 2; k++) {
        while (i < len && s[i] == ':')
            i++;
        if (i >= len || !isdigit((unsigned char)s[i]))
            return 0;
        long v = 0;
        while (i < len && isdigit((unsigned char)s[i])) {
            if (v > 1000000)
                return 0;
            v = v * 10 + (s[i++] - '0');
        }
        values[k] = (int)v;
    }
    if (i != len)
        return 0;
    *session = values[0];
    *turn = values[1];
    return 1;
}

static mn_status dia_map_push(dia_map *m, int session, int turn, int index) {
    if (m->n == m->cap) {
        int cap = m->cap ? m->cap * 2 : 256;
        dia_ref *items = realloc(m->items, (size_t)cap * sizeof *items);
        if (!items)
            return mn_fail(MN_ERR_NOMEM, "cannot grow the dia_id map");
        m->items = items;
        m->cap = cap;
    }
    m->items[m->n++] = (dia_ref){session, turn, index};
    return MN_OK;
}

static int dia_map_find(const dia_map *m, int session, int turn) {
    for (int i = 0; i < m->n; i++)
        if (m->items[i].session == session && m->items[i].turn == turn)
            return m->items[i].index;
    return -1;
}

/* "text [shares a photo of <what>]": BLIP captions mostly read "a photo of ..." already. */
static char *render_text(const char *text, const char *caption) {
    if (!caption || !caption[0])
        return strdup(text);
    const char *what = caption;
    const char *lead = "a photo: ";
    static const char *const prefixes[] = {"a photo of ", "a photography of ", "a picture of ",
                                           "an image of "};
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
        size_t n = strlen(prefixes[i]);
        if (!strncmp(caption, prefixes[i], n)) {
            what = caption + n;
            lead = "a photo of ";
            break;
        }
    }
    size_t n = strlen(text) + strlen(what) + 32;
    char *out = malloc(n);
    if (out)
        snprintf(out, n, "%s%s[shares %s%s]", text, text[0] ? " " : "", lead, what);
    return out;
}

/* Equal after lower-casing and collapsing whitespace: such choices would be duplicates. */
static int same_answer(const char *a, const char *b) {
    int started = 0;
    for (;;) {
        int space_a = 0, space_b = 0;
        while (isspace((unsigned char)*a)) {
            a++;
            space_a = 1;
        }
        while (isspace((unsigned char)*b)) {
            b++;
            space_b = 1;
        }
        if (!*a || !*b)
            return !*a && !*b;
        if (started && space_a != space_b)
            return 0;
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b))
            return 0;
        started = 1;
        a++;
        b++;
    }
}

static int is_blank(const char *s) {
    while (isspace((unsigned char)*s))
        s++;
    return !*s;
}

/* QA answer as text: strings as they are, numbers printed (6 answers are integers). */
static mn_status answer_text(json_t *v, char **out) {
    *out = NULL;
    char buf[64];
    if (json_is_string(v))
        return mn_strndup(json_string_value(v), strlen(json_string_value(v)), out);
    if (json_is_integer(v))
        snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v))
        snprintf(buf, sizeof buf, "%.15g", json_real_value(v));
    else
        return MN_OK;
    return mn_strdup(buf, out);
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Evidence ids -> sorted distinct turn indices; unresolvable ids are counted. */
static mn_status map_evidence(json_t *evidence, const dia_map *map, mn_probe *p,
                              mn_reader_stats *stats) {
    if (!json_is_array(evidence))
        return MN_OK;
    size_t cap = 0;
    for (size_t i = 0; i < json_array_size(evidence); i++) {
        json_t *e = json_array_get(evidence, i);
        if (json_is_string(e))
            cap += json_string_length(e) / 2 + 1;
    }
    if (!cap)
        return MN_OK;
    p->evidence = malloc(cap * sizeof *p->evidence);
    if (!p->evidence)
        return mn_fail(MN_ERR_NOMEM, "cannot allocate evidence");
    for (size_t i = 0; i < json_array_size(evidence); i++) {
        json_t *e = json_array_get(evidence, i);
        if (!json_is_string(e)) {
            stats->unresolved_evidence++;
            continue;
        }
        /* some entries hold several ids: "D8:6; D9:17" */
        const char *s = json_string_value(e);
        size_t len = json_string_length(e), pos = 0;
        while (pos < len) {
            while (pos < len && (s[pos] == ';' || s[pos] == ',' || isspace((unsigned char)s[pos])))
                pos++;
            size_t start = pos;
            while (pos < len && s[pos] != ';' && s[pos] != ',' && !isspace((unsigned char)s[pos]))
                pos++;
            if (pos == start)
                break;
            int session, turn, index = -1;
            if (parse_dia_id(s + start, pos - start, &session, &turn))
                index = dia_map_find(map, session, turn);
            if (index < 0) {
                stats->unresolved_evidence++;
                continue;
            }
            if ((size_t)p->n_evidence < cap)
                p->evidence[p->n_evidence++] = index;
        }
    }
    qsort(p->evidence, (size_t)p->n_evidence, sizeof *p->evidence, cmp_int);
    int n = 0;
    for (int i = 0; i < p->n_evidence; i++)
        if (n == 0 || p->evidence[n - 1] != p->evidence[i])
            p->evidence[n++] = p->evidence[i];
    p->n_evidence = n;
    if (!n) {
        free(p->evidence);
        p->evidence = NULL;
    }
    return MN_OK;
}

/* choices = answer + distractors from other questions of the same category, deterministic
 * in (sample id, question index); shuffled so that the answer's place tells nothing. */
static mn_status build_choices(const char *sample_id, int qi, const qa_item *qa, int n_qa,
                               int k, mn_probe *p) {
    const qa_item *self = &qa[qi];
    const char **picked = malloc((size_t)(k + 2) * sizeof *picked);
    const char **pool = malloc((size_t)(n_qa + 1) * sizeof *pool);
    if (!picked || !pool) {
        free(picked);
        free(pool);
        return mn_fail(MN_ERR_NOMEM, "cannot allocate choices");
    }
    int n_picked = 0, n_pool = 0;
    picked[n_picked++] = self->answer;
    /* the adversarial answer is the distractor the question was written to tempt */
    if (k > 0 && self->adversarial && !is_blank(self->adversarial) &&
        !same_answer(self->adversarial, self->answer))
        picked[n_picked++] = self->adversarial;
    for (int j = 0; j < n_qa; j++) {
        if (j == qi || !qa[j].usable || qa[j].category != self->category)
            continue;
        const char *cand = self->category == 5 ? qa[j].adversarial : qa[j].answer;
        if (!cand || is_blank(cand))
            continue;
        int dup = 0;
        for (int m = 0; m < n_picked && !dup; m++)
            dup = same_answer(cand, picked[m]);
        for (int m = 0; m < n_pool && !dup; m++)
            dup = same_answer(cand, pool[m]);
        if (!dup)
            pool[n_pool++] = cand;
    }
    char seed_text[512];
    int seed_len = snprintf(seed_text, sizeof seed_text, "%s#%d", sample_id, qi);
    mn_rng rng;
    mn_rng_seed(&rng, mn_hash_str(seed_text, seed_len < (int)sizeof seed_text
                                                 ? (size_t)seed_len : sizeof seed_text - 1));
    while (n_picked < k + 1 && n_pool > 0) {
        int j = (int)mn_rng_below(&rng, (uint64_t)n_pool);
        picked[n_picked++] = pool[j];
        pool[j] = pool[--n_pool];
    }
    free(pool);
    mn_status st = MN_OK;
    if (n_picked > 1) {
        for (int i = n_picked - 1; i > 0; i--) {
            int j = (int)mn_rng_below(&rng, (uint64_t)(i + 1));
            const char *t = picked[i];
            picked[i] = picked[j];
            picked[j] = t;
        }
        p->choices = calloc((size_t)n_picked, sizeof *p->choices);
        if (!p->choices)
            st = mn_fail(MN_ERR_NOMEM, "cannot allocate choices");
        for (int i = 0; st == MN_OK && i < n_picked; i++) {
            st = mn_strdup(picked[i], &p->choices[i]);
            if (st == MN_OK)
                p->n_choices++;
        }
    }
    free(picked);
    return st;
}

static int cmp_int_pair(const void *a, const void *b) { return cmp_int(a, b); }

/* Turns of the conversation, session by session in numeric order. */
static mn_status read_sessions(const char *name, int64_t line, const char *sample_id,
                               json_t *conversation, const mn_reader_options *options,
                               mn_reader_stats *stats, mn_dialogue *d, dia_map *map) {
    /* date keys can outnumber sessions (conv-26): only session_<n> lists count */
    int *sessions = malloc((json_object_size(conversation) + 1) * sizeof *sessions);
    if (!sessions)
        return mn_fail(MN_ERR_NOMEM, "cannot allocate sessions");
    int n_sessions = 0;
    const char *key;
    json_t *value;
    json_object_foreach(conversation, key, value) {
        if (strncmp(key, "session_", 8) || !key[8])
            continue;
        const char *p = key + 8;
        long v = 0;
        while (*p >= '0' && *p <= '9' && v < 1000000)
            v = v * 10 + (*p++ - '0');
        if (*p || !json_is_array(value))
            continue;
        sessions[n_sessions++] = (int)v;
    }
    qsort(sessions, (size_t)n_sessions, sizeof *sessions, cmp_int_pair);
    int cap = 0;
    mn_status st = MN_OK;
    for (int s = 0; s < n_sessions && st == MN_OK; s++) {
        if (s > 0 && sessions[s] == sessions[s - 1])
            continue;  /* "session_01" and "session_1": read once */
        char skey[48], dkey[64];
        snprintf(skey, sizeof skey, "session_%d", sessions[s]);
        snprintf(dkey, sizeof dkey, "session_%d_date_time", sessions[s]);
        json_t *turns = json_object_get(conversation, skey);
        if (!turns)
            continue;
        json_t *date = json_object_get(conversation, dkey);
        const char *date_text = json_is_string(date) ? json_string_value(date) : NULL;
        /* a session numbered 0 would read as "absent" in the format */
        int session = sessions[s] > 0 ? sessions[s] : 0;
        for (size_t i = 0; i < json_array_size(turns) && st == MN_OK; i++) {
            json_t *t = json_array_get(turns, i);
            json_t *speaker = json_object_get(t, "speaker");
            json_t *text = json_object_get(t, "text");
            json_t *caption = json_object_get(t, "blip_caption");
            if (!json_is_object(t) || !json_is_string(speaker) ||
                json_string_length(speaker) == 0 ||
                strlen(json_string_value(speaker)) != json_string_length(speaker) ||
                (text && !json_is_string(text)) || (!text && !json_is_string(caption))) {
                st = mn_bad_record(options, &stats->read, name, line,
                                   "%s %s[%zu]: turn lacks a speaker or text (turn skipped)",
                                   sample_id, skey, i);
                continue;
            }
            stats->read.lines_read++;
            char *rendered = render_text(text ? json_string_value(text) : "",
                                         json_is_string(caption) ? json_string_value(caption)
                                                                 : NULL);
            if (!rendered) {
                st = mn_fail(MN_ERR_NOMEM, "cannot render a turn");
                break;
            }
            int first = d->n_turns, added = 0;
            st = mn_dialogue_add_text(d, &cap, json_string_value(speaker), rendered,
                                      strlen(rendered), session, date_text, options,
                                      &stats->read, &added);
            free(rendered);
            json_t *dia = json_object_get(t, "dia_id");
            int ds, dt;
            if (st == MN_OK && added > 0 && json_is_string(dia) &&
                parse_dia_id(json_string_value(dia), json_string_length(dia), &ds, &dt))
                st = dia_map_push(map, ds, dt, first);
        }
    }
    free(sessions);
    return st;
}

/* Checks a QA item and extracts its parts; an unusable one is reported and counted. */
static mn_status read_qa_item(const char *name, int64_t line, const char *sample_id, size_t i,
                              json_t *q, const mn_reader_options *options,
                              mn_reader_stats *stats, qa_item *item) {
    json_t *question = json_object_get(q, "question");
    json_t *category = json_object_get(q, "category");
    json_t *answer = json_object_get(q, "answer");
    const char *problem = !json_is_object(q) ? "not an object"
                          : !json_is_string(question) ? "question missing or not a string"
                          : (category && !json_is_integer(category)) ? "category not an integer"
                          : NULL;
    int cat = json_is_integer(category) ? (int)json_integer_value(category) : 0;
    if (!problem && json_is_integer(category) &&
        (json_integer_value(category) < 0 || json_integer_value(category) > 1000))
        problem = "category out of range";
    if (!problem)
        MN_TRY(answer_text(answer, &item->answer));
    if (!problem && !item->answer) {
        if (cat == 5) {
            /* adversarial: the right answer is that the conversation never says */
            MN_TRY(mn_strdup(MN_LOCOMO_UNANSWERABLE, &item->answer));
        } else {
            problem = "answer missing or not a string or number";
        }
    }
    if (problem) {
        stats->skipped_probes++;
        return mn_bad_record(options, &stats->read, name, line, "%s qa[%zu]: %s (skipped)",
                             sample_id, i, problem);
    }
    item->usable = 1;
    item->category = cat;
    item->question = json_string_value(question);
    item->evidence = json_object_get(q, "evidence");
    if (cat == 5)
        MN_TRY(answer_text(json_object_get(q, "adversarial_answer"), &item->adversarial));
    return MN_OK;
}

static mn_status read_sample(const mn_json_doc *doc, const char *key, size_t index, json_t *sample) {
    (void)key;
    const char *name = doc->name;
    const mn_reader_options *options = doc->options;
    mn_reader_stats *stats = doc->stats;
    json_t *sid = json_object_get(sample, "sample_id");
    char fallback[32];
    snprintf(fallback, sizeof fallback, "locomo-%zu", index);
    const char *sample_id = json_is_string(sid) ? json_string_value(sid) : fallback;
    char needle[300];
    snprintf(needle, sizeof needle, "\"%.280s\"", sample_id);
    int64_t line = json_is_string(sid) ? mn_line_of(doc->buf, doc->len, needle) : 0;
    json_t *conversation = json_object_get(sample, "conversation");
    json_t *qa = json_object_get(sample, "qa");
    if (!json_is_object(sample) || !json_is_object(conversation) || (qa && !json_is_array(qa)))
        return mn_bad_record(options, &stats->read, name, line,
                             "%s: not an object with a conversation object and a qa list",
                             sample_id);
    mn_dialogue d = {0};
    dia_map map = {0};
    size_t n_qa = qa ? json_array_size(qa) : 0;
    qa_item *items = calloc(n_qa + 1, sizeof *items);
    mn_status st = items ? mn_strdup(sample_id, &d.id)
                         : mn_fail(MN_ERR_NOMEM, "cannot allocate QA items");
    if (st == MN_OK)
        st = read_sessions(name, line, sample_id, conversation, options, stats, &d, &map);
    if (st == MN_OK && d.n_turns == 0) {
        stats->empty_dialogues++;
        stats->skipped_probes += (int64_t)n_qa;
        goto done;
    }
    for (size_t i = 0; st == MN_OK && i < n_qa; i++)
        st = read_qa_item(name, line, sample_id, i, json_array_get(qa, i), options, stats,
                          &items[i]);
    int n_usable = 0;
    for (size_t i = 0; i < n_qa; i++)
        n_usable += items[i].usable;
    if (st == MN_OK && n_usable > 0) {
        d.probes = calloc((size_t)n_usable, sizeof *d.probes);
        if (!d.probes)
            st = mn_fail(MN_ERR_NOMEM, "cannot allocate probes");
    }
    for (size_t i = 0; st == MN_OK && i < n_qa; i++) {
        if (!items[i].usable)
            continue;
        mn_probe *p = &d.probes[d.n_probes++];
        p->category = items[i].category;
        st = mn_strdup(items[i].question, &p->question);
        if (st == MN_OK)
            st = mn_strdup(items[i].answer, &p->answer);
        if (st == MN_OK)
            st = map_evidence(items[i].evidence, &map, p, stats);
        if (st == MN_OK && options->n_distractors > 0)
            st = build_choices(sample_id, (int)i, items, (int)n_qa, options->n_distractors, p);
        p->after = d.n_turns;
        if (options->ask_at == MN_ASK_AT_EVIDENCE && p->n_evidence > 0) {
            /* right after the session of the latest evidence turn */
            int last = p->evidence[p->n_evidence - 1];
            int session = d.turns[last].session;
            while (last + 1 < d.n_turns && d.turns[last + 1].session == session)
                last++;
            p->after = last + 1;
        }
    }
    if (st == MN_OK)
        st = mn_dialogue_list_push(doc->out, &d);
done:
    for (size_t i = 0; items && i < n_qa; i++) {
        free(items[i].answer);
        free(items[i].adversarial);
    }
    free(items);
    free(map.items);
    mn_dialogue_free(&d);
    return st;
}

static const mn_json_format locomo = {MN_JSON_ARRAY, "a list of samples", read_sample};

mn_status mn_read_locomo_buffer(const char *name, const char *buf, size_t len,
                                const mn_reader_options *options, mn_dialogue_list *out,
                                mn_reader_stats *stats) {
    if (!name || (!buf && len) || !out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_read_locomo_buffer: NULL argument");
    return mn_json_doc_read(&locomo, name, buf, len, options, out, stats);
}

mn_status mn_read_locomo(const char *path, const mn_reader_options *options,
                         mn_dialogue_list *out, mn_reader_stats *stats) {
    if (!path || !out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_read_locomo: NULL argument");
    struct stat sb;
    if (stat(path, &sb) != 0)
        return mn_fail(MN_ERR_IO, "%s: cannot read LoCoMo: %s", path, strerror(errno));
    size_t n = strlen(path) + 32;
    char *file = malloc(n);
    if (!file)
        return mn_fail(MN_ERR_NOMEM, "cannot allocate a path");
    /* a folder means the locomo/ data folder */
    snprintf(file, n, S_ISDIR(sb.st_mode) ? "%s/locomo10.json" : "%s", path);
    mn_status st = mn_json_doc_read_file(&locomo, file, options, out, stats);
    free(file);
    return st;
}
