/* Canonical JSONL in, canonical JSONL out: validated, otherwise untouched (turns are not
 * cleaned or re-split, so that probe indices stay exact). */
#include "core/error.h"
#include "text/readers.h"
#include "text/text_util.h"

mn_status mn_read_jsonl(const char *path, const mn_reader_options *options,
                        mn_dialogue_list *out, mn_reader_stats *stats) {
    mn_reader_stats local = {0};
    mn_reader_options defaults = mn_reader_options_default();
    if (!options)
        options = &defaults;
    if (!stats)
        stats = &local;
    stats->files++;
    return mn_jsonl_read(path, options->strict, options->log, out, &stats->read);
}
