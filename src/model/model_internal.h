/* Internals of the model: the parameter size table, named views into flat buffers, and the
 * transformer stack shared by the decoder and the compressor. */
#ifndef MN_MODEL_INTERNAL_H
#define MN_MODEL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "mnemo.h"
#include "model/backend.h"

/* One transformer block's tensors, pointing into some flat buffer (params or grads). */
typedef struct {
    float *ln1_w, *ln1_b;        /* (C) */
    float *attn_w, *attn_b;      /* (C, 3C), (3C) */
    float *attn_proj_w, *attn_proj_b; /* (C, C), (C) */
    float *ln2_w, *ln2_b;        /* (C) */
    float *fc_w, *fc_b;          /* (C, 4C), (4C) */
    float *fc_proj_w, *fc_proj_b; /* (4C, C), (C) */
} mn_block_views;

/* A transformer stack: the decoder or the compressor. */
typedef struct {
    float *wpe;                  /* (k+N, C) */
    mn_block_views *blocks;      /* n_layers of them */
    int n_layers;
    float *lnf_w, *lnf_b;        /* (C) */
} mn_stack_views;

typedef struct {
    float *wte;                  /* (V, C) */
    mn_stack_views decoder, compressor;
    float *r0;                   /* (k, C) */
    float *gate_w;               /* (2C, C)   write rule "gate"; NULL otherwise */
    float *gate_b;               /* (C) */
    float *write_w;              /* (C, A+1)  rules "slot" (A = 0) and "delta" (A = k); NULL for "gate" */
    float *write_b;              /* (A+1) */
    float *write_diag;           /* (A), "delta" only */
} mn_param_views;

/* A write's initial preference for its own slot (delta rule): softmax weight e^4 / (e^4 + k - 1),
 * 0.89 with k = 8, so the rule starts close to the per-slot gate and learns where to move. */
#define MN_WRITE_DIAG_INIT 4.0f

/* Address columns of the slot write: k for the delta rule, 0 for the per-slot gate and the gate. */
static inline int mn_write_addresses(const mn_config *c) {
    return c->write_rule == MN_WRITE_DELTA ? c->n_slots : 0;
}

/* The write into R (memory_write.c). aux: what the backward needs, mn_memory_write_aux_floats(c, B)
 * floats; the backward's scratch is as large. dr_in, du and the gradients in g accumulate. */
size_t mn_memory_write_aux_floats(const mn_config *c, int B);
void mn_memory_write_forward(const mn_exec *ex, const mn_config *c, const mn_param_views *p, float *r_out,
                             float *aux, const float *r_in, const float *u, int B);
void mn_memory_write_backward(const mn_exec *ex, const mn_config *c, const mn_param_views *p,
                              const mn_param_views *g, float *dr_in, float *du, const float *dr_out,
                              const float *r_in, const float *u, const float *aux, float *scratch, int B);

struct mn_model {
    mn_config config;
    mn_tensor_info *tensors;     /* the size table, in buffer order (docs/model.md) */
    char *names;                 /* storage for the tensor names */
    int n_tensors;
    size_t num_params;
    float *params;               /* (num_params), host */
    mn_param_views views;        /* into params */
    /* inference runs on exec, reading dev_params: the params themselves on the CPU, a copy
     * made by mn_model_set_device on CUDA */
    mn_exec exec;
    int threads;                 /* mn_model_set_threads; kept when the device changes */
    float *dev_params;
    mn_param_views dev_views;    /* into dev_params */
    struct mn_infer_workspace *infer; /* lazily allocated scratch for the inference calls */
    int open_pools;              /* session pools holding states in exec's memory: the device is fixed */
};

/* The model's inference backend (inference.c): CPU at creation; released with the model. */
mn_status mn_inference_init(mn_model *model);
void mn_inference_release(mn_model *model);
/* mn_model_set_device with an explicit backend table. */
mn_status mn_model_set_backend(mn_model *model, const mn_backend *be);

/* Points views at a buffer with the parameter layout (params, grads or moments).
 * Block arrays are allocated; free them with mn_views_free. */
mn_status mn_views_bind(const mn_model *model, float *base, mn_param_views *views);
void mn_views_free(mn_param_views *views);

/* ---------------------------------------------------------------- transformer stack */
/* Activations of one stack over (B, S) positions, carved from one allocation in the backend's
 * memory by a size table sized for (max_B, max_S); each call lays its (B, S) tensors out
 * densely. Forward-only activations (inference) keep two blocks' worth and alternate. */
typedef struct {
    float *x;          /* (B, S, C) block input */
    float *ln1;        /* (B, S, C) */
    float *ln1_mean, *ln1_rstd; /* (B, S) */
    float *qkv;        /* (B, S, 3C) */
    float *att;        /* (B, H, S, S) */
    float *atty;       /* (B, S, C) */
    float *res2;       /* (B, S, C) x + attention */
    float *ln2;        /* (B, S, C) */
    float *ln2_mean, *ln2_rstd; /* (B, S) */
    float *fch;        /* (B, S, 4C) */
    float *fch_gelu;   /* (B, S, 4C) */
} mn_block_acts;

/* The rows of a packed forward whose output (ln_f) is read: all, or per lane its k slot rows
 * (the compressor: U), its token rows (the decoder's logits), or its token rows but the last
 * (the decoder's loss: a turn's last token predicts nothing). The last block computes the
 * other rows only up to the keys and values that the kept rows attend to. */
typedef enum { MN_ROWS_ALL, MN_ROWS_SLOTS, MN_ROWS_TOKENS, MN_ROWS_PREDICTING } mn_stack_rows;

/* Row layouts. Padded: lane b's S = k + max_len positions are rows b*S .. b*S + S - 1, the
 * positions past its valid length computed and never read. Packed (training): lane b's valid
 * positions only, lanes back to back from row first[b]; the row-wise work (layer norms,
 * products, GELU, residuals) then runs on real positions only, and attention, which wants the
 * padded layout (B, S) of its op, gets each block's q, k, v scattered to it and its output
 * gathered back (scratch: the block's MLP buffers, not yet written at that point). */
typedef struct {
    mn_block_acts *blocks; /* n_layers (host array of views) */
    float *x_out;      /* (B, S, C) last block's output */
    float *lnf;        /* (B, S, C) */
    float *lnf_mean, *lnf_rstd; /* (B, S) */
    const int32_t *ids_bwd; /* (B, S) of the last forward (not owned): token ids, -1 at slots and padding */
    const int32_t *valid;   /* (B) of the last forward (not owned): k + turn length */
    float *buffer;     /* the one allocation */
    int *first;        /* host (max_B + 1): first row of each lane in the last forward's layout */
    int *out_first;    /* host (max_B + 1): first row of each lane in lnf (the rows kept) */
    int n_layers;
    int B, S;          /* shape of the last forward (S: attention's padded positions per lane) */
    int N;             /* rows of the last forward: first[B] (B * S when padded) */
    int M;             /* rows of its output lnf and of its last block past attention: out_first[B] */
    int packed;        /* the last forward's layout was packed */
    int keep;          /* its mn_stack_rows */
    /* Set by the caller for its next packed forward (host, B; NULL as allocated): with
     * MN_ROWS_PREDICTING, lane b keeps its token rows from keep_from[b] on, the rows that predict
     * tokens keep_from[b] + 1 .. (inference's scored rows). A forward that keeps fewer than
     * every predicting row has no backward. */
    const int *keep_from;
} mn_stack_acts;

/* Gradient scratch for a stack backward, reused across calls. */
typedef struct {
    float *dx, *dres2, *dln, *datty, *dqkv, *dfch_gelu, *dfch; /* sized for (max_B, max_S) */
    float *buffer;
} mn_stack_grads_scratch;

/* forward_only: activations for inference (two blocks' worth, reused in turn); the backward
 * needs every block's (forward_only = 0). */
mn_status mn_stack_acts_alloc(const mn_exec *ex, mn_stack_acts *acts, const mn_config *cfg, int n_layers, int max_B,
                              int max_S, int forward_only);
void mn_stack_acts_free(const mn_exec *ex, mn_stack_acts *acts);
mn_status mn_stack_scratch_alloc(const mn_exec *ex, mn_stack_grads_scratch *s, const mn_config *cfg, int max_B,
                                 int max_S);
void mn_stack_scratch_free(const mn_exec *ex, mn_stack_grads_scratch *s);

/* The ids of one episode's S = k + max_len positions (host): ids_fwd reads wte at token rows
 * (padding reads token 0: its values are never used) and is -1 at the k slot rows; ids_bwd
 * (nullable) is -1 at slots and padding, so that only real tokens receive gradient. */
void mn_turn_ids(int k, const int32_t *tokens, int len, int max_len, int32_t *ids_fwd, int32_t *ids_bwd);

/* Forward of one stack over [memory ; turn tokens]:
 *   x = concat(memory (B,k,C), wte[tokens]) + wpe[0..S-1],  S = k + max_len
 * ids_fwd, ids_bwd (B, S) and valid (B) in backend memory (mn_turn_ids; valid = k + length);
 * ids_bwd may be NULL when no backward follows. Causal for the decoder, bidirectional for the
 * compressor. Output: acts->lnf (B, S, C). */
void mn_stack_forward(const mn_exec *ex, mn_stack_acts *acts, const mn_config *cfg, const float *wte,
                      const mn_stack_views *p, const float *memory, const int32_t *ids_fwd, const int32_t *ids_bwd,
                      const int32_t *valid, int B, int max_len, int causal);
/* The same over the packed layout: lane_rows (host, B) = valid (k + turn length) of each lane,
 * the lanes' rows back to back; ids_fwd, ids_bwd hold the packed rows (mn_turn_ids with
 * max_len = the lane's length), max_len is the longest lane's turn (attention's padding), and
 * acts->lnf holds the rows `keep` names, packed (lane b from row acts->out_first[b]: with
 * MN_ROWS_TOKENS the turn's tokens episode after episode, with MN_ROWS_SLOTS (B, k, C)).
 * NULL lane_rows: padded, keep MN_ROWS_ALL (lnf (B, S, C)) or MN_ROWS_SLOTS (inference's
 * compressor: lnf (B, k, C); no backward follows). */
void mn_stack_forward_lanes(const mn_exec *ex, mn_stack_acts *acts, const mn_config *cfg, const float *wte,
                            const mn_stack_views *p, const float *memory, const int32_t *ids_fwd,
                            const int32_t *ids_bwd, const int32_t *valid, const int *lane_rows, mn_stack_rows keep,
                            int B, int max_len, int causal);
/* Backward from dlnf (the rows of acts->lnf, acts->M of C; consumed as scratch). Accumulates parameter gradients into g
 * (and dwte), and the memory's gradient into dmemory (B, k, C) if it is not NULL. */
void mn_stack_backward(const mn_exec *ex, mn_stack_acts *acts, mn_stack_grads_scratch *scratch,
                       const mn_config *cfg, const mn_stack_views *p, mn_stack_views *g, float *dwte, float *dlnf,
                       float *dmemory, int causal);

/* ---------------------------------------------------------------- batched turns (inference.c) */
/* One sequence of a batched pass: its tokens and state r (host), and where its result goes:
 * R after the turn (updates), or log-probabilities from position `first` on, or the next
 * token's logits (decoder). */
typedef struct {
    const int32_t *tokens;
    int len, first, index;
    const float *r;
    float *out;
} mn_seq_turn;

/* qsort order of a batch: longest first, then by index, so chunks of similar lengths waste
 * little padding and the order (hence the chunks, hence the bits) is the same on every run. */
int mn_seq_by_length_desc(const void *a, const void *b);
/* Sessions one chunk of a batch of n holds: MN_BATCH_POSITIONS_* positions of k + N. */
int mn_update_chunk_cap(const mn_model *m, int n);
/* Turn i of a batch (tokens[offsets[i] .. offsets[i+1])) checked (1..N tokens in the vocabulary)
 * into out's tokens, len and index; a refusal names `who` and the session. */
mn_status mn_batch_turn(const mn_model *m, const int32_t *tokens, const int64_t *offsets, int i, const char *who,
                        mn_seq_turn *out);
mn_status mn_check_tokens(const mn_model *m, const int32_t *tokens, int n, const char *who);
mn_status mn_check_state(const mn_model *m, const float *r, const char *who); /* finite */
/* The compressor update of B staged sessions padded to L tokens, on the model's inference
 * backend: ints holds ids_fwd (B, k + L) then valid (B), memory the states R (B, k, C);
 * r_next (B, k, C) = R after the turn; acts (forward only), u (B, k, C) and write_aux
 * (mn_memory_write_aux_floats(B)) are scratch. */
void mn_compress_staged(mn_model *m, mn_stack_acts *acts, const int32_t *ints, const float *memory, float *u,
                        float *write_aux, float *r_next, int B, int L);

#endif
