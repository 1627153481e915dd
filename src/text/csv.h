/* RFC-4180 CSV, parsed from memory: fields separated by commas, records by LF or CRLF;
 * a field may be double-quoted, and inside quotes a doubled quote is one quote and commas
 * and line breaks are data. A UTF-8 byte-order mark at the start is skipped. */
#ifndef MN_CSV_H
#define MN_CSV_H

#include <stddef.h>
#include <stdint.h>

#include "mnemo.h"

typedef struct {
    const char *name;      /* file name, for messages */
    const char *buf;
    size_t len, pos;
    int64_t line;          /* 1-based line of buf[pos] */
    /* the current record: fields point into `data` (each NUL-terminated) */
    char *data;
    size_t data_cap;
    size_t *offsets;
    size_t *lengths;       /* field lengths (a field may hold NUL bytes) */
    int n_fields, fields_cap;
    int64_t record_line;   /* line where the current record starts */
} mn_csv;

/* The parser reads buf (not copied: it must outlive the parser). */
void mn_csv_init(mn_csv *csv, const char *name, const char *buf, size_t len);
void mn_csv_free(mn_csv *csv);

/* Parses the next record. Returns MN_OK with *got = 1 (a record) or 0 (end of input).
 * A malformed record (stray quote, text after a closing quote, an unterminated quote)
 * returns MN_ERR_FORMAT, message "name:line: reason"; the parser has then moved on to the
 * line after the one where the record started, so the caller may continue. */
mn_status mn_csv_next(mn_csv *csv, int *got);

static inline const char *mn_csv_field(const mn_csv *csv, int i) {
    return csv->data + csv->offsets[i];
}
static inline size_t mn_csv_field_len(const mn_csv *csv, int i) { return csv->lengths[i]; }

#endif
