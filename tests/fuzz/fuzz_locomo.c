/* libFuzzer target: the LoCoMo reader on arbitrary bytes (seed it with a tiny locomo10.json). */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mn_reader_options opt = fuzz_options(data, size);
    opt.ask_at = size % 2 ? MN_ASK_AT_EVIDENCE : MN_ASK_AT_END;
    mn_dialogue_list list = {0};
    mn_read_locomo_buffer("fuzz.json", (const char *)data, size, &opt, &list, NULL);
    fuzz_check_list(&list);
    return 0;
}
