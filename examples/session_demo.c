/* session_demo: mnemo's C API in one page. Loads a model, opens a session store, feeds a few
 * turns through the compressor (saving R after each), reads the session vector back and hands
 * it to the decoder.
 *
 *   session_demo [CHECKPOINT.h5 [STORE.h5]]
 *
 * With a checkpoint (e.g. from `mnemo train` or `mnemo import-gpt2`) it loads the model and the
 * tokenizer stored in it; without one it creates a small model with random weights and uses
 * token ids directly. STORE defaults to session_demo.h5 in the current folder; running the
 * demo twice continues the same session from its saved R.
 *
 * It uses the public header only. Build it against an installed mnemo (README, "Install"):
 *   cc -std=c11 examples/session_demo.c $(pkg-config --cflags --libs mnemo) -lm -o session_demo
 * The test suite builds and runs it (tests/test_example.c), and again against a `meson install`
 * of the build (tests/test_install.sh).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mnemo.h"

static int failed(const char *what) {
    fprintf(stderr, "session_demo: %s: %s\n", what, mn_last_error());
    return 1;
}

/* Token ids of a turn: the tokenizer's, or made-up ids when there is none. */
static int turn_tokens(mn_tokenizer *tok, const mn_config *c, const char *text, int32_t *ids, int cap) {
    if (!tok) {
        int n = 0;
        for (const char *p = text; *p && n < cap; p++)
            ids[n++] = (int32_t)((unsigned char)*p % c->vocab_size);
        return n;
    }
    size_t count = 0;
    if (mn_tokenizer_encode_ids(tok, text, strlen(text), ids, (size_t)cap, &count) != MN_OK)
        return -1;
    return count < (size_t)cap ? (int)count : cap; /* a longer turn is cut to what the model takes */
}

static double norm(const float *x, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)x[i] * x[i];
    return sqrt(s);
}

int main(int argc, char **argv) {
    const char *checkpoint = argc > 1 ? argv[1] : NULL, *store_path = argc > 2 ? argv[2] : "session_demo.h5";
    mn_model *model = NULL;
    mn_tokenizer *tok = NULL;
    mn_session_store *store = NULL;
    float *r = NULL, *r_back = NULL, *logits = NULL, *logits_r0 = NULL;
    int rc = 1;

    /* 1. a model: from a checkpoint, or created and initialised */
    if (checkpoint) {
        if (mn_model_load(checkpoint, &model) != MN_OK || mn_checkpoint_load_tokenizer(checkpoint, &tok) != MN_OK) {
            rc = failed(checkpoint);
            goto done;
        }
    } else {
        mn_config c = {.vocab_size = 256, .d_model = 32, .n_heads = 4, .n_layers = 2, .n_comp_layers = 1,
                       .n_slots = 4, .max_turn_tokens = 48, .gate_bias_init = -1.0f};
        if (mn_model_create(&c, &model) != MN_OK || mn_model_init(model, 7) != MN_OK) {
            rc = failed("creating a model");
            goto done;
        }
    }
    const mn_config *c = mn_model_config(model);
    size_t S = mn_state_floats(model); /* R is (k, C) */
    uint64_t fingerprint = mn_model_fingerprint(model);
    printf("model: V %d, C %d, %d + %d layers, k %d slots, fingerprint %016llx\n", c->vocab_size, c->d_model,
           c->n_layers, c->n_comp_layers, c->n_slots, (unsigned long long)fingerprint);

    /* 2. the session store, and this session's R (or R_0 for a new session) */
    r = malloc(S * sizeof *r), r_back = malloc(S * sizeof *r_back);
    logits = malloc((size_t)c->vocab_size * sizeof *logits);
    logits_r0 = malloc((size_t)c->vocab_size * sizeof *logits_r0);
    int32_t *ids = malloc((size_t)c->max_turn_tokens * sizeof *ids);
    if (!r || !r_back || !logits || !logits_r0 || !ids) {
        fprintf(stderr, "session_demo: out of memory\n");
        free(ids);
        goto done;
    }
    const char *session = "demo-user";
    mn_session_info info;
    int found = 0;
    if (mn_session_store_open(store_path, MN_STORE_WRITE | MN_STORE_CREATE, c->n_slots, c->d_model, &store) != MN_OK ||
        mn_session_get(store, session, fingerprint, r, &info, &found) != MN_OK ||
        (!found && mn_initial_state(model, r) != MN_OK)) {
        free(ids);
        rc = failed(store_path);
        goto done;
    }
    int64_t turns = found ? info.turns : 0;
    printf("session '%s' in %s: %s, |R| = %.6f\n", session, store_path,
           found ? "continuing from its saved state" : "new, R = R_0", norm(r, S));

    /* 3. one mn_update per turn; R saved after each */
    const char *dialogue[] = {"A: Hi! I just moved to Lisbon.", "B: Oh nice, how do you like it?",
                              "A: The tram is lovely but my flat is tiny."};
    for (int t = 0; t < 3; t++) {
        int n = turn_tokens(tok, c, dialogue[t], ids, c->max_turn_tokens);
        if (n < 1 || mn_update(model, ids, n, r, r) != MN_OK ||
            mn_session_put(store, session, fingerprint, r, ++turns) != MN_OK) {
            free(ids);
            rc = failed("turn");
            goto done;
        }
        printf("turn %lld: %2d tokens, |R| = %.6f, saved\n", (long long)turns, n, norm(r, S));
    }

    /* 4. read the session vector back: what another process would get */
    if (mn_session_get(store, session, fingerprint, r_back, &info, &found) != MN_OK || !found) {
        free(ids);
        rc = failed("reading the session back");
        goto done;
    }
    printf("read back: %lld turns, %s\n", (long long)info.turns,
           memcmp(r, r_back, S * sizeof *r) ? "DIFFERENT from R" : "identical to R");

    /* 5. the decoder reads it as k memory slots: next-token distribution after a question,
     * with this session's R and with R_0 */
    int n = turn_tokens(tok, c, "A: Where did I move to?", ids, c->max_turn_tokens);
    if (n < 1 || mn_next_logits(model, ids, n, r_back, logits) != MN_OK || mn_initial_state(model, r) != MN_OK ||
        mn_next_logits(model, ids, n, r, logits_r0) != MN_OK) {
        free(ids);
        rc = failed("decoder");
        goto done;
    }
    free(ids);
    double z = 0, z0 = 0, mx = logits[0], mx0 = logits_r0[0];
    for (int i = 0; i < c->vocab_size; i++)
        mx = fmax(mx, logits[i]), mx0 = fmax(mx0, logits_r0[i]);
    for (int i = 0; i < c->vocab_size; i++)
        z += exp(logits[i] - mx), z0 += exp(logits_r0[i] - mx0);
    double l1 = 0;
    int best[3] = {-1, -1, -1};
    for (int i = 0; i < c->vocab_size; i++) {
        l1 += fabs(exp(logits[i] - mx) / z - exp(logits_r0[i] - mx0) / z0);
        for (int j = 0; j < 3; j++)
            if (best[j] < 0 || logits[i] > logits[best[j]]) {
                memmove(best + j + 1, best + j, (size_t)(2 - j) * sizeof *best);
                best[j] = i;
                break;
            }
    }
    printf("next token with this session's memory:");
    for (int j = 0; j < 3; j++) {
        size_t len = 0;
        const uint8_t *bytes = tok ? mn_tokenizer_token_bytes(tok, best[j], &len) : NULL;
        printf("  %d%s%.*s%s p=%.4f", best[j], bytes ? " '" : "", (int)len, bytes ? (const char *)bytes : "",
               bytes ? "'" : "", exp(logits[best[j]] - mx) / z);
    }
    printf("\nmemory moves the next-token distribution by L1 %.6f against R_0\n", l1);
    rc = 0;
done:
    mn_session_store_close(store);
    mn_tokenizer_free(tok);
    mn_model_free(model);
    free(r), free(r_back), free(logits), free(logits_r0);
    return rc;
}
