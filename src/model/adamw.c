/* Global-norm clipping and AdamW over the flat parameter buffer (docs/model.md), on the
 * trainer's backend; host mirrors for device backends (pull/push). */
#include <math.h>
#include <string.h>

#include "core/error.h"
#include "model/trainer_internal.h"

float mn_grad_norm(mn_trainer *tr) {
    if (!tr)
        return 0.0f;
    double sumsq = MN_OP(&tr->exec, sum_squares, tr->grads, tr->model->num_params);
    if (mn_exec_status(&tr->exec) != MN_OK)
        return NAN; /* the device failed: mn_last_error() says how */
    return (float)sqrt(sumsq);
}

static int finite_config(const mn_adamw_config *o) {
    return isfinite(o->lr) && isfinite(o->beta1) && isfinite(o->beta2) && isfinite(o->eps) &&
           isfinite(o->weight_decay) && isfinite(o->grad_clip);
}

mn_status mn_adamw_step(mn_trainer *tr, const mn_adamw_config *opt, float *grad_norm) {
    if (!tr || !opt)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_adamw_step: NULL argument");
    if (!finite_config(opt) || opt->lr < 0 || opt->beta1 < 0 || opt->beta1 >= 1 || opt->beta2 < 0 ||
        opt->beta2 >= 1 || opt->eps <= 0 || opt->weight_decay < 0 || opt->grad_clip < 0)
        return mn_fail(MN_ERR_CONFIG,
                       "adamw: invalid settings (lr %g, beta1 %g, beta2 %g, eps %g, weight_decay %g, grad_clip %g)",
                       (double)opt->lr, (double)opt->beta1, (double)opt->beta2, (double)opt->eps,
                       (double)opt->weight_decay, (double)opt->grad_clip);
    if (tr->moment_lo != 0 || tr->moment_hi != tr->model->num_params)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_adamw_step: the moments are sharded; use mn_adamw_step_shard");
    const mn_exec *ex = &tr->exec;
    MN_TRY(mn_exec_status(ex));
    mn_model *m = tr->model;
    double norm = sqrt(MN_OP(ex, sum_squares, tr->grads, m->num_params));
    MN_TRY(mn_exec_status(ex));
    if (grad_norm)
        *grad_norm = (float)norm;
    if (!isfinite(norm))
        return mn_fail(MN_ERR_NUMERIC, "adamw: the gradient norm is not finite; step skipped, parameters untouched");
    if (opt->grad_clip > 0) {
        /* torch.nn.utils.clip_grad_norm_: coefficient clip / (norm + 1e-6), clamped to 1 */
        float coef = (float)((double)opt->grad_clip / (norm + 1e-6));
        if (coef < 1.0f)
            MN_OP(ex, scale, tr->grads, coef, m->num_params);
    }
    tr->step++;
    int n_segs = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const mn_tensor_info *t = &m->tensors[i];
        if (tr->frozen[i])
            continue;
        tr->segments[n_segs++] = (mn_adamw_segment){t->offset, t->size, t->decay ? opt->weight_decay : 0.0f};
    }
    MN_OP(ex, adamw_update, tr->params, tr->grads, tr->adam_m, tr->adam_v, tr->segments, n_segs, opt->lr,
          opt->beta1, opt->beta2, opt->eps, tr->step);
    return ex->be->synchronize(ex->ctx); /* a device failure is reported by the step that caused it */
}

double mn_grad_sumsq_range(mn_trainer *tr, size_t begin, size_t end) {
    if (!tr || begin >= end || end > tr->model->num_params)
        return 0.0;
    double sumsq = MN_OP(&tr->exec, sum_squares, tr->grads + begin, end - begin);
    return mn_exec_status(&tr->exec) != MN_OK ? NAN : sumsq;
}

/* ZeRO-1: the same clip coefficient as mn_adamw_step (from the global sum of squares), then
 * AdamW on [begin, end) only: each tensor segment is cut to the shard. */
mn_status mn_adamw_step_shard(mn_trainer *tr, const mn_adamw_config *opt, double sumsq, size_t begin, size_t end) {
    if (!tr || !opt)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_adamw_step_shard: NULL argument");
    if (begin > end || end > tr->model->num_params)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_adamw_step_shard: shard [%zu, %zu) outside the %zu parameters", begin,
                       end, tr->model->num_params);
    if (begin < tr->moment_lo || end > tr->moment_hi)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_adamw_step_shard: shard [%zu, %zu) outside the moments held [%zu, %zu)",
                       begin, end, tr->moment_lo, tr->moment_hi);
    if (!finite_config(opt) || opt->lr < 0 || opt->beta1 < 0 || opt->beta1 >= 1 || opt->beta2 < 0 ||
        opt->beta2 >= 1 || opt->eps <= 0 || opt->weight_decay < 0 || opt->grad_clip < 0)
        return mn_fail(MN_ERR_CONFIG, "adamw: invalid settings");
    const mn_exec *ex = &tr->exec;
    MN_TRY(mn_exec_status(ex));
    mn_model *m = tr->model;
    double norm = sqrt(sumsq);
    if (!isfinite(norm))
        return mn_fail(MN_ERR_NUMERIC, "adamw: the gradient norm is not finite; step skipped, parameters untouched");
    if (opt->grad_clip > 0) {
        float coef = (float)((double)opt->grad_clip / (norm + 1e-6));
        if (coef < 1.0f && end > begin)
            MN_OP(ex, scale, tr->grads + begin, coef, end - begin);
    }
    tr->step++;
    int n_segs = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const mn_tensor_info *t = &m->tensors[i];
        size_t lo = t->offset > begin ? t->offset : begin, hi = t->offset + t->size < end ? t->offset + t->size : end;
        if (tr->frozen[i] || lo >= hi)
            continue;
        /* offsets relative to the moments' first element: params and grads are passed from there */
        tr->segments[n_segs++] = (mn_adamw_segment){lo - tr->moment_lo, hi - lo, t->decay ? opt->weight_decay : 0.0f};
    }
    if (n_segs)
        MN_OP(ex, adamw_update, tr->params + tr->moment_lo, tr->grads + tr->moment_lo, tr->adam_m, tr->adam_v,
              tr->segments, n_segs, opt->lr, opt->beta1, opt->beta2, opt->eps, tr->step);
    return ex->be->synchronize(ex->ctx);
}

mn_status mn_trainer_freeze(mn_trainer *tr, const char *prefix, int frozen) {
    if (!tr || !prefix)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_trainer_freeze: NULL argument");
    int matched = 0;
    size_t len = strlen(prefix);
    for (int i = 0; i < tr->model->n_tensors; i++)
        if (!strncmp(tr->model->tensors[i].name, prefix, len)) {
            tr->frozen[i] = frozen ? 1 : 0;
            matched++;
        }
    if (!matched)
        return mn_fail(MN_ERR_INVALID_ARG, "freeze: no tensor name starts with '%s'", prefix);
    return MN_OK;
}

int mn_trainer_is_frozen(const mn_trainer *tr, int index) {
    return tr && index >= 0 && index < tr->model->n_tensors && tr->frozen[index];
}

mn_status mn_trainer_pull(mn_trainer *tr) {
    if (!tr)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_trainer_pull: trainer is NULL");
    const mn_exec *ex = &tr->exec;
    if (ex->be->device == MN_DEVICE_CPU)
        return MN_OK; /* the CPU backend works in the host buffers */
    size_t bytes = tr->model->num_params * sizeof(float);
    MN_OP(ex, download, tr->model->params, tr->params, bytes);
    MN_OP(ex, download, tr->host_grads, tr->grads, bytes);
    MN_OP(ex, download, tr->host_adam_m, tr->adam_m, bytes);
    MN_OP(ex, download, tr->host_adam_v, tr->adam_v, bytes);
    return mn_exec_status(ex);
}

mn_status mn_trainer_push(mn_trainer *tr) {
    if (!tr)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_trainer_push: trainer is NULL");
    const mn_exec *ex = &tr->exec;
    if (ex->be->device == MN_DEVICE_CPU)
        return MN_OK;
    size_t bytes = tr->model->num_params * sizeof(float);
    MN_OP(ex, upload, tr->params, tr->model->params, bytes);
    MN_OP(ex, upload, tr->grads, tr->host_grads, bytes);
    MN_OP(ex, upload, tr->adam_m, tr->host_adam_m, bytes);
    MN_OP(ex, upload, tr->adam_v, tr->host_adam_v, bytes);
    return ex->be->synchronize(ex->ctx);
}
