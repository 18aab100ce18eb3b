// Autograd for the loss ops, in C++ (a torch::autograd::Function on the Autograd dispatch
// key, serving CPU and CUDA), so that neither the forward nor the backward of a training
// step enters Python: torch.library.register_autograd cost a Python round trip each way,
// about a third of a small batch's forward + backward (docs/decisions.md).
//
// Every loss op fuses d loss_b / d s_i into its forward (output 1, item_grad), so the
// backward only scales it by the incoming gradient: grad_scores[i] = grad_loss[b] *
// item_grad[i], which is the op's *_backward kernel, cast back to the scores' dtype.
#include <torch/autograd.h>
#include <torch/library.h>

#include <tuple>
#include <utility>

namespace rankops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The gradient a loss returns is final: the kernels give first derivatives only, so
// differentiating that gradient again (create_graph=True, e.g. a gradient penalty) raises
// instead of silently treating it as a constant. Attached to `scores` so that its output
// requires grad exactly when a second derivative could be asked for.
struct NoDoubleBackward : public torch::autograd::Function<NoDoubleBackward> {
  static at::Tensor forward(AutogradContext*, const at::Tensor& grad, const at::Tensor& scores) {
    return grad.clone();
  }
  static variable_list backward(AutogradContext*, variable_list) {
    TORCH_CHECK(false,
                "rankops: double backward (differentiating the gradient of a rankops loss, e.g. "
                "create_graph=True) is not supported");
  }
};

// Op describes one loss op: its two schema names and the C++ signature of its forward.
// The Function's only output is the loss: the op's other outputs (item_grad, num_pairs)
// leave through `by_products`, outside autograd, so nothing has to be marked
// non-differentiable (compiled autograd refuses Functions that mark outputs) and no zero
// gradient is made for them in the backward.
template <class Op>
struct LossFunction : public torch::autograd::Function<LossFunction<Op>> {
  template <class... Options>
  static at::Tensor forward(AutogradContext* ctx, variable_list* by_products,
                            const at::Tensor& scores, const at::Tensor& labels,
                            const at::Tensor& offsets, const c10::optional<at::Tensor>& weights,
                            Options... options) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow(Op::forward_name, "")
                         .template typed<typename Op::Signature>();
    auto outputs = [&] {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      return op.call(scores, labels, offsets, weights, options...);
    }();
    variable_list result = std::apply(
        [](auto&&... tensors) { return variable_list{std::move(tensors)...}; }, std::move(outputs));
    *by_products = variable_list(result.begin() + 1, result.end());
    ctx->save_for_backward({result[1], offsets});
    ctx->saved_data["scores_dtype"] = scores.scalar_type();
    ctx->saved_data["scores"] = scores;  // only to attach NoDoubleBackward
    ctx->saved_data["num_inputs"] = static_cast<int64_t>(5 + sizeof...(Options));
    return result[0];
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    static auto backward_op = c10::Dispatcher::singleton()
                                  .findSchemaOrThrow(Op::backward_name, "")
                                  .template typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                                             const at::Tensor&)>();
    variable_list grad_inputs(ctx->saved_data["num_inputs"].toInt());
    // Only scores (the first tensor input) get a gradient; a graph that reaches this node
    // through another input (weights, from a direct op call) gets none.
    if (!ctx->needs_input_grad(0)) return grad_inputs;
    const auto saved = ctx->get_saved_variables();
    const at::Tensor scores = ctx->saved_data["scores"].toTensor();
    // Checked here, on the host, for every device: the CUDA *_backward kernels cannot read
    // offsets[-1] without a sync, and an empty item_grad there would surface only as
    // autograd's shape mismatch.
    TORCH_CHECK(saved[0].size(0) == scores.size(0),
                "rankops: this loss was computed with compute_grad=False, so it has no "
                "gradient to give; call the op with compute_grad=True (the rankops.* "
                "functions do whenever scores require grad)");
    at::Tensor grad_scores;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      grad_scores = backward_op.call(grad_outputs[0], saved[0], saved[1])
                        .to(ctx->saved_data["scores_dtype"].toScalarType());
    }
    if (at::GradMode::is_enabled() && scores.requires_grad()) {  // create_graph=True
      grad_scores = NoDoubleBackward::apply(grad_scores, scores);
    }
    grad_inputs[1] = grad_scores;  // [0] is by_products
    return grad_inputs;
  }
};

template <class Op, class... Options>
variable_list apply_loss(const at::Tensor& scores, const at::Tensor& labels,
                         const at::Tensor& offsets, const c10::optional<at::Tensor>& weights,
                         Options... options) {
  variable_list by_products;
  at::Tensor loss = LossFunction<Op>::apply(&by_products, scores, labels, offsets, weights,
                                            options...);
  variable_list outputs{std::move(loss)};
  outputs.insert(outputs.end(), by_products.begin(), by_products.end());
  return outputs;
}

using OptionalTensor = c10::optional<at::Tensor>;
using Tensor2 = std::tuple<at::Tensor, at::Tensor>;
using Tensor3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

struct PairwiseLossOp {
  static constexpr const char* forward_name = "rankops::pairwise_loss";
  static constexpr const char* backward_name = "rankops::pairwise_loss_backward";
  using Signature = Tensor3(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                            const OptionalTensor&, c10::string_view, c10::string_view, double,
                            double, c10::optional<int64_t>, double, c10::string_view, bool);
};
struct SoftmaxLossOp {
  static constexpr const char* forward_name = "rankops::softmax_loss";
  static constexpr const char* backward_name = "rankops::softmax_loss_backward";
  using Signature = Tensor2(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                            const OptionalTensor&, bool, double, bool, bool);
};
struct ListMLELossOp {
  static constexpr const char* forward_name = "rankops::listmle_loss";
  static constexpr const char* backward_name = "rankops::listmle_loss_backward";
  using Signature = Tensor2(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                            const OptionalTensor&, c10::string_view, bool);
};
struct UniqueSoftmaxLossOp {
  static constexpr const char* forward_name = "rankops::unique_softmax_loss";
  static constexpr const char* backward_name = "rankops::unique_softmax_loss_backward";
  using Signature = Tensor2(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                            const OptionalTensor&, c10::string_view, bool);
};
struct ApproxNDCGLossOp {
  static constexpr const char* forward_name = "rankops::approx_ndcg_loss";
  static constexpr const char* backward_name = "rankops::approx_ndcg_loss_backward";
  using Signature = Tensor2(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                            const OptionalTensor&, double, c10::optional<int64_t>,
                            c10::string_view, bool);
};

Tensor3 pairwise_loss_autograd(const at::Tensor& scores, const at::Tensor& labels,
                               const at::Tensor& offsets, const OptionalTensor& weights,
                               c10::string_view pair_fn, c10::string_view pair_weight,
                               double sigma, double margin, c10::optional<int64_t> k, double mu,
                               c10::string_view gain, bool compute_grad) {
  auto out = apply_loss<PairwiseLossOp>(scores, labels, offsets, weights, pair_fn, pair_weight,
                                        sigma, margin, k, mu, gain, compute_grad);
  return {out[0], out[1], out[2]};
}

Tensor2 softmax_loss_autograd(const at::Tensor& scores, const at::Tensor& labels,
                              const at::Tensor& offsets, const OptionalTensor& weights,
                              bool label_norm, double poly_epsilon, bool label_softmax,
                              bool compute_grad) {
  auto out = apply_loss<SoftmaxLossOp>(scores, labels, offsets, weights, label_norm, poly_epsilon,
                                       label_softmax, compute_grad);
  return {out[0], out[1]};
}

Tensor2 listmle_loss_autograd(const at::Tensor& scores, const at::Tensor& labels,
                              const at::Tensor& offsets, const OptionalTensor& weights,
                              c10::string_view position_weight, bool compute_grad) {
  auto out = apply_loss<ListMLELossOp>(scores, labels, offsets, weights, position_weight,
                                       compute_grad);
  return {out[0], out[1]};
}

Tensor2 unique_softmax_loss_autograd(const at::Tensor& scores, const at::Tensor& labels,
                                     const at::Tensor& offsets, const OptionalTensor& weights,
                                     c10::string_view gain, bool compute_grad) {
  auto out = apply_loss<UniqueSoftmaxLossOp>(scores, labels, offsets, weights, gain, compute_grad);
  return {out[0], out[1]};
}

Tensor2 approx_ndcg_loss_autograd(const at::Tensor& scores, const at::Tensor& labels,
                                  const at::Tensor& offsets, const OptionalTensor& weights,
                                  double temperature, c10::optional<int64_t> k,
                                  c10::string_view gain, bool compute_grad) {
  auto out = apply_loss<ApproxNDCGLossOp>(scores, labels, offsets, weights, temperature, k, gain,
                                          compute_grad);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(rankops, Autograd, m) {
  m.impl("pairwise_loss", &pairwise_loss_autograd);
  m.impl("softmax_loss", &softmax_loss_autograd);
  m.impl("listmle_loss", &listmle_loss_autograd);
  m.impl("unique_softmax_loss", &unique_softmax_loss_autograd);
  m.impl("approx_ndcg_loss", &approx_ndcg_loss_autograd);
}

}  // namespace rankops
