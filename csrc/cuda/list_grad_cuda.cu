// Backward of the list losses on CUDA: scale each item's saved gradient by its list's
// incoming gradient. One thread per item; the item's list is found by a binary search
// in offsets (no per-item list ids to store, no host sync).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda_utils.cuh"
#include "list_grad_cuda.h"

namespace rankops {
namespace {

template <typename T>
__global__ void scale_item_grad_kernel(const T* __restrict__ grad_loss,
                                       const T* __restrict__ item_grad,
                                       const int64_t* __restrict__ offsets, int64_t B,
                                       int64_t N, T* __restrict__ out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < N;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    // b = the last list whose start is <= i (empty lists share their start with the
    // next list, so take the last one)
    int64_t lo = 0, hi = B;  // answer in [0, B)
    while (hi - lo > 1) {
      const int64_t mid = (lo + hi) / 2;
      if (offsets[mid] <= i) lo = mid; else hi = mid;
    }
    out[i] = grad_loss[lo] * item_grad[i];
  }
}

}  // namespace

at::Tensor scale_item_grad_cuda(const at::Tensor& grad_loss, const at::Tensor& item_grad,
                                const at::Tensor& offsets) {
  TORCH_CHECK(grad_loss.dim() == 1 && grad_loss.size(0) == offsets.size(0) - 1,
              "rankops: grad_loss must have one entry per list");
  TORCH_CHECK(item_grad.dim() == 1, "rankops: item_grad must be 1-D");
  TORCH_CHECK(offsets.scalar_type() == at::kLong, "rankops: offsets must be int64");
  TORCH_CHECK(item_grad.is_cuda() && grad_loss.device() == item_grad.device() &&
                  offsets.device() == item_grad.device(),
              "rankops: grad_loss, item_grad and offsets must be on one CUDA device");
  TORCH_CHECK(at::isFloatingType(item_grad.scalar_type()),
              "rankops: item_grad must be a floating tensor");
  const c10::cuda::CUDAGuard guard(item_grad.device());
  const auto item = item_grad.contiguous();
  const auto per_list = grad_loss.to(item.scalar_type()).contiguous();
  const auto off = offsets.contiguous();
  auto out = at::empty_like(item);
  const int64_t B = off.size(0) - 1;
  const int64_t N = item.size(0);
  if (B <= 0 || N == 0) return out.zero_();
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>(ceil_div(N, threads), int64_t(1) << 20);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(item.scalar_type(), "scale_item_grad_cuda", [&] {
    scale_item_grad_kernel<scalar_t><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(
        per_list.data_ptr<scalar_t>(), item.data_ptr<scalar_t>(), off.data_ptr<int64_t>(), B,
        N, out.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace rankops
