/* The library's side of the CUDA backend: run-time device choice and the loader of the CUDA
 * module. The kernels, cuBLAS and NCCL live in libmnemo-cuda.so (the other files of this
 * folder), loaded at the first call that needs CUDA, so that CPU work never maps them. Builds
 * without CUDA answer "no CUDA in this build". */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "build_id.h" /* generated from src/io/build_id.h.in */
#include "core/error.h"
#include "model/backend.h"

#define MODULE_FILE "libmnemo-cuda.so"

/* The outcome of the one load of the process: the module, or why there is none. */
static struct {
    const mn_cuda_module *module;
    char why[1536];
} module_load;
static pthread_once_t module_once = PTHREAD_ONCE_INIT;

#ifdef MN_HAVE_CUDA
static const mn_cuda_host module_host = {.fail = mn_fail};

/* dlopen and check one file: the module in module_load.module, or the reason in module_load.why. */
static void load_module_file(const char *path) {
    void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        snprintf(module_load.why, sizeof module_load.why, "loading the CUDA module %s: %s", path, dlerror());
        return;
    }
    mn_cuda_module_entry_fn entry = (mn_cuda_module_entry_fn)(uintptr_t)dlsym(handle, MN_CUDA_MODULE_ENTRY);
    const mn_cuda_module *m = entry ? entry(&module_host) : NULL;
    const char *why = !entry ? "it has no " MN_CUDA_MODULE_ENTRY ": not a mnemo CUDA module"
                      : !m   ? "its entry returned nothing"
                             : NULL;
    if (!why && (m->abi != MN_CUDA_MODULE_ABI || m->backend_size != sizeof(mn_backend) || !m->build_id ||
                 strcmp(m->build_id, MN_BUILD_ID))) {
        snprintf(module_load.why, sizeof module_load.why,
                 "the CUDA module %s is of another build (%s, interface %d) than this library (%s, interface %d); "
                 "rebuild it, or name the matching one in MNEMO_CUDA_MODULE",
                 path, m->build_id ? m->build_id : "?", m->abi, MN_BUILD_ID, MN_CUDA_MODULE_ABI);
        dlclose(handle);
        return;
    }
    if (why) {
        snprintf(module_load.why, sizeof module_load.why, "the CUDA module %s: %s", path, why);
        dlclose(handle);
        return;
    }
    module_load.module = m; /* the handle stays open for the life of the process */
}

/* Where the module is looked for: MNEMO_CUDA_MODULE alone when set; else beside the object that
 * holds this code (an installed or Python-packaged libmnemo.so), the build tree's module (the
 * CLI and tests run there), the installed one (an installed CLI). The first file that exists
 * is loaded; a failure to load it is the answer. */
static void load_module(void) {
    const char *env = getenv("MNEMO_CUDA_MODULE");
    if (env && env[0]) {
        if (access(env, F_OK) != 0)
            snprintf(module_load.why, sizeof module_load.why, "MNEMO_CUDA_MODULE names %s, which does not exist", env);
        else
            load_module_file(env);
        return;
    }
    char beside[1024] = "";
    Dl_info info;
    if (dladdr((void *)(uintptr_t)mn_cuda_module_get, &info) && info.dli_fname) {
        const char *slash = strrchr(info.dli_fname, '/');
        if (slash)
            snprintf(beside, sizeof beside, "%.*s/" MODULE_FILE, (int)(slash - info.dli_fname), info.dli_fname);
    }
    const char *candidates[] = {beside, MN_CUDA_MODULE_BUILD_PATH, MN_CUDA_MODULE_INSTALL_PATH};
    for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; i++)
        if (candidates[i][0] && access(candidates[i], F_OK) == 0) {
            load_module_file(candidates[i]);
            return;
        }
    snprintf(module_load.why, sizeof module_load.why,
             "the CUDA module " MODULE_FILE " was not found (looked for %s%s" MN_CUDA_MODULE_BUILD_PATH
             ", " MN_CUDA_MODULE_INSTALL_PATH "; MNEMO_CUDA_MODULE names another)",
             beside, beside[0] ? ", " : "");
}
#else
static void load_module(void) { snprintf(module_load.why, sizeof module_load.why, "this build has no CUDA backend"); }
#endif

mn_status mn_cuda_module_get(const mn_cuda_module **out) {
    if (!out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_cuda_module_get: out is NULL");
    pthread_once(&module_once, load_module);
    *out = module_load.module;
    return *out ? MN_OK : mn_fail(MN_ERR_DEVICE, "%s", module_load.why);
}

const mn_backend *mn_backend_cuda(void) {
    const mn_cuda_module *m = NULL;
    if (mn_cuda_module_get(&m) != MN_OK) {
        mn_clear_error();
        return NULL;
    }
    return m->backend;
}

mn_status mn_cuda_device_count(int *count) {
    if (!count)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_cuda_device_count: count is NULL");
    *count = 0;
#ifdef MN_HAVE_CUDA
    const mn_cuda_module *m = NULL;
    MN_TRY(mn_cuda_module_get(&m));
    char message[256];
    if (m->device_count(count, message, sizeof message) != 0)
        return mn_fail(MN_ERR_DEVICE, "%s", message);
#endif
    return MN_OK;
}

mn_status mn_device_resolve(const char *request, mn_device *out, char *notice, size_t notice_cap) {
    if (!request || !out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_device_resolve: NULL argument");
    if (notice && notice_cap)
        notice[0] = '\0';
    if (!strcmp(request, "cpu")) {
        *out = MN_DEVICE_CPU;
        return MN_OK;
    }
    if (strcmp(request, "cuda") && strcmp(request, "auto"))
        return mn_fail(MN_ERR_INVALID_ARG, "unknown device '%s' (expected cpu, cuda or auto)", request);
    int count = 0;
    mn_status st = mn_cuda_device_count(&count);
    /* a copy: mn_fail below rewrites the buffer mn_last_error() points into */
    char why[1600];
#ifndef MN_HAVE_CUDA
    snprintf(why, sizeof why, "this build has no CUDA backend");
#else
    snprintf(why, sizeof why, "%s", st != MN_OK ? mn_last_error() : "no CUDA device found");
#endif
    if (st == MN_OK && count > 0) {
        *out = MN_DEVICE_CUDA;
        return MN_OK;
    }
    if (!strcmp(request, "cuda"))
        return mn_fail(MN_ERR_DEVICE, "--device cuda: %s", why);
    if (notice && notice_cap)
        snprintf(notice, notice_cap, "mnemo: no usable GPU (%s); running on the CPU", why);
    *out = MN_DEVICE_CPU;
    mn_clear_error();
    return MN_OK;
}

mn_status mn_cuda_device_info(int index, mn_device_info *info) {
    if (!info)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_cuda_device_info: info is NULL");
    memset(info, 0, sizeof *info);
    const mn_cuda_module *m = NULL;
    MN_TRY(mn_cuda_module_get(&m));
    char message[512];
    if (m->device_info(index, info, message, sizeof message) != 0)
        return mn_fail(MN_ERR_DEVICE, "%s", message);
    return MN_OK;
}
