/* The public header's encoder (mnemo.h): token ids into the caller's array, for programs that
 * do not see the library's growable mn_ids. The engine is the tokenizer's (tokenizer.h). */
#include <string.h>

#include "core/error.h"
#include "text/tokenizer.h"

mn_status mn_tokenizer_encode_ids(mn_tokenizer *tok, const char *text, size_t len, int32_t *ids, size_t cap,
                                  size_t *count) {
    if (!tok || (!text && len) || (!ids && cap) || !count)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_tokenizer_encode_ids: NULL argument");
    mn_ids enc = {0};
    mn_status st = mn_tokenizer_encode(tok, text, len, &enc);
    if (st == MN_OK) {
        size_t n = (size_t)enc.count, copied = n < cap ? n : cap;
        if (copied)
            memcpy(ids, enc.ids, copied * sizeof *ids);
        *count = n;
    }
    mn_ids_free(&enc);
    return st;
}
