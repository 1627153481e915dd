/* The C side of the CUDA backend: functions implemented in .cu files, callable from C. */
#ifndef MN_DEVICE_CUDA_H
#define MN_DEVICE_CUDA_H

#include <stddef.h>

#include "mnemo.h"

#ifdef __cplusplus
extern "C" {
#endif
/* Returns the cudaError_t of cudaGetDeviceCount (0 = success); on failure writes its text. */
int mn_cuda_query_device_count(int *count, char *message, size_t message_cap);
/* Fills info for device `index`; returns the first failing cudaError_t and writes its text. */
int mn_cuda_query_device_info(int index, mn_device_info *info, char *message, size_t message_cap);
#ifdef __cplusplus
}
#endif
#endif
