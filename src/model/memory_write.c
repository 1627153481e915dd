/* The compressor's write into R (docs/model.md, "Write rules"): one entry per direction for every
 * rule, shared by training and inference, so both run the same op with the same saved values. */
#include "model/model_internal.h"

size_t mn_memory_write_aux_floats(const mn_config *c, int B) {
    const int k = c->n_slots, C = c->d_model;
    if (c->write_rule == MN_WRITE_GATE)
        return (size_t)B * k * C; /* z */
    return mn_slot_write_aux_floats(B, k, C, mn_write_addresses(c));
}

void mn_memory_write_forward(const mn_exec *ex, const mn_config *c, const mn_param_views *p, float *r_out,
                             float *aux, const float *r_in, const float *u, int B) {
    const int k = c->n_slots, C = c->d_model;
    if (c->write_rule == MN_WRITE_GATE)
        MN_OP(ex, gated_update_forward, r_out, aux, r_in, u, p->gate_w, p->gate_b, B * k, C);
    else
        MN_OP(ex, slot_write_forward, r_out, aux, r_in, u, p->write_w, p->write_b, p->write_diag, B, k, C,
              mn_write_addresses(c));
}

void mn_memory_write_backward(const mn_exec *ex, const mn_config *c, const mn_param_views *p,
                              const mn_param_views *g, float *dr_in, float *du, const float *dr_out,
                              const float *r_in, const float *u, const float *aux, float *scratch, int B) {
    const int k = c->n_slots, C = c->d_model;
    if (c->write_rule == MN_WRITE_GATE)
        MN_OP(ex, gated_update_backward, dr_in, du, g->gate_w, g->gate_b, dr_out, r_in, u, aux, p->gate_w, scratch,
              B * k, C);
    else
        MN_OP(ex, slot_write_backward, dr_in, du, g->write_w, g->write_b, g->write_diag, dr_out, r_in, u, aux,
              p->write_w, scratch, B, k, C, mn_write_addresses(c));
}
