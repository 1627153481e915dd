/* A test backend that runs the CPU ops behind the device code path of the model: it reports
 * itself as a CUDA device (so the model keeps separate parameter copies, host mirrors, uploads
 * and read-backs exactly as on a GPU), keeps its memory in registered allocations, and checks
 * every pointer an op receives: device arguments must lie inside one allocation for the whole
 * extent the op touches, host arguments of upload/download must not. A host/device mix-up or
 * an out-of-range extent in the model's device logic is reported as MN_ERR_DEVICE naming the
 * op and the argument, which a GPU would turn into a fault or silent garbage. */
#ifndef MN_GUARDED_BACKEND_H
#define MN_GUARDED_BACKEND_H

#include "model/backend.h"

const mn_backend *mn_guarded_backend(void);
/* The same with a linear layer that doubles its output: a test that gets the CPU's results
 * from it was not running on the device path (and a check against the CPU must catch it). */
const mn_backend *mn_guarded_backend_wrong(void);

#endif
