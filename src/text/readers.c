/* Reader options and the format switch used by `mnemo prepare`. */
#include <string.h>

#include "core/error.h"
#include "text/readers.h"

mn_reader_options mn_reader_options_default(void) {
    mn_reader_options o = {0};
    o.strict = 0;
    o.max_turn_chars = 4000;
    o.split = MN_SPLIT_ALL;
    o.ask_at = MN_ASK_AT_END;
    o.n_distractors = 3;
    o.valid_percent = 5;
    o.log = NULL;
    return o;
}

static const char *const format_names[] = {
    [MN_FORMAT_SELF_DIALOGUE] = "self-dialogue", [MN_FORMAT_TOPICAL_CHAT] = "topical-chat",
    [MN_FORMAT_LOCOMO] = "locomo",               [MN_FORMAT_CHITCHAT] = "chitchat",
    [MN_FORMAT_JSONL] = "jsonl",
};

mn_status mn_reader_format_parse(const char *name, int *format) {
    for (int i = 0; name && i < (int)(sizeof format_names / sizeof format_names[0]); i++)
        if (!strcmp(name, format_names[i])) {
            *format = i;
            return MN_OK;
        }
    return mn_fail(MN_ERR_INVALID_ARG,
                   "unknown format '%s' (self-dialogue, topical-chat, locomo, chitchat, jsonl)",
                   name ? name : "(null)");
}

mn_status mn_read_corpus(int format, const char *path, const mn_reader_options *options,
                         mn_dialogue_list *out, mn_reader_stats *stats) {
    if (!path || !out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_read_corpus: NULL argument");
    if (options && (options->max_turn_chars < 1 || options->n_distractors < 0 ||
                    options->valid_percent < 0 || options->valid_percent > 100))
        return mn_fail(MN_ERR_INVALID_ARG,
                       "reader options: max_turn_chars must be >= 1, n_distractors >= 0, "
                       "valid_percent in 0..100");
    switch (format) {
    case MN_FORMAT_SELF_DIALOGUE: return mn_read_self_dialogue(path, options, out, stats);
    case MN_FORMAT_TOPICAL_CHAT: return mn_read_topical_chat(path, options, out, stats);
    case MN_FORMAT_LOCOMO: return mn_read_locomo(path, options, out, stats);
    case MN_FORMAT_CHITCHAT: return mn_read_chitchat(path, options, out, stats);
    case MN_FORMAT_JSONL: return mn_read_jsonl(path, options, out, stats);
    }
    return mn_fail(MN_ERR_INVALID_ARG, "unknown format %d", format);
}
