/* The JSON input of the corpus readers: one parser for a whole JSON file and for each line of
 * a JSON-lines file (invalid UTF-8 repaired first, a parse error reported as "file:line:
 * reason"), and one reader of a corpus file whose records are the members of an object, the
 * elements of an array (Topical-Chat, Chit-Chat, LoCoMo) or its lines (canonical JSONL);
 * and the loader of any other whole JSON file (templates, personas, GPT-2's config.json), so
 * that every JSON input is refused with the same kind of message. Internal to the library. */
#ifndef MN_JSON_DOC_H
#define MN_JSON_DOC_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "text/readers.h"

/* Parses text[0..len), which starts at line first_line of the file `name`. jansson refuses
 * invalid UTF-8, so each invalid byte is first replaced by U+FFFD (the text then counts once
 * in stats->invalid_utf8). Unparseable: a bad record at the line jansson names
 * (mn_bad_record): *root = NULL and MN_OK, or MN_ERR_FORMAT when options->strict. */
mn_status mn_json_parse(const char *name, int64_t first_line, const char *text, size_t len,
                        const mn_reader_options *options, mn_read_stats *stats, json_t **root);

/* A whole JSON file, parsed with jansson's flags: "path: cannot open: <errno text>" (MN_ERR_IO)
 * when it cannot be read, "path:LINE: invalid JSON (column C): <reason>" (MN_ERR_FORMAT) when
 * it does not parse. */
mn_status mn_json_load_file(const char *path, size_t flags, json_t **root);

/* One JSON corpus file being read, as its records see it. */
typedef struct {
    const char *name;                 /* the file, for messages */
    const char *buf;                  /* its text, to find a record's line (mn_line_of) */
    size_t len;
    const mn_reader_options *options; /* never NULL */
    mn_dialogue_list *out;
    mn_reader_stats *stats;           /* never NULL */
} mn_json_doc;

/* How a file holds its records. */
typedef enum {
    MN_JSON_OBJECT, /* one document, an object: each member is a record, key = its name */
    MN_JSON_ARRAY,  /* one document, an array: each element is a record */
    MN_JSON_LINES,  /* JSON lines: each non-blank line is a record (counted in lines_read) */
} mn_json_layout;

/* A corpus format: its layout, what a document's top level is called in "top level is not
 * <what> (file skipped)", and the function that converts one record. index is the member's
 * position (object), the element's index (array) or the 1-based line number (lines); key
 * is NULL but for objects. */
typedef struct {
    mn_json_layout layout;
    const char *what;
    mn_status (*read_record)(const mn_json_doc *doc, const char *key, size_t index, json_t *record);
} mn_json_format;

/* Reads one file of the format from memory: NULL options and stats take the defaults, the
 * file is counted in stats->files, parsed with mn_json_parse (each line on its own for
 * JSON lines), and each record handed to read_record in order until one fails. */
mn_status mn_json_doc_read(const mn_json_format *format, const char *name, const char *buf, size_t len,
                           const mn_reader_options *options, mn_dialogue_list *out,
                           mn_reader_stats *stats);
/* The same for the file at path (read whole; errors name the path). */
mn_status mn_json_doc_read_file(const mn_json_format *format, const char *path,
                                const mn_reader_options *options, mn_dialogue_list *out,
                                mn_reader_stats *stats);

#endif
