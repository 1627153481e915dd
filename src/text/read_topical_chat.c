/* Topical-Chat conversations JSON: {conversation_id: {content: [{agent, message, ...}]}}
 * (../shared/data/topical_chat/SOURCE.md). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "text/json_doc.h"
#include "text/readers.h"
#include "text/text_util.h"

/* Converts one conversation; a malformed one is a bad record (reported at its id's line). */
static mn_status read_conversation(const mn_json_doc *doc, const char *key, size_t index,
                                   json_t *conv) {
    (void)index;
    const mn_reader_options *options = doc->options;
    mn_reader_stats *stats = doc->stats;
    stats->read.lines_read++;
    json_t *content = json_object_get(conv, "content");
    const char *problem = !json_is_object(conv) ? "not an object"
                          : !json_is_array(content) ? "content: missing or not an array"
                          : NULL;
    size_t n = problem ? 0 : json_array_size(content);
    for (size_t i = 0; !problem && i < n; i++) {
        json_t *t = json_array_get(content, i);
        json_t *agent = json_object_get(t, "agent");
        if (!json_is_object(t))
            problem = "a turn is not an object";
        else if (!json_is_string(agent) || json_string_length(agent) == 0 ||
                 strlen(json_string_value(agent)) != json_string_length(agent))
            problem = "a turn's agent is missing or not a non-empty string";
        else if (!json_is_string(json_object_get(t, "message")))
            problem = "a turn's message is missing or not a string";
    }
    if (problem)
        return mn_bad_record(options, &stats->read, doc->name, mn_line_of_key(doc->buf, doc->len, key),
                             "conversation %s: %s", key, problem);
    mn_dialogue d = {0};
    int cap = 0;
    mn_status st = MN_OK;
    d.id = mn_utf8_repair(key, strlen(key), NULL, NULL);
    if (!d.id)
        st = mn_fail(MN_ERR_NOMEM, "cannot copy an id");
    for (size_t i = 0; st == MN_OK && i < n; i++) {
        json_t *t = json_array_get(content, i);
        json_t *message = json_object_get(t, "message");
        st = mn_dialogue_add_text(&d, &cap, json_string_value(json_object_get(t, "agent")),
                                  json_string_value(message), json_string_length(message), 0,
                                  NULL, options, &stats->read, NULL);
    }
    if (st == MN_OK && d.n_turns == 0)
        stats->empty_dialogues++;
    else if (st == MN_OK)
        st = mn_dialogue_list_push(doc->out, &d);
    mn_dialogue_free(&d);
    return st;
}

static const mn_json_format topical_chat = {MN_JSON_OBJECT, "an object of conversations", read_conversation};

mn_status mn_read_topical_chat_buffer(const char *name, const char *buf, size_t len,
                                      const mn_reader_options *options,
                                      mn_dialogue_list *out, mn_reader_stats *stats) {
    if (!name || (!buf && len) || !out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_read_topical_chat_buffer: NULL argument");
    return mn_json_doc_read(&topical_chat, name, buf, len, options, out, stats);
}

mn_status mn_read_topical_chat(const char *path, const mn_reader_options *options,
                               mn_dialogue_list *out, mn_reader_stats *stats) {
    mn_reader_stats local = {0};
    mn_reader_options defaults = mn_reader_options_default();
    if (!path || !out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_read_topical_chat: NULL argument");
    if (!options)
        options = &defaults;
    if (!stats)
        stats = &local;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return mn_fail(MN_ERR_IO, "%s: cannot read Topical-Chat: %s", path, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return mn_json_doc_read_file(&topical_chat, path, options, out, stats);
    static const char *const valid[] = {"valid_freq.json", "valid_rare.json", NULL};
    static const char *const test[] = {"test_freq.json", "test_rare.json", NULL};
    static const char *const train[] = {"train.json", NULL};
    static const char *const all[] = {"valid_freq.json", "valid_rare.json", "test_freq.json",
                                      "test_rare.json", NULL};
    const char *const *names = options->split == MN_SPLIT_VALID ? valid
                               : options->split == MN_SPLIT_TEST ? test
                               : options->split == MN_SPLIT_TRAIN ? train
                               : all;
    size_t n = strlen(path) + 64;
    char *dir = malloc(n), *file = malloc(n);
    if (!dir || !file) {
        free(dir);
        free(file);
        return mn_fail(MN_ERR_NOMEM, "cannot allocate a path");
    }
    /* the files sit in conversations/ of the corpus folder; accept either folder */
    snprintf(dir, n, "%s/conversations", path);
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        snprintf(dir, n, "%s", path);
    mn_status st = MN_OK;
    for (int i = 0; names[i] && st == MN_OK; i++) {
        snprintf(file, n, "%s/%s", dir, names[i]);
        st = mn_json_doc_read_file(&topical_chat, file, options, out, stats);
    }
    free(dir);
    free(file);
    return st;
}
