/* GPT-2's pre-tokenizer (tokenizer.h): splits text into the pieces BPE merges within, by the
 * pattern 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ with
 * Unicode categories from utf8proc, without a regex engine. */
#include "text/tokenizer.h"

#include <utf8proc.h>

#include "text/tokenizer_internal.h"

enum { C_OTHER = 0, C_LETTER, C_NUMBER, C_SPACE };

/* Class of each ASCII byte: 1 letter, 2 digit, 3 White_Space, 0 other. A constant, so that
 * tokenizers on different threads share it without synchronisation. */
static const uint8_t ascii_class[128] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 3, 3, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0,
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0,
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0,
};

/* Unicode White_Space (what \s means to the regex engines of tiktoken and HF). */
static inline int is_white_space(int32_t cp) {
    if (cp < 0x85)
        return (cp >= 9 && cp <= 13) || cp == 32;
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

static inline int cp_class(int32_t cp) {
    if (cp < 0)
        return C_OTHER;
    if (cp < 128)
        return ascii_class[cp];
    if (is_white_space(cp))
        return C_SPACE;
    switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
        return C_LETTER;
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
        return C_NUMBER;
    default:
        return C_OTHER;
    }
}

/* Class and length of the character at s[pos]. */
static inline int char_at(const uint8_t *s, size_t n, size_t pos, size_t *clen) {
    uint8_t b = s[pos];
    if (b < 0x80) {
        *clen = 1;
        return ascii_class[b];
    }
    int32_t cp;
    *clen = utf8_next(s + pos, n - pos, &cp);
    return cp_class(cp);
}

/* End of the run of characters of class cls starting at pos. */
static inline size_t run_end(const uint8_t *s, size_t n, size_t pos, int cls) {
    while (pos < n) {
        uint8_t b = s[pos];
        if (b < 0x80) {
            if (ascii_class[b] != cls)
                break;
            pos++;
        } else {
            size_t l;
            if (char_at(s, n, pos, &l) != cls)
                break;
            pos += l;
        }
    }
    return pos;
}

size_t mn_pretokenize_next(const char *text, size_t len, size_t pos) {
    const uint8_t *s = (const uint8_t *)text;
    if (pos >= len)
        return len;
    /* 's|'t|'re|'ve|'m|'ll|'d (ASCII, case-sensitive), tried first */
    if (s[pos] == '\'' && pos + 1 < len) {
        uint8_t c = s[pos + 1];
        if (c == 's' || c == 't' || c == 'm' || c == 'd')
            return pos + 2;
        if (pos + 2 < len) {
            uint8_t d = s[pos + 2];
            if ((c == 'r' && d == 'e') || (c == 'v' && d == 'e') || (c == 'l' && d == 'l'))
                return pos + 3;
        }
    }
    size_t l0;
    int c0 = char_at(s, len, pos, &l0);
    /* " ?X+" for X in letters, numbers, other: an optional single U+0020 first */
    if (s[pos] == ' ' && pos + 1 < len) {
        size_t l1;
        int c1 = char_at(s, len, pos + 1, &l1);
        if (c1 != C_SPACE)
            return run_end(s, len, pos + 1 + l1, c1);
    }
    if (c0 != C_SPACE)
        return run_end(s, len, pos + l0, c0);
    /* \s+(?!\S) then \s+: a whitespace run followed by text gives back its last character
     * (which then leads the next pre-token), unless the run is a single character. */
    size_t last = pos, p = pos;
    while (p < len) {
        size_t l;
        if (char_at(s, len, p, &l) != C_SPACE)
            break;
        last = p;
        p += l;
    }
    if (p == len || last == pos)
        return p;
    return last;
}
