#include "text/bpe_jsonl.h"

#include "core/error.h"

mn_status mn_bpe_counts_add_jsonl(mn_bpe_counts *counts, const char *path, int strict, int skip_bad, FILE *log,
                                  mn_bpe_jsonl_stats *stats) {
    if (!counts || !path || !stats)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_bpe_counts_add_jsonl: NULL argument");
    mn_dialogue_list list = {0};
    mn_read_stats rs = {0};
    mn_status st = mn_jsonl_read(path, strict, log, &list, &rs); /* its errors name the file */
    if (st == MN_OK)
        st = mn_read_check_yield(path, &rs, list.count, skip_bad);
    if (st == MN_OK && (st = mn_bpe_counts_add_dialogues(counts, &list)) != MN_OK)
        mn_fail_context(st, "%s", path); /* its errors do not name the file */
    mn_dialogue_counts n = mn_dialogue_list_count(&list);
    *stats = (mn_bpe_jsonl_stats){.dialogues = n.dialogues, .turns = n.turns, .bad_lines = rs.bad_records};
    mn_dialogue_list_free(&list);
    return st;
}
