/* The JSON input of the corpus readers: one parser for a whole JSON file and for each line of
 * a JSON-lines file (invalid UTF-8 repaired first, a parse error reported as "file:line:
 * reason"), and the reading of a JSON corpus file whose top level is an object or an array of
 * records (Topical-Chat, LoCoMo, Chit-Chat). Internal to src/text. */
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

/* One JSON corpus file being read, as its records see it. */
typedef struct {
    const char *name;                 /* the file, for messages */
    const char *buf;                  /* its text, to find a record's line (mn_line_of) */
    size_t len;
    const mn_reader_options *options; /* never NULL */
    mn_dialogue_list *out;
    mn_reader_stats *stats;           /* never NULL */
} mn_json_doc;

/* A corpus format: the top level's type (JSON_OBJECT or JSON_ARRAY), what it is called in
 * "top level is not <what> (file skipped)", and the function that converts one record: key is
 * its member name (object) or NULL (array), index its position. */
typedef struct {
    json_type top;
    const char *what;
    mn_status (*read_record)(const mn_json_doc *doc, const char *key, size_t index, json_t *record);
} mn_json_format;

/* Reads one file of the format from memory: NULL options and stats take the defaults, the
 * file is counted in stats->files, parsed with mn_json_parse, and each record handed to
 * read_record in order until one fails. */
mn_status mn_json_doc_read(const mn_json_format *format, const char *name, const char *buf, size_t len,
                           const mn_reader_options *options, mn_dialogue_list *out,
                           mn_reader_stats *stats);
/* The same for the file at path (read whole; errors name the path). */
mn_status mn_json_doc_read_file(const mn_json_format *format, const char *path,
                                const mn_reader_options *options, mn_dialogue_list *out,
                                mn_reader_stats *stats);

#endif
