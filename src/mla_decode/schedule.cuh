// The split-KV schedule (device side): the scheduler kernel that turns seq_lens into per-request
// costs and partial slots, and the piece iterator every decode kernel runs.
//
// Cost of request b: cost_b = tiles_b + overhead (piece_overhead of the kernel's rows per block),
// tiles_b = ceil(len_b / 64). The costs laid end to end (prefix cost_pre) are cut into ranges of
// `target` = ceil(W / num_parts) + overhead; part g takes [g * target, (g + 1) * target). NOTE: a
// batch of equal requests stays unsplit where it costs little: the target becomes ceil(B /
// num_parts) whole requests when that is at most 1/16 above the even cut (a split costs a Q load,
// partial traffic and pipeline refills). A request's tiles that fall into one part form a piece;
// its overhead units at the end of its range never start a piece. Pieces of request b are
// consecutive slots from first[b]: piece j starts at tile t with
//   j = floor((cost_pre[b] + t) / target) - floor(cost_pre[b] / target),
// n_b = 1 + (number of multiples of target in (cost_pre[b], cost_pre[b] + tiles_b)), 0 when
// tiles_b = 0 (the combine then writes zeros and lse -inf).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "mla_decode/params.h"
#include "mla_decode/schedule_rules.h"

namespace qfuse::mla {

/// A request's tiles [t_begin, t_end) handled by one thread block, written to partial `slot`
/// (split mode) or to the output (slot < 0).
struct Piece {
  int b;
  int len;
  int t_begin, t_end;
  int slot;
};

/// The first piece of requests [b, batch) inside the part's cost range [lo, hi), or b = -1.
__device__ __forceinline__ Piece find_piece(const DecodeParams& p, int lo, int hi, int target,
                                            int b) {
  const Schedule& s = p.sched;
  for (; b < p.batch; ++b) {
    const int c0 = s.cost_pre[b];
    if (c0 >= hi) break;
    const int len = s.len[b];
    const int tiles = tiles_of(len);
    const int tb = min(max(lo - c0, 0), tiles);
    const int te = min(max(hi - c0, 0), tiles);
    if (tb < te) return Piece{b, len, tb, te, s.first[b] + (c0 + tb) / target - c0 / target};
  }
  return Piece{-1, 0, 0, 0, -1};
}

/// Calls f(piece, next) for every piece of thread block (part) `part`, in order; `next` is the
/// part's following piece (next.b = -1 after the last), for prefetching. Split mode: the pieces
/// of part `part` of the schedule, with slot -1 (the output, not a partial) where p.direct and
/// every request is one piece; MlaSplitMode::kNone (sched.num_parts == 0): request `part` whole,
/// also when it has no tile. NOTE: one call site of f (the consumer's body is large).
template <class F>
__device__ __forceinline__ void for_each_piece(const DecodeParams& p, int part, F&& f) {
  const Schedule& s = p.sched;
  if (s.num_parts == 0) {
    const int len = s.len[part];
    f(Piece{part, len, 0, tiles_of(len), -1}, Piece{-1, 0, 0, 0, -1});
    return;
  }
  const int target = s.header[1];
  const int W = s.header[2];
  const int lo = part * target;
  if (target <= 0 || lo >= W) return;
  const int hi = min(lo + target, W);
  // Largest b with cost_pre[b] <= lo (cost_pre is strictly increasing, cost_pre[0] = 0).
  int l = 0, r = p.batch - 1;
  while (l < r) {
    const int mid = (l + r + 1) >> 1;
    if (s.cost_pre[mid] <= lo)
      l = mid;
    else
      r = mid - 1;
  }
  const bool direct = p.direct != 0 && s.header[kHdrOnePiece] != 0;
  Piece cur = find_piece(p, lo, hi, target, l);
  while (cur.b >= 0) {
    const Piece next = find_piece(p, lo, hi, target, cur.b + 1);
    if (direct) cur.slot = -1;
    f(cur, next);
    cur = next;
  }
}

constexpr int kSchedThreads = 1024;

/// Block-wide exclusive scan of one int per thread; returns the total.
__device__ __forceinline__ int block_exclusive_scan(int v, int* excl, int* warp_sums) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int x = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  if (lane == 31) warp_sums[warp] = x;
  __syncthreads();
  if (warp == 0) {
    int w = lane < kSchedThreads / 32 ? warp_sums[lane] : 0;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int y = __shfl_up_sync(0xffffffffu, w, o);
      if (lane >= o) w += y;
    }
    warp_sums[lane] = w;  // inclusive
  }
  __syncthreads();
  const int before = (warp > 0 ? warp_sums[warp - 1] : 0) + x - v;
  const int total = warp_sums[kSchedThreads / 32 - 1];
  __syncthreads();  // warp_sums is reused by the next call
  *excl = before;
  return total;
}

/// One block of kSchedThreads: sanitizes seq_lens (flags), fills len, cost_pre, first and the
/// header; zeroes the error flag first. num_parts 0 (MlaSplitMode::kNone): len and flags only.
__global__ void __launch_bounds__(kSchedThreads)
    mla_schedule_kernel(const int* __restrict__ seq_lens, int batch, int capacity, int num_parts,
                        Schedule s);

}  // namespace qfuse::mla
