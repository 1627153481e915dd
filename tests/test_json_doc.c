/* The corpus readers' JSON input (src/text/json_doc.h): parse errors at the right file:line for
 * whole documents and JSON-lines records alike, invalid UTF-8 repaired and counted, and the
 * walk over the records of a document's top level or of a file's lines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/error.h"
#include "mnemo.h"
#include "text/json_doc.h"

/* the bad comma is on the document's third line, column 8 */
static const char bad_doc[] = "{\n  \"a\": 1,\n  \"b\": ,\n  \"c\": 2\n}\n";

static void test_parse_error_names_file_and_line(void **state) {
    (void)state;
    char *log_text = NULL;
    size_t log_len = 0;
    mn_reader_options opt = mn_reader_options_default();
    opt.log = open_memstream(&log_text, &log_len);
    mn_read_stats stats = {0};
    json_t *root = (json_t *)&root;
    /* a whole document: jansson's line */
    assert_int_equal(mn_json_parse("doc.json", 1, bad_doc, strlen(bad_doc), &opt, &stats, &root), MN_OK);
    assert_null(root);
    /* the same text starting at line 10 of its file (a JSON-lines record): lines count on */
    assert_int_equal(mn_json_parse("doc.jsonl", 10, bad_doc, strlen(bad_doc), &opt, &stats, &root), MN_OK);
    assert_null(root);
    fflush(opt.log);
    assert_non_null(strstr(log_text, "doc.json:3: invalid JSON (column 8)"));
    assert_non_null(strstr(log_text, "doc.jsonl:12: invalid JSON (column 8)"));
    assert_int_equal(stats.bad_records, 2);
    /* strict: the same message is the error */
    opt.strict = 1;
    assert_int_equal(mn_json_parse("doc.json", 1, bad_doc, strlen(bad_doc), &opt, &stats, &root), MN_ERR_FORMAT);
    assert_null(root);
    assert_non_null(strstr(mn_last_error(), "doc.json:3: invalid JSON"));
    fclose(opt.log);
    free(log_text);
}

static void test_parse_repairs_invalid_utf8(void **state) {
    (void)state;
    mn_reader_options opt = mn_reader_options_default();
    opt.strict = 1;
    mn_read_stats stats = {0};
    const char text[] = "{\"t\": \"a\xff" "b\xc0\"}";
    json_t *root = NULL;
    assert_int_equal(mn_json_parse("u.json", 1, text, strlen(text), &opt, &stats, &root), MN_OK);
    assert_non_null(root);
    assert_string_equal(json_string_value(json_object_get(root, "t")), "a\xEF\xBF\xBD" "b\xEF\xBF\xBD");
    assert_int_equal(stats.invalid_utf8, 1); /* one text repaired */
    assert_int_equal(stats.bad_records, 0);
    json_decref(root);
    /* valid text is parsed as it is and counts nothing */
    assert_int_equal(mn_json_parse("v.json", 1, "[1, 2]", 6, &opt, &stats, &root), MN_OK);
    assert_int_equal(json_array_size(root), 2);
    assert_int_equal(stats.invalid_utf8, 1);
    json_decref(root);
}

/* Records seen by the walk, as "key/index=value;" ("-" for no key); a record is a number, or
 * (JSON lines, whose documents are objects or arrays) a list holding one. */
static char seen[256];

static mn_status note_record(const mn_json_doc *doc, const char *key, size_t index, json_t *record) {
    if (json_is_array(record))
        record = json_array_get(record, 0);
    size_t n = strlen(seen);
    snprintf(seen + n, sizeof seen - n, "%s/%zu=%lld;", key ? key : "-", index,
             (long long)json_integer_value(record));
    if (json_integer_value(record) < 0)
        return mn_fail(MN_ERR_FORMAT, "%s: record %zu is negative", doc->name, index);
    return MN_OK;
}

static void test_doc_read_walks_records(void **state) {
    (void)state;
    const mn_json_format objects = {MN_JSON_OBJECT, "an object of numbers", note_record};
    const mn_json_format arrays = {MN_JSON_ARRAY, "a list of numbers", note_record};
    mn_dialogue_list out = {0};
    mn_reader_stats stats = {0};
    const char *obj = "{\"x\": 1, \"y\": 2, \"z\": 3}", *arr = "[4, 5]";
    seen[0] = '\0';
    assert_int_equal(mn_json_doc_read(&objects, "o.json", obj, strlen(obj), NULL, &out, &stats), MN_OK);
    assert_string_equal(seen, "x/0=1;y/1=2;z/2=3;"); /* in file order */
    seen[0] = '\0';
    assert_int_equal(mn_json_doc_read(&arrays, "a.json", arr, strlen(arr), NULL, &out, &stats), MN_OK);
    assert_string_equal(seen, "-/0=4;-/1=5;");
    assert_int_equal(stats.files, 2);
    /* the wrong top level skips the file as one bad record, naming it */
    char *log_text = NULL;
    size_t log_len = 0;
    mn_reader_options opt = mn_reader_options_default();
    opt.log = open_memstream(&log_text, &log_len);
    seen[0] = '\0';
    assert_int_equal(mn_json_doc_read(&objects, "a.json", arr, strlen(arr), &opt, &out, &stats), MN_OK);
    fflush(opt.log);
    assert_string_equal(seen, "");
    assert_non_null(strstr(log_text, "a.json:1: top level is not an object of numbers (file skipped)"));
    assert_int_equal(stats.read.bad_records, 1);
    assert_int_equal(stats.files, 3);
    fclose(opt.log);
    free(log_text);
    /* a record's error stops the walk and is returned */
    const char *neg = "[7, -1, 8]";
    seen[0] = '\0';
    assert_int_equal(mn_json_doc_read(&arrays, "n.json", neg, strlen(neg), NULL, &out, &stats), MN_ERR_FORMAT);
    assert_string_equal(seen, "-/0=7;-/1=-1;");
    assert_non_null(strstr(mn_last_error(), "n.json: record 1 is negative"));
    /* a file that is not there: the path and the reason */
    assert_int_equal(mn_json_doc_read_file(&arrays, "/nonexistent/x.json", NULL, &out, &stats), MN_ERR_IO);
    assert_non_null(strstr(mn_last_error(), "/nonexistent/x.json"));
    assert_int_equal(out.count, 0);
}

static void test_doc_read_lines(void **state) {
    (void)state;
    const mn_json_format lines = {MN_JSON_LINES, "JSON lines", note_record};
    mn_dialogue_list out = {0};
    mn_reader_stats stats = {0};
    char *log_text = NULL;
    size_t log_len = 0;
    mn_reader_options opt = mn_reader_options_default();
    opt.log = open_memstream(&log_text, &log_len);
    /* a blank line, one of spaces and CR, a bad line and no final newline: records are
     * handed over with their line numbers, the bad line is reported at its own */
    const char *text = "[1]\n\n [2] \n \t\r\n[3\n[4]";
    seen[0] = '\0';
    assert_int_equal(mn_json_doc_read(&lines, "l.jsonl", text, strlen(text), &opt, &out, &stats), MN_OK);
    fflush(opt.log);
    assert_string_equal(seen, "-/1=1;-/3=2;-/6=4;");
    assert_non_null(strstr(log_text, "l.jsonl:5: invalid JSON"));
    assert_int_equal(stats.read.lines_read, 4); /* blank lines are not records */
    assert_int_equal(stats.read.bad_records, 1);
    assert_int_equal(stats.files, 1);
    fclose(opt.log);
    free(log_text);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_error_names_file_and_line),
        cmocka_unit_test(test_parse_repairs_invalid_utf8),
        cmocka_unit_test(test_doc_read_walks_records),
        cmocka_unit_test(test_doc_read_lines),
    };
    return cmocka_run_group_tests_name("json_doc", tests, NULL, NULL);
}
