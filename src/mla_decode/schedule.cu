// The split-KV scheduler kernel (schedule.cuh): one block computes the whole schedule from
// seq_lens on the device, so a decode step needs no host synchronisation (graph capturable).
#include <climits>

#include "core/launch.cuh"
#include "mla_decode/launch.h"
#include "mla_decode/schedule.cuh"
#include "qfuse/mla_decode/mla_decode.h"

namespace qfuse::mla {

__global__ void __launch_bounds__(kSchedThreads)
    mla_schedule_kernel(const int* __restrict__ seq_lens, int batch, int capacity, int num_parts,
                        Schedule s) {
  pdl_begin();
  __shared__ int warp_sums[kSchedThreads / 32];
  __shared__ int flags, cost_min, cost_max;
  if (threadIdx.x == 0) {
    flags = 0;
    cost_min = INT_MAX;
    cost_max = 0;
  }
  __syncthreads();
  // Pass 1: sanitized lengths and the prefix of costs.
  int carry = 0;
  for (int base = 0; base < batch; base += kSchedThreads) {
    const int b = base + threadIdx.x;
    int cost = 0;
    if (b < batch) {
      int len = seq_lens[b];
      if (len < 0) {
        atomicOr(&flags, kMlaErrSeqNegative);
        len = 0;
      } else if (len > capacity) {
        atomicOr(&flags, kMlaErrSeqTooLong);
        len = 0;
      }
      s.len[b] = len;
      cost = tiles_of(len) + kOverheadTiles;
      atomicMin(&cost_min, cost);
      atomicMax(&cost_max, cost);
    }
    int excl;
    const int total = block_exclusive_scan(cost, &excl, warp_sums);
    if (b < batch) s.cost_pre[b] = carry + excl;
    carry += total;
  }
  const int W = carry;
  if (threadIdx.x == 0) s.cost_pre[batch] = W;
  if (num_parts == 0) {
    __syncthreads();
    if (threadIdx.x == 0) {
      s.header[0] = flags;
      s.header[1] = 0;
      s.header[2] = W;
      s.header[3] = 0;
      s.header[kHdrOnePiece] = 0;
    }
    return;
  }
  __syncthreads();  // cost_pre, len and the cost range written by other threads of the block
  int target = (W + num_parts - 1) / num_parts + kOverheadTiles;
  // NOTE: equal requests stay whole when whole requests per part cost at most 1/16 more than the
  // even cut (which would split many of them: a Q load, an epilogue and a partial each; bench/
  // NOTES.md M10).
  if (cost_min == cost_max) {
    const int whole = (batch + num_parts - 1) / num_parts * cost_max;
    if (whole <= target + target / 16) target = whole;
  }
  // Pass 2: pieces per request and their first slots; whether every request is one piece.
  carry = 0;
  bool one_piece = true;
  for (int base = 0; base < batch; base += kSchedThreads) {
    const int b = base + threadIdx.x;
    int n = 0;
    if (b < batch) {
      const int tiles = tiles_of(s.len[b]);
      const int c0 = s.cost_pre[b];
      n = tiles == 0 ? 0 : 1 + (c0 + tiles - 1) / target - c0 / target;
      one_piece = one_piece && n == 1;
    }
    int excl;
    const int total = block_exclusive_scan(n, &excl, warp_sums);
    if (b < batch) s.first[b] = carry + excl;
    carry += total;
  }
  one_piece = __syncthreads_and(one_piece);
  if (threadIdx.x == 0) {
    s.first[batch] = carry;
    s.header[0] = flags;
    s.header[1] = target;
    s.header[2] = W;
    s.header[3] = carry;
    s.header[kHdrOnePiece] = one_piece ? 1 : 0;
  }
}

Status launch_schedule(const int* seq_lens, int batch, int capacity, const Schedule& s,
                       cudaStream_t stream) {
  return launch_kernel("mla_schedule_kernel", mla_schedule_kernel, dim3(1), dim3(kSchedThreads), 0,
                       stream, seq_lens, batch, capacity, s.num_parts, s);
}

}  // namespace qfuse::mla
