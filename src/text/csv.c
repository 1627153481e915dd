#include "text/csv.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"

void mn_csv_init(mn_csv *csv, const char *name, const char *buf, size_t len) {
    memset(csv, 0, sizeof *csv);
    csv->name = name;
    csv->buf = buf;
    csv->len = len;
    csv->line = 1;
    if (len >= 3 && !memcmp(buf, "\xEF\xBB\xBF", 3))
        csv->pos = 3;
}

void mn_csv_free(mn_csv *csv) {
    free(csv->data);
    free(csv->offsets);
    free(csv->lengths);
    memset(csv, 0, sizeof *csv);
}

static mn_status put_byte(mn_csv *csv, size_t *used, char c) {
    if (*used == csv->data_cap) {
        size_t cap = csv->data_cap ? csv->data_cap * 2 : 4096;
        char *data = realloc(csv->data, cap);
        if (!data)
            return mn_fail(MN_ERR_NOMEM, "%s: cannot grow a CSV record to %zu bytes",
                           csv->name, cap);
        csv->data = data;
        csv->data_cap = cap;
    }
    csv->data[(*used)++] = c;
    return MN_OK;
}

static mn_status start_field(mn_csv *csv, size_t used) {
    if (csv->n_fields == csv->fields_cap) {
        int cap = csv->fields_cap ? csv->fields_cap * 2 : 64;
        size_t *offsets = realloc(csv->offsets, (size_t)cap * sizeof *offsets);
        if (!offsets)
            return mn_fail(MN_ERR_NOMEM, "%s: too many CSV fields", csv->name);
        csv->offsets = offsets;
        size_t *lengths = realloc(csv->lengths, (size_t)cap * sizeof *lengths);
        if (!lengths)
            return mn_fail(MN_ERR_NOMEM, "%s: too many CSV fields", csv->name);
        csv->lengths = lengths;
        csv->fields_cap = cap;
    }
    csv->offsets[csv->n_fields] = used;
    csv->lengths[csv->n_fields] = 0;
    csv->n_fields++;
    return MN_OK;
}

/* Skips the rest of the line where the bad record started, so parsing can go on. */
static mn_status malformed(mn_csv *csv, size_t record_start, const char *reason) {
    int64_t line = csv->record_line;
    const char *nl = memchr(csv->buf + record_start, '\n', csv->len - record_start);
    csv->pos = nl ? (size_t)(nl - csv->buf) + 1 : csv->len;
    csv->line = line + 1;
    csv->n_fields = 0;
    return mn_fail(MN_ERR_FORMAT, "%s:%lld: malformed CSV record: %s", csv->name,
                   (long long)line, reason);
}

mn_status mn_csv_next(mn_csv *csv, int *got) {
    *got = 0;
    csv->n_fields = 0;
    const char *b = csv->buf;
    size_t n = csv->len;
    /* blank lines between records carry nothing */
    while (csv->pos < n && (b[csv->pos] == '\n' ||
                            (b[csv->pos] == '\r' && csv->pos + 1 < n && b[csv->pos + 1] == '\n'))) {
        csv->pos += b[csv->pos] == '\r' ? 2 : 1;
        csv->line++;
    }
    if (csv->pos >= n)
        return MN_OK;
    size_t record_start = csv->pos;
    csv->record_line = csv->line;
    size_t used = 0;
    for (;;) {
        MN_TRY(start_field(csv, used));
        size_t field_start = used;
        size_t p = csv->pos;
        if (p < n && b[p] == '"') {
            p++;
            for (;;) {
                if (p >= n)
                    return malformed(csv, record_start, "quoted field not closed before the end of the file");
                char c = b[p];
                if (c == '"') {
                    if (p + 1 < n && b[p + 1] == '"') {
                        MN_TRY(put_byte(csv, &used, '"'));
                        p += 2;
                        continue;
                    }
                    p++;
                    break;
                }
                if (c == '\n')
                    csv->line++;
                MN_TRY(put_byte(csv, &used, c));
                p++;
            }
            if (p < n && b[p] != ',' && b[p] != '\n' &&
                !(b[p] == '\r' && p + 1 < n && b[p + 1] == '\n'))
                return malformed(csv, record_start, "text after a closing quote");
        } else {
            while (p < n && b[p] != ',' && b[p] != '\n' &&
                   !(b[p] == '\r' && p + 1 < n && b[p + 1] == '\n')) {
                if (b[p] == '"')
                    return malformed(csv, record_start, "quote inside an unquoted field");
                MN_TRY(put_byte(csv, &used, b[p]));
                p++;
            }
        }
        csv->lengths[csv->n_fields - 1] = used - field_start;
        MN_TRY(put_byte(csv, &used, '\0'));
        if (p < n && b[p] == ',') {
            csv->pos = p + 1;
            continue;
        }
        if (p < n) {  /* LF or CRLF ends the record */
            p += b[p] == '\r' ? 2 : 1;
            csv->line++;
        }
        csv->pos = p;
        break;
    }
    *got = 1;
    return MN_OK;
}
