/* The trainer's fields, shared by forward_backward.c and adamw.c. */
#ifndef MN_TRAINER_INTERNAL_H
#define MN_TRAINER_INTERNAL_H

#include "model/model_internal.h"

struct mn_trainer {
    mn_model *model;
    mn_exec exec;                      /* the backend training runs on */
    int max_B, bptt;
    uint64_t step;
    unsigned char *frozen;             /* (n_tensors) 1 = AdamW skips it */
    mn_adamw_segment *segments;        /* (n_tensors) host scratch of mn_adamw_step */
    /* In the backend's memory. params is the model's own buffer on the CPU, a copy on CUDA. */
    float *params, *grads, *adam_m, *adam_v; /* (num_params) each */
    /* What mn_trainer_grads/_adam_m/_adam_v return: the buffers above on the CPU, host mirrors
     * kept by mn_trainer_pull/_push on CUDA. */
    float *host_grads, *host_adam_m, *host_adam_v;
    /* The moments held: [0, num_params) unless sharded (ZeRO-1, mn_trainer_shard_moments);
     * adam_m / adam_v then hold moment_hi - moment_lo floats, element i at [i - moment_lo]. */
    size_t moment_lo, moment_hi;
    mn_param_views p, g;               /* views into params and grads */
    mn_stack_acts decoder;             /* one turn */
    mn_stack_acts *compressor;         /* bptt turns */
    mn_stack_grads_scratch scratch;
    /* per turn of the chunk, (B, k, C) each */
    float *states;                     /* R_t after turn t of the chunk: bptt + 1 (slot 0 = R entering) */
    float *u;                          /* compressor output U, bptt of them */
    float *write_aux;                  /* the write's saved values, bptt of write_aux_stride */
    size_t write_aux_stride;           /* mn_memory_write_aux_floats(config, max_B) */
    float *dmemory_decoder;            /* gradient of loss_t w.r.t. R_{t-1} via the decoder, bptt */
    float *dstate, *dstate_prev, *du; /* (B, k, C) */
    float *write_scratch;              /* the write's backward, write_aux_stride */
    /* decoder head, (B * max_turn, .) */
    float *dhead_in;                   /* (B * N, C): gradient of the decoder's ln_f (its classifier rows, packed) */
    int *packed_first;                 /* host (max_B + 1): first packed row of each episode */
    int *lane_rows;                    /* host (max_B): k + length of each episode in this turn */
    int all_token_rows;                /* this batch's classifier rows: every token (logits wanted), or
                                          every token but each turn's last (predicts nothing) */
    int classifier_rows;               /* rows of logits computed at once (the backend's chunk) */
    float *logits;                     /* (classifier_rows, V): logits, then their gradient */
    float *losses;                     /* (B, N) */
    /* The batch's inputs, built on the host and uploaded once per batch. Per turn, densely for
     * the batch's (B, S = k + max_len, L = max_len):
     *   ints:   ids_fwd (B, S) | ids_bwd (B, S) | valid (B) | targets (B, L)
     *   floats: weights (B, L)
     * ids hold the stacks' packed rows (k + len per episode), targets and weights the
     * classifier's rows (all_token_rows) packed; the rest of each slot is unused. */
    size_t input_turns;                /* capacity, in turns of the largest shape */
    int32_t *in_ints_host, *in_ints;
    float *in_weights_host, *in_weights;
    double *turn_weight;               /* host (capacity): target weight of each turn */
    double *turn_loss_host, *turn_loss; /* (capacity) weighted loss sum of each turn */
    /* Reconstruction aid (mn_trainer_set_reconstruction): turn t decoded again from R_{t+delay}. */
    float reconstruct_weight;          /* 0: off */
    int reconstruct_delay;             /* 0: from R_t, the state that has just read turn t */
    float *dmemory_recon;              /* gradient of that loss w.r.t. R_t, bptt x (B, k, C); NULL: off */
    double *recon_loss_host, *recon_loss; /* (capacity) its weighted loss sum per turn */
    double last_recon_loss;            /* of the last batch with gradients: sum / the batch's weight */
};

/* mn_trainer_create_on with an explicit backend table (tests run the device code path on a
 * checking host backend through it). */
mn_status mn_trainer_create_backend(mn_model *model, const mn_backend *be, int max_B, int bptt, mn_trainer **out);

#endif
