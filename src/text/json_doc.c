/* JSON input of the corpus readers (json_doc.h). */
#include "text/json_doc.h"

#include <stdlib.h>

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

mn_status mn_json_doc_read(const mn_json_format *format, const char *name, const char *buf, size_t len,
                           const mn_reader_options *options, mn_dialogue_list *out,
                           mn_reader_stats *stats) {
    mn_reader_stats local = {0};
    mn_reader_options defaults = mn_reader_options_default();
    mn_json_doc doc = {name, buf ? buf : "", len, options ? options : &defaults, out, stats ? stats : &local};
    doc.stats->files++;
    json_t *root;
    MN_TRY(mn_json_parse(name, 1, doc.buf, len, doc.options, &doc.stats->read, &root));
    if (!root)
        return MN_OK; /* reported and skipped */
    mn_status st = MN_OK;
    if (json_typeof(root) != format->top) {
        st = mn_bad_record(doc.options, &doc.stats->read, name, 1, "top level is not %s (file skipped)", format->what);
    } else if (format->top == JSON_OBJECT) {
        const char *key;
        json_t *record;
        size_t index = 0;
        json_object_foreach(root, key, record) {
            st = format->read_record(&doc, key, index++, record);
            if (st != MN_OK)
                break;
        }
    } else {
        for (size_t i = 0; i < json_array_size(root) && st == MN_OK; i++)
            st = format->read_record(&doc, NULL, i, json_array_get(root, i));
    }
    json_decref(root);
    return st;
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
