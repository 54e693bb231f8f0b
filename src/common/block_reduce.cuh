// Block-wide reductions shared by the kernels that compute a tensor's absolute maximum.
#pragma once

#include <cstdint>

namespace qfuse {

/// The maximum of `v` over the block's kThreads threads (a multiple of 32), folded into *dst with
/// one atomicMax from thread 0 (skipped when it is 0). Every thread of the block must call it.
/// NOTE: for |x| as uint32 bits (non-negative floats order like their bits; a NaN, sign cleared,
/// sits above +inf and so propagates).
template <int kThreads>
__device__ __forceinline__ void block_atomic_max_u32(uint32_t v, uint32_t* dst) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps");
  for (int off = 16; off > 0; off /= 2) v = max(v, __shfl_xor_sync(0xffffffffu, v, off));
  __shared__ uint32_t warp_max[kThreads / 32];
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / 32; ++w) v = max(v, warp_max[w]);
    if (v != 0) atomicMax(dst, v);
  }
}

}  // namespace qfuse
