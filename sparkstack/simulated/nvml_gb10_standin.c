/*
 * STAND-IN: a GB10-shaped libnvidia-ml.so.1 for simulated Sparks.
 *
 * ABI-compatible with the NVML entry points sparkstack's checks use (through
 * nvidia-ml-py), answering as a DGX Spark does: one "NVIDIA GB10", compute capability
 * 12.1, driver 580.95.05, CUDA 13.0, plausible temperature and power, and
 * NVML_ERROR_NOT_SUPPORTED for memory (unified memory has no NVML memory figures).
 * Built by the simulated fleet: cc -shared -fPIC -o libnvidia-ml.so.1 nvml_gb10_standin.c
 * NVML_STANDIN_TEMPERATURE / NVML_STANDIN_POWER_MW override the readings.
 */
#include <stdlib.h>
#include <string.h>

typedef int nvmlReturn_t;
typedef struct nvmlDevice_st *nvmlDevice_t;

#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_INSUFFICIENT_SIZE 7

struct nvmlDevice_st { int index; };
static struct nvmlDevice_st gb10 = {0};
static int initialised = 0;

typedef struct { unsigned int gpu; unsigned int memory; } nvmlUtilization_t;

static nvmlReturn_t copy_string(const char *value, char *buf, unsigned int len) {
    if (!buf) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(value) + 1 > len) return NVML_ERROR_INSUFFICIENT_SIZE;
    strcpy(buf, value);
    return NVML_SUCCESS;
}

static unsigned int env_uint(const char *name, unsigned int fallback) {
    const char *v = getenv(name);
    return v ? (unsigned int)strtoul(v, NULL, 10) : fallback;
}

nvmlReturn_t nvmlInitWithFlags(unsigned int flags) { (void)flags; initialised = 1; return NVML_SUCCESS; }
nvmlReturn_t nvmlInit_v2(void) { initialised = 1; return NVML_SUCCESS; }
nvmlReturn_t nvmlInit(void) { initialised = 1; return NVML_SUCCESS; }
nvmlReturn_t nvmlShutdown(void) { initialised = 0; return NVML_SUCCESS; }

const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    default: return "Unknown Error";
    }
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    return copy_string("580.95.05", version, length);
}

nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *v) { if (!v) return NVML_ERROR_INVALID_ARGUMENT; *v = 13000; return NVML_SUCCESS; }
nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *v) { return nvmlSystemGetCudaDriverVersion_v2(v); }

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    *count = 1;
    return NVML_SUCCESS;
}
nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) { return nvmlDeviceGetCount_v2(count); }

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    if (index != 0 || !device) return NVML_ERROR_INVALID_ARGUMENT;
    *device = &gb10;
    return NVML_SUCCESS;
}
nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int i, nvmlDevice_t *d) { return nvmlDeviceGetHandleByIndex_v2(i, d); }

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    if (device != &gb10) return NVML_ERROR_INVALID_ARGUMENT;
    return copy_string("NVIDIA GB10", name, length);
}

nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t device, int *major, int *minor) {
    if (device != &gb10 || !major || !minor) return NVML_ERROR_INVALID_ARGUMENT;
    *major = 12;
    *minor = 1;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, int sensor, unsigned int *temp) {
    (void)sensor;
    if (device != &gb10 || !temp) return NVML_ERROR_INVALID_ARGUMENT;
    *temp = env_uint("NVML_STANDIN_TEMPERATURE", 43);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *milliwatts) {
    if (device != &gb10 || !milliwatts) return NVML_ERROR_INVALID_ARGUMENT;
    *milliwatts = env_uint("NVML_STANDIN_POWER_MW", 11800);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *util) {
    if (device != &gb10 || !util) return NVML_ERROR_INVALID_ARGUMENT;
    util->gpu = 0;
    util->memory = 0;
    return NVML_SUCCESS;
}

/* Unified memory: a GB10 reports no memory through NVML. */
nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, void *memory) {
    (void)device; (void)memory;
    return NVML_ERROR_NOT_SUPPORTED;
}
nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, void *memory) {
    return nvmlDeviceGetMemoryInfo(device, memory);
}

nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t device, unsigned long long *reasons) {
    if (device != &gb10 || !reasons) return NVML_ERROR_INVALID_ARGUMENT;
    *reasons = 0x1ULL; /* GpuIdle */
    return NVML_SUCCESS;
}
nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t d, unsigned long long *r) {
    return nvmlDeviceGetCurrentClocksEventReasons(d, r);
}

/* No process on the GPU: count 0 and success, as the real library answers. */
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int *count, void *infos) {
    (void)infos;
    if (device != &gb10 || !count) return NVML_ERROR_INVALID_ARGUMENT;
    *count = 0;
    return NVML_SUCCESS;
}
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t d, unsigned int *c, void *i) {
    return nvmlDeviceGetComputeRunningProcesses_v3(d, c, i);
}
