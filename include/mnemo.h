/* mnemo: recurrent session memory for language models. Public C API.
 *
 * Conventions
 * - Every fallible call returns mn_status. On failure, mn_last_error() gives a message that
 *   names the file/field and the reason. The message lives in thread-local storage: it is
 *   per calling thread, never shared between threads.
 * - The library never exits, never prints (except where a function says so) and keeps no
 *   global state: everything lives in the handles passed in.
 * - Shapes are given as comments, row-major: (B, T, C) means index [b][t][c].
 * - A handle is not safe to use from two threads at once; distinct handles are independent.
 * The exact model definition is docs/model.md.
 */
#ifndef MNEMO_H
#define MNEMO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- errors */
typedef enum {
    MN_OK = 0,
    MN_ERR_INVALID_ARG,   /* NULL pointer, empty turn, out-of-range value, shape mismatch */
    MN_ERR_CONFIG,        /* a config field is invalid */
    MN_ERR_NOMEM,         /* an allocation failed */
    MN_ERR_IO,            /* a file could not be read or written */
    MN_ERR_FORMAT,        /* a file is malformed, truncated or corrupt */
    MN_ERR_MISMATCH,      /* a file belongs to another model, config or tokenizer */
    MN_ERR_NUMERIC,       /* NaN or Inf where a finite value is required */
    MN_ERR_DEVICE,        /* a CUDA / cuBLAS failure, or no usable device */
    MN_ERR_INTERRUPTED,   /* stopped by a signal; what was saved is intact */
} mn_status;

/* Message for the last failure on this thread ("" if none). */
const char *mn_last_error(void);
/* Short stable name of a status code, e.g. "MN_ERR_CONFIG". */
const char *mn_status_name(mn_status status);

/* ---------------------------------------------------------------- devices */
typedef enum { MN_DEVICE_CPU = 0, MN_DEVICE_CUDA = 1 } mn_device;

/* Resolves "cpu", "cuda" or "auto" to a device. "auto" takes CUDA when this build has it and
 * a GPU answers, else the CPU, writing a one-line reason into notice (may be NULL).
 * "cuda" without a usable GPU fails with MN_ERR_DEVICE and the CUDA error. */
mn_status mn_device_resolve(const char *request, mn_device *out, char *notice, size_t notice_cap);
/* Number of CUDA devices, 0 in a build without CUDA; failures (error 35 on machines without
 * a driver) return MN_ERR_DEVICE with CUDA's message. */
mn_status mn_cuda_device_count(int *count);

/* ---------------------------------------------------------------- config */
typedef struct {
    int vocab_size;       /* V */
    int d_model;          /* C */
    int n_heads;          /* H, divides C */
    int n_layers;         /* decoder blocks */
    int n_comp_layers;    /* compressor blocks */
    int n_slots;          /* k: memory slots; the session vector has k*C floats */
    int max_turn_tokens;  /* N: longest turn accepted */
    float gate_bias_init; /* initial update-gate bias; negative so that z starts small */
} mn_config;

/* The small CPU demo model (V 4096, C 256, 4+2 layers, 16 slots, 128 tokens a turn). */
mn_config mn_config_demo(void);
/* Checks every field; on failure the message names the field and the bound it breaks. */
mn_status mn_config_validate(const mn_config *config);

/* ---------------------------------------------------------------- model */
typedef struct mn_model mn_model;

typedef struct {
    const char *name;     /* e.g. "decoder.h.0.attn.c_attn.weight" (docs/model.md) */
    int ndim;
    int shape[2];
    size_t offset;        /* in floats, into the flat parameter buffer */
    size_t size;          /* in floats */
    int decay;            /* 1 if AdamW applies weight decay to it */
} mn_tensor_info;

mn_status mn_model_create(const mn_config *config, mn_model **out);
void mn_model_free(mn_model *model);
const mn_config *mn_model_config(const mn_model *model);
/* Seeded GPT-2-style initialisation (docs/model.md). Same seed, same bits. */
mn_status mn_model_init(mn_model *model, uint64_t seed);

size_t mn_model_num_params(const mn_model *model);
float *mn_model_params(mn_model *model);                 /* flat (num_params) */
int mn_model_num_tensors(const mn_model *model);
mn_status mn_model_tensor(const mn_model *model, int index, mn_tensor_info *info);
mn_status mn_model_find_tensor(const mn_model *model, const char *name, mn_tensor_info *info);

/* ---------------------------------------------------------------- inference (explicit state) */
/* Session vectors are (k, C) floats: mn_state_floats() of them. */
size_t mn_state_floats(const mn_model *model);
/* r_out (k, C) = R_0, the learned initial state. */
mn_status mn_initial_state(const mn_model *model, float *r_out);
/* One turn through the compressor: r_out = update(r_in, tokens[0..n-1]). r_in == r_out is allowed. */
mn_status mn_update(mn_model *model, const int32_t *tokens, int n, const float *r_in, float *r_out);
/* Decoder logits of a turn read with state r: logits (n, V); row i predicts token i+1. */
mn_status mn_logits(mn_model *model, const int32_t *tokens, int n, const float *r, float *logits);

/* ---------------------------------------------------------------- training */
/* B episodes of T turns, each turn padded to max_len tokens. */
typedef struct {
    int B, T, max_len;
    const int32_t *tokens;       /* (T, B, max_len) */
    const int32_t *lengths;      /* (T, B), each in 1..max_len */
    const float *loss_weights;   /* (T, B, max_len) or NULL for all 1; [i] weights predicting token i */
} mn_batch;

/* Optional outputs of a forward pass; any pointer may be NULL. */
typedef struct {
    float *turn_losses;   /* (T) weighted mean loss of each turn */
    float *states;        /* (T, B, k, C) R after each turn */
    float *logits;        /* (T, B, max_len, V) decoder logits (padded rows left untouched) */
} mn_forward_outputs;

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
    float grad_clip;             /* clip the global gradient norm to this; 0 = off */
} mn_adamw_config;

typedef struct mn_trainer mn_trainer;

/* Holds gradients, AdamW moments and activations for batches up to max_B x (bptt turns). */
mn_status mn_trainer_create(mn_model *model, int max_B, int bptt, mn_trainer **out);
void mn_trainer_free(mn_trainer *trainer);
int mn_trainer_bptt(const mn_trainer *trainer);
/* Zeroes the gradients, then runs forward + backward (truncated every bptt turns) over the
 * batch. *loss = weighted mean loss over every target of the batch. */
mn_status mn_forward_backward(mn_trainer *trainer, const mn_batch *batch, float *loss,
                              mn_forward_outputs *outputs);
/* Forward only (no gradients); same loss and outputs as mn_forward_backward. */
mn_status mn_forward(mn_trainer *trainer, const mn_batch *batch, float *loss,
                     mn_forward_outputs *outputs);
float *mn_trainer_grads(mn_trainer *trainer);            /* flat, same layout as params */
float *mn_trainer_adam_m(mn_trainer *trainer);
float *mn_trainer_adam_v(mn_trainer *trainer);
uint64_t mn_trainer_step(const mn_trainer *trainer);     /* AdamW steps taken */
void mn_trainer_set_step(mn_trainer *trainer, uint64_t step);
/* L2 norm of the whole gradient (deterministic summation). */
float mn_grad_norm(mn_trainer *trainer);
/* Freezes (frozen = 1) or unfreezes every tensor whose name starts with prefix, e.g.
 * "decoder." or "wte": AdamW leaves frozen tensors bit-identical (their moments too).
 * Returns MN_ERR_INVALID_ARG when no tensor matches. */
mn_status mn_trainer_freeze(mn_trainer *trainer, const char *prefix, int frozen);
int mn_trainer_is_frozen(const mn_trainer *trainer, int tensor_index);
/* Backends that keep buffers on a device (CUDA) mirror them on the host. pull: afterwards the
 * host buffers (mn_model_params, mn_trainer_grads, mn_trainer_adam_m/_v) are current. push:
 * copies host edits (loaded checkpoints) to the device. Both are no-ops on the CPU. */
mn_status mn_trainer_pull(mn_trainer *trainer);
mn_status mn_trainer_push(mn_trainer *trainer);
/* Clips by global norm, then one AdamW step. *grad_norm (nullable) = norm before clipping.
 * A non-finite gradient norm returns MN_ERR_NUMERIC and leaves params and moments untouched. */
mn_status mn_adamw_step(mn_trainer *trainer, const mn_adamw_config *opt, float *grad_norm);

#ifdef __cplusplus
}
#endif
#endif
