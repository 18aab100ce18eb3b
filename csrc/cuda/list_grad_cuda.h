#pragma once
#include <ATen/ATen.h>

namespace rankops {
// CUDA twin of scale_item_grad_cpu: out[i] = grad_loss[b] * item_grad[i] for every item i
// of list b (grad_loss cast to item_grad's dtype). The backward of every loss op whose
// forward already computed d loss_b / d s_i. No host sync: offsets values are trusted
// (the Python layer validates them).
at::Tensor scale_item_grad_cuda(const at::Tensor& grad_loss, const at::Tensor& item_grad,
                                const at::Tensor& offsets);
}  // namespace rankops
