/* Helpers shared by the corpus readers: whole-file loading, UTF-8 repair, a string set,
 * bad-record reporting and adding a cleaned turn to a dialogue (their JSON input is
 * json_doc.h). Internal to src/text, but for mn_file_read_all (also `mnemo tokenizer --file`)
 * and mn_utf8_repair (also the chat's sampled replies). */
#ifndef MN_TEXT_UTIL_H
#define MN_TEXT_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "text/readers.h"

/* Reads a whole file into a NUL-terminated malloc'd buffer. Errors name the path. */
mn_status mn_file_read_all(const char *path, char **buf, size_t *len);

/* 1 if s[0..len) is valid UTF-8 with no NUL byte (shortest forms, no surrogates, <= U+10FFFF). */
int mn_utf8_valid(const char *s, size_t len);
/* Copies s[0..len) into a new NUL-terminated string, each invalid byte (or NUL) replaced by
 * U+FFFD. *replaced (nullable) = number of replacements. */
char *mn_utf8_repair(const char *s, size_t len, size_t *out_len, int64_t *replaced);

/* strdup that reports MN_ERR_NOMEM. */
mn_status mn_strdup(const char *s, char **out);
mn_status mn_strndup(const char *s, size_t len, char **out);

/* Lower-cased letters and digits, other runs collapsed to one space: "I like dogs!" and
 * "i like  dogs" are the same fact, "What's your {key}?" and "what s your key" the same
 * phrasing. Bytes >= 0x80 (UTF-8) count as letters. NULL when out of memory. */
char *mn_text_norm(const char *s);

/* 64-bit FNV-1a, finalised with a splitmix step so that nearby strings spread. */
uint64_t mn_hash_str(const char *s, size_t len);

/* An open-addressing set of strings (copies kept). */
typedef struct {
    char **slots;
    size_t cap, count;
} mn_strset;
void mn_strset_free(mn_strset *set);
/* *added = 1 if s was new (and is now in the set), 0 if already present. */
mn_status mn_strset_add(mn_strset *set, const char *s, int *added);
int mn_strset_has(const mn_strset *set, const char *s);

/* Reports a bad record: "name:line: reason" to options->log, counts it, and returns MN_OK
 * (skip) or MN_ERR_FORMAT with the same message (strict). line <= 0 omits the line;
 * name NULL means the reason already names the place. */
mn_status mn_bad_record(const mn_reader_options *options, mn_read_stats *stats,
                        const char *name, int64_t line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* 1-based line of the first occurrence of needle in buf, 0 if absent. Used to point at
 * a JSON object by its id, since jansson gives no line for a value. */
int64_t mn_line_of(const char *buf, size_t len, const char *needle);
/* Line of "key" (quoted) in buf, 0 if absent. */
int64_t mn_line_of_key(const char *buf, size_t len, const char *key);

/* Appends a turn built from raw text: repaired (counted in invalid_utf8), trimmed, dropped if
 * empty (counted), split at whitespace into pieces of at most max_turn_chars code points
 * (counted in split_turns). *added (nullable) = turns appended (0 if dropped). `date` may be
 * NULL; speaker and date are copied. `cap` is the turns array capacity, kept by the caller. */
mn_status mn_dialogue_add_text(mn_dialogue *d, int *cap, const char *speaker, const char *text,
                               size_t len, int session, const char *date,
                               const mn_reader_options *options, mn_read_stats *stats,
                               int *added);

/* Sorted list of regular files under dir (recursively) whose name ends in suffix. */
mn_status mn_list_files(const char *dir, const char *suffix, char ***paths, int *n);
void mn_free_strings(char **strings, int n);

#endif
