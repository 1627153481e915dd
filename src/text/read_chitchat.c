/* BYU Chit-Chat dataset.json, as bundled in the PyPI wheel chitchat-dataset 0.9.0:
 * {uuid: {messages: [[{text, timestamp, sender}, ...], ...], prompt, ratings, start}}.
 * Get the file with
 *   python3 -m pip install chitchat-dataset
 *   python3 -c 'import chitchat_dataset,os;print(os.path.join(os.path.dirname(chitchat_dataset.__file__),"dataset.json"))'
 * or unzip chitchat_dataset/dataset.json from the wheel (pip download --no-deps). */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "text/json_doc.h"
#include "text/readers.h"
#include "text/text_util.h"

/* Sender UUIDs are pseudonymous ids: speakers become "A", "B", ... by first appearance. */
static void speaker_name(int index, char *out, size_t cap) {
    if (index < 26)
        snprintf(out, cap, "%c", 'A' + index);
    else
        snprintf(out, cap, "S%d", index + 1);
}

static const char *check_conversation(json_t *conv) {
    json_t *messages = json_object_get(conv, "messages");
    if (!json_is_object(conv))
        return "not an object";
    if (!json_is_array(messages))
        return "messages: missing or not a list";
    for (size_t i = 0; i < json_array_size(messages); i++) {
        json_t *m = json_array_get(messages, i);
        if (!json_is_array(m))
            return "a message is not a list of utterances";
        for (size_t j = 0; j < json_array_size(m); j++) {
            json_t *u = json_array_get(m, j);
            json_t *ts = json_object_get(u, "timestamp");
            if (!json_is_object(u) || !json_is_string(json_object_get(u, "text")) ||
                !json_is_string(json_object_get(u, "sender")) || (ts && !json_is_string(ts)))
                return "an utterance lacks a text or sender string";
        }
    }
    return NULL;
}

static mn_status read_conversation(const mn_json_doc *doc, const char *key, size_t index,
                                   json_t *conv) {
    (void)index;
    const mn_reader_options *options = doc->options;
    mn_reader_stats *stats = doc->stats;
    stats->read.lines_read++;
    const char *problem = check_conversation(conv);
    if (problem)
        return mn_bad_record(options, &stats->read, doc->name, mn_line_of_key(doc->buf, doc->len, key),
                             "conversation %s: %s", key, problem);
    json_t *messages = json_object_get(conv, "messages");
    mn_dialogue d = {0};
    mn_strset senders = {0};
    const char **order = NULL;  /* senders by first appearance, for the speaker letter */
    int n_order = 0, cap = 0;
    char *joined = NULL;
    size_t joined_cap = 0;
    mn_status st = mn_strdup(key, &d.id);
    size_t n_messages = json_array_size(messages);
    for (size_t i = 0; st == MN_OK && i < n_messages; i++) {
        json_t *m = json_array_get(messages, i);
        if (json_array_size(m) == 0) {
            stats->read.empty_turns++;
            continue;
        }
        json_t *first = json_array_get(m, 0);
        const char *sender = json_string_value(json_object_get(first, "sender"));
        int added, who = -1;
        st = mn_strset_add(&senders, sender, &added);
        if (st != MN_OK)
            break;
        for (int s = 0; s < n_order && who < 0; s++)
            if (!strcmp(order[s], sender))
                who = s;
        if (who < 0) {
            const char **grown = realloc(order, (size_t)(n_order + 1) * sizeof *order);
            if (!grown) {
                st = mn_fail(MN_ERR_NOMEM, "cannot grow the sender list");
                break;
            }
            order = grown;
            order[n_order] = sender;
            who = n_order++;
        }
        /* one turn per message: its utterances joined by a space, as the package does */
        size_t need = 1;
        for (size_t j = 0; j < json_array_size(m); j++)
            need += json_string_length(json_object_get(json_array_get(m, j), "text")) + 1;
        if (need > joined_cap) {
            char *grown = realloc(joined, need);
            if (!grown) {
                st = mn_fail(MN_ERR_NOMEM, "cannot allocate a %zu-byte message", need);
                break;
            }
            joined = grown;
            joined_cap = need;
        }
        size_t used = 0;
        for (size_t j = 0; j < json_array_size(m); j++) {
            json_t *text = json_object_get(json_array_get(m, j), "text");
            const char *s = json_string_value(text);
            size_t n = json_string_length(text);
            size_t a = 0;
            while (a < n && (s[a] == ' ' || s[a] == '\t' || s[a] == '\n' || s[a] == '\r'))
                a++;
            if (a == n)
                continue;  /* blank utterances add nothing */
            if (used)
                joined[used++] = ' ';
            memcpy(joined + used, s, n);
            used += n;
        }
        json_t *ts = json_object_get(first, "timestamp");
        char speaker[16];
        speaker_name(who, speaker, sizeof speaker);
        st = mn_dialogue_add_text(&d, &cap, speaker, used ? joined : "", used, 0,
                                  json_is_string(ts) ? json_string_value(ts) : NULL, options,
                                  &stats->read, NULL);
    }
    if (st == MN_OK && d.n_turns == 0)
        stats->empty_dialogues++;
    else if (st == MN_OK)
        st = mn_dialogue_list_push(doc->out, &d);
    free(joined);
    free(order);
    mn_strset_free(&senders);
    mn_dialogue_free(&d);
    return st;
}

static const mn_json_format chitchat = {MN_JSON_OBJECT, "an object of conversations", read_conversation};

mn_status mn_read_chitchat_buffer(const char *name, const char *buf, size_t len,
                                  const mn_reader_options *options, mn_dialogue_list *out,
                                  mn_reader_stats *stats) {
    if (!name || (!buf && len) || !out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_read_chitchat_buffer: NULL argument");
    return mn_json_doc_read(&chitchat, name, buf, len, options, out, stats);
}

mn_status mn_read_chitchat(const char *path, const mn_reader_options *options,
                           mn_dialogue_list *out, mn_reader_stats *stats) {
    if (!path || !out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_read_chitchat: NULL argument");
    return mn_json_doc_read_file(&chitchat, path, options, out, stats);
}
