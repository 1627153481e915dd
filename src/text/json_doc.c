/* JSON input of the corpus readers (json_doc.h). */
#include "text/json_doc.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "text/text_util.h"

mn_status mn_json_parse(const char *name, int64_t first_line, const char *text, size_t len,
                        const mn_reader_options *options, mn_read_stats *stats, json_t **root) {
    *root = NULL;
    char *fixed = NULL;
    if (!mn_utf8_valid(text, len)) {
        /* jansson refuses invalid UTF-8 anywhere; repair it so that the records survive */
        size_t fixed_len = 0;
        fixed = mn_utf8_repair(text, len, &fixed_len, NULL);
        if (!fixed)
            return mn_fail(MN_ERR_NOMEM, "%s:%lld: cannot copy %zu bytes", name, (long long)first_line, len);
        stats->invalid_utf8++;
        text = fixed;
        len = fixed_len;
    }
    json_error_t jerr;
    *root = json_loadb(text, len, 0, &jerr);
    free(fixed);
    if (!*root)
        return mn_bad_record(options, stats, name, first_line + (jerr.line > 0 ? jerr.line - 1 : 0),
                             "invalid JSON (column %d): %s", jerr.column, jerr.text);
    return MN_OK;
}

mn_status mn_json_load_file(const char *path, size_t flags, json_t **root) {
    *root = NULL;
    char *text;
    size_t len;
    MN_TRY(mn_file_read_all(path, &text, &len));
    json_error_t jerr;
    *root = json_loadb(text, len, flags, &jerr);
    free(text);
    if (!*root)
        return mn_fail(MN_ERR_FORMAT, "%s:%d: invalid JSON (column %d): %s", path, jerr.line, jerr.column, jerr.text);
    return MN_OK;
}

/* Each non-blank line is one document. */
static mn_status read_lines(const mn_json_format *format, const mn_json_doc *doc) {
    size_t pos = 0;
    int64_t line = 0;
    while (pos < doc->len) {
        line++;
        const char *start = doc->buf + pos;
        const char *nl = memchr(start, '\n', doc->len - pos);
        size_t n = nl ? (size_t)(nl - start) : doc->len - pos;
        pos += n + (nl ? 1 : 0);
        size_t k = 0;
        while (k < n && (start[k] == ' ' || start[k] == '\t' || start[k] == '\r'))
            k++;
        if (k == n)
            continue; /* blank lines hold no record */
        doc->stats->read.lines_read++;
        json_t *record;
        MN_TRY(mn_json_parse(doc->name, line, start, n, doc->options, &doc->stats->read, &record));
        if (!record)
            continue; /* reported and skipped */
        mn_status st = format->read_record(doc, NULL, (size_t)line, record);
        json_decref(record);
        MN_TRY(st);
    }
    return MN_OK;
}

/* The whole text is one document whose top level holds the records. */
static mn_status read_document(const mn_json_format *format, const mn_json_doc *doc) {
    json_t *root;
    MN_TRY(mn_json_parse(doc->name, 1, doc->buf, doc->len, doc->options, &doc->stats->read, &root));
    if (!root)
        return MN_OK; /* reported and skipped */
    mn_status st = MN_OK;
    if (!(format->layout == MN_JSON_OBJECT ? json_is_object(root) : json_is_array(root))) {
        st = mn_bad_record(doc->options, &doc->stats->read, doc->name, 1, "top level is not %s (file skipped)",
                           format->what);
    } else if (format->layout == MN_JSON_OBJECT) {
        const char *key;
        json_t *record;
        size_t index = 0;
        json_object_foreach(root, key, record) {
            st = format->read_record(doc, key, index++, record);
            if (st != MN_OK)
                break;
        }
    } else {
        for (size_t i = 0; i < json_array_size(root) && st == MN_OK; i++)
            st = format->read_record(doc, NULL, i, json_array_get(root, i));
    }
    json_decref(root);
    return st;
}

mn_status mn_json_doc_read(const mn_json_format *format, const char *name, const char *buf, size_t len,
                           const mn_reader_options *options, mn_dialogue_list *out,
                           mn_reader_stats *stats) {
    mn_reader_stats local = {0};
    mn_reader_options defaults = mn_reader_options_default();
    mn_json_doc doc = {name, buf ? buf : "", len, options ? options : &defaults, out, stats ? stats : &local};
    doc.stats->files++;
    return format->layout == MN_JSON_LINES ? read_lines(format, &doc) : read_document(format, &doc);
}

mn_status mn_json_doc_read_file(const mn_json_format *format, const char *path,
                                const mn_reader_options *options, mn_dialogue_list *out,
                                mn_reader_stats *stats) {
    char *buf;
    size_t len;
    MN_TRY(mn_file_read_all(path, &buf, &len));
    mn_status st = mn_json_doc_read(format, path, buf, len, options, out, stats);
    free(buf);
    return st;
}
