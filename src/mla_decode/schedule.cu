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
      cost = request_cost(len, s.overhead);
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
  const int target = part_target(W, num_parts, batch, cost_min, cost_max, s.overhead);
  // Pass 2: pieces per request and their first slots; whether every request is one piece.
  carry = 0;
  bool one_piece = true;
  for (int base = 0; base < batch; base += kSchedThreads) {
    const int b = base + threadIdx.x;
    int n = 0;
    if (b < batch) {
      n = pieces_of(s.cost_pre[b], tiles_of(s.len[b]), target);
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
