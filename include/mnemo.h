/* mnemo: recurrent session memory for language models. Public C API.
 *
 * Conventions
 * - Every fallible call returns mn_status. On failure, mn_last_error() gives a message that
 *   names the file/field and the reason. The message lives in thread-local storage: it is
 *   per calling thread, never shared between threads.
 * - The library never exits, never prints (except where a function says so) and keeps no
 *   global state: everything lives in the handles passed in. It never changes process-wide
 *   settings (OpenMP's defaults, OpenBLAS's thread count, signal handlers, locale).
 * - Shapes are given as comments, row-major: (B, T, C) means index [b][t][c].
 * The exact model definition is docs/model.md.
 *
 * Threads (docs/model.md, "Threads")
 * - Distinct handles may be used on distinct threads at once; one handle never from two
 *   threads at once. A trainer and the model it was created from count as one handle.
 * - A handle's CPU work runs on an OpenMP team of mn_model_set_threads / mn_trainer_set_threads
 *   threads (0: OpenMP's default). Results are bit-identical for the same thread count, equal
 *   to rounding across counts.
 * - OpenBLAS's thread count is the process's: results are correct whatever it is, but for speed
 *   set it to 1 in main() (openblas_set_num_threads(1) or OPENBLAS_NUM_THREADS=1), as the mnemo
 *   CLI does; with more, OpenBLAS's threads compete with the OpenMP teams.
 * - HDF5 calls (checkpoints, tokenizer files, session stores) are safe from several threads
 *   with a thread-safe libhdf5 (Debian's is), which runs them one at a time; with one built
 *   without thread safety, only one thread at a time may be inside such a call.
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
/* Precision of the matrix products on CUDA. Weights, activations, gradients and their
 * accumulation stay fp32 in every mode; TF32 and BF16 let cuBLAS round the inputs of each
 * product to that format and use the tensor cores (docs/gpu.md states the tolerances). */
typedef enum { MN_MATMUL_FP32 = 0, MN_MATMUL_TF32 = 1, MN_MATMUL_BF16 = 2 } mn_matmul;

typedef struct {
    char name[256];
    int compute_capability;    /* major * 10 + minor, e.g. 90 */
    int multiprocessors;
    double clock_ghz;          /* peak SM clock */
    double memory_gb;          /* global memory */
    double peak_bandwidth_gbs; /* from the memory clock and bus width */
    double peak_fp32_tflops;   /* CUDA cores: 128 FMA per SM per clock */
    double peak_tf32_tflops;   /* dense tensor cores; 0 where this build does not know the chip */
    double peak_bf16_tflops;
    char peak_source[96];      /* where the peaks come from: a published figure or an estimate */
} mn_device_info;

/* Describes CUDA device `index` (0-based); MN_ERR_DEVICE without CUDA or without that device. */
mn_status mn_cuda_device_info(int index, mn_device_info *info);

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
    int write_rule;       /* how a turn is written into R: mn_write_rule (docs/model.md, "Write rules") */
} mn_config;

/* The compressor's write into R. 0, the default, is the element-wise gate of model v1. */
typedef enum {
    MN_WRITE_GATE = 0,  /* element-wise gate: z (k, C) from R_{t-1} and U */
    MN_WRITE_SLOT = 1,  /* per-slot gate: one strength per slot, from U */
    MN_WRITE_DELTA = 2, /* key-addressed delta rule: each write chooses its slots and replaces what they hold */
} mn_write_rule;
/* "gate", "slot", "delta"; NULL for a value out of range. */
const char *mn_write_rule_name(int rule);
/* The rule a name gives; MN_ERR_CONFIG for an unknown name. */
mn_status mn_write_rule_parse(const char *name, int *rule);

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
/* L2 norm of n floats, summed in double: the |R| that `mnemo chat` and `mnemo sessions show`
 * print, and the tensor norms of `mnemo inspect`. */
double mn_l2_norm(const float *x, size_t n);
/* One turn through the compressor: r_out = update(r_in, tokens[0..n-1]). r_in == r_out is allowed. */
mn_status mn_update(mn_model *model, const int32_t *tokens, int n, const float *r_in, float *r_out);
/* Decoder logits of a turn read with state r: logits (n, V); row i predicts token i+1. */
mn_status mn_logits(mn_model *model, const int32_t *tokens, int n, const float *r, float *logits);
/* Updates n_sessions states in one call: session i reads tokens[offsets[i] .. offsets[i+1]-1]
 * (1..max_turn_tokens tokens, offsets nondecreasing) and r_in[i] (k, C), and writes r_out[i].
 * The same results as n_sessions calls of mn_update, up to the rounding of batched products.
 * r_in == r_out is allowed; other overlap is not. Sessions are grouped by length internally. */
mn_status mn_update_batch(mn_model *model, int n_sessions, const int32_t *tokens, const int64_t *offsets,
                          const float *r_in, float *r_out);
/* Where the inference calls (mn_update, mn_update_batch, mn_logits and the decoding calls)
 * run; the CPU by default. MN_DEVICE_CUDA copies the parameters to the GPU: after changing
 * mn_model_params() (a loaded checkpoint, a pulled trainer), call it again to refresh that
 * copy. MN_ERR_DEVICE (the model stays on its previous device) when no GPU answers. */
mn_status mn_model_set_device(mn_model *model, mn_device device);
mn_device mn_model_device(const mn_model *model);
/* Matrix-product precision of the inference calls (CUDA only; the CPU accepts FP32). */
mn_status mn_model_set_matmul(mn_model *model, mn_matmul precision);
/* CPU threads this handle's work may use (OpenMP team size of its ops and products);
 * 0 = OpenMP's default at the call. No process-wide setting is changed. Applies to the
 * inference calls (and is kept across mn_model_set_device); a trainer created from the model
 * starts with the model's setting. The CUDA backend ignores it. MN_ERR_INVALID_ARG if < 0. */
mn_status mn_model_set_threads(mn_model *model, int threads);

/* ---------------------------------------------------------------- training */
/* B episodes of T turns, each turn padded to max_len tokens. */
typedef struct {
    int B, T, max_len;
    const int32_t *tokens;       /* (T, B, max_len) */
    const int32_t *lengths;      /* (T, B), each in 1..max_len */
    const float *loss_weights;   /* (T, B, max_len) or NULL for all 1; [i] weights predicting token i */
    /* Streaming (docs/model.md): lane e with carry[e] != 0 starts from initial_states[e] (k, C),
     * a constant (no gradient flows into it), e.g. the final_states of the lane's previous
     * window; lanes with 0 start from R_0 as usual. carry NULL: every lane starts from R_0.
     * Host memory; a carry flag set without initial_states is refused. */
    const float *initial_states; /* (B, k, C) or NULL */
    const unsigned char *carry;  /* (B) or NULL */
} mn_batch;

/* Optional outputs of a forward pass; any pointer may be NULL. */
typedef struct {
    float *turn_losses;   /* (T) weighted mean loss of each turn */
    float *states;        /* (T, B, k, C) R after each turn */
    float *logits;        /* (T, B, max_len, V) decoder logits (padded rows left untouched) */
    float *final_states;  /* (B, k, C) R_T of each lane after the last turn (one more compressor pass);
                             may be the batch's initial_states, which are read before it is written */
} mn_forward_outputs;

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
    float grad_clip;             /* clip the global gradient norm to this; 0 = off */
} mn_adamw_config;

typedef struct mn_trainer mn_trainer;

/* Holds gradients, AdamW moments and activations for batches up to max_B x (bptt turns). */
mn_status mn_trainer_create(mn_model *model, int max_B, int bptt, mn_trainer **out);
/* The same on a chosen device. On MN_DEVICE_CUDA the parameters are copied to the GPU at
 * creation and the trainer works there: mn_model_params and the trainer's host buffers are
 * mirrors, current after mn_trainer_pull; after editing them, mn_trainer_push. A CUDA failure
 * returns MN_ERR_DEVICE with the call, file:line and CUDA's message; the trainer is then
 * unusable (every later call repeats the error) and must be freed. */
mn_status mn_trainer_create_on(mn_model *model, mn_device device, int max_B, int bptt, mn_trainer **out);
mn_device mn_trainer_device(const mn_trainer *trainer);
/* Matrix-product precision of training (CUDA only; the CPU accepts FP32). */
mn_status mn_trainer_set_matmul(mn_trainer *trainer, mn_matmul precision);
/* CPU threads this handle's work may use (OpenMP team size of its ops and products);
 * 0 = OpenMP's default at the call. No process-wide setting is changed. Starts as the model's
 * setting (mn_model_set_threads) at mn_trainer_create; the CUDA backend ignores it. */
mn_status mn_trainer_set_threads(mn_trainer *trainer, int threads);
void mn_trainer_free(mn_trainer *trainer);
int mn_trainer_bptt(const mn_trainer *trainer);
/* Zeroes the gradients, then runs forward + backward (truncated every bptt turns) over the
 * batch. *loss = weighted mean loss over every target of the batch. */
mn_status mn_forward_backward(mn_trainer *trainer, const mn_batch *batch, float *loss,
                              mn_forward_outputs *outputs);
/* Data-parallel training: the same as mn_forward_backward, but the gradient is that of
 * (weighted loss sum) * scale, where the caller passes scale = 1 / (the weight total of the
 * global batch, every rank's part). *loss_sum = this batch's unscaled weighted loss sum. With
 * scale = 1 / mn_batch_loss_weight(batch) the gradient is bit-identical to mn_forward_backward.
 * outputs (nullable) as for mn_forward_backward. */
mn_status mn_forward_backward_scaled(mn_trainer *trainer, const mn_batch *batch, double scale, double *loss_sum,
                                     mn_forward_outputs *outputs);
/* The sum of a batch's target loss weights: what mn_forward_backward divides by. */
double mn_batch_loss_weight(const mn_batch *batch);
/* Forward only (no gradients); same loss and outputs as mn_forward_backward. */
mn_status mn_forward(mn_trainer *trainer, const mn_batch *batch, float *loss,
                     mn_forward_outputs *outputs);
float *mn_trainer_grads(mn_trainer *trainer);            /* flat, same layout as params */
/* The AdamW moments: num_params floats, or after mn_trainer_shard_moments only the shard's
 * (element i of the flat layout at [i - lo]). */
float *mn_trainer_adam_m(mn_trainer *trainer);
float *mn_trainer_adam_v(mn_trainer *trainer);
/* ZeRO-1 (CPU trainers): keep only the moments of [lo, hi), freeing the rest; from then on
 * only mn_adamw_step_shard on [lo, hi) updates, and checkpoints need the gathered moments
 * (mn_checkpoint_save_options). Load a checkpoint before sharding. */
mn_status mn_trainer_shard_moments(mn_trainer *trainer, size_t lo, size_t hi);
/* The moments held, [*lo, *hi) (nullable); returns 1 when sharded. */
int mn_trainer_moments_range(const mn_trainer *trainer, size_t *lo, size_t *hi);
uint64_t mn_trainer_step(const mn_trainer *trainer);     /* AdamW steps taken */
void mn_trainer_set_step(mn_trainer *trainer, uint64_t step);
/* Reconstruction aid: with weight > 0, mn_forward_backward also decodes every turn t again from
 * R_t (the state that has just read it) and adds weight x that loss (the same token weights and
 * normaliser) to the objective, so that writing tokens into memory and reading them back is
 * learned from every turn, not only from probe answers (docs/training.md). The loss it returns
 * stays the plain one; mn_forward (evaluation) never reconstructs. 0 (the default) turns it off.
 * Costs one more decoder pass per turn. weight must be finite and >= 0. */
mn_status mn_trainer_set_reconstruction(mn_trainer *trainer, float weight);
/* Delayed reconstruction: turn t is decoded again from R_{t+delay} instead of R_t, so that the
 * aid asks the state to still hold a turn after `delay` more turns were written (docs/model.md,
 * Loss). Only turns whose R_{t+delay} lies in the same truncated-BPTT chunk are decoded again.
 * 0 (the default) is the aid above; delay must be >= 0 and < the trainer's bptt. */
mn_status mn_trainer_set_reconstruction_delay(mn_trainer *trainer, int delay);
/* The last mn_forward_backward's reconstruction loss (sum w*ce / the batch's weight); 0 when off. */
double mn_trainer_reconstruction_loss(const mn_trainer *trainer);
/* L2 norm of the whole gradient (deterministic summation). NaN if the device failed
 * (mn_last_error() says how). */
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
/* ZeRO-1 pieces. The sum of squares of grads[begin, end) (NaN if the device failed). mn_adamw_step
 * refuses a trainer whose moments are sharded. */
double mn_grad_sumsq_range(mn_trainer *trainer, size_t begin, size_t end);
/* One AdamW step on params[begin, end) only (inside the moments held), clipped with the global
 * gradient norm sqrt(sumsq) exactly as mn_adamw_step would; moments outside it are untouched.
 * A non-finite norm returns MN_ERR_NUMERIC and changes nothing. */
mn_status mn_adamw_step_shard(mn_trainer *trainer, const mn_adamw_config *opt, double sumsq, size_t begin,
                              size_t end);

/* ---------------------------------------------------------------- decoding and sampling */
/* Decoder logits of the last position only, logits (V): with r (k, C) it is the last row of
 * mn_logits; with r == NULL the decoder runs on the tokens alone (no memory prefix, positions
 * 0..n-1, n <= k + N), which is exactly Hugging Face GPT-2 on input_ids = tokens. */
mn_status mn_next_logits(mn_model *model, const int32_t *tokens, int n, const float *r, float *logits);
/* All rows of the memory-free decoder: logits (n, V), n <= k + N; row i predicts token i+1. */
mn_status mn_logits_no_memory(mn_model *model, const int32_t *tokens, int n, float *logits);

typedef struct {
    float temperature; /* 0: greedy (argmax, ties to the lowest id); > 0: logits / temperature */
    int top_k;         /* keep only the top_k most likely tokens; 0 = no limit */
    float top_p;       /* keep the smallest most-likely set whose probability reaches top_p; 1 = all */
} mn_sampling;

/* Draws a token from logits (V). *rng_state is advanced (same state, same draw). Ties in the
 * ranking go to the lower id, so the result does not depend on the sort's stability. */
mn_status mn_sample(const float *logits, int vocab_size, const mn_sampling *sampling, uint64_t *rng_state,
                    int32_t *token);
/* Generates the rest of a turn read with state r (NULL: no memory). out (max_tokens) starts as
 * a copy of prefix (n_prefix >= 1 tokens, e.g. the reply's speaker tokens); tokens are
 * appended until one of stop[0..n_stop-1] is drawn (it is kept) or the turn holds max_tokens
 * (<= N with memory, <= k + N without). *n_out = length of the whole turn. With memory each
 * token reads one new row on a key/value cache of the decoder (its logits are mn_next_logits'
 * to float rounding); without, mn_next_logits reads the whole sequence every token. */
mn_status mn_generate(mn_model *model, const float *r, const int32_t *prefix, int n_prefix, int max_tokens,
                      const int32_t *stop, int n_stop, const mn_sampling *sampling, uint64_t *rng_state,
                      int32_t *out, int *n_out);

/* ---------------------------------------------------------------- checkpoints and tokenizers */
/* What a program needs to run a trained model: the parameters and the tokenizer that
 * `mnemo train` or `mnemo import-gpt2` stored in a checkpoint (docs/checkpoint.md,
 * docs/tokens.md). */
/* Creates a model with the checkpoint's config and loads its parameters. MN_ERR_IO (missing,
 * unreadable), MN_ERR_FORMAT (not a checkpoint, truncated, checksum failure), MN_ERR_NUMERIC (a
 * NaN or infinite parameter), naming the file. */
mn_status mn_model_load(const char *checkpoint, mn_model **out);

typedef struct mn_tokenizer mn_tokenizer;
/* The tokenizer stored in a checkpoint, or *out = NULL when it holds none. */
mn_status mn_checkpoint_load_tokenizer(const char *path, mn_tokenizer **out);
void mn_tokenizer_free(mn_tokenizer *tok);
int mn_tokenizer_vocab_size(const mn_tokenizer *tok);
/* The token ids of text[0..len) (any bytes): the first min(*count, cap) into ids, and *count =
 * how many the text has (more than cap: the rest were not written). A tokenizer caches what it
 * encodes, so one tokenizer is not for two threads at once. */
mn_status mn_tokenizer_encode_ids(mn_tokenizer *tok, const char *text, size_t len, int32_t *ids, size_t cap,
                                  size_t *count);
/* Bytes of token id (a special token's are its text, e.g. "<|eot|>"); NULL for an id out of
 * range. */
const uint8_t *mn_tokenizer_token_bytes(const mn_tokenizer *tok, int32_t id, size_t *len);

/* Id of the special token whose text is `text` ("<|turn|>", "<|speaker_a|>", "<|speaker_b|>",
 * "<|eot|>", "<|session|>", "<|pad|>": docs/tokens.md); -1 when the tokenizer has none (GPT-2's). */
int32_t mn_tokenizer_special_id(const mn_tokenizer *tok, const char *text);

/* `mnemo import-gpt2` (docs/gpt2.md): a Hugging Face GPT-2 (model.safetensors, vocab.json,
 * merges.txt; config.json nullable) as the decoder of a new checkpoint, with a compressor and
 * memory initialised from seed and GPT-2's tokenizer. n_slots, max_turn_tokens, n_comp_layers:
 * 0 takes the defaults (16, 128, 2). Every refusal names the file and the tensor. */
mn_status mn_import_gpt2(const char *safetensors, const char *vocab_json, const char *merges_txt,
                         const char *config_json, int n_slots, int max_turn_tokens, int n_comp_layers, uint64_t seed,
                         const char *checkpoint);

/* Writes the decoder of a checkpoint whose tokenizer is GPT-2's (`mnemo import-gpt2`) as a
 * Hugging Face GPT-2 folder that transformers' from_pretrained loads (docs/gpt2.md): config.json,
 * model.safetensors (F32, wte and the decoder, the head tied), vocab.json, merges.txt and
 * tokenizer_config.json. out_dir is created when missing; each file is written atomically.
 * `mnemo import-gpt2` of the result gives back the same decoder and tokenizer, bit for bit. */
mn_status mn_export_hf(const char *checkpoint, const char *out_dir);

/* ---------------------------------------------------------------- evaluation */
/* What `mnemo eval` measures (docs/eval.md); zero-initialised, it is every mode with the
 * default windows, every probe, no generation and no LM loss. */
typedef struct {
    const char *modes;         /* comma list of memory,no_memory,window,full,retrieval,summary;
                                * NULL: memory,no_memory,window,full */
    const char *window_tokens; /* comma list of window sizes in tokens; NULL: k,4k */
    int64_t max_probes;        /* the first max_probes probes in file order; 0: all */
    int threads;               /* dialogues evaluated in parallel; 0: OpenMP's default */
    int generate;              /* 1: greedy answers too (exact match, F1) */
    int max_gen_tokens;        /* longest generated answer; 0: 32 */
    int lm;                    /* 1: per-turn LM loss too */
    const char *retrieval_tokens; /* comma list of the retrieval mode's budgets; NULL: k,4k */
    const char *summary_tokens;   /* comma list of the summary mode's budgets; NULL: k,4k */
} mn_eval_config;

/* `mnemo eval --checkpoint checkpoint --data data --json json_out`: evaluates the checkpoint's
 * model with its tokenizer on the dialogue JSONL (docs/dialogue-format.md) and writes the JSON
 * report (docs/eval.md) to json_out atomically. Prints nothing. */
mn_status mn_eval_checkpoint(const char *checkpoint, const char *data, const mn_eval_config *config,
                             const char *json_out);

/* ---------------------------------------------------------------- session store */
/* 64-bit fingerprint of what gives a session vector its meaning: the compressor-side config
 * (V, C, H, n_comp_layers, k, N) and the bytes of wte, compressor.* and memory.*. The decoder
 * is left out: a frozen-decoder run or a swapped decoder reads the same states. */
uint64_t mn_model_fingerprint(const mn_model *model);

/* Many sessions in one store (docs/sessions.md): for each id, R (k, C), a turn count,
 * created/updated times and the fingerprint of the compressor that wrote R. An HDF5 snapshot
 * (path) plus a checksummed append-only journal (path.journal) replayed on open and compacted
 * atomically into a new snapshot. A put is atomic and durable when it returns: a crash at any
 * moment loses at most the put in flight. Processes coordinate through advisory locks on
 * path.lock: at most one writer at a time (a second is refused), any number of readers, each
 * operation of a reader sees the last completed put. */
typedef struct mn_session_store mn_session_store;

enum {
    MN_STORE_WRITE = 1,   /* put, delete and compact allowed; one writer per store at a time */
    MN_STORE_CREATE = 2,  /* with MN_STORE_WRITE: create the store when it does not exist */
    MN_STORE_NO_SYNC = 4, /* no fsync per put: survives a killed process, not a power cut */
    MN_STORE_RECOVER = 8, /* open a store whose journal is damaged or missing: keep what precedes
                             the damage (a writer truncates the journal there); see
                             mn_session_store_recovery */
};
#define MN_SESSION_ID_MAX 255 /* bytes; ids are 1..255 bytes, any byte but NUL */

typedef struct {
    char id[MN_SESSION_ID_MAX + 1];
    int64_t turns;        /* as given to the last put */
    int64_t created_us;   /* first put, microseconds since the Unix epoch */
    int64_t updated_us;   /* last put */
    uint64_t fingerprint; /* of the compressor that wrote R (mn_model_fingerprint) */
} mn_session_info;

typedef struct {
    int64_t sessions;         /* live sessions */
    int64_t snapshot_rows;    /* sessions in the HDF5 snapshot */
    int64_t journal_records;  /* records appended since the last compaction */
    int64_t snapshot_bytes, journal_bytes;
    uint64_t generation;      /* bumped by every compaction */
    int64_t compactions;      /* done by this handle */
    mn_status last_compact_status; /* of this handle's last automatic compaction */
    int64_t recovered_records;     /* complete journal records an MN_STORE_RECOVER open dropped */
} mn_session_store_stats;

/* Opens (MN_STORE_CREATE: creates) the store at path. n_slots and d_model give R's shape:
 * required to create; 0 takes the store's; otherwise they must equal the store's
 * (MN_ERR_MISMATCH). A writer that finds the store open for writing elsewhere fails with
 * MN_ERR_IO at once. Opening recovers from a crashed writer (a torn journal tail, a partial last
 * record, is dropped). Damage a crash cannot leave (a complete record that fails its checksum
 * or checks, a missing or corrupt journal) fails with MN_ERR_FORMAT naming the file, the record
 * and the byte, unless flags has MN_STORE_RECOVER. A store that fails to open leaves no lock
 * file it created. */
mn_status mn_session_store_open(const char *path, int flags, int n_slots, int d_model, mn_session_store **out);
void mn_session_store_close(mn_session_store *store);
/* What an MN_STORE_RECOVER open dropped, in one sentence naming the file, the record, the byte
 * and the count; NULL when it dropped nothing. Valid until the store is closed. */
const char *mn_session_store_recovery(const mn_session_store *store);
void mn_session_store_shape(const mn_session_store *store, int *n_slots, int *d_model);
/* Reads session id. Absent: MN_OK with *found = 0. With r (k, C) non-NULL, the session's
 * fingerprint must equal `fingerprint` (else MN_ERR_MISMATCH, r untouched); r == NULL reads
 * only the info (nullable). */
mn_status mn_session_get(mn_session_store *store, const char *id, uint64_t fingerprint, float *r,
                         mn_session_info *info, int *found);
/* Writes (creates or replaces) session id; keeps its created time. R must be finite. */
mn_status mn_session_put(mn_session_store *store, const char *id, uint64_t fingerprint, const float *r,
                         int64_t turns);
/* Removes session id; *existed (nullable) = whether it was there. */
mn_status mn_session_delete(mn_session_store *store, const char *id, int *existed);
/* Every session's info, sorted by id, in a malloc'd array (release with free()). */
mn_status mn_session_list(mn_session_store *store, mn_session_info **infos, size_t *count);
/* Rewrites the snapshot with every live session and starts an empty journal (atomic). */
mn_status mn_session_store_compact(mn_session_store *store);
/* Automatic compaction after a put once the journal holds max(min_records, snapshot rows)
 * records, which keeps a put's amortised cost independent of the store's size.
 * Default 4096; 0 turns it off. */
void mn_session_store_set_autocompact(mn_session_store *store, int64_t min_records);
mn_status mn_session_store_stats_get(mn_session_store *store, mn_session_store_stats *stats);

/* ---------------------------------------------------------------- session pool */
/* Many conversations served from one model (docs/sessions.md, "The session pool"): `slots`
 * session states R (k, C) kept in the memory of the model's inference device (GPU memory on
 * CUDA), each with a turn count and optionally bound to a session of a store. The same
 * semantics on every device. While a pool is open its model cannot change device
 * (mn_model_set_device refuses); refreshing the parameters on the same device is allowed. A
 * pool and its model count as one handle (one thread at a time); the pool's own sync thread
 * touches only the store. */
typedef struct mn_session_pool mn_session_pool;

/* Every slot starts at R_0 with 0 turns, bound to no session. */
mn_status mn_session_pool_create(mn_model *model, int slots, mn_session_pool **out);
/* Writes every changed bound slot to the store and waits for it, stops the sync thread, closes
 * the store and frees the pool. Returns the first failure of the background sync not yet
 * returned (the pool is freed all the same); NULL is allowed. */
mn_status mn_session_pool_close(mn_session_pool *pool);
int mn_session_pool_slots(const mn_session_pool *pool);
/* Host -> pool: slot's R = r (k, C, finite) and its turn count. */
mn_status mn_session_pool_write(mn_session_pool *pool, int slot, const float *r, int64_t turns);
/* Pool -> host: r (k, C) = slot's R; *turns (nullable) = its turn count. */
mn_status mn_session_pool_read(mn_session_pool *pool, int slot, float *r, int64_t *turns);
/* One turn for each of n entries: slot slots[i] reads tokens[offsets[i] .. offsets[i+1]-1]
 * (1..max_turn_tokens tokens); the slots must be distinct. Each slot's R becomes the update of
 * its R by its turn (mn_update_batch on those states: the same bits on the CPU), and its turn
 * count grows by one. A refused call (a slot out of range or named twice, a bad turn) changes
 * nothing and names the entry. */
mn_status mn_session_pool_update(mn_session_pool *pool, int n, const int32_t *slots, const int32_t *tokens,
                                 const int64_t *offsets);
/* CUDA graphs for the update (on by default; a device without graphs ignores it). */
mn_status mn_session_pool_set_graphs(mn_session_pool *pool, int enabled);

/* Persistence. attach opens (creating it when missing) the store at path for writing, shaped
 * like the model's R (flags: 0 or MN_STORE_NO_SYNC), and starts the pool's sync thread; one
 * store per pool, closed by mn_session_pool_close. */
mn_status mn_session_pool_attach(mn_session_pool *pool, const char *path, int flags);
/* Binds slot to session id of the store and loads it: its R and turns when the store has it
 * (*found = 1; another compressor's session is refused with MN_ERR_MISMATCH), else R_0 and 0
 * turns (*found = 0, created by the next sync). An id already bound to another slot is refused.
 * The slot's previous session is unbound: its changes not yet synced are dropped (sync first). */
mn_status mn_session_pool_load(mn_session_pool *pool, int slot, const char *id, int *found);
/* Hands every bound slot changed since its last write to the sync thread and returns; it waits
 * only while the thread is two batches behind. The states travel through two host buffers
 * (pinned on CUDA) in turn, so reading one batch off the device overlaps writing the previous. */
mn_status mn_session_pool_sync(mn_session_pool *pool);
/* mn_session_pool_sync, then waits until the store holds every state handed over. */
mn_status mn_session_pool_flush(mn_session_pool *pool);
/* A failure of the background sync (e.g. a full disk) is returned, with the store's message, by
 * the next mn_session_pool_sync, _flush, _load or _close (which then does nothing else, _close
 * excepted); the slots it did not write stay changed, so a later sync writes them again. */

#ifdef __cplusplus
}
#endif
#endif
