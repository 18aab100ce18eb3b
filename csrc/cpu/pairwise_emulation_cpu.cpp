// CPU emulation of two paths of the CUDA pairwise kernel (csrc/cuda/pairwise_cuda.cu), for
// the tests: rankops::_pairwise_loss_emulated runs the paths' own __host__ __device__
// code on the CPU, with every list of n >= 2 items sent down the chosen path, so that the
// index math of the GPU kernels is checked on machines without a GPU.
//   path "block": csrc/common/pair_block_list.h, the warp and block kernels' algorithm
//                 (sorts, pair count, IDCG, ranks and the pair loop in a carved
//                 shared-memory buffer) run by a team of one thread;
//   path "long":  csrc/common/pair_long_path.h (tile width choice, tiling, per-tile pair
//                 loop, per-row sums in tile order); the device-only steps are stood in
//                 for by their serial equivalents: std::stable_sort on the same orderable
//                 keys for cub's stable sorts, a loop over tile indices for the grid, and
//                 sequential sums for the block reductions.
// tile_width (long path): 0 for the width the CUDA plan would pick, or any width >= 1 (the
// tests use tiny ones to reach every tiling case); plan_only: return after choosing the
// width. Returns the op's three outputs and the tile width used (0 on the block path).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <climits>
#include <numeric>
#include <vector>

#include "../common/checks.h"
#include "../common/owner_pairs.h"
#include "../common/pair_block_list.h"
#include "../common/pair_dispatch.h"
#include "../common/pair_long_path.h"
#include "../common/pair_math.h"
#include "../common/sort_keys.h"
#include "list_utils.h"

namespace rankops {
namespace {


template <PairFn F, PairWeight W, typename T>
int64_t emulate_long_path(const PairBatch<T>& in, int64_t B, int64_t width_arg,
                          bool plan_only) {
  constexpr bool kUsesNdcg = PairWeightTraits<W>::kUsesNdcg;
  const int64_t k = in.k;
  const int64_t* off = in.off;
  T* loss = in.loss;
  T* grad = in.grad;
  int64_t* num_pairs = in.num_pairs;

  // plan: lengths of the long lists, tile widths priced like the plan kernel
  std::vector<int64_t> long_len(B + 1, 0), cofs(B + 1, 0), tiles_of(B + 1, 0), tofs(B + 1, 0);
  int64_t totals[kTileWidthCandidates] = {};
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = off[b + 1] - off[b];
    if (n < 2) continue;
    long_len[b] = n;
    for (int c = 0; c < kTileWidthCandidates; ++c)
      totals[c] += tile_count(list_tiles(n, k, tile_width_candidate(c)));
  }
  std::exclusive_scan(long_len.begin(), long_len.end(), cofs.begin(), int64_t(0));
  const int64_t n_long = cofs[B];
  const int64_t width =
      width_arg > 0 ? width_arg : tile_width_candidate(pick_tile_width(totals, n_long));
  if (plan_only) return width;
  for (int64_t b = 0; b < B; ++b)
    tiles_of[b] = long_len[b] > 0 ? tile_count(list_tiles(long_len[b], k, width)) : 0;
  std::exclusive_scan(tiles_of.begin(), tiles_of.end(), tofs.begin(), int64_t(0));
  const int64_t tiles = tofs[B];

  // fill, sorts, pair counts, IDCG and gather (long_fill, cub sorts, long_count, long_list
  // and long_gather kernels), list by list
  using KeyT = typename OrderableKey<T>::type;
  std::vector<int> order(n_long);
  std::vector<T> rs(n_long), ry(n_long), rw(n_long), rg(kUsesNdcg ? n_long : 0),
      rd(kUsesNdcg ? n_long : 0), inv_idcg(B, T(0));
  std::vector<KeyT> keys, labels;
  std::vector<double> wg;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = long_len[b], start = off[b], base = cofs[b];
    if (n == 0) continue;
    keys.resize(n);
    labels.resize(n);
    wg.resize(n);
    for (int64_t i = 0; i < n; ++i) {
      keys[i] = orderable_key(in.s[start + i]);
      labels[i] = orderable_key(in.y[start + i]);
      const T w = in.w ? in.w[start + i] : T(1);
      wg[i] = static_cast<double>(w) * static_cast<double>(gain_of(in.y[start + i], in.gain));
    }
    int* ord = order.data() + base;
    std::iota(ord, ord + n, 0);
    std::stable_sort(ord, ord + n, [&](int i, int j) { return keys[i] > keys[j]; });
    std::sort(labels.begin(), labels.end());
    int64_t pairs = 0;
    for (int64_t r = 0; r < n; ++r) pairs += count_below_sorted(labels.data(), n, labels[r]);
    num_pairs[b] = pairs;
    if (pairs == 0) continue;
    if (kUsesNdcg) {
      const double idcg = cpu::ideal_dcg(wg, k);  // w*G sorted descending, summed in order
      inv_idcg[b] = idcg > 0.0 ? T(1.0 / idcg) : T(0);
    }
    for (int64_t r = 0; r < n; ++r) {
      const int64_t i = start + ord[r];
      rs[base + r] = in.s[i];
      ry[base + r] = in.y[i];
      rw[base + r] = in.w ? in.w[i] : T(1);
      if (kUsesNdcg) {
        rg[base + r] = gain_of(ry[base + r], in.gain);
        rd[base + r] = rank_discount<T>(r, k);
      }
    }
  }

  // the grid: one call per tile (long_pairs_kernel)
  std::vector<T> part_grad(tiles), part_loss(tiles);
  LongPathArgs<T> a;
  a.B = B;
  a.k = k;
  a.width = width;
  a.cofs = cofs.data();
  a.tofs = tofs.data();
  a.num_pairs = num_pairs;
  a.inv_idcg = inv_idcg.data();
  a.delta = in.delta;
  a.ranked = RankOrderList<T>{rs.data(), ry.data(), rw.data(), kUsesNdcg ? rg.data() : nullptr,
                              kUsesNdcg ? rd.data() : nullptr};
  a.knobs = in.knobs;
  a.part_grad = part_grad.data();
  a.part_loss = part_loss.data();
  for (int64_t t = 0; t < tiles; ++t) long_path_tile<F, W, T>(a, t);

  // per row totals, scattered to input order, and per list losses (long_rows and long_loss
  // kernels)
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = long_len[b], start = off[b], base = cofs[b];
    if (n == 0 || num_pairs[b] == 0) continue;
    double list_loss = 0.0;
    for (int64_t r = 0; r < n; ++r) {
      double g, l;
      long_path_row_total(a, b, r, g, l);
      if (grad) grad[start + order[base + r]] = static_cast<T>(g);
      list_loss += l;
    }
    loss[b] = static_cast<T>(list_loss);
  }
  return width;
}

// Every list of n >= 2 through the shared-memory algorithm, as a team of one thread with
// a host buffer carved exactly as the kernels carve shared memory, for the cap the kernels
// would use: 32 for a warp's list (n <= 32), else the longest list of the list's tier
// (n <= 512 or above), so the sorts see the same padding as on the GPU.
template <PairFn F, PairWeight W, typename T>
void emulate_block_path(const PairBatch<T>& p, int64_t B) {
  auto tier_of = [](int64_t n) { return n <= 32 ? 0 : n <= 512 ? 1 : 2; };
  int64_t tier_cap[3] = {32, 0, 0};
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = p.off[b + 1] - p.off[b], t = tier_of(n);
    if (t > 0) tier_cap[t] = std::max(tier_cap[t], n);
  }
  TORCH_CHECK(tier_cap[2] < INT_MAX / 2, "rankops: the block path emulation takes lists below 2^30");
  std::vector<uint64_t> smem;  // 8-byte aligned, as the carve needs
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = p.off[b + 1] - p.off[b];
    if (n < 2) continue;
    const int cap = static_cast<int>(tier_cap[tier_of(n)]), P = next_pow2(cap);
    smem.assign(block_list_smem_bytes<T>(cap) / sizeof(uint64_t) + 1, 0);
    const BlockListSmem<T> m =
        carve_block_list_smem<T>(reinterpret_cast<unsigned char*>(smem.data()), P, cap);
    pair_block_list<F, W, T>(p, b, m, SerialTeam{});
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, int64_t> pairwise_loss_emulated_cpu(
    const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& offsets,
    const c10::optional<at::Tensor>& weights, c10::string_view pair_fn,
    c10::string_view pair_weight, double sigma, double margin, c10::optional<int64_t> k,
    double mu, c10::string_view gain, c10::string_view path, int64_t tile_width,
    bool plan_only) {
  check_list_inputs(scores, labels, offsets, weights);
  const auto off = offsets.contiguous();
  check_offsets_values_cpu(off, scores.size(0));
  check_top_k(k);
  TORCH_CHECK(path == "long" || path == "block", "rankops: path must be 'long' or 'block', got '",
              std::string(path), "'");
  TORCH_CHECK(tile_width >= 0, "rankops: tile_width must be >= 0 (0: the CUDA choice), got ",
              tile_width);
  const PairFn fn = parse_pair_fn(std::string(pair_fn));
  const PairWeight weight = parse_pair_weight(std::string(pair_weight));
  const auto acc = acc_dtype_of(scores.scalar_type());
  // as the CUDA wrapper: everything widened to the accumulation type first
  const auto s = scores.to(acc).contiguous();
  const auto y = labels.to(acc).contiguous();
  const auto w = weights.has_value() ? weights->to(acc).contiguous() : at::Tensor();
  const int64_t B = off.size(0) - 1;
  auto loss = at::zeros({B}, scores.options().dtype(acc));
  auto num_pairs = at::zeros({B}, scores.options().dtype(at::kLong));
  auto item_grad = at::zeros({scores.size(0)}, scores.options().dtype(acc));
  int64_t width_used = 0;
  AT_DISPATCH_FLOATING_TYPES(acc, "pairwise_loss_emulated_cpu", [&] {
    using T = scalar_t;
    const int64_t* o = off.data_ptr<int64_t>();
    int64_t max_n = 0;
    for (int64_t b = 0; b < B; ++b) max_n = std::max(max_n, o[b + 1] - o[b]);
    std::vector<T> delta(max_n + 1);  // as delta_table_kernel
    for (int64_t d = 0; d <= max_n; ++d) delta[d] = ndcg2_delta<T>(d);
    PairBatch<T> p;
    p.s = s.data_ptr<T>();
    p.y = y.data_ptr<T>();
    p.w = w.defined() ? w.data_ptr<T>() : nullptr;
    p.off = o;
    p.delta = delta.data();
    p.loss = loss.data_ptr<T>();
    p.grad = item_grad.data_ptr<T>();
    p.num_pairs = num_pairs.data_ptr<int64_t>();
    p.knobs = PairKnobs<T>{T(sigma), T(margin), T(mu)};
    p.k = k.value_or(0);
    p.gain = parse_gain(std::string(gain));
    dispatch_pair_kernel(fn, weight, [&](auto fn_tag, auto weight_tag) {
      constexpr PairFn F = decltype(fn_tag)::value;
      constexpr PairWeight W = decltype(weight_tag)::value;
      if (path == "block") {
        if (!plan_only) emulate_block_path<F, W, T>(p, B);
      } else {
        width_used = emulate_long_path<F, W, T>(p, B, tile_width, plan_only);
      }
    });
  });
  return {loss, item_grad, num_pairs, width_used};
}

}  // namespace

TORCH_LIBRARY_IMPL(rankops, CPU, m) {
  m.impl("_pairwise_loss_emulated", &pairwise_loss_emulated_cpu);
}

}  // namespace rankops
