// RANKOPS_HD marks math that both the CPU loops and the CUDA kernels call.
// Under nvcc (host and device passes) it is __host__ __device__ __forceinline__;
// under g++/clang/MSVC it is plain inline, so the same header builds C++-only.
#pragma once

#if defined(__CUDACC__)
#define RANKOPS_HD __host__ __device__ __forceinline__
#else
#define RANKOPS_HD inline
#endif

// Before a RANKOPS_HD template that calls a device-only member of its template argument
// (a CUDA block "team"): nvcc then checks the call only where it is instantiated.
#if defined(__CUDACC__)
#define RANKOPS_HD_TEMPLATE _Pragma("nv_exec_check_disable")
#else
#define RANKOPS_HD_TEMPLATE
#endif

#include <cstdint>

#if defined(__CUDA_ARCH__)
#define RANKOPS_DEVICE_PASS 1
#else
#define RANKOPS_DEVICE_PASS 0
#endif

namespace rankops {
// ceil(a / b) for a >= 0, b > 0: launch sizes and tile counts, on host and device.
RANKOPS_HD constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
}  // namespace rankops
