/* The PyTorch oracle's fixture files (scripts/reference/gen_fixture.py, layout in
 * scripts/reference/README.md), shared by test_model and test_cuda_model: which file a test
 * reads (tiny_model.h5 for the gate, tiny_model_<rule>.h5 for a write rule; cmocka setups
 * switch it), and reading its config, batch and named tensors. Failures fail the test. */
#ifndef MN_TEST_TINY_FIXTURE_H
#define MN_TEST_TINY_FIXTURE_H

#include <hdf5.h>
#include <stdint.h>

#include "mnemo.h"

typedef struct {
    mn_config config;
    int bptt, B, T, max_len;
    int32_t *tokens, *lengths;
    float *weights;
    hid_t file;
} tiny_fixture;

/* $MNEMO_FIXTURES (default tests/fixtures) / the selected file */
const char *tiny_fixture_path(void);
/* cmocka setups: select the file of the slot rule, the delta rule, or the gate (the default) */
int tiny_fixture_use_slot(void **state);
int tiny_fixture_use_delta(void **state);
int tiny_fixture_use_gate(void **state);

void tiny_fixture_open(tiny_fixture *fx);
void tiny_fixture_close(tiny_fixture *fx);
mn_batch tiny_fixture_batch(const tiny_fixture *fx);
/* group/<tensor name> for every tensor of m, in m's flat layout (calloc'd) */
float *tiny_fixture_tensors(const tiny_fixture *fx, mn_model *m, const char *group);
/* a model of the fixture's config holding its /params */
mn_model *tiny_fixture_model(const tiny_fixture *fx);

#endif
