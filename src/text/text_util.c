#include "text/text_util.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"

mn_status mn_file_read_all(const char *path, char **buf, size_t *len) {
    *buf = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return mn_fail(MN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return mn_fail(MN_ERR_IO, "%s: not a regular file", path);
    }
    size_t size = (size_t)st.st_size;
    char *data = malloc(size + 1);
    if (!data) {
        fclose(f);
        return mn_fail(MN_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, size + 1);
    }
    size_t got = fread(data, 1, size, f);
    int failed = ferror(f);
    fclose(f);
    if (failed || got != size) {
        free(data);
        return mn_fail(MN_ERR_IO, "%s: read %zu of %zu bytes", path, got, size);
    }
    data[size] = '\0';
    *buf = data;
    *len = size;
    return MN_OK;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 if invalid or NUL. */
static size_t utf8_seq_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c == 0)
        return 0;
    if (c < 0x80)
        return 1;
    size_t need;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0)
            lo = 0xA0;  /* no overlong forms */
        else if (c == 0xED)
            hi = 0x9F;  /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;  /* <= U+10FFFF */
    } else {
        return 0;
    }
    if (n < need)
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < need; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return need;
}

int mn_utf8_valid(const char *s, size_t len) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        size_t k = utf8_seq_len(u + i, len - i);
        if (!k)
            return 0;
        i += k;
    }
    return 1;
}

char *mn_utf8_repair(const char *s, size_t len, size_t *out_len, int64_t *replaced) {
    const unsigned char *u = (const unsigned char *)s;
    size_t bad = 0, i = 0;
    while (i < len) {
        size_t k = utf8_seq_len(u + i, len - i);
        if (!k) {
            bad++;
            k = 1;
        }
        i += k;
    }
    /* each bad byte (1) becomes 3 bytes */
    char *out = malloc(len + 2 * bad + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    i = 0;
    while (i < len) {
        size_t k = utf8_seq_len(u + i, len - i);
        if (!k) {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        } else {
            memcpy(out + o, s + i, k);
            o += k;
            i += k;
        }
    }
    out[o] = '\0';
    if (out_len)
        *out_len = o;
    if (replaced)
        *replaced = (int64_t)bad;
    return out;
}

mn_status mn_strndup(const char *s, size_t len, char **out) {
    char *p = malloc(len + 1);
    if (!p)
        return mn_fail(MN_ERR_NOMEM, "cannot allocate %zu bytes", len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    *out = p;
    return MN_OK;
}

mn_status mn_strdup(const char *s, char **out) { return mn_strndup(s, strlen(s), out); }

char *mn_text_norm(const char *s) {
    size_t n = strlen(s);
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    size_t k = 0;
    int gap = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (isalnum(*p) || *p >= 0x80) {
            if (gap && k > 0)
                out[k++] = ' ';
            out[k++] = (char)tolower(*p);
            gap = 0;
        } else {
            gap = 1;
        }
    }
    out[k] = '\0';
    return out;
}

uint64_t mn_hash_str(const char *s, size_t len) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    return h ^ (h >> 31);
}

void mn_strset_free(mn_strset *set) {
    for (size_t i = 0; i < set->cap; i++)
        free(set->slots[i]);
    free(set->slots);
    memset(set, 0, sizeof *set);
}

static size_t strset_find(char **slots, size_t cap, const char *s) {
    size_t i = (size_t)mn_hash_str(s, strlen(s)) & (cap - 1);
    while (slots[i] && strcmp(slots[i], s) != 0)
        i = (i + 1) & (cap - 1);
    return i;
}

int mn_strset_has(const mn_strset *set, const char *s) {
    if (!set->cap)
        return 0;
    return set->slots[strset_find(set->slots, set->cap, s)] != NULL;
}

mn_status mn_strset_add(mn_strset *set, const char *s, int *added) {
    if ((set->count + 1) * 2 > set->cap) {  /* keep the load under 1/2 */
        size_t cap = set->cap ? set->cap * 2 : 64;
        char **slots = calloc(cap, sizeof *slots);
        if (!slots)
            return mn_fail(MN_ERR_NOMEM, "string set: cannot grow to %zu", cap);
        for (size_t i = 0; i < set->cap; i++)
            if (set->slots[i])
                slots[strset_find(slots, cap, set->slots[i])] = set->slots[i];
        free(set->slots);
        set->slots = slots;
        set->cap = cap;
    }
    size_t i = strset_find(set->slots, set->cap, s);
    if (set->slots[i]) {
        *added = 0;
        return MN_OK;
    }
    MN_TRY(mn_strdup(s, &set->slots[i]));
    set->count++;
    *added = 1;
    return MN_OK;
}

mn_status mn_bad_record(const mn_reader_options *options, mn_read_stats *stats,
                        const char *name, int64_t line, const char *fmt, ...) {
    char reason[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    stats->bad_records++;
    if (!name) {  /* the reason already names the place (e.g. a CSV parser message) */
        if (options->log)
            fprintf(options->log, "%s\n", reason);
        return options->strict ? mn_fail(MN_ERR_FORMAT, "%s", reason) : MN_OK;
    }
    if (options->log) {
        if (line > 0)
            fprintf(options->log, "%s:%lld: %s\n", name, (long long)line, reason);
        else
            fprintf(options->log, "%s: %s\n", name, reason);
    }
    if (!options->strict)
        return MN_OK;
    if (line > 0)
        return mn_fail(MN_ERR_FORMAT, "%s:%lld: %s", name, (long long)line, reason);
    return mn_fail(MN_ERR_FORMAT, "%s: %s", name, reason);
}

static int is_space(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static mn_status push_turn(mn_dialogue *d, int *cap, const char *speaker, const char *text,
                           size_t len, int session, const char *date) {
    if (d->n_turns == *cap) {
        int ncap = *cap ? *cap * 2 : 16;
        mn_turn *turns = realloc(d->turns, (size_t)ncap * sizeof *turns);
        if (!turns)
            return mn_fail(MN_ERR_NOMEM, "cannot grow turns to %d", ncap);
        d->turns = turns;
        *cap = ncap;
    }
    mn_turn t = {0};
    t.session = session;
    mn_status st = mn_strdup(speaker, &t.speaker);
    if (st == MN_OK)
        st = mn_strndup(text, len, &t.text);
    if (st == MN_OK && date)
        st = mn_strdup(date, &t.date);
    if (st != MN_OK) {
        free(t.speaker);
        free(t.text);
        free(t.date);
        return st;
    }
    d->turns[d->n_turns++] = t;
    return MN_OK;
}

mn_status mn_dialogue_add_text(mn_dialogue *d, int *cap, const char *speaker, const char *text,
                               size_t len, int session, const char *date,
                               const mn_reader_options *options, mn_read_stats *stats,
                               int *added) {
    if (added)
        *added = 0;
    int64_t replaced = 0;
    size_t clean_len = 0;
    char *clean = mn_utf8_repair(text, len, &clean_len, &replaced);
    if (!clean)
        return mn_fail(MN_ERR_NOMEM, "cannot copy a %zu-byte turn", len);
    if (replaced)
        stats->invalid_utf8++;
    size_t a = 0, b = clean_len;
    while (a < b && is_space((unsigned char)clean[a]))
        a++;
    while (b > a && is_space((unsigned char)clean[b - 1]))
        b--;
    if (a == b) {
        stats->empty_turns++;
        free(clean);
        return MN_OK;
    }
    size_t max_chars = options->max_turn_chars > 0 ? (size_t)options->max_turn_chars : 4000;
    int pieces = 0;
    mn_status st = MN_OK;
    while (a < b && st == MN_OK) {
        /* find the byte offset just past max_chars code points */
        size_t limit = a, chars = 0;
        while (limit < b && chars < max_chars) {
            limit++;
            while (limit < b && ((unsigned char)clean[limit] & 0xC0) == 0x80)
                limit++;  /* stay on a code point boundary */
            chars++;
        }
        size_t end = limit;
        if (limit < b) {
            /* cut at the last whitespace that fits; a piece with none is cut hard */
            size_t p = limit;
            if (!is_space((unsigned char)clean[p])) {
                while (p > a && !is_space((unsigned char)clean[p - 1]))
                    p--;
                if (p > a)
                    end = p - 1;
            }
        }
        size_t piece_end = end;
        while (piece_end > a && is_space((unsigned char)clean[piece_end - 1]))
            piece_end--;
        st = push_turn(d, cap, speaker, clean + a, piece_end - a, session, date);
        if (st == MN_OK)
            pieces++;
        a = end;
        while (a < b && is_space((unsigned char)clean[a]))
            a++;
    }
    free(clean);
    if (pieces > 1)
        stats->split_turns++;
    if (added)
        *added = pieces;
    return st;
}

void mn_free_strings(char **strings, int n) {
    if (!strings)
        return;
    for (int i = 0; i < n; i++)
        free(strings[i]);
    free(strings);
}

typedef struct {
    char **items;
    int n, cap;
} path_list;

static mn_status path_list_push(path_list *list, char *path) {
    if (list->n == list->cap) {
        int cap = list->cap ? list->cap * 2 : 32;
        char **items = realloc(list->items, (size_t)cap * sizeof *items);
        if (!items) {
            free(path);
            return mn_fail(MN_ERR_NOMEM, "cannot grow a file list to %d", cap);
        }
        list->items = items;
        list->cap = cap;
    }
    list->items[list->n++] = path;
    return MN_OK;
}

static mn_status walk(const char *dir, const char *suffix, path_list *list, int depth) {
    if (depth > 32)
        return mn_fail(MN_ERR_IO, "%s: directories nested too deep", dir);
    DIR *d = opendir(dir);
    if (!d)
        return mn_fail(MN_ERR_IO, "%s: cannot open directory: %s", dir, strerror(errno));
    size_t suffix_len = strlen(suffix);
    mn_status st = MN_OK;
    struct dirent *e;
    while (st == MN_OK && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        size_t n = strlen(dir) + strlen(e->d_name) + 2;
        char *path = malloc(n);
        if (!path) {
            st = mn_fail(MN_ERR_NOMEM, "cannot allocate a path");
            break;
        }
        snprintf(path, n, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (stat(path, &sb) != 0) {
            free(path);
            continue;  /* a dangling link is not a corpus file */
        }
        if (S_ISDIR(sb.st_mode)) {
            st = walk(path, suffix, list, depth + 1);
            free(path);
        } else {
            size_t len = strlen(e->d_name);
            if (S_ISREG(sb.st_mode) && len >= suffix_len &&
                !strcmp(e->d_name + len - suffix_len, suffix))
                st = path_list_push(list, path);
            else
                free(path);
        }
    }
    closedir(d);
    return st;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

mn_status mn_list_files(const char *dir, const char *suffix, char ***paths, int *n) {
    path_list list = {0};
    mn_status st = walk(dir, suffix, &list, 0);
    if (st != MN_OK) {
        mn_free_strings(list.items, list.n);
        return st;
    }
    if (list.n > 1)
        qsort(list.items, (size_t)list.n, sizeof *list.items, cmp_str);
    *paths = list.items;
    *n = list.n;
    return MN_OK;
}

int64_t mn_line_of(const char *buf, size_t len, const char *needle) {
    size_t n = strlen(needle);
    if (!n || n > len)
        return 0;
    const char *hit = memmem(buf, len, needle, n);
    if (!hit)
        return 0;
    int64_t line = 1;
    for (const char *p = buf; p < hit; p++)
        line += *p == '\n';
    return line;
}

int64_t mn_line_of_key(const char *buf, size_t len, const char *key) {
    size_t n = strlen(key) + 3;
    char *needle = malloc(n);
    if (!needle)
        return 0;
    snprintf(needle, n, "\"%s\"", key);
    int64_t line = mn_line_of(buf, len, needle);
    free(needle);
    return line;
}
