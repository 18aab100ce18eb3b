// Helpers shared by the CUDA kernels of every loss family: launch checks, cub calls
// with temp storage from PyTorch's caching allocator, deterministic warp/block
// reductions (orderable sort keys: csrc/common/sort_keys.h).
#pragma once
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../common/macros.h"

namespace rankops {
namespace cuda {

constexpr unsigned kFullMask = 0xffffffffu;


// Runs a cub device-wide algorithm twice: once to size its temp storage, once for real,
// the storage coming from the caching allocator (a uint8 tensor on `device`).
// `call(void* temp, size_t& bytes)` must return the cub call's cudaError_t.
template <typename Call>
void cub_call(const at::Device& device, Call call) {
  size_t bytes = 0;
  C10_CUDA_CHECK(call(nullptr, bytes));
  auto temp = at::empty({static_cast<int64_t>(bytes) + 1},
                        at::TensorOptions().dtype(at::kByte).device(device));
  C10_CUDA_CHECK(call(temp.data_ptr(), bytes));
}

// Offsets clamped to [0, N]. The Python layer validates offsets, but validate=False,
// torch.compile and CUDA-graph capture skip that, and these kernels (unlike the pairwise
// op's plan) do not read them on the host: clamped, bad offsets can only give wrong values
// (empty or overlapping lists), never an access outside the N items. No host sync.
inline at::Tensor offsets_within(const at::Tensor& offsets, int64_t N) {
  return offsets.clamp(0, N).contiguous();
}

// Device attribute of the current device (cached per device by the caller if hot).
inline int device_attribute(cudaDeviceAttr attr, int device) {
  int v = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&v, attr, device));
  return v;
}

// ---- reductions: fixed shuffle trees, so the result is the same bits every run ----

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

// Sum over the block; every thread gets the result. blockDim.x must be a multiple of 32
// (at most 1024). Contains __syncthreads(): call it from every thread of the block.
template <typename T>
__device__ __forceinline__ T block_sum(T v) {
  __shared__ T partial[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // partial[] may still be read by a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  T total = lane < warps ? partial[lane] : T(0);
  total = warp_sum(total);  // every warp reduces the same values in the same order
  return total;
}

// A warp and a block as the "team" of csrc/common/pair_block_list.h.
struct WarpTeam {
  __device__ __forceinline__ int rank() const { return threadIdx.x & 31; }
  __device__ __forceinline__ int size() const { return 32; }
  __device__ __forceinline__ void sync() const { __syncwarp(); }
  template <typename V>
  __device__ __forceinline__ V sum(V v) const { return warp_sum(v); }
};

struct BlockTeam {
  __device__ __forceinline__ int rank() const { return threadIdx.x; }
  __device__ __forceinline__ int size() const { return blockDim.x; }
  __device__ __forceinline__ void sync() const { __syncthreads(); }
  template <typename V>
  __device__ __forceinline__ V sum(V v) const { return block_sum(v); }
};

}  // namespace cuda
}  // namespace rankops
