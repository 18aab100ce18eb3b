// The long-list path of the CUDA pairwise kernel (lists longer than a block's shared
// memory holds): how the pair space is cut into tiles, what one tile's thread computes and
// how a row's tiles are added. Host and device, so that the CPU emulation of the path
// (csrc/cpu/pairwise_long_path_cpu.cpp) runs this very code and the tests check it on
// machines without a GPU.
//
// Long lists are compacted: list b's items at [cofs[b], cofs[b+1]) of rank-order arrays
// (cofs is 0-length for the other lists). Row r (an owned item, rank order) meets the
// partners [0, row_partner_end(r)); that range is cut into tiles of `width` columns, one
// thread per tile. A list's tiles are numbered row by row, head rows (r < k, or all rows
// without top-k) first, so a row's partial sums are contiguous; tofs numbers the tiles of
// all long lists the way cofs numbers their items. With top-k a tail row has
// ceil(k / width) tiles and a head row ceil(n / width): one list of 10^6 items with k = 10
// is 10^6 one-tile tail rows plus 10 head rows of 4,096 tiles, all running at once.
#pragma once
#include <cstdint>

#include "macros.h"
#include "owner_pairs.h"
#include "pair_math.h"

namespace rankops {

// Tile widths the plan kernel prices (it sums each one's tile count over the long lists);
// the host then takes the narrowest that fits the scratch budget.
constexpr int kTileWidthCandidates = 24;
RANKOPS_HD int64_t tile_width_candidate(int c) { return int64_t(256) << c; }

// Scratch budget in tiles: enough threads to fill a GPU, and never fewer than 2 per row.
constexpr int64_t kTargetTiles = int64_t(1) << 20;

// Index of the narrowest candidate width whose tile count (totals[c], summed over the long
// lists) fits the budget; the widest candidate (2^31 columns: one tile per row) always fits.
inline int pick_tile_width(const int64_t* totals, int64_t long_items) {
  const int64_t budget = kTargetTiles > 2 * long_items ? kTargetTiles : 2 * long_items;
  for (int c = 0; c < kTileWidthCandidates; ++c)
    if (totals[c] <= budget) return c;
  return kTileWidthCandidates - 1;
}

struct ListTiles {
  int64_t n;           // items
  int64_t head_rows;   // rows meeting every partner: min(k, n), n without top-k
  int64_t head_tiles;  // tiles per head row: ceil(n / width)
  int64_t tail_tiles;  // tiles per tail row: ceil(k / width); 0 without tail rows
};

RANKOPS_HD ListTiles list_tiles(int64_t n, int64_t k, int64_t width) {
  ListTiles t;
  t.n = n;
  t.head_rows = (k > 0 && k < n) ? k : n;
  t.head_tiles = ceil_div(n, width);
  t.tail_tiles = t.head_rows < n ? ceil_div(t.head_rows, width) : 0;
  return t;
}

RANKOPS_HD int64_t tile_count(const ListTiles& t) {
  return t.head_rows * t.head_tiles + (t.n - t.head_rows) * t.tail_tiles;
}

RANKOPS_HD int64_t row_first_tile(const ListTiles& t, int64_t r) {
  return r < t.head_rows ? r * t.head_tiles
                         : t.head_rows * t.head_tiles + (r - t.head_rows) * t.tail_tiles;
}

RANKOPS_HD int64_t row_tile_count(const ListTiles& t, int64_t r) {
  return r < t.head_rows ? t.head_tiles : t.tail_tiles;
}

// Tile `tile` of a list (0-based within the list): its row and its columns [q0, q1).
RANKOPS_HD void tile_range(const ListTiles& t, int64_t width, int64_t tile, int64_t& row,
                           int64_t& q0, int64_t& q1) {
  const int64_t head = t.head_rows * t.head_tiles;
  int64_t column_tile;
  if (tile < head) {
    row = tile / t.head_tiles;
    column_tile = tile - row * t.head_tiles;
  } else {
    const int64_t u = tile - head;
    row = t.head_rows + u / t.tail_tiles;
    column_tile = u - (row - t.head_rows) * t.tail_tiles;
  }
  const int64_t end = row < t.head_rows ? t.n : t.head_rows;
  q0 = column_tile * width;
  q1 = q0 + width < end ? q0 + width : end;
}

// The last b in [0, B) with ofs[b] <= x (ofs non-decreasing, ofs[0] = 0 <= x): the list
// holding compacted index x; lists with no entries share their offset with the next one
// and are skipped.
RANKOPS_HD int64_t find_segment(const int64_t* ofs, int64_t B, int64_t x) {
  int64_t lo = 0, hi = B;
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) >> 1;
    if (ofs[mid] <= x) lo = mid; else hi = mid;
  }
  return lo;
}

template <typename T>
struct LongPathArgs {
  int64_t B;                // lists in the call (long or not)
  int64_t k;                // top-k, 0: whole list
  int64_t width;            // tile width
  const int64_t* cofs;      // [B + 1] compacted item offsets of the long lists
  const int64_t* tofs;      // [B + 1] tile offsets of the long lists
  const int64_t* num_pairs; // [B] pairs y_i > y_j (0: the list is skipped)
  const T* inv_idcg;        // [B] 1 / IDCG@k (ndcg weights)
  const T* delta;           // ndcg2 table by rank distance, or null
  RankOrderList<T> ranked;  // compacted rank-order arrays of the long lists
  PairKnobs<T> knobs;
  T* part_grad;             // [tiles] per-tile partial d loss / d s of the tile's row
  T* part_loss;             // [tiles] per-tile partial loss
};

// One tile: its row's pairs with the tile's columns, written to the tile's scratch slot.
template <PairFn F, PairWeight W, typename T>
RANKOPS_HD void long_path_tile(const LongPathArgs<T>& a, int64_t tile) {
  constexpr bool kUsesNdcg = PairWeightTraits<W>::kUsesNdcg;
  const int64_t b = find_segment(a.tofs, a.B, tile);
  const int64_t base = a.cofs[b];
  const ListTiles lt = list_tiles(a.cofs[b + 1] - base, a.k, a.width);
  int64_t r, q0, q1;
  tile_range(lt, a.width, tile - a.tofs[b], r, q0, q1);
  T grad = T(0), loss = T(0);
  if (a.num_pairs[b] > 0) {
    const RankOrderList<T> list{a.ranked.s + base, a.ranked.y + base, a.ranked.w + base,
                                kUsesNdcg ? a.ranked.gain + base : nullptr,
                                kUsesNdcg ? a.ranked.disc + base : nullptr};
    owner_row_sum<F, W, T>(list, r, q0, q1, a.delta, kUsesNdcg ? a.inv_idcg[b] : T(0),
                           a.knobs, grad, loss);
  }
  a.part_grad[tile] = grad;
  a.part_loss[tile] = loss;
}

// Row r of long list b: its tiles' partial sums added in tile order, in double.
template <typename T>
RANKOPS_HD void long_path_row_total(const LongPathArgs<T>& a, int64_t b, int64_t r,
                                    double& grad, double& loss) {
  const ListTiles lt = list_tiles(a.cofs[b + 1] - a.cofs[b], a.k, a.width);
  const int64_t first = a.tofs[b] + row_first_tile(lt, r);
  const int64_t count = row_tile_count(lt, r);
  grad = 0.0;
  loss = 0.0;
  for (int64_t t = first; t < first + count; ++t) {
    grad += static_cast<double>(a.part_grad[t]);
    loss += static_cast<double>(a.part_loss[t]);
  }
}

}  // namespace rankops
