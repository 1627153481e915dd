/* libFuzzer target: the Topical-Chat and Chit-Chat readers (both a JSON object of
 * conversations) on arbitrary bytes. */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mn_reader_options opt = fuzz_options(data, size);
    mn_dialogue_list list = {0};
    mn_read_topical_chat_buffer("fuzz.json", (const char *)data, size, &opt, &list, NULL);
    mn_read_chitchat_buffer("fuzz.json", (const char *)data, size, &opt, &list, NULL);
    fuzz_check_list(&list);
    return 0;
}
