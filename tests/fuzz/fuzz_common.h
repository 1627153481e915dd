/* Shared checks for the fuzz targets: what a reader returns must be a well-formed dialogue
 * (valid UTF-8, non-empty speakers, probes in range) that the JSONL writer can encode. */
#ifndef MN_FUZZ_COMMON_H
#define MN_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/dialogue.h"
#include "text/readers.h"
#include "text/text_util.h"

static inline mn_reader_options fuzz_options(const uint8_t *data, size_t size) {
    mn_reader_options opt = mn_reader_options_default();
    opt.max_turn_chars = 1 + (size ? data[0] % 16 : 0);  /* small: splitting always runs */
    opt.n_distractors = size > 1 ? data[1] % 5 : 3;
    opt.strict = size > 2 && data[2] == 's';
    return opt;
}

static inline void fuzz_check_str(const char *s, int may_be_empty) {
    if (!s || (!may_be_empty && !s[0]) || !mn_utf8_valid(s, strlen(s)))
        abort();
}

static inline void fuzz_check_list(mn_dialogue_list *list) {
    FILE *sink = fopen("/dev/null", "w");
    for (int64_t i = 0; i < list->count; i++) {
        const mn_dialogue *d = &list->items[i];
        fuzz_check_str(d->id, 1);
        if (d->n_turns < 1)
            abort();
        for (int t = 0; t < d->n_turns; t++) {
            fuzz_check_str(d->turns[t].speaker, 0);
            fuzz_check_str(d->turns[t].text, 1);
            if (d->turns[t].session < 0)
                abort();
        }
        for (int p = 0; p < d->n_probes; p++) {
            const mn_probe *q = &d->probes[p];
            if (q->after < 1 || q->after > d->n_turns)
                abort();
            fuzz_check_str(q->question, 1);
            fuzz_check_str(q->answer, 1);
            int has_answer = q->n_choices == 0;
            for (int c = 0; c < q->n_choices; c++) {
                fuzz_check_str(q->choices[c], 1);
                has_answer |= !strcmp(q->choices[c], q->answer);
            }
            if (!has_answer)
                abort();
            for (int e = 0; e < q->n_evidence; e++)
                if (q->evidence[e] < 0 || q->evidence[e] >= d->n_turns)
                    abort();
        }
        if (sink && mn_jsonl_write_dialogue(sink, d) != MN_OK)
            abort();
    }
    if (sink)
        fclose(sink);
    mn_dialogue_list_free(list);
}

static inline int fuzz_same(const char *a, const char *b) {
    return (!a && !b) || (a && b && !strcmp(a, b));
}

static inline void fuzz_check_equal(const mn_dialogue *a, const mn_dialogue *b) {
    if (!fuzz_same(a->id, b->id) || a->n_turns != b->n_turns || a->n_probes != b->n_probes)
        abort();
    for (int t = 0; t < a->n_turns; t++)
        if (!fuzz_same(a->turns[t].speaker, b->turns[t].speaker) ||
            !fuzz_same(a->turns[t].text, b->turns[t].text) ||
            a->turns[t].session != b->turns[t].session ||
            !fuzz_same(a->turns[t].date, b->turns[t].date))
            abort();
    for (int p = 0; p < a->n_probes; p++) {
        const mn_probe *x = &a->probes[p], *y = &b->probes[p];
        if (x->after != y->after || !fuzz_same(x->speaker, y->speaker) ||
            !fuzz_same(x->question, y->question) || !fuzz_same(x->answer, y->answer) ||
            x->n_choices != y->n_choices || x->n_evidence != y->n_evidence ||
            x->category != y->category)
            abort();
        for (int c = 0; c < x->n_choices; c++)
            if (!fuzz_same(x->choices[c], y->choices[c]))
                abort();
        for (int e = 0; e < x->n_evidence; e++)
            if (x->evidence[e] != y->evidence[e])
                abort();
    }
}

#endif
