/* mn_eval_checkpoint (mnemo.h): `mnemo eval` as one library call for programs and the Python
 * binding: the checkpoint's model and tokenizer, the dialogues, the run, the JSON report. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "eval/eval.h"
#include "text/dialogue.h"

mn_status mn_eval_checkpoint(const char *checkpoint, const char *data, const mn_eval_config *config,
                             const char *json_out) {
    if (!checkpoint || !data || !json_out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_eval_checkpoint: NULL argument");
    mn_eval_config none = {0};
    const mn_eval_config *c = config ? config : &none;
    if (c->max_probes < 0 || c->threads < 0 || c->max_gen_tokens < 0)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_eval_checkpoint: max_probes, threads and max_gen_tokens must be >= 0");
    mn_model *model = NULL;
    mn_tokenizer *tok = NULL;
    mn_dialogue_list list = {0};
    mn_eval_result res;
    memset(&res, 0, sizeof res);
    mn_status st = mn_checkpoint_load_tokenizer(checkpoint, &tok);
    if (st == MN_OK && !tok)
        st = mn_fail(MN_ERR_INVALID_ARG, "%s holds no tokenizer: evaluation needs the one it was trained with",
                     checkpoint);
    if (st == MN_OK)
        st = mn_model_load(checkpoint, &model);
    mn_read_stats rs;
    if (st == MN_OK)
        st = mn_jsonl_read(data, 1, NULL, &list, &rs);
    if (st == MN_OK && list.count == 0)
        st = mn_fail(MN_ERR_INVALID_ARG, "%s holds no dialogues (empty file?)", data);
    mn_eval_options o;
    if (st == MN_OK) {
        mn_eval_options_default(&o, mn_model_config(model)->n_slots);
        st = mn_eval_parse_variants(&o, c->modes, c->window_tokens, c->retrieval_tokens, c->summary_tokens);
    }
    if (st == MN_OK) {
        o.max_probes = c->max_probes;
        o.threads = c->threads;
        o.generate = c->generate;
        o.max_gen_tokens = c->max_gen_tokens ? c->max_gen_tokens : o.max_gen_tokens;
        o.lm = c->lm;
        o.progress = NULL;
        st = mn_eval_run(model, tok, &list, &o, &res);
    }
    if (st == MN_OK)
        st = mn_eval_write_json(&res, checkpoint, data, json_out);
    mn_eval_result_free(&res);
    mn_dialogue_list_free(&list);
    mn_model_free(model);
    mn_tokenizer_free(tok);
    return st;
}
