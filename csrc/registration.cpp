// The one TORCH_LIBRARY(rankops, m): every op schema lives here, so this file is the
// table of contents of the extension. Kernels register per backend in csrc/cpu and
// csrc/cuda. Loading the shared object (import rankops._C) runs these registrations.
#include <Python.h>
#include <torch/library.h>
#include <torch/version.h>

#include <string>

#if defined(RANKOPS_WITH_CUDA)
#include <cuda.h>
#endif

#ifndef RANKOPS_CUDA_ARCHS
#define RANKOPS_CUDA_ARCHS ""
#endif
#ifndef RANKOPS_CPU_FLAGS
#define RANKOPS_CPU_FLAGS ""
#endif

namespace rankops {

// What this build contains, as "key=value;..." (parsed by rankops.build_info()).
std::string build_info() {
  std::string info = "torch=" TORCH_VERSION;
#if defined(RANKOPS_WITH_CUDA)
  info += ";cuda=1;cuda_version=" + std::to_string(CUDA_VERSION) + ";cuda_archs=" RANKOPS_CUDA_ARCHS;
#else
  info += ";cuda=0;cuda_version=;cuda_archs=";
#endif
#if defined(_OPENMP)
  info += ";openmp=1";
#else
  info += ";openmp=0";
#endif
  info += ";cpu_flags=" RANKOPS_CPU_FLAGS;
  return info;
}

// Defines an op whose CUDA kernel reads data on the host (the pairwise op's per-call
// plan, csrc/cuda/pairwise_cuda.cu), so it cannot run inside a CUDA graph: the
// cudagraph_unsafe tag makes torch.compile(mode="reduce-overhead") keep it out of its
// graphs (a graph partition, or no graph) instead of failing. The tag exists from torch
// 2.9 on; with older torch, eager capture still gets the op's own clear error.
void def_host_sync_op(torch::Library& m, const char* schema) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 9)
  m.def(schema, {at::Tag::cudagraph_unsafe});
#else
  m.def(schema);
#endif
}

TORCH_LIBRARY(rankops, m) {
  // Pairwise family (DESIGN §3). Returns (loss [B], item_grad [N] or [0], num_pairs [B]):
  // the per-list loss, d loss_b / d s_i fused into the same pass (empty when
  // compute_grad is false), and the number of pairs y_i > y_j per list.
  def_host_sync_op(
      m,
      "pairwise_loss(Tensor scores, Tensor labels, Tensor offsets, Tensor? weights, "
      "str pair_fn, str pair_weight, float sigma, float margin, int? k, float mu, str gain, "
      "bool compute_grad) -> (Tensor, Tensor, Tensor)");
  // grad_scores[i] = grad_loss[b] * item_grad[i] for item i of list b.
  m.def("pairwise_loss_backward(Tensor grad_loss, Tensor item_grad, Tensor offsets) -> Tensor");
  // Test hook: a path of the CUDA pairwise kernel ('block': csrc/common/pair_block_list.h,
  // 'long': csrc/common/pair_long_path.h) emulated on the CPU with every list sent down
  // that path; tile_width (long) 0 = the CUDA plan's choice; plan_only stops after choosing
  // the width. Returns pairwise_loss's outputs (item_grad always) and the width used.
  m.def(
      "_pairwise_loss_emulated(Tensor scores, Tensor labels, Tensor offsets, Tensor? weights, "
      "str pair_fn, str pair_weight, float sigma, float margin, int? k, float mu, str gain, "
      "str path, int tile_width, bool plan_only) -> (Tensor, Tensor, Tensor, int)");
  // Ranking metrics (DESIGN §3 "Metrics"). Row j of both outputs is metric metrics[j]
  // ('ndcg', 'dcg', 'mrr', 'ap', 'precision', 'recall', 'err') at cut-off ks[j] (0: the
  // whole list), column b is list b: values [M, B] (accumulation dtype; 0 where
  // undefined) and defined [M, B] (bool: the list has a positive gain for ndcg/dcg/err,
  // an item with label >= relevance_threshold for the others). One sort per list for
  // all rows; no gradient. ties: 'position' (broken by position in the list) or
  // 'average' (expected value over every order of each run of equal scores).
  m.def(
      "ranking_metrics(Tensor scores, Tensor labels, Tensor offsets, str[] metrics, int[] ks, "
      "str gain, float relevance_threshold, float max_grade, str precision_divide_by, "
      "str ties=\"position\") -> (Tensor, Tensor)");

  // Listwise family (DESIGN §3). Returns (loss [B], item_grad [N] or [0]): the per-list
  // loss and d loss_b / d s_i fused into the same pass (empty when compute_grad is false).
  // The mean reduction (non-empty lists) is computed from offsets in Python.
  m.def(
      "softmax_loss(Tensor scores, Tensor labels, Tensor offsets, Tensor? weights, "
      "bool label_norm, float poly_epsilon, bool label_softmax, bool compute_grad) -> "
      "(Tensor, Tensor)");
  m.def("softmax_loss_backward(Tensor grad_loss, Tensor item_grad, Tensor offsets) -> Tensor");
  m.def(
      "listmle_loss(Tensor scores, Tensor labels, Tensor offsets, Tensor? weights, "
      "str position_weight, bool compute_grad) -> (Tensor, Tensor)");
  m.def("listmle_loss_backward(Tensor grad_loss, Tensor item_grad, Tensor offsets) -> Tensor");
  m.def(
      "unique_softmax_loss(Tensor scores, Tensor labels, Tensor offsets, Tensor? weights, "
      "str gain, bool compute_grad) -> (Tensor, Tensor)");
  m.def(
      "unique_softmax_loss_backward(Tensor grad_loss, Tensor item_grad, Tensor offsets) -> "
      "Tensor");
  m.def(
      "approx_ndcg_loss(Tensor scores, Tensor labels, Tensor offsets, Tensor? weights, "
      "float temperature, int? k, str gain, bool compute_grad) -> (Tensor, Tensor)");
  m.def("approx_ndcg_loss_backward(Tensor grad_loss, Tensor item_grad, Tensor offsets) -> Tensor");
  m.def("build_info() -> str", &build_info);
}

}  // namespace rankops

// import rankops._C loads this library; the module itself is empty.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
