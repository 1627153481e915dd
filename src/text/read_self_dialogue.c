/* Self-dialogue corpus: raw MTurk batch CSVs, one row = one dialogue written by one worker
 * playing both speakers (../shared/data/self_dialogue_corpus/SOURCE.md). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "text/csv.h"
#include "text/readers.h"
#include "text/text_util.h"

typedef struct {
    const mn_reader_options *options;
    mn_reader_stats *stats;
    mn_dialogue_list *out;
    mn_strset blocked;   /* WorkerIds to drop */
    mn_strset seen;      /* AssignmentIds already kept */
} sd_reader;

typedef struct {
    int index;   /* N of Answer.sentenceN */
    int column;
} sentence_column;

static int cmp_sentence(const void *a, const void *b) {
    const sentence_column *x = a, *y = b;
    return (x->index > y->index) - (x->index < y->index);
}

int mn_self_dialogue_author_is_valid(const char *worker_id, int valid_percent) {
    if (!worker_id)
        return 0;
    return (int)(mn_hash_str(worker_id, strlen(worker_id)) % 100) < valid_percent;
}

/* "corpus/music/x.csv" -> "music"; "x.csv" -> "x". */
static void topic_of(const char *path, char *topic, size_t cap) {
    const char *slash = strrchr(path, '/');
    if (slash) {
        const char *start = slash;
        while (start > path && start[-1] != '/')
            start--;
        snprintf(topic, cap, "%.*s", (int)(slash - start), start);
        if (topic[0])
            return;
    }
    const char *base = slash ? slash + 1 : path;
    const char *dot = strrchr(base, '.');
    snprintf(topic, cap, "%.*s", (int)(dot ? (size_t)(dot - base) : strlen(base)), base);
}

static int find_column(const mn_csv *csv, const char *name) {
    for (int i = 0; i < csv->n_fields; i++)
        if (!strcmp(mn_csv_field(csv, i), name))
            return i;
    return -1;
}

/* Answer.sentenceN with N a positive decimal number; 0 otherwise. */
static int sentence_index(const char *name) {
    static const char prefix[] = "Answer.sentence";
    if (strncmp(name, prefix, sizeof prefix - 1))
        return 0;
    const char *p = name + sizeof prefix - 1;
    if (!*p || *p == '0')
        return 0;
    long n = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9' || n > 100000)
            return 0;
        n = n * 10 + (*p - '0');
    }
    return (int)n;
}

static int is_blank_or_braces(const char *s, size_t len) {
    size_t a = 0, b = len;
    while (a < b && (s[a] == ' ' || s[a] == '\t' || s[a] == '\r' || s[a] == '\n'))
        a++;
    while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t' || s[b - 1] == '\r' || s[b - 1] == '\n'))
        b--;
    return a == b || (b - a == 2 && s[a] == '{' && s[a + 1] == '}');
}

static mn_status read_row(sd_reader *r, const mn_csv *csv, const char *topic, int col_assign,
                          int col_worker, int col_reject, const sentence_column *sentences,
                          int n_sentences) {
    mn_reader_stats *stats = r->stats;
    const char *assignment = mn_csv_field(csv, col_assign);
    const char *worker = mn_csv_field(csv, col_worker);
    if (mn_csv_field_len(csv, col_reject) > 0) {
        stats->rejected_rows++;
        return MN_OK;
    }
    if (mn_strset_has(&r->blocked, worker)) {
        stats->blocked_rows++;
        return MN_OK;
    }
    if (!assignment[0] || mn_csv_field_len(csv, col_assign) != strlen(assignment))
        return mn_bad_record(r->options, &stats->read, csv->name, csv->record_line,
                             "empty or binary AssignmentId");
    int added;
    MN_TRY(mn_strset_add(&r->seen, assignment, &added));
    if (!added) {
        stats->duplicate_rows++;
        return MN_OK;
    }
    int valid = mn_self_dialogue_author_is_valid(worker, r->options->valid_percent);
    if ((r->options->split == MN_SPLIT_TRAIN && valid) ||
        (r->options->split == MN_SPLIT_VALID && !valid) || r->options->split == MN_SPLIT_TEST) {
        stats->other_split++;
        return MN_OK;
    }
    mn_dialogue d = {0};
    int cap = 0;
    size_t id_len = strlen(topic) + strlen(assignment) + 2;
    char *id = malloc(id_len);
    if (!id)
        return mn_fail(MN_ERR_NOMEM, "cannot allocate an id");
    snprintf(id, id_len, "%s/%s", topic, assignment);
    int64_t replaced = 0;
    d.id = mn_utf8_repair(id, strlen(id), NULL, &replaced);
    free(id);
    if (!d.id)
        return mn_fail(MN_ERR_NOMEM, "cannot allocate an id");
    mn_status st = MN_OK;
    for (int i = 0; i < n_sentences && st == MN_OK; i++) {
        int c = sentences[i].column;
        const char *text = mn_csv_field(csv, c);
        size_t len = mn_csv_field_len(csv, c);
        if (is_blank_or_braces(text, len)) {
            stats->read.empty_turns++;
            continue;
        }
        const char *speaker = sentences[i].index % 2 ? "A" : "B";
        st = mn_dialogue_add_text(&d, &cap, speaker, text, len, 0, NULL, r->options,
                                  &stats->read, NULL);
    }
    if (st == MN_OK && d.n_turns == 0) {
        stats->empty_dialogues++;
        mn_dialogue_free(&d);
        return MN_OK;
    }
    if (st == MN_OK)
        st = mn_dialogue_list_push(r->out, &d);
    mn_dialogue_free(&d);
    return st;
}

static mn_status read_csv(sd_reader *r, const char *name, const char *buf, size_t len) {
    char topic[256];
    topic_of(name, topic, sizeof topic);
    r->stats->files++;
    mn_csv csv;
    mn_csv_init(&csv, name, buf, len);
    int got = 0;
    mn_status st = mn_csv_next(&csv, &got);
    if (st == MN_ERR_FORMAT) {
        char reason[1024];
        snprintf(reason, sizeof reason, "%s (in the header; file skipped)", mn_last_error());
        st = mn_bad_record(r->options, &r->stats->read, NULL, 0, "%s", reason);
        mn_csv_free(&csv);
        return st;
    }
    if (st != MN_OK || !got) {
        if (st == MN_OK)
            st = mn_bad_record(r->options, &r->stats->read, name, 0, "empty file (no header)");
        mn_csv_free(&csv);
        return st;
    }
    int n_columns = csv.n_fields;
    int col_assign = find_column(&csv, "AssignmentId");
    int col_worker = find_column(&csv, "WorkerId");
    int col_reject = find_column(&csv, "Reject");
    sentence_column *sentences = malloc((size_t)n_columns * sizeof *sentences);
    if (!sentences) {
        mn_csv_free(&csv);
        return mn_fail(MN_ERR_NOMEM, "%s: cannot allocate the header", name);
    }
    /* the header lists sentence columns lexicographically: order them by their number */
    int n_sentences = 0;
    for (int i = 0; i < n_columns; i++) {
        int k = sentence_index(mn_csv_field(&csv, i));
        if (k > 0)
            sentences[n_sentences++] = (sentence_column){k, i};
    }
    qsort(sentences, (size_t)n_sentences, sizeof *sentences, cmp_sentence);
    const char *missing = col_assign < 0 ? "AssignmentId"
                          : col_worker < 0 ? "WorkerId"
                          : col_reject < 0 ? "Reject"
                          : n_sentences == 0 ? "Answer.sentence1" : NULL;
    for (int i = 1; !missing && i < n_sentences; i++)
        if (sentences[i].index == sentences[i - 1].index)
            missing = "distinct Answer.sentenceN columns";
    if (missing) {
        st = mn_bad_record(r->options, &r->stats->read, name, 1,
                           "header lacks %s (file skipped)", missing);
        free(sentences);
        mn_csv_free(&csv);
        return st;
    }
    for (;;) {
        st = mn_csv_next(&csv, &got);
        if (st == MN_ERR_FORMAT) {
            r->stats->read.lines_read++;
            char reason[1024];
            snprintf(reason, sizeof reason, "%s", mn_last_error());
            st = mn_bad_record(r->options, &r->stats->read, NULL, 0, "%s", reason);
            if (st != MN_OK)
                break;
            continue;
        }
        if (st != MN_OK || !got)
            break;
        r->stats->read.lines_read++;
        if (csv.n_fields != n_columns) {
            st = mn_bad_record(r->options, &r->stats->read, name, csv.record_line,
                               "%d fields, the header has %d", csv.n_fields, n_columns);
            if (st != MN_OK)
                break;
            continue;
        }
        st = read_row(r, &csv, topic, col_assign, col_worker, col_reject, sentences, n_sentences);
        if (st != MN_OK)
            break;
    }
    free(sentences);
    mn_csv_free(&csv);
    return st;
}

static void sd_free(sd_reader *r) {
    mn_strset_free(&r->blocked);
    mn_strset_free(&r->seen);
}

static mn_reader_stats *stats_or_local(mn_reader_stats *stats, mn_reader_stats *local) {
    memset(local, 0, sizeof *local);
    return stats ? stats : local;
}

mn_status mn_read_self_dialogue_buffer(const char *name, const char *buf, size_t len,
                                       const mn_reader_options *options,
                                       mn_dialogue_list *out, mn_reader_stats *stats) {
    mn_reader_stats local;
    mn_reader_options defaults = mn_reader_options_default();
    if (!name || (!buf && len) || !out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_read_self_dialogue_buffer: NULL argument");
    sd_reader r = {options ? options : &defaults, stats_or_local(stats, &local), out, {0}, {0}};
    mn_status st = read_csv(&r, name, buf ? buf : "", len);
    sd_free(&r);
    return st;
}

static int is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int is_file(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* blocked_workers.txt: one worker id per line. */
static mn_status load_blocked(sd_reader *r, const char *path) {
    char *buf;
    size_t len;
    MN_TRY(mn_file_read_all(path, &buf, &len));
    mn_status st = MN_OK;
    char *save = NULL;
    for (char *tok = strtok_r(buf, " \t\r\n", &save); tok && st == MN_OK;
         tok = strtok_r(NULL, " \t\r\n", &save)) {
        int added;
        st = mn_strset_add(&r->blocked, tok, &added);
    }
    free(buf);
    return st;
}

mn_status mn_read_self_dialogue(const char *dir, const mn_reader_options *options,
                                mn_dialogue_list *out, mn_reader_stats *stats) {
    mn_reader_stats local;
    mn_reader_options defaults = mn_reader_options_default();
    if (!dir || !out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_read_self_dialogue: NULL argument");
    sd_reader r = {options ? options : &defaults, stats_or_local(stats, &local), out, {0}, {0}};
    struct stat sb;
    if (stat(dir, &sb) != 0)
        return mn_fail(MN_ERR_IO, "%s: cannot read the self-dialogue corpus: %s", dir,
                       strerror(errno));
    size_t n = strlen(dir) + 64;
    char *path = malloc(n);
    if (!path)
        return mn_fail(MN_ERR_NOMEM, "cannot allocate a path");
    mn_status st = MN_OK;
    char **files = NULL;
    int n_files = 0;
    const char *root = dir;
    if (S_ISDIR(sb.st_mode)) {
        /* blocked_workers.txt sits next to corpus/; accept either folder as input */
        snprintf(path, n, "%s/blocked_workers.txt", dir);
        if (!is_file(path))
            snprintf(path, n, "%s/../blocked_workers.txt", dir);
        if (is_file(path))
            st = load_blocked(&r, path);
        else if (r.options->log)
            fprintf(r.options->log, "%s: no blocked_workers.txt here or above: no worker is "
                    "blocked\n", dir);
        snprintf(path, n, "%s/corpus", dir);
        if (is_dir(path))
            root = path;
        if (st == MN_OK)
            st = mn_list_files(root, ".csv", &files, &n_files);
        if (st == MN_OK && n_files == 0)
            st = mn_fail(MN_ERR_IO, "%s: no .csv file found", root);
    } else {
        files = malloc(sizeof *files);
        if (!files || mn_strdup(dir, &files[0]) != MN_OK)
            st = mn_fail(MN_ERR_NOMEM, "cannot allocate a path");
        else
            n_files = 1;
    }
    for (int i = 0; st == MN_OK && i < n_files; i++) {
        char *buf;
        size_t len;
        st = mn_file_read_all(files[i], &buf, &len);
        if (st != MN_OK)
            break;
        st = read_csv(&r, files[i], buf, len);
        free(buf);
    }
    mn_free_strings(files, n_files);
    free(path);
    sd_free(&r);
    return st;
}
