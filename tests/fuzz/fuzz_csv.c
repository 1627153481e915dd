/* libFuzzer target: the CSV parser and the self-dialogue reader on arbitrary bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "text/csv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* the parser alone: every record's fields stay inside what was allocated */
    mn_csv csv;
    mn_csv_init(&csv, "fuzz.csv", (const char *)data, size);
    int got = 0;
    for (int guard = 0; guard < 1000000; guard++) {
        mn_status st = mn_csv_next(&csv, &got);
        if (st == MN_OK && !got)
            break;
        if (st != MN_OK && st != MN_ERR_FORMAT)
            abort();
        for (int i = 0; st == MN_OK && i < csv.n_fields; i++)
            if (strlen(mn_csv_field(&csv, i)) > mn_csv_field_len(&csv, i))
                abort();
    }
    mn_csv_free(&csv);
    /* the reader on top, with a tiny turn limit so that splitting runs too */
    mn_reader_options opt = fuzz_options(data, size);
    mn_dialogue_list list = {0};
    mn_read_self_dialogue_buffer("topic/fuzz.csv", (const char *)data, size, &opt, &list, NULL);
    fuzz_check_list(&list);
    return 0;
}
