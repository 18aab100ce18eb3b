#pragma once
#include <ATen/ATen.h>

namespace rankops {
// out[i] = grad_loss[b] * item_grad[i] for every item i of list b: the backward of
// every loss op, whose forward already computed d loss_b / d s_i.
at::Tensor scale_item_grad_cpu(const at::Tensor& grad_loss, const at::Tensor& item_grad,
                               const at::Tensor& offsets);
}  // namespace rankops
