/* The trainer's fields, shared by forward_backward.c, adamw.c and the checkpoint code. */
#ifndef MN_TRAINER_INTERNAL_H
#define MN_TRAINER_INTERNAL_H

#include "model/model_internal.h"

struct mn_trainer {
    mn_model *model;
    int max_B, bptt;
    uint64_t step;
    unsigned char *frozen;             /* (n_tensors) 1 = AdamW skips it */
    float *grads, *adam_m, *adam_v;    /* (num_params) each */
    mn_param_views g;                  /* views into grads */
    mn_stack_acts decoder;             /* one turn */
    mn_stack_acts *compressor;         /* bptt turns */
    mn_stack_grads_scratch scratch;
    /* per turn of the chunk, (B, k, C) each */
    float *states;                     /* R_t after turn t of the chunk: bptt + 1 (slot 0 = R entering) */
    float *u, *z;                      /* compressor output U and gate z, bptt each */
    float *dmemory_decoder;            /* gradient of loss_t w.r.t. R_{t-1} via the decoder, bptt */
    float *dstate, *dstate_prev, *du, *dgate_scratch; /* (B, k, C) */
    /* decoder head, (B * max_turn, .) */
    float *head_in, *dhead_in;         /* (B, N, C) token rows of ln_f */
    float *logits, *dlogits;           /* (B, N, V) */
    float *losses, *weights;           /* (B, N) */
    int32_t *targets;                  /* (B, N) */
    float *dlnf;                       /* (B, S, C) */
};

#endif
