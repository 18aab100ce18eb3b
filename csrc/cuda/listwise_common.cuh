// What the CUDA kernels of the listwise family share (listwise_cuda.cu: softmax, ListMLE,
// unique softmax; approx_ndcg_cuda.cu): the block size of a block per list, the scan and
// reduction operators, the segmented sort, and the preparation of an op's inputs and
// outputs.
#pragma once
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>

#include <cub/cub.cuh>

#include <algorithm>
#include <climits>
#include <cstdint>

#include "../common/checks.h"
#include "../common/listwise_math.h"
#include "cuda_utils.cuh"

namespace rankops {
namespace listwise_cuda {

// threads of the block that owns a list (softmax, ListMLE, unique softmax; ApproxNDCG's
// per-list reductions)
constexpr int kThreads = 128;

template <typename T>
using BlockReduceStorage = typename cub::BlockReduce<T, kThreads>::TempStorage;
template <typename T>
using BlockScanStorage = typename cub::BlockScan<T, kThreads>::TempStorage;

struct SumOp {
  template <typename T>
  __device__ __forceinline__ T operator()(const T& a, const T& b) const { return a + b; }
};
struct MaxOp {
  template <typename T>
  __device__ __forceinline__ T operator()(const T& a, const T& b) const { return a > b ? a : b; }
};
struct LogAddExpOp {
  template <typename T>
  __device__ __forceinline__ T operator()(const T& a, const T& b) const { return log_add_exp(a, b); }
};
struct MinOp {
  template <typename T>
  __device__ __forceinline__ T operator()(const T& a, const T& b) const { return a < b ? a : b; }
};
struct ComposeOp {  // Affine (ListMLE) and GroupScanMap (unique softmax)
  template <typename Map>
  __device__ __forceinline__ Map operator()(const Map& a, const Map& b) const {
    return compose(a, b);
  }
};

// Block-wide reduction whose result every thread gets. Call from every thread.
template <typename T, typename Op>
__device__ __forceinline__ T block_all_reduce(T v, Op op, BlockReduceStorage<T>& tmp,
                                              T& shared) {
  T r = cub::BlockReduce<T, kThreads>(tmp).Reduce(v, op);
  if (threadIdx.x == 0) shared = r;
  __syncthreads();
  r = shared;
  __syncthreads();  // tmp and shared are reused by the next call
  return r;
}

// ---- host side ----------------------------------------------------------------------

inline unsigned elementwise_blocks(int64_t n) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(ceil_div(n, 256), 65536)));
}

// Sorts (keys, values) descending within each list; radix sort is stable.
template <typename K, typename V>
void segmented_sort_desc(const at::Tensor& keys_in, at::Tensor& keys_out, const V* values_in,
                         V* values_out, const at::Tensor& offsets, cudaStream_t stream) {
  const int64_t N = keys_in.size(0), B = offsets.size(0) - 1;
  TORCH_CHECK(N < INT_MAX && B < INT_MAX, "rankops: more than 2^31 items or lists");
  const int64_t* off = offsets.data_ptr<int64_t>();
  size_t bytes = 0;
  auto call = [&](void* temp) {
    if (values_in)
      return cub::DeviceSegmentedRadixSort::SortPairsDescending(
          temp, bytes, keys_in.data_ptr<K>(), keys_out.data_ptr<K>(), values_in, values_out,
          static_cast<int>(N), static_cast<int>(B), off, off + 1, 0, int(sizeof(K) * 8), stream);
    return cub::DeviceSegmentedRadixSort::SortKeysDescending(
        temp, bytes, keys_in.data_ptr<K>(), keys_out.data_ptr<K>(), static_cast<int>(N),
        static_cast<int>(B), off, off + 1, 0, int(sizeof(K) * 8), stream);
  };
  C10_CUDA_CHECK(call(nullptr));
  auto temp = at::empty({static_cast<int64_t>(bytes) + 1}, keys_in.options().dtype(at::kByte));
  C10_CUDA_CHECK(call(temp.data_ptr()));
}

struct Prepared {
  at::Tensor scores, labels, weights, offsets, loss, item_grad;
};

inline Prepared prepare(const at::Tensor& scores, const at::Tensor& labels,
                        const at::Tensor& offsets, const c10::optional<at::Tensor>& weights,
                        bool compute_grad) {
  check_list_inputs(scores, labels, offsets, weights);
  TORCH_CHECK(scores.is_cuda(), "rankops: expected CUDA tensors");
  Prepared p;
  const auto acc = acc_dtype_of(scores.scalar_type());
  p.offsets = cuda::offsets_within(offsets, scores.size(0));
  p.scores = scores.contiguous();
  p.labels = labels.to(acc).contiguous();
  p.weights = weights.has_value() ? weights->to(acc).contiguous() : at::Tensor();
  p.loss = at::zeros({p.offsets.size(0) - 1}, scores.options().dtype(acc));
  p.item_grad = at::zeros({compute_grad ? scores.size(0) : 0}, scores.options().dtype(acc));
  return p;
}

template <typename T>
const T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

template <typename T>
T* grad_ptr(at::Tensor& t) {
  return t.numel() > 0 ? t.data_ptr<T>() : nullptr;
}

}  // namespace listwise_cuda
}  // namespace rankops
