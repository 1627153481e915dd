/* libFuzzer target: canonical JSONL reading, then writing what was read and reading it back
 * (the round trip must be exact). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mn_dialogue_list list = {0};
    mn_jsonl_read_buffer("fuzz.jsonl", (const char *)data, size, size % 2, NULL, &list, NULL);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        abort();
    for (int64_t i = 0; i < list.count; i++)
        if (mn_jsonl_write_dialogue(f, &list.items[i]) != MN_OK)
            abort();  /* whatever the reader accepted, the writer must encode */
    fclose(f);
    mn_dialogue_list back = {0};
    mn_read_stats stats = {0};
    if (mn_jsonl_read_buffer("again.jsonl", text, len, 1, NULL, &back, &stats) != MN_OK)
        abort();
    if (back.count != list.count)
        abort();
    for (int64_t i = 0; i < list.count; i++)
        fuzz_check_equal(&list.items[i], &back.items[i]);
    free(text);
    mn_dialogue_list_free(&back);
    fuzz_check_list(&list);  /* also frees it */
    return 0;
}
