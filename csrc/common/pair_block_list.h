// The CUDA pairwise kernel for lists that fit in shared memory (up to ~4,096 items): one
// list per team of threads, everything in shared memory. Written once for a "team", so
// that the CUDA kernels run it with a warp (lists of up to 32 items) or a block (longer
// ones), and the CPU emulation (rankops::_pairwise_loss_emulated, path "block") runs the
// very same code as a team of one thread (no barriers, sums are the value itself).
// The emulation checks the algorithm, the shared-memory layout and every index; it cannot
// check the barriers, which only the GPU tests do.
//
// Steps, each separated by barriers:
//   1. sort the labels (bitonic sort of (orderable key, index)); each item counts the
//      labels below its own: the pairs y_i > y_j;
//   2. 1/IDCG@k: w*G sorted descending (ndcg weights only);
//   3. ranks: scores sorted descending, ties by position; rank-order copies of s, y, w
//      (and G, D) in shared memory;
//   4. owner-computes pair loop (owner_pairs.h); thread t owns ranks t, t + size, ...
#pragma once
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "macros.h"
#include "owner_pairs.h"
#include "pair_math.h"
#include "sort_keys.h"

namespace rankops {

// Everything a pairwise kernel reads and writes for a batch of lists.
template <typename T>
struct PairBatch {
  const T* s;            // scores [N], in the accumulation type
  const T* y;            // labels [N]
  const T* w;            // item weights [N] or null (= 1)
  const int64_t* off;    // [B+1]
  const T* delta;        // ndcg2 table D(d) - D(d+1) by rank distance d, or null
  T* loss;               // [B]
  T* grad;               // [N] or null (compute_grad false)
  int64_t* num_pairs;    // [B]
  PairKnobs<T> knobs;    // sigma, margin, mu
  int64_t k;             // 0: whole list
  Gain gain;
};

RANKOPS_HD constexpr int next_pow2(int64_t n) {
  int p = 1;
  while (p < n) p <<= 1;
  return p;
}

// Shared memory of one list of up to cap items: sort buffers for P = next_pow2(cap)
// entries and rank-order arrays for cap items.
template <typename T>
struct BlockListSmem {
  uint64_t* key;  // [P] sort keys
  int* val;       // [P] sort values (item index)
  int* order;     // [cap] input index of rank r
  T *rs, *ry, *rw, *rg, *rd;  // [cap] rank-order score, label, weight, gain, discount
};

template <typename T>
RANKOPS_HD constexpr size_t block_list_smem_bytes(int64_t cap) {
  const int64_t P = next_pow2(cap);
  return static_cast<size_t>(P) * (sizeof(uint64_t) + sizeof(int)) +
         static_cast<size_t>(cap) * (5 * sizeof(T) + sizeof(int));
}

// Carves the buffers out of `raw` (16-byte aligned, block_list_smem_bytes<T>(cap) bytes):
// 8-byte keys first, then the T arrays, then the ints, so every array is aligned.
template <typename T>
RANKOPS_HD BlockListSmem<T> carve_block_list_smem(unsigned char* raw, int P, int cap) {
  BlockListSmem<T> m;
  m.key = reinterpret_cast<uint64_t*>(raw);
  m.rs = reinterpret_cast<T*>(m.key + P);
  m.ry = m.rs + cap;
  m.rw = m.ry + cap;
  m.rg = m.rw + cap;
  m.rd = m.rg + cap;
  m.val = reinterpret_cast<int*>(m.rd + cap);
  m.order = m.val + P;
  return m;
}

// Sorts (key, val) ascending, lexicographically; P a power of two. Within a stage the
// compared pairs (i, i ^ stride) are disjoint, so any split of i over the team is the
// same sort; the team syncs between stages.
RANKOPS_HD_TEMPLATE
template <typename Team>
RANKOPS_HD void bitonic_sort_pairs(uint64_t* key, int* val, int P, const Team& team) {
  for (int size = 2; size <= P; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = team.rank(); i < P; i += team.size()) {
        const int j = i ^ stride;
        if (j <= i) continue;
        const bool up = (i & size) == 0;
        const uint64_t ki = key[i], kj = key[j];
        const int vi = val[i], vj = val[j];
        const bool greater = ki > kj || (ki == kj && vi > vj);
        if (greater == up) {
          key[i] = kj;
          key[j] = ki;
          val[i] = vj;
          val[j] = vi;
        }
      }
      team.sync();
    }
  }
}

// List b (n = off[b+1] - off[b], 2 <= n <= cap) by one team, in buffers carved for cap.
// The sorts cover next_pow2(n) entries, this list's own size, not the buffers' (a 40-item
// list in a launch whose longest list has 4,000 sorts 64 entries, not 4,096); a team with
// more threads than entries leaves the extra threads idle but at every barrier.
RANKOPS_HD_TEMPLATE
template <PairFn F, PairWeight W, typename T, typename Team>
RANKOPS_HD void pair_block_list(const PairBatch<T>& p, int64_t b, const BlockListSmem<T>& m,
                                const Team& team) {
  constexpr bool kUsesNdcg = PairWeightTraits<W>::kUsesNdcg;
  const int64_t start = p.off[b];
  const int n = static_cast<int>(p.off[b + 1] - start);
  const int P = next_pow2(n);  // sort size
  const int tid = team.rank(), threads = team.size();
  const T* s_in = p.s + start;
  const T* y_in = p.y + start;
  const T* w_in = p.w ? p.w + start : nullptr;

  // 1. pairs y_i > y_j: sort the labels, each item counts the labels below its own.
  for (int i = tid; i < P; i += threads) {
    m.key[i] = i < n ? static_cast<uint64_t>(orderable_key(y_in[i])) : ~0ull;
    m.val[i] = i < n ? i : INT_MAX;
  }
  team.sync();
  bitonic_sort_pairs(m.key, m.val, P, team);
  long long below = 0;
  for (int r = tid; r < n; r += threads) below += count_below_sorted(m.key, int64_t(n), m.key[r]);
  const long long pairs = team.sum(below);
  if (pairs == 0) return;  // the whole team; zero loss and gradient
  if (tid == 0) p.num_pairs[b] = pairs;

  // 2. 1/IDCG@k: w*G sorted descending (complemented keys sort ascending).
  T inv_idcg = T(0);
  if (kUsesNdcg) {
    team.sync();  // key[] was read above
    for (int i = tid; i < P; i += threads) {
      if (i < n) {
        const T wi = w_in ? w_in[i] : T(1);
        const double wg = static_cast<double>(wi) * static_cast<double>(gain_of(y_in[i], p.gain));
        m.key[i] = ~orderable_key(wg);
      } else {
        m.key[i] = ~0ull;
      }
      m.val[i] = i < n ? i : INT_MAX;
    }
    team.sync();
    bitonic_sort_pairs(m.key, m.val, P, team);
    const int top = (p.k > 0 && p.k < n) ? static_cast<int>(p.k) : n;
    double part = 0.0;
    for (int r = tid; r < top; r += threads)
      part += from_orderable_key(~m.key[r]) / std::log2(2.0 + static_cast<double>(r));
    const double idcg = team.sum(part);
    inv_idcg = idcg > 0.0 ? T(1.0 / idcg) : T(0);
  }

  // 3. ranks: scores descending, ties by position (complemented keys, index as value).
  // Without top-k and rank-based weights no ranks are needed: input order is kept.
  const bool need_ranks = kUsesNdcg || p.k > 0;
  team.sync();
  for (int i = tid; i < P; i += threads) {
    m.key[i] = (i < n && need_ranks) ? ~static_cast<uint64_t>(orderable_key(s_in[i])) : ~0ull;
    m.val[i] = i < n ? i : INT_MAX;
  }
  team.sync();
  if (need_ranks) bitonic_sort_pairs(m.key, m.val, P, team);
  for (int r = tid; r < n; r += threads) {
    const int o = m.val[r];
    m.order[r] = o;
    m.rs[r] = s_in[o];
    m.ry[r] = y_in[o];
    m.rw[r] = w_in ? w_in[o] : T(1);
    if (kUsesNdcg) {
      m.rg[r] = gain_of(m.ry[r], p.gain);
      m.rd[r] = rank_discount<T>(r, p.k);
    }
  }
  team.sync();

  // 4. pairs: thread owns ranks tid, tid + threads, ... (head and tail rows interleave).
  const RankOrderList<T> list{m.rs, m.ry, m.rw, m.rg, m.rd};
  T loss_part = T(0);
  for (int r = tid; r < n; r += threads) {
    T row_grad = T(0), row_loss = T(0);
    owner_row_sum<F, W, T>(list, r, 0, row_partner_end(r, n, p.k), p.delta, inv_idcg, p.knobs,
                           row_grad, row_loss);
    if (p.grad) p.grad[start + m.order[r]] = row_grad;
    loss_part += row_loss;
  }
  const T loss = team.sum(loss_part);
  if (tid == 0) p.loss[b] = loss;
}

// A team of one host thread: the CPU emulation's stand-in for a CUDA block.
struct SerialTeam {
  int rank() const { return 0; }
  int size() const { return 1; }
  void sync() const {}
  template <typename V>
  V sum(V v) const { return v; }
};

}  // namespace rankops
