#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>

#include "list_grad.h"

namespace rankops {

at::Tensor scale_item_grad_cpu(const at::Tensor& grad_loss, const at::Tensor& item_grad,
                               const at::Tensor& offsets) {
  TORCH_CHECK(grad_loss.dim() == 1 && grad_loss.size(0) == offsets.size(0) - 1,
              "rankops: grad_loss must have one entry per list");
  TORCH_CHECK(item_grad.dim() == 1, "rankops: item_grad must be 1-D");
  TORCH_CHECK(offsets.scalar_type() == at::kLong, "rankops: offsets must be int64");
  const auto item = item_grad.contiguous();
  const auto per_list = grad_loss.to(item.scalar_type()).contiguous();
  const auto off = offsets.contiguous();
  auto out = at::empty_like(item);
  const int64_t B = off.size(0) - 1;
  const int64_t* o = off.data_ptr<int64_t>();
  TORCH_CHECK(item.size(0) == (B >= 0 ? o[B] : 0),
              "rankops: item_grad must have offsets[-1] entries (was the forward run with "
              "compute_grad=False?)");
  AT_DISPATCH_FLOATING_TYPES(item.scalar_type(), "scale_item_grad_cpu", [&] {
    const scalar_t* g = item.data_ptr<scalar_t>();
    const scalar_t* gl = per_list.data_ptr<scalar_t>();
    scalar_t* y = out.data_ptr<scalar_t>();
    // O(N) and memory-bound: split into chunks of ~64k items on average; smaller batches
    // stay on the calling thread (a parallel region costs more than the work).
    const int64_t n_items = item.size(0);
    const int64_t grain = std::max<int64_t>(64, n_items > 0 ? B * 65536 / n_items : B + 1);
    at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b)
        for (int64_t i = o[b]; i < o[b + 1]; ++i) y[i] = gl[b] * g[i];
    });
  });
  return out;
}

}  // namespace rankops
