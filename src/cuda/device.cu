#include <cstdio>
#include <cstring>
#include <cuda_runtime.h>

#include "device_cuda.h"

extern "C" int mn_cuda_query_device_count(int *count, char *message, size_t message_cap) {
    cudaError_t err = cudaGetDeviceCount(count);
    if (err != cudaSuccess) {
        *count = 0;
        snprintf(message, message_cap, "cudaGetDeviceCount failed: error %d (%s): %s", (int)err,
                 cudaGetErrorName(err), cudaGetErrorString(err));
        (void)cudaGetLastError(); /* clear the sticky error so later calls start clean */
    }
    return (int)err;
}

/* Dense peak rates of known chips as their makers state them (TFLOP/s: fp32, tf32, bf16), the
 * reference for MFU; other chips get an estimate from SM count x clock x per-SM rate. */
static const struct {
    const char *name_part;
    double fp32, tf32, bf16;
} known_peaks[] = {
    {"H100 PCIe", 51.2, 378.0, 756.0},
    {"H100", 66.9, 494.7, 989.4}, /* SXM5 (NVIDIA H100 80GB HBM3) */
    {"H200", 66.9, 494.7, 989.4},
    {"A100", 19.5, 156.0, 312.0},
};

extern "C" int mn_cuda_query_device_info(int index, mn_device_info *info, char *message, size_t message_cap) {
    memset(info, 0, sizeof *info);
    cudaDeviceProp prop;
    int clock_khz = 0, mem_khz = 0, bus_bits = 0;
    cudaError_t err = cudaGetDeviceProperties(&prop, index);
    if (err == cudaSuccess)
        err = cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, index);
    if (err == cudaSuccess)
        err = cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, index);
    if (err == cudaSuccess)
        err = cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, index);
    if (err != cudaSuccess) {
        snprintf(message, message_cap, "querying CUDA device %d failed: %s (%s)", index, cudaGetErrorName(err),
                 cudaGetErrorString(err));
        (void)cudaGetLastError();
        return (int)err;
    }
    snprintf(info->name, sizeof info->name, "%s", prop.name);
    info->compute_capability = prop.major * 10 + prop.minor;
    info->multiprocessors = prop.multiProcessorCount;
    info->clock_ghz = clock_khz * 1e-6;
    info->memory_gb = (double)prop.totalGlobalMem / 1e9;
    info->peak_bandwidth_gbs = 2.0 * mem_khz * 1e3 * (bus_bits / 8.0) / 1e9; /* double data rate */
    for (size_t i = 0; i < sizeof known_peaks / sizeof known_peaks[0]; i++)
        if (strstr(prop.name, known_peaks[i].name_part)) {
            info->peak_fp32_tflops = known_peaks[i].fp32;
            info->peak_tf32_tflops = known_peaks[i].tf32;
            info->peak_bf16_tflops = known_peaks[i].bf16;
            snprintf(info->peak_source, sizeof info->peak_source, "published dense peak (%s)", known_peaks[i].name_part);
            return 0;
        }
    /* FMA lanes per SM per clock: 64 on sm_80 (and Volta), 128 on sm_86/89/90 */
    int fp32_lanes = (prop.major == 8 && prop.minor == 0) || prop.major < 8 ? 64 : 128;
    double sm_ghz = info->multiprocessors * info->clock_ghz;
    info->peak_fp32_tflops = sm_ghz * fp32_lanes * 2 / 1e3;
    /* dense bf16 flops per SM per clock: 2048 on sm_80, 4096 on sm_90; tf32 half of that */
    double bf16_per_sm = prop.major >= 9 ? 4096 : prop.major == 8 ? (prop.minor == 0 ? 2048 : 1024) : 0;
    info->peak_bf16_tflops = sm_ghz * bf16_per_sm / 1e3;
    info->peak_tf32_tflops = info->peak_bf16_tflops / 2;
    snprintf(info->peak_source, sizeof info->peak_source, "estimate: SMs x %.2f GHz x per-SM rate", info->clock_ghz);
    return 0;
}
